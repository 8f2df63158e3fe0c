#!/usr/bin/env bash
# Benchmark: a container's main process dies (SIGKILL from the host, i.e. a
# crash) -> the container runs again. raftvisor (a three-replica cluster with
# the local Docker Engine as its only node, a one-replica service of the echo
# image) against dockerd's own `--restart=always` on the same engine.
#
# Each trial reads the host pid of the container's main process
# (State.Pid), kills it with SIGKILL and polls the Docker API over the unix
# socket until a container of that side runs again with another pid; the
# time from the kill to that poll is the trial's figure. The same poller
# (bench tool below, Python stdlib) measures both sides. Trials alternate
# between dockerd and raftvisor, and a container is only killed once it has
# been up for SPACING_S (11 s): dockerd resets its restart backoff after
# 10 s up, and the raftvisor service's restart.reset_after_ms is 10000, so
# every trial is a first restart on both sides. Containers are not
# published (no ports) and have no health check, on both sides.
#
#   scripts/bench-restart.sh            # 20 trials per side, ~5 minutes
#   TRIALS=5 scripts/bench-restart.sh
#
# Environment:
#   TRIALS=20         trials per side
#   SPACING_S=11      minimum uptime of a container before it is killed
#   POLL_MS=5         pause between two polls of the Docker API
#   TRIAL_TIMEOUT_S=30  a trial fails if nothing runs again within this
#   RAFTVISOR_BIN=path  use this binary; SKIP_BUILD=1: use the release build as it is
#   KEEP_WORKDIR=1    keep the work directory (configs, logs, results)
#   CARGO_BUILD_JOBS  jobs of the release build (default 1: shared machine)
#
# Ports (never the dev cluster's 7001-7003): API 27001-27003, peer
# 27101-27103, DNS 28601-28603. Everything runs in a mktemp directory;
# replicas, containers (raftvisor's by its cluster label, dockerd's by name)
# and the directory are removed at exit, also on failure or Ctrl-C.
#
# scripts/bench-node-loss.sh sources this file for the cluster helpers
# (everything above `bench_restart_main`).
set -euo pipefail

SVB_USER_BIN=${RAFTVISOR_BIN:-}
# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# The benchmark clusters run plain HTTP (insecure = true): a CA exported
# for the dev cluster would make the CLI speak HTTPS to them.
unset RAFTVISOR_CA
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}

SVB_DOCKER_SOCK=/var/run/docker.sock
SVB_ECHO_IMAGE=raftvisor-echo:local
SVB_API_PORTS=(27001 27002 27003)
SVB_PEER_PORTS=(27101 27102 27103)
SVB_DNS_PORTS=(28601 28602 28603)
SVB_WORK=""
SVB_BIN=""
SVB_TOOL=""
SVB_CLUSTER_ID=""
SVB_REV=""
RAFTVISOR_BIN_GIVEN=""
SVB_PIDS=()
# Names of plain (non-raftvisor) containers to remove at exit.
SVB_CONTAINERS=()
# Process groups to kill at exit (the socat proxy of bench-node-loss.sh);
# only if their leader's command line names the work directory.
SVB_PGIDS=()

svb_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
svb_die() {
    svb_log "error: $*"
    exit 1
}

svb_addrs() {
    local p out=""
    for p in "${SVB_API_PORTS[@]}"; do
        out+="${out:+,}127.0.0.1:$p"
    done
    echo "$out"
}
rv() { "$SVB_BIN" --addr "$(svb_addrs)" "$@"; }

# True if pid is alive and its command line mentions our work directory.
svb_ours() {
    [[ -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$SVB_WORK"
}

svb_cleanup() {
    local rc=$? pid pgid i
    trap - EXIT INT TERM
    set +e
    for pgid in "${SVB_PGIDS[@]}"; do
        [[ $pgid =~ ^[0-9]+$ ]] && svb_ours "$pgid" && kill -KILL -- "-$pgid" 2>/dev/null
    done
    # Learn the cluster id late if the run stopped before it was known.
    if [[ -z $SVB_CLUSTER_ID && ${#SVB_PIDS[@]} -gt 0 ]]; then
        SVB_CLUSTER_ID=$(svb_cluster_id_now 2>/dev/null)
    fi
    for pid in "${SVB_PIDS[@]}"; do
        svb_ours "$pid" && kill -TERM "$pid" 2>/dev/null
    done
    for ((i = 0; i < 50; i++)); do
        local alive=0
        for pid in "${SVB_PIDS[@]}"; do
            svb_ours "$pid" && alive=1
        done
        [[ $alive -eq 0 ]] && break
        sleep 0.1
    done
    for pid in "${SVB_PIDS[@]}"; do
        svb_ours "$pid" && kill -KILL "$pid" 2>/dev/null
    done
    # The replicas are gone, so nothing recreates containers any more.
    if [[ -n $SVB_CLUSTER_ID ]]; then
        local ids
        ids=$(docker ps -aq --filter "label=raftvisor.cluster=$SVB_CLUSTER_ID" 2>/dev/null)
        if [[ -n $ids ]]; then
            # shellcheck disable=SC2086 # one id per word
            docker rm -f $ids >/dev/null 2>&1
        fi
    fi
    for i in "${SVB_CONTAINERS[@]}"; do
        docker rm -f "$i" >/dev/null 2>&1
    done
    wait 2>/dev/null
    if [[ -n $SVB_WORK && -d $SVB_WORK ]]; then
        if [[ ${KEEP_WORKDIR:-0} == 1 ]]; then
            svb_log "work directory kept: $SVB_WORK"
        else
            rm -rf "$SVB_WORK"
        fi
    fi
    exit "$rc"
}

svb_init() {
    ensure_packages curl python3
    command -v docker >/dev/null 2>&1 || svb_die "docker (the CLI) is required"
    docker info >/dev/null 2>&1 || svb_die "the Docker Engine does not answer ('docker info' fails)"
    [[ -S $SVB_DOCKER_SOCK ]] || svb_die "no Docker socket at $SVB_DOCKER_SOCK"
    if ! docker image inspect "$SVB_ECHO_IMAGE" >/dev/null 2>&1; then
        [[ -x $RAFTVISOR_ROOT/scripts/build-images.sh ]] ||
            svb_die "image $SVB_ECHO_IMAGE is missing and scripts/build-images.sh is not there to build it"
        "$RAFTVISOR_ROOT/scripts/build-images.sh"
    fi
    local p
    for p in "${SVB_API_PORTS[@]}" "${SVB_PEER_PORTS[@]}"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            svb_die "port $p is in use (another run of this benchmark?)"
        fi
    done
    SVB_WORK=$(mktemp -d "${TMPDIR:-/tmp}/raftvisor-svbench.XXXXXX")
    trap svb_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    if [[ -n $SVB_USER_BIN ]]; then
        RAFTVISOR_BIN_GIVEN=1
        [[ -x $SVB_USER_BIN ]] || svb_die "RAFTVISOR_BIN=$SVB_USER_BIN is not executable"
    else
        [[ ${SKIP_BUILD:-0} == 1 ]] || build_release
        SVB_USER_BIN=$RAFTVISOR_BIN
    fi
    [[ -x $SVB_USER_BIN ]] || svb_die "no binary at $SVB_USER_BIN"
    # Which source the binary is: the tree now (just built) or its file date.
    local rev dirty=""
    rev=$(cd "$RAFTVISOR_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
    [[ -n $(cd "$RAFTVISOR_ROOT" && git status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null) ]] &&
        dirty=" + uncommitted changes"
    if [[ -n ${RAFTVISOR_BIN_GIVEN:-} || ${SKIP_BUILD:-0} == 1 ]]; then
        SVB_REV="binary $SVB_USER_BIN of $(date -u -r "$SVB_USER_BIN" '+%Y-%m-%d %H:%M UTC') (tree at $rev$dirty when the run started)"
    else
        SVB_REV="$rev$dirty (static release build made by this run)"
    fi
    # A private copy: a rebuild in the tree during the run cannot swap it.
    SVB_BIN="$SVB_WORK/raftvisor"
    cp "$SVB_USER_BIN" "$SVB_BIN"
    SVB_TOOL="$SVB_WORK/svbench.py"
    svb_write_tool >"$SVB_TOOL"
}

svb_tool() { python3 "$SVB_TOOL" "$@"; }

svb_cluster_id_now() {
    local p
    for p in "${SVB_API_PORTS[@]}"; do
        rv_curl -fsS --max-time 1 "http://127.0.0.1:$p/v1/cluster?stale" 2>/dev/null |
            python3 -c 'import json,sys; c=json.load(sys.stdin).get("cluster_id"); c and print(c); sys.exit(0 if c else 1)' \
                2>/dev/null && return 0
    done
    return 1
}

# svb_start_cluster [supervisor settings as TOML lines]: three replicas on
# loopback; waits for a leader and the cluster id.
svb_start_cluster() {
    local i j m
    # The cluster's admin token, for rv (the CLI), curl and svbench.py.
    ensure_token_file "$SVB_WORK/bootstrap.token"
    use_token_file "$SVB_WORK/bootstrap.token"
    for i in 1 2 3; do
        m="$SVB_WORK/r$i"
        mkdir -p "$m"
        {
            echo "id = $i"
            echo "data_dir = \"$m/data\""
            echo "api_addr = \"127.0.0.1:${SVB_API_PORTS[i - 1]}\""
            echo "peer_addr = \"127.0.0.1:${SVB_PEER_PORTS[i - 1]}\""
            echo "dns_addr = \"127.0.0.1:${SVB_DNS_PORTS[i - 1]}\""
            for j in 1 2 3; do
                echo
                echo "[[members]]"
                echo "id = $j"
                echo "api_addr = \"127.0.0.1:${SVB_API_PORTS[j - 1]}\""
                echo "peer_addr = \"127.0.0.1:${SVB_PEER_PORTS[j - 1]}\""
            done
            echo
            echo "[auth]"
            echo "bootstrap_token_file = \"$SVB_WORK/bootstrap.token\""
            echo "# Benchmarks run plain HTTP, like the etcd they are compared with."
            echo "[tls]"
            echo "insecure = true"
            echo
            echo "[supervisor]"
            local line
            for line in "$@"; do
                echo "$line"
            done
        } >"$m/config.toml"
        (
            # RAFTVISOR_* of the calling shell would override the config.
            for v in $(compgen -e RAFTVISOR_); do
                [[ $v == RAFTVISOR_LOG ]] || unset "$v"
            done
            export RAFTVISOR_LOG=${RAFTVISOR_LOG:-info,openraft=warn,hickory_server=warn}
            exec "$SVB_BIN" agent --config "$m/config.toml"
        ) </dev/null >>"$m/log" 2>&1 &
        SVB_PIDS+=("$!")
    done
    local deadline=$((SECONDS + 60))
    until SVB_CLUSTER_ID=$(svb_cluster_id_now); do
        [[ $SECONDS -lt $deadline ]] || svb_die "no leader and cluster id within 60 s (logs: $SVB_WORK/r*/log)"
        for i in "${!SVB_PIDS[@]}"; do
            svb_ours "${SVB_PIDS[i]}" || svb_die "replica $((i + 1)) exited: $(tail -n 3 "$SVB_WORK/r$((i + 1))/log")"
        done
        sleep 0.2
    done
    [[ $SVB_CLUSTER_ID =~ ^[A-Za-z0-9_-]+$ ]] || svb_die "unexpected cluster id '$SVB_CLUSTER_ID'"
    svb_log "cluster $SVB_CLUSTER_ID is up (API $(svb_addrs))"
}

svb_machine() {
    echo "- machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)," \
        "$(free -h | awk '/^Mem:/ {print $2}') RAM, kernel $(uname -r)"
    echo "- docker: $(docker version --format '{{.Server.Version}}' 2>/dev/null)" \
        "(storage driver $(docker info --format '{{.Driver}}' 2>/dev/null)," \
        "cgroup $(docker info --format '{{.CgroupVersion}}' 2>/dev/null))"
    echo "- raftvisor: $SVB_REV"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
}

# What else used the machine: load average and the busiest processes
# that are not this benchmark's.
svb_activity() {
    echo "load average $(cut -d' ' -f1-3 /proc/loadavg); $(svb_tool activity --mark "$SVB_WORK" --seconds 2)"
}

svb_write_tool() {
    cat <<'PYTHON'
"""Docker API poller and statistics of the supervisor benchmarks (stdlib only)."""
import argparse
import datetime
import http.client
import json
import math
import os
import signal
import socket
import statistics
import sys
import time
import urllib.parse

SOCK = "/var/run/docker.sock"
# raftvisor's API needs a token: the benchmark cluster's admin token.
API_HEADERS = {"Authorization": "Bearer " + os.environ.get("RAFTVISOR_TOKEN", "")}


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=5.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


class Docker:
    """A keep-alive connection to the Docker API, reopened after an error."""

    def __init__(self, path=SOCK):
        self.path = path
        self.conn = None

    def get(self, url):
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = UnixHTTPConnection(self.path)
                self.conn.request("GET", url)
                resp = self.conn.getresponse()
                body = resp.read()
                return resp.status, (json.loads(body) if body else None)
            except (OSError, http.client.HTTPException, ValueError):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        raise RuntimeError("unreachable")

    def inspect(self, cid):
        status, body = self.get(f"/containers/{cid}/json")
        return body if status == 200 else None

    def running(self, labels):
        """Running containers carrying every label of `labels` (k=v strings)."""
        filters = urllib.parse.quote(json.dumps({"label": labels, "status": ["running"]}))
        status, body = self.get(f"/containers/json?filters={filters}")
        if status != 200:
            raise RuntimeError(f"container list answered {status}: {body}")
        return body


def parse_time(text):
    """Docker's RFC 3339 time with nanoseconds -> seconds since the epoch."""
    if not text or text.startswith("0001-"):
        return None
    base, _, frac = text.rstrip("Z").partition(".")
    dt = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return dt.timestamp() + (float("0." + frac) if frac else 0.0)


def cmd_wait(args):
    """Waits until exactly --count containers with the labels run."""
    docker = Docker()
    deadline = time.monotonic() + args.timeout
    n = -1
    while time.monotonic() < deadline:
        n = len(docker.running(args.label))
        if n == args.count:
            return 0
        time.sleep(0.2)
    print(f"{n} running containers with {args.label}, expected {args.count}", file=sys.stderr)
    return 1


def cmd_restart_trial(args):
    docker = Docker()
    deadline = time.monotonic() + args.timeout + args.min_uptime + 10
    # The one running container of this side, up for at least min_uptime.
    while True:
        if time.monotonic() > deadline:
            print("no single running container to kill", file=sys.stderr)
            return 1
        found = docker.running(args.label)
        if len(found) == 1:
            info = docker.inspect(found[0]["Id"])
            if info and info["State"]["Running"] and info["State"]["Pid"] > 0:
                up = time.time() - (parse_time(info["State"]["StartedAt"]) or time.time())
                if up >= args.min_uptime:
                    break
                time.sleep(min(args.min_uptime - up, args.min_uptime) + 0.01)
                continue
        time.sleep(0.1)
    cid, pid0 = info["Id"], info["State"]["Pid"]
    restarts0 = info.get("RestartCount", 0)
    t0 = time.monotonic()
    os.kill(pid0, signal.SIGKILL)
    polls = 0
    result = None
    while time.monotonic() - t0 < args.timeout:
        polls += 1
        now = docker.inspect(cid)
        if now and now["State"]["Running"] and now["State"]["Pid"] not in (0, pid0):
            result = {"same_container": True, "new_pid": now["State"]["Pid"],
                      "restart_count": now.get("RestartCount", 0) - restarts0}
        elif now is None or polls % 10 == 0:
            # Replaced by another container (e.g. re-placed)?
            for c in docker.running(args.label):
                if c["Id"] != cid:
                    other = docker.inspect(c["Id"])
                    if other and other["State"]["Running"]:
                        result = {"same_container": False, "new_pid": other["State"]["Pid"]}
                        break
        if result is not None:
            break
        time.sleep(args.poll_ms / 1000.0)
    elapsed_ms = (time.monotonic() - t0) * 1000.0
    if result is None:
        print(f"{args.side}: not running again within {args.timeout} s of the kill", file=sys.stderr)
        return 1
    result.update({"side": args.side, "ms": round(elapsed_ms, 1), "old_pid": pid0, "polls": polls,
                   "up_before_kill_s": round(up, 1)})
    with open(args.out, "a") as f:
        f.write(json.dumps(result) + "\n")
    print(f"{args.side:9s} {elapsed_ms:7.1f} ms  (pid {pid0} -> {result['new_pid']}, "
          f"{'same' if result['same_container'] else 'NEW'} container, {polls} polls)")
    return 0


def cmd_node_loss_trial(args):
    """Cuts the node (kills the proxy's process group), then polls until
    --count containers of the service run on the other node; also notes when
    the API first shows the cut node down."""
    docker = Docker()
    api_host, api_port = args.api.rsplit(":", 1)
    api = http.client.HTTPConnection(api_host, int(api_port), timeout=1.0)
    target = args.label + [f"raftvisor.node={args.target_node}"]

    def generations():
        """{slot: generation} of the service's instances, from the API."""
        try:
            api.request("GET", f"/v1/services/{args.service}/instances", headers=API_HEADERS)
            resp = api.getresponse()
            body = json.loads(resp.read() or b"[]")
            return {str(i["slot"]): i["generation"] for i in body} if resp.status == 200 else {}
        except (OSError, http.client.HTTPException, ValueError):
            api.close()
            return {}

    gens_before = generations()
    t0 = time.monotonic()
    os.killpg(args.cut_pgid, signal.SIGKILL)
    down_ms = None
    last_api = 0.0
    done_ms = None
    n = 0
    while time.monotonic() - t0 < args.timeout:
        n = len(docker.running(target))
        now = time.monotonic()
        if n >= args.count:
            done_ms = (now - t0) * 1000.0
            break
        if down_ms is None and now - last_api >= 0.05:
            last_api = now
            try:
                api.request("GET", f"/v1/nodes/{args.cut_node}?stale", headers=API_HEADERS)
                resp = api.getresponse()
                node = json.loads(resp.read() or b"{}")
                if resp.status == 200 and node.get("state") == "down":
                    down_ms = (time.monotonic() - t0) * 1000.0
            except (OSError, http.client.HTTPException, ValueError):
                api.close()
        time.sleep(args.poll_ms / 1000.0)
    if done_ms is None:
        print(f"only {n} of {args.count} containers run on {args.target_node} "
              f"{args.timeout} s after the cut", file=sys.stderr)
        return 1
    if down_ms is None:
        down_ms = float("nan")
    gens_after = generations()
    with open(args.out, "a") as f:
        f.write(json.dumps({"ms": round(done_ms, 1), "down_ms": round(down_ms, 1),
                            "generations_before": gens_before, "generations_after": gens_after}) + "\n")
    print(f"all {args.count} running on {args.target_node} after {done_ms:7.1f} ms "
          f"(API showed {args.cut_node} down after {down_ms:7.1f} ms; generations per slot "
          f"{gens_before} -> {gens_after})")
    return 0


def proc_ticks():
    """{pid: (utime+stime ticks, name, command line)} of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        name = text[text.find("(") + 1:text.rfind(")")]
        fields = text[text.rfind(")") + 2:].split()
        out[int(entry)] = (int(fields[11]) + int(fields[12]), name, cmdline)
    return out


def cmd_activity(args):
    """CPU use of processes other than the benchmark's over a short window."""
    hz = os.sysconf("SC_CLK_TCK")
    before = proc_ticks()
    time.sleep(args.seconds)
    after = proc_ticks()
    used = []
    for pid, (ticks, name, cmdline) in after.items():
        if args.mark in cmdline or pid == os.getpid():
            continue
        delta = ticks - before.get(pid, (ticks,))[0]
        if delta > 0:
            used.append((100.0 * delta / (hz * args.seconds), name))
    used.sort(reverse=True)
    total = sum(p for p, _ in used)
    top = ", ".join(f"{name} {p:.0f}%" for p, name in used[:4]) or "none"
    print(f"other processes used {total:.0f}% of one core (of {os.cpu_count()}) over {args.seconds:.0f} s: {top}")
    return 0


def cmd_instances(args):
    """One line per instance of a service: generation, restarts, state."""
    host, port = args.api.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=2.0)
    conn.request("GET", f"/v1/services/{args.service}/instances", headers=API_HEADERS)
    resp = conn.getresponse()
    if resp.status != 200:
        return 1
    for i in json.loads(resp.read()):
        print(f"instance {i['id']}: generation {i['generation']}, restarts {i['restarts']}, state {i['state']}")
    return 0


def pct(values, p):
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100.0 * len(ordered)) - 1)]


def stats(path, key="ms"):
    with open(path) as f:
        values = [json.loads(line)[key] for line in f if line.strip()]
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return None
    return {"n": len(values), "min": min(values), "median": statistics.median(values),
            "p99": pct(values, 99), "max": max(values)}


def cmd_report_restart(args):
    d, r = stats(args.dockerd), stats(args.raftvisor)
    if d is None or r is None:
        print("no results")
        return 1
    print("| side | trials | min | median | p99 | max |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, s in (("dockerd --restart=always", d), ("raftvisor (3 replicas)", r)):
        print(f"| {name} | {s['n']} | {s['min']:.0f} ms | {s['median']:.0f} ms | {s['p99']:.0f} ms "
              f"| {s['max']:.0f} ms |")
    print()
    ratio_med = r["median"] / d["median"]
    ratio_p99 = r["p99"] / d["p99"]
    print(f"- ratio raftvisor/dockerd: median {ratio_med:.2f}x, p99 {ratio_p99:.2f}x, "
          f"max {r['max'] / d['max']:.2f}x")
    print(f"- goal <= 1.0x dockerd (median): {'met' if ratio_med <= 1.0 else 'NOT met'}; "
          f"p99: {'met' if ratio_p99 <= 1.0 else 'NOT met'}")
    with open(args.raftvisor) as f:
        trials = [json.loads(line) for line in f if line.strip()]
    replaced = sum(1 for t in trials if not t["same_container"])
    if replaced:
        print(f"- raftvisor replaced the container (new container instead of a restart) in {replaced} trials")
    print(f"- p99 is the nearest-rank 99th percentile: with {r['n']} trials, value "
          f"{math.ceil(0.99 * r['n'])} of {r['n']} in ascending order")
    return 0


def cmd_report_node_loss(args):
    s = stats(args.results)
    down = stats(args.results, "down_ms")
    if s is None:
        print("no results")
        return 1
    print("| measure | trials | min | median | p99 | max |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| cut -> all {args.count} instances running on the other node | {s['n']} | {s['min']:.0f} ms "
          f"| {s['median']:.0f} ms | {s['p99']:.0f} ms | {s['max']:.0f} ms |")
    if down:
        print(f"| cut -> API shows the node down | {down['n']} | {down['min']:.0f} ms "
              f"| {down['median']:.0f} ms | {down['p99']:.0f} ms | {down['max']:.0f} ms |")
    print()
    with open(args.results) as f:
        trials = [json.loads(line) for line in f if line.strip()]
    at_deploy = sum(1 for t in trials for g in t["generations_before"].values() if g != 1)
    moves = sum(sum(t["generations_after"].values()) - sum(t["generations_before"].values())
                for t in trials)
    needed = len(trials) * args.count // 2
    print(f"- placements: {at_deploy} slots had a generation other than 1 right after a fresh deploy; "
          f"the trials committed {moves} new placements where {needed} instances had to move")
    med, mx = s["median"] / 1000.0, s["max"] / 1000.0
    print(f"- goal <= 3 s: median {med:.2f} s {'met' if med <= 3 else 'NOT met'}, "
          f"max {mx:.2f} s {'met' if mx <= 3 else 'NOT met'}")
    print(f"- against published defaults (median): Docker Swarm ~15 s ({15 / med:.1f}x faster), "
          f"Nomad ~20-30 s ({20 / med:.0f}-{30 / med:.0f}x), Kubernetes ~6 min ({360 / med:.0f}x)")
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("wait")
    s.add_argument("--label", action="append", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--timeout", type=float, default=60)
    s.set_defaults(fn=cmd_wait)
    s = sub.add_parser("restart-trial")
    s.add_argument("--side", required=True)
    s.add_argument("--label", action="append", required=True)
    s.add_argument("--min-uptime", type=float, default=11)
    s.add_argument("--poll-ms", type=float, default=5)
    s.add_argument("--timeout", type=float, default=30)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_restart_trial)
    s = sub.add_parser("node-loss-trial")
    s.add_argument("--label", action="append", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--cut-pgid", type=int, required=True)
    s.add_argument("--cut-node", required=True)
    s.add_argument("--service", required=True, help="namespace/name")
    s.add_argument("--target-node", required=True)
    s.add_argument("--api", required=True)
    s.add_argument("--poll-ms", type=float, default=10)
    s.add_argument("--timeout", type=float, default=60)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_node_loss_trial)
    s = sub.add_parser("instances")
    s.add_argument("--api", required=True)
    s.add_argument("--service", required=True)
    s.set_defaults(fn=cmd_instances)
    s = sub.add_parser("activity")
    s.add_argument("--mark", required=True)
    s.add_argument("--seconds", type=float, default=2)
    s.set_defaults(fn=cmd_activity)
    s = sub.add_parser("report-restart")
    s.add_argument("--dockerd", required=True)
    s.add_argument("--raftvisor", required=True)
    s.set_defaults(fn=cmd_report_restart)
    s = sub.add_parser("report-node-loss")
    s.add_argument("--results", required=True)
    s.add_argument("--count", type=int, required=True)
    s.set_defaults(fn=cmd_report_node_loss)
    args = p.parse_args()
    sys.exit(args.fn(args))


if __name__ == "__main__":
    main()
PYTHON
}

bench_restart_main() {
    local trials=${TRIALS:-20} spacing=${SPACING_S:-11} poll_ms=${POLL_MS:-5} timeout=${TRIAL_TIMEOUT_S:-30}
    [[ $trials =~ ^[1-9][0-9]*$ ]] || svb_die "TRIALS must be a positive integer"
    svb_init
    local run_id
    run_id=$(basename "$SVB_WORK")
    run_id=${run_id##*.}
    svb_log "starting the three-replica cluster"
    svb_start_cluster "node_grace_ms = 2000" "probe_interval_ms = 250"
    rv node add bench-local --docker "unix://$SVB_DOCKER_SOCK" --address 127.0.0.1 >/dev/null
    cat >"$SVB_WORK/restart.toml" <<TOML
namespace = "bench"
name = "restart"

[spec]
image = "$SVB_ECHO_IMAGE"
replicas = 1

[spec.restart]
initial_backoff_ms = 100
max_backoff_ms = 30000
reset_after_ms = 10000
TOML
    rv service deploy "$SVB_WORK/restart.toml" >/dev/null
    local rv_labels=(--label "raftvisor.cluster=$SVB_CLUSTER_ID" --label raftvisor.namespace=bench --label raftvisor.service=restart)
    svb_tool wait "${rv_labels[@]}" --count 1 --timeout 60 || svb_die "the raftvisor service did not start"

    local name="rvbench-restart-$run_id"
    SVB_CONTAINERS+=("$name")
    docker run -d --restart=always --name "$name" --label "raftvisor-bench.run=$run_id" \
        "$SVB_ECHO_IMAGE" >/dev/null
    local d_labels=(--label "raftvisor-bench.run=$run_id")
    svb_tool wait "${d_labels[@]}" --count 1 --timeout 60 || svb_die "the dockerd container did not start"

    local before
    before=$(svb_activity)
    svb_log "$trials trials per side, alternating, each container up >= ${spacing} s before its kill (~$((trials * (spacing + 1) / 60 + 1)) min)"
    local i
    for ((i = 1; i <= trials; i++)); do
        printf '[%s] trial %d/%d: ' "$(date +%H:%M:%S)" "$i" "$trials" >&2
        svb_tool restart-trial --side dockerd "${d_labels[@]}" --min-uptime "$spacing" \
            --poll-ms "$poll_ms" --timeout "$timeout" --out "$SVB_WORK/dockerd.jsonl" >&2 ||
            svb_die "dockerd trial $i failed"
        printf '[%s] trial %d/%d: ' "$(date +%H:%M:%S)" "$i" "$trials" >&2
        svb_tool restart-trial --side raftvisor "${rv_labels[@]}" --min-uptime "$spacing" \
            --poll-ms "$poll_ms" --timeout "$timeout" --out "$SVB_WORK/raftvisor.jsonl" >&2 ||
            svb_die "raftvisor trial $i failed"
    done
    local after
    after=$(svb_activity)
    local instance
    instance=$(svb_tool instances --api "127.0.0.1:${SVB_API_PORTS[0]}" --service bench/restart 2>/dev/null || true)

    echo
    echo "### Crash restart: raftvisor vs dockerd --restart=always"
    echo
    echo "TRIALS=$trials SPACING_S=$spacing POLL_MS=$poll_ms scripts/bench-restart.sh"
    echo
    svb_machine
    echo "- during the run: before: $before"
    echo "  after: $after"
    echo
    svb_tool report-restart --dockerd "$SVB_WORK/dockerd.jsonl" --raftvisor "$SVB_WORK/raftvisor.jsonl"
    [[ -n $instance ]] && echo "- raftvisor's view at the end: $instance"
    return 0
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    bench_restart_main "$@"
fi
