#!/usr/bin/env bash
# DNS benchmark: raftvisor's DNS server against NSD and Knot DNS on one
# equivalent zone, and how soon a follower answers a committed change.
#
# 1. Throughput. The same zone is served three ways on loopback:
#    - raftvisor: examples/dns_zone.rs, one in-process replica that commits
#      SERVICES services x REPLICAS instances through Raft (PutNode,
#      PutService, PlaceInstance, SetInstanceStatus) and answers from its
#      state machine with the production handler (src/dns/server.rs);
#    - NSD and Knot: a zone file written here with the same records (A of
#      svcN.default.svc.cluster.local, SRV of
#      _http._tcp.svcN.default.svc.cluster.local with targets
#      nodeK.node.cluster.local and their A records, SOA, NS), each server
#      with one worker (nsd server-count 1, knot udp-workers 1), run in the
#      foreground with its own config and data in the work directory.
#    Before measuring, a sample of names is asked of all three and the
#    answers must be equal. Then, ROUNDS times, in turn for each server:
#      taskset -c DNSPERF_CPU dnsperf -s 127.0.0.1 -p PORT -d QUERYFILE \
#          -c CLIENTS -q OUTSTANDING -l DURATION
#    with one file of QUERIES random A/SRV queries for all (servers
#    unpinned). Printed: queries/s, average latency, lost queries, the CPU
#    the server used, the median per server and the ratios of the medians.
# 2. Freshness. A three-replica cluster of real `raftvisor agent` processes
#    (supervisor disabled): FRESH_TRIALS times, the external service
#    fresh/x is given a new address through the leader's API
#    (PUT /v1/services/fresh/x) while both followers' DNS servers are polled
#    over UDP (about every POLL_MS); the time from sending the write (and
#    from its acknowledgement, i.e. the commit) until each follower answers
#    the new address is recorded; p50/p99/max are printed.
# Goals: raftvisor >= 0.5x NSD's queries/s; write -> changed answer on a
# follower p99 <= 100 ms.
#
#   scripts/bench-dns.sh                 # ~4 minutes after the build
#   ROUNDS=1 FRESH_TRIALS=50 scripts/bench-dns.sh
#
# Environment:
#   SERVICES=1000 REPLICAS=3 NODES=10   the zone
#   QUERIES=100000       queries in the query file (half A, half SRV, random)
#   DURATION=10 CLIENTS=4 OUTSTANDING=200 DNSPERF_CPU=1   dnsperf -l -c -q, taskset
#   ROUNDS=3             dnsperf runs per server (interleaved)
#   FRESH_TRIALS=200 POLL_MS=1   freshness trials, pause between two polls
#   QUIET_MAX_PCT=20 QUIET_WAIT=300   the machine is shared: before each
#                        dnsperf run, wait (at most QUIET_WAIT s) until other
#                        processes use at most QUIET_MAX_PCT % of one core, and
#                        repeat a run during which they used more (MAX_TRIES=3
#                        runs in all); the figures say how busy it was anyway
#   SKIP_THROUGHPUT=1 / SKIP_FRESHNESS=1   leave a part out
#   SKIP_BUILD=1         use the release builds in target/ as they are
#   KEEP_WORKDIR=1       keep the work directory (zone, configs, logs, results)
#   CARGO_BUILD_JOBS     jobs of the release build (default 1: shared machine)
#
# Ports: raftvisor's zone 38501, NSD 38502, Knot 38503 (UDP and TCP);
# freshness cluster API 37001-37003, peer 37101-37103, DNS 38601-38603.
# Only 127.0.0.1 is contacted. Every process started here is stopped at
# exit (also on failure or Ctrl-C) and the work directory is removed.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# The benchmark clusters run plain HTTP (insecure = true): a CA exported
# for the dev cluster would make the CLI speak HTTPS to them.
unset RAFTVISOR_CA
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}

SERVICES=${SERVICES:-1000}
REPLICAS=${REPLICAS:-3}
NODES=${NODES:-10}
QUERIES=${QUERIES:-100000}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-4}
OUTSTANDING=${OUTSTANDING:-200}
DNSPERF_CPU=${DNSPERF_CPU:-1}
ROUNDS=${ROUNDS:-3}
FRESH_TRIALS=${FRESH_TRIALS:-200}
POLL_MS=${POLL_MS:-1}
QUIET_MAX_PCT=${QUIET_MAX_PCT:-20}
QUIET_WAIT=${QUIET_WAIT:-300}
MAX_TRIES=${MAX_TRIES:-3}

RV_ZONE_PORT=38501
NSD_PORT=38502
KNOT_PORT=38503
FRESH_API=(37001 37002 37003)
FRESH_PEER=(37101 37102 37103)
FRESH_DNS=(38601 38602 38603)

WORK=""
# Process-group leaders started here (each server is started with setsid).
PGIDS=()

say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

for var in SERVICES REPLICAS NODES QUERIES DURATION CLIENTS OUTSTANDING DNSPERF_CPU ROUNDS FRESH_TRIALS POLL_MS \
    QUIET_MAX_PCT QUIET_WAIT MAX_TRIES; do
    [[ ${!var} =~ ^[0-9]+$ ]] || die "$var=${!var} is not a whole number"
done
[[ $ROUNDS -ge 1 && $DURATION -ge 1 && $QUERIES -ge 1 ]] || die "ROUNDS, DURATION and QUERIES must be positive"

# True if pid is alive and its command line names our work directory, so a
# recycled pid is never signalled.
ours() {
    [[ -n $WORK && -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$WORK"
}

# Stops the process groups started here: TERM, then KILL after 3 s.
stop_all() {
    local pgid i alive
    for pgid in "${PGIDS[@]}"; do
        ours "$pgid" && kill -TERM -- "-$pgid" 2>/dev/null
    done
    for ((i = 0; i < 30; i++)); do
        alive=0
        for pgid in "${PGIDS[@]}"; do
            ours "$pgid" && alive=1
        done
        [[ $alive -eq 0 ]] && break
        sleep 0.1
    done
    for pgid in "${PGIDS[@]}"; do
        ours "$pgid" && kill -KILL -- "-$pgid" 2>/dev/null
    done
    PGIDS=()
    return 0
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $TOOL_PID ]] && ours "$TOOL_PID"; then
        kill -TERM "$TOOL_PID" 2>/dev/null
    fi
    stop_all
    wait 2>/dev/null || true
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ ${KEEP_WORKDIR:-0} == 1 ]]; then
            say "work directory kept: $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}

# start NAME LOG command...: runs the command in its own session (so its
# children can be stopped with it) and records the group id.
start() {
    local name=$1 logfile=$2
    shift 2
    setsid "$@" >"$logfile" 2>&1 </dev/null &
    local pid=$!
    PGIDS+=("$pid")
    say "started $name (pid $pid)"
}

setup() {
    local need=(dnsperf nsd knot bind9-dnsutils curl)
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    command -v taskset >/dev/null 2>&1 || need+=(util-linux)
    ensure_packages "${need[@]}"
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        build_release
        log "building examples/dns_zone (release, static)"
        (cd "$RAFTVISOR_ROOT" && cargo build --release --locked --target "$RAFTVISOR_TARGET" --example dns_zone)
    fi
    local example="$RAFTVISOR_ROOT/target/$RAFTVISOR_TARGET/release/examples/dns_zone"
    [[ -x $RAFTVISOR_BIN ]] || die "no binary at $RAFTVISOR_BIN"
    [[ -x $example ]] || die "no example binary at $example"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/raftvisor-bench-dns.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    # Private copies: a rebuild in the tree during the run changes nothing,
    # and every process started here names the work directory.
    cp "$RAFTVISOR_BIN" "$WORK/raftvisor"
    cp "$example" "$WORK/dns_zone"
    write_tool >"$WORK/tool.py"
}

# Runs the helper in the background and waits for it, so a signal to this
# script is handled at once (cleanup stops the helper too).
TOOL_PID=""
tool() {
    python3 "$WORK/tool.py" "$@" <&0 &
    TOOL_PID=$!
    wait "$TOOL_PID"
}

# wait_dns PORT NAME SECONDS: until a DNS server on 127.0.0.1:PORT answers.
wait_dns() {
    local port=$1 name=$2 deadline=$((SECONDS + $3))
    while [[ $SECONDS -lt $deadline ]]; do
        if dig @127.0.0.1 -p "$port" +norecurse +time=1 +tries=1 cluster.local SOA 2>/dev/null | grep -q 'status: NOERROR'; then
            return 0
        fi
        sleep 0.2
    done
    die "$name did not answer on 127.0.0.1:$port within $3 s"
}

start_raftvisor_zone() {
    start "raftvisor zone ($SERVICES services x $REPLICAS)" "$WORK/raftvisor-zone.log" \
        "$WORK/dns_zone" --dns "127.0.0.1:$RV_ZONE_PORT" --services "$SERVICES" \
        --replicas "$REPLICAS" --nodes "$NODES" --setup-timeout-seconds 300 --measure-lookups 20000
    local pid=${PGIDS[-1]} deadline=$((SECONDS + 330))
    while [[ $SECONDS -lt $deadline ]]; do
        grep -qx ready "$WORK/raftvisor-zone.log" && break
        kill -0 "$pid" 2>/dev/null || die "dns_zone exited: $(tail -n 3 "$WORK/raftvisor-zone.log")"
        sleep 0.5
    done
    grep -qx ready "$WORK/raftvisor-zone.log" || die "dns_zone was not ready within 330 s"
    grep '^dns_zone:' "$WORK/raftvisor-zone.log" >&2 || true
}

start_nsd() {
    local dir="$WORK/nsd"
    mkdir -p "$dir"
    cp "$WORK/cluster.local.zone" "$dir/"
    cat >"$dir/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1@$NSD_PORT
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "$dir"
    database: ""
    zonelistfile: "$dir/zone.list"
    xfrdfile: "$dir/xfrd.state"
    xfrdir: "$dir"
    pidfile: "$dir/nsd.pid"
    logfile: "$dir/nsd.log"
    hide-version: yes
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: cluster.local
    zonefile: "$dir/cluster.local.zone"
EOF
    nsd-checkconf "$dir/nsd.conf" || die "nsd-checkconf rejected $dir/nsd.conf"
    nsd-checkzone cluster.local "$dir/cluster.local.zone" >&2 || die "nsd-checkzone rejected the zone"
    start "nsd $(nsd -v 2>&1 | head -n 1 | awk '{print $NF}')" "$dir/stdout.log" nsd -d -c "$dir/nsd.conf"
    wait_dns "$NSD_PORT" nsd 30
}

start_knot() {
    local dir="$WORK/knot"
    mkdir -p "$dir/db"
    cp "$WORK/cluster.local.zone" "$dir/"
    cat >"$dir/knot.conf" <<EOF
server:
    rundir: "$dir"
    pidfile: "$dir/knot.pid"
    listen: 127.0.0.1@$KNOT_PORT
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
control:
    listen: "$dir/knot.sock"
database:
    storage: "$dir/db"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "$dir"
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: cluster.local
EOF
    knotc -c "$dir/knot.conf" conf-check >&2 || die "knotc conf-check rejected $dir/knot.conf"
    start "knotd $(knotd -V 2>&1 | awk '{print $NF}')" "$dir/stdout.log" knotd -c "$dir/knot.conf"
    wait_dns "$KNOT_PORT" knot 30
}

# dig_sections PORT NAME TYPE: one line: "1 status X; 2 <answer records>;
# ... 3 <authority and additional records>; ..." (SOA records, TTLs and the
# OPT record left out; records sorted within their section).
dig_sections() {
    dig @127.0.0.1 -p "$1" +norecurse +time=2 +tries=2 "$2" "$3" | awk '
        /status:/ { s = $6; sub(/,.*/, "", s); print "1 status " s; next }
        /^;; ANSWER SECTION:/ { sec = 2; next }
        /^;; (AUTHORITY|ADDITIONAL) SECTION:/ { sec = 3; next }
        /^;/ || NF < 5 { next }
        sec > 0 && $3 == "IN" && $4 != "SOA" { $2 = ""; print (sec == 3 ? "3~" : sec) " " $0 }' |
        sort | tr -s ' \t' ' ' | tr '\n' ';'
}

# The three servers must give the same answers (rcode and answer section)
# for a sample of names; differences in the other sections are reported.
check_equal() {
    local name type port out ref n=0 i entry
    local names=()
    for i in 0 1 $((SERVICES / 2)) $((SERVICES - 1)); do
        names+=("svc$i.default.svc.cluster.local A" "_http._tcp.svc$i.default.svc.cluster.local SRV")
    done
    names+=("node0.node.cluster.local A" "node$((NODES - 1)).node.cluster.local A"
        "nope.default.svc.cluster.local A" "cluster.local NS" "svc0.default.svc.cluster.local AAAA")
    for entry in "${names[@]}"; do
        name=${entry% *}
        type=${entry#* }
        ref=$(dig_sections "$RV_ZONE_PORT" "$name" "$type")
        for port in "$NSD_PORT" "$KNOT_PORT"; do
            out=$(dig_sections "$port" "$name" "$type")
            if [[ ${out%%3~*} != "${ref%%3~*}" ]]; then
                say "answers differ for $name $type:"
                say "  raftvisor (port $RV_ZONE_PORT): $ref"
                say "  port $port: $out"
                die "the three servers do not serve the same zone"
            elif [[ $out != "$ref" ]]; then
                say "note: $name $type: same answer, other sections differ: raftvisor: $ref / port $port: $out"
            fi
        done
        n=$((n + 1))
    done
    say "the three servers give the same rcode and answer records for $n sample questions"
}

throughput() {
    say "writing the zone file and $QUERIES queries"
    tool zone --services "$SERVICES" --replicas "$REPLICAS" --nodes "$NODES" >"$WORK/cluster.local.zone"
    tool queries --services "$SERVICES" --count "$QUERIES" >"$WORK/queries.txt"
    start_raftvisor_zone
    start_nsd
    start_knot
    check_equal
    local round server port try
    for ((round = 1; round <= ROUNDS; round++)); do
        for server in nsd knot raftvisor; do
            case $server in
                nsd) port=$NSD_PORT ;;
                knot) port=$KNOT_PORT ;;
                raftvisor) port=$RV_ZONE_PORT ;;
            esac
            for ((try = 1; try <= MAX_TRIES; try++)); do
                tool quiet --mark "$WORK" --max-pct "$QUIET_MAX_PCT" --wait "$QUIET_WAIT"
                say "round $round/$ROUNDS: dnsperf against $server (127.0.0.1:$port, ${DURATION} s)"
                tool dnsperf --server "$server" --port "$port" --mark "$WORK/$server" --mark-alt "$WORK/dns_zone" \
                    --queries "$WORK/queries.txt" --cpu "$DNSPERF_CPU" --clients "$CLIENTS" \
                    --outstanding "$OUTSTANDING" --duration "$DURATION" --round "$round" \
                    --log "$WORK/dnsperf-$server-$round.txt" >"$WORK/run.json" ||
                    die "dnsperf against $server failed; output: $(tail -n 5 "$WORK/dnsperf-$server-$round.txt")"
                tool show-run <"$WORK/run.json" >&2
                if tool busy --max-pct "$QUIET_MAX_PCT" <"$WORK/run.json" && [[ $try -lt $MAX_TRIES ]]; then
                    say "other processes used more than $QUIET_MAX_PCT % of a core meanwhile: measuring again"
                    continue
                fi
                cat "$WORK/run.json" >>"$WORK/throughput.jsonl"
                break
            done
        done
    done
    stop_all
}

write_fresh_config() {
    local i=$1 j dir="$WORK/fresh/r$1"
    mkdir -p "$dir"
    {
        echo "id = $i"
        echo "data_dir = \"$dir/data\""
        echo "api_addr = \"127.0.0.1:${FRESH_API[i - 1]}\""
        echo "peer_addr = \"127.0.0.1:${FRESH_PEER[i - 1]}\""
        echo "dns_addr = \"127.0.0.1:${FRESH_DNS[i - 1]}\""
        for j in 1 2 3; do
            echo
            echo "[[members]]"
            echo "id = $j"
            echo "api_addr = \"127.0.0.1:${FRESH_API[j - 1]}\""
            echo "peer_addr = \"127.0.0.1:${FRESH_PEER[j - 1]}\""
        done
        echo
        echo "# Benchmarks run plain HTTP, like the etcd they are compared with."
        echo "[tls]"
        echo "insecure = true"
        echo
        echo "[supervisor]"
        echo "enabled = false"
        echo
        echo "[auth]"
        echo "bootstrap_token_file = \"$WORK/fresh/bootstrap.token\""
    } >"$dir/config.toml"
}

freshness() {
    local i var unset=()
    # Only RAFTVISOR_LOG passes: other RAFTVISOR_* would override the configs.
    for var in $(compgen -e RAFTVISOR_ || true); do
        [[ $var == RAFTVISOR_LOG ]] || unset+=(-u "$var")
    done
    # The cluster's admin token, for the freshness tool's API calls.
    ensure_token_file "$WORK/fresh/bootstrap.token"
    use_token_file "$WORK/fresh/bootstrap.token"
    for i in 1 2 3; do
        write_fresh_config "$i"
    done
    for i in 1 2 3; do
        start "raftvisor agent r$i" "$WORK/fresh/r$i/log" \
            env "${unset[@]}" RAFTVISOR_LOG="${RAFTVISOR_LOG:-warn}" \
            "$WORK/raftvisor" agent --config "$WORK/fresh/r$i/config.toml"
    done
    tool freshness --api "$(IFS=,; echo "${FRESH_API[*]}")" --dns "$(IFS=,; echo "${FRESH_DNS[*]}")" \
        --trials "$FRESH_TRIALS" --poll-ms "$POLL_MS" --out "$WORK/freshness.json" ||
        die "the freshness measurement failed (logs: $WORK/fresh/r*/log)"
    stop_all
}

machine() {
    echo "- machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)," \
        "$(free -h | awk '/^Mem:/ {print $2}') memory, kernel $(uname -r)"
    echo "- dnsperf $(dpkg-query -W -f='${Version}' dnsperf), NSD $(dpkg-query -W -f='${Version}' nsd)," \
        "Knot $(dpkg-query -W -f='${Version}' knot); raftvisor release build of $(date -u -r "$RAFTVISOR_BIN" '+%Y-%m-%d %H:%M UTC')" \
        "(HEAD now $(git -C "$RAFTVISOR_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
}

main() {
    setup
    machine >"$WORK/machine.txt"
    [[ ${SKIP_THROUGHPUT:-0} == 1 ]] || throughput
    [[ ${SKIP_FRESHNESS:-0} == 1 ]] || freshness
    {
        echo "## DNS benchmark results"
        echo
        cat "$WORK/machine.txt"
        if [[ -s $WORK/throughput.jsonl ]]; then
            echo "- zone: $SERVICES services x $REPLICAS instances on $NODES nodes; $QUERIES random A/SRV queries;" \
                "\`taskset -c $DNSPERF_CPU dnsperf -c $CLIENTS -q $OUTSTANDING -l $DURATION\`, $ROUNDS round(s), servers unpinned"
        fi
        if [[ -f $WORK/raftvisor-zone.log ]]; then
            sed -n 's/^dns_zone: /- raftvisor zone (examples\/dns_zone.rs): /p' "$WORK/raftvisor-zone.log"
        fi
        echo
        if [[ -s $WORK/throughput.jsonl ]]; then
            tool throughput-report "$WORK/throughput.jsonl"
        fi
        if [[ -s $WORK/freshness.json ]]; then
            tool freshness-report "$WORK/freshness.json"
        fi
    } | tee "$WORK/results.md"
}

write_tool() {
    cat <<'PYTHON'
"""Helpers of scripts/bench-dns.sh (Python 3, standard library only)."""
import argparse
import json
import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

DOMAIN = "cluster.local"
TTL = 5


# The layout of examples/dns_zone.rs: node K has address 127.0.1.(K+1);
# slot S of svcI runs on node (I+S) % NODES with host port
# 20000 + (I*REPLICAS+S) % 40000.
def node_address(k):
    return f"127.0.1.{k + 1}"


def cmd_zone(a):
    out = sys.stdout
    out.write(f"$ORIGIN {DOMAIN}.\n$TTL {TTL}\n")
    out.write(f"@ IN SOA ns.{DOMAIN}. hostmaster.{DOMAIN}. 1 60 10 3600 {TTL}\n")
    out.write(f"@ IN NS ns.{DOMAIN}.\n")
    out.write("ns IN A 127.0.0.1\n")
    out.write("leader.managers IN A 127.0.0.1\n")
    for k in range(a.nodes):
        out.write(f"node{k}.node IN A {node_address(k)}\n")
    for i in range(a.services):
        name = f"svc{i}.default.svc"
        for s in range(a.replicas):
            out.write(f"{name} IN A {node_address((i + s) % a.nodes)}\n")
        for s in range(a.replicas):
            port = 20000 + (i * a.replicas + s) % 40000
            out.write(f"_http._tcp.{name} IN SRV 0 1 {port} node{(i + s) % a.nodes}.node.{DOMAIN}.\n")
    return 0


def cmd_queries(a):
    rng = random.Random(20240601)
    lines = []
    for _ in range(a.count):
        i = rng.randrange(a.services)
        if rng.random() < 0.5:
            lines.append(f"svc{i}.default.svc.{DOMAIN} A")
        else:
            lines.append(f"_http._tcp.svc{i}.default.svc.{DOMAIN} SRV")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def cpu_ticks():
    """(busy ticks of the whole machine, {pid: (ticks, cmdline)})."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = fields[0] + fields[1] + fields[2] + sum(fields[5:8])
    procs = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        procs[int(entry)] = (int(rest[11]) + int(rest[12]), cmdline)
    return busy, procs


def parse_dnsperf(text):
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Queries sent:"):
            out["sent"] = int(line.split()[2])
        elif line.startswith("Queries completed:"):
            out["completed"] = int(line.split()[2])
        elif line.startswith("Queries lost:"):
            out["lost"] = int(line.split()[2])
        elif line.startswith("Response codes:"):
            out["rcodes"] = line.split(":", 1)[1].strip()
        elif line.startswith("Average packet size:"):
            parts = line.replace(",", "").split()
            out["request_bytes"] = int(parts[4])
            out["response_bytes"] = int(parts[6])
        elif line.startswith("Queries per second:"):
            out["qps"] = float(line.split()[3])
        elif line.startswith("Average Latency (s):"):
            parts = line.replace("(", " ").replace(")", " ").replace(",", " ").split()
            # Average Latency s : AVG min MIN max MAX
            out["latency_avg_ms"] = float(parts[4]) * 1000
            out["latency_min_ms"] = float(parts[6]) * 1000
            out["latency_max_ms"] = float(parts[8]) * 1000
        elif line.startswith("Latency StdDev (s):"):
            out["latency_stddev_ms"] = float(line.split()[3]) * 1000
    return out


def cmd_dnsperf(a):
    hz = os.sysconf("SC_CLK_TCK")
    ncpu = os.cpu_count() or 1
    marks = [a.mark] + ([a.mark_alt] if a.server == "raftvisor" else [])
    command = ["taskset", "-c", str(a.cpu), "dnsperf", "-s", "127.0.0.1", "-p", str(a.port),
               "-d", a.queries, "-c", str(a.clients), "-q", str(a.outstanding), "-l", str(a.duration)]
    before = cpu_ticks()
    t0 = time.monotonic()
    with open(a.log, "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            rc = child.wait(timeout=a.duration + 60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            rc = -9
    seconds = time.monotonic() - t0
    after = cpu_ticks()
    with open(a.log) as f:
        result = parse_dnsperf(f.read())
    if rc != 0 or "qps" not in result:
        print(f"dnsperf exited {rc} or printed no queries/s", file=sys.stderr)
        return 1

    def used(select):
        return sum(t - before[1].get(pid, (0, ""))[0] for pid, (t, c) in after[1].items() if select(pid, c))

    server = used(lambda pid, c: pid != os.getpid() and any(m in c for m in marks))
    perf = used(lambda pid, c: "dnsperf" in c and a.queries in c)
    me = used(lambda pid, c: pid == os.getpid())
    machine = after[0] - before[0]
    other = max(0, machine - server - perf - me)
    scale = 100.0 / (hz * seconds)
    result.update({"server": a.server, "round": a.round, "seconds": round(seconds, 2),
                   "server_cpu_pct": round(server * scale, 1), "dnsperf_cpu_pct": round(perf * scale, 1),
                   "other_cpu_pct": round(other * scale, 1), "cores": ncpu})
    print(json.dumps(result))
    return 0


def cmd_quiet(a):
    """Waits (at most a.wait s) until processes outside the benchmark use at
    most a.max_pct % of one core over 2 s."""
    start = time.monotonic()
    told = -1e9
    while True:
        before = cpu_ticks()
        time.sleep(2)
        after = cpu_ticks()
        hz = os.sysconf("SC_CLK_TCK")
        ours = sum(t - before[1].get(pid, (0, ""))[0] for pid, (t, c) in after[1].items()
                   if a.mark in c or pid == os.getpid())
        pct = 100.0 * max(0, after[0] - before[0] - ours) / (hz * 2)
        waited = time.monotonic() - start
        if pct <= a.max_pct:
            return 0
        if waited >= a.wait:
            print(f"WARNING: other processes still use {pct:.0f}% of a core after {waited:.0f} s; "
                  "measuring anyway", file=sys.stderr)
            return 0
        if waited - told >= 60:
            told = waited
            print(f"waiting for a quiet machine: other processes use {pct:.0f}% of a core", file=sys.stderr)


def cmd_busy(a):
    """Exit 0 if the run on stdin saw other processes above a.max_pct."""
    return 0 if json.loads(sys.stdin.read())["other_cpu_pct"] > a.max_pct else 1


def cmd_show_run(a):
    r = json.loads(sys.stdin.read())
    print(f"  {r['server']:>9}: {r['qps']:9.0f} q/s, avg latency {r['latency_avg_ms']:.3f} ms "
          f"(max {r['latency_max_ms']:.1f}), lost {r.get('lost', '?')}, server CPU {r['server_cpu_pct']:.0f}% "
          f"of one core, other processes {r['other_cpu_pct']:.0f}%")
    return 0


def cmd_throughput_report(a):
    runs = [json.loads(line) for line in open(a.file) if line.strip()]
    by = {}
    for r in runs:
        by.setdefault(r["server"], []).append(r)
    print("### Throughput (dnsperf)")
    print()
    print("| server | round | queries/s | avg latency ms | max latency ms | lost | response codes "
          "| bytes req/resp | server CPU (% of a core) | other processes CPU |")
    print("|---|---:|---:|---:|---:|---:|---|---|---:|---:|")
    for server in ("nsd", "knot", "raftvisor"):
        for r in by.get(server, []):
            print(f"| {server} | {r['round']} | {r['qps']:.0f} | {r['latency_avg_ms']:.3f} | {r['latency_max_ms']:.1f} "
                  f"| {r.get('lost', '?')} | {r.get('rcodes', '?')} | {r.get('request_bytes', '?')}/"
                  f"{r.get('response_bytes', '?')} | {r['server_cpu_pct']:.0f} | {r['other_cpu_pct']:.0f}% |")
    print()
    med = {s: statistics.median([r["qps"] for r in rs]) for s, rs in by.items()}
    lat = {s: statistics.median([r["latency_avg_ms"] for r in rs]) for s, rs in by.items()}
    cpu = {s: statistics.median([r["server_cpu_pct"] for r in rs]) for s, rs in by.items()}
    print("| server | median queries/s | median avg latency ms | median server CPU | queries per CPU-second |")
    print("|---|---:|---:|---:|---:|")
    for s in ("nsd", "knot", "raftvisor"):
        if s in med:
            per_cpu = med[s] / (cpu[s] / 100.0) if cpu[s] > 0 else float("nan")
            print(f"| {s} | {med[s]:.0f} | {lat[s]:.3f} | {cpu[s]:.0f}% | {per_cpu:.0f} |")
    print()
    rv = med.get("raftvisor")
    if rv:
        for ref in ("nsd", "knot"):
            if med.get(ref):
                print(f"- raftvisor / {ref} queries/s: {rv / med[ref]:.2f}; "
                      f"average latency raftvisor / {ref}: {lat['raftvisor'] / lat[ref]:.2f}")
        if med.get("nsd"):
            ok = rv >= 0.5 * med["nsd"]
            print(f"- goal raftvisor >= 0.5x NSD's queries/s: {'met' if ok else 'NOT met'} "
                  f"({rv:.0f} vs {0.5 * med['nsd']:.0f} needed)")
    print()
    return 0


# --- freshness: a hand-built DNS client (A queries over UDP) ---

def dns_query(qid, name):
    header = struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 0)  # RD off: an authoritative question
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    return header + qname + struct.pack("!HH", 1, 1)


def skip_name(msg, pos):
    while True:
        length = msg[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        pos += 1 + length


def a_records(msg, qid):
    """The A addresses of the answer section, or None if msg is not our answer."""
    if len(msg) < 12:
        return None
    rid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", msg[:12])
    if rid != qid or not flags & 0x8000:
        return None
    pos = 12
    for _ in range(qd):
        pos = skip_name(msg, pos) + 4
    out = []
    for _ in range(an):
        pos = skip_name(msg, pos)
        rtype, _, _, rdlen = struct.unpack("!HHIH", msg[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            out.append(socket.inet_ntoa(msg[pos:pos + 4]))
        pos += rdlen
    return out


def http(method, port, path, body=None, timeout=5):
    data = json.dumps(body).encode() if body is not None else None
    # raftvisor's API needs a token: the cluster's admin token.
    headers = {"Content-Type": "application/json",
               "Authorization": "Bearer " + os.environ.get("RAFTVISOR_TOKEN", "")}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def leader_port(api_ports, deadline):
    while time.monotonic() < deadline:
        for port in api_ports:
            try:
                _, body = http("GET", port, "/v1/cluster", timeout=1)
                status = json.loads(body)
                leader = status.get("leader_id")
                if leader:
                    members = {m.get("id"): m for m in status.get("members", [])}
                    addr = members.get(leader, {}).get("api_addr", "")
                    if addr:
                        return int(addr.rsplit(":", 1)[1])
                    return api_ports[leader - 1]
            except Exception:
                pass
        time.sleep(0.2)
    return None


def pct(values, p):
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, -(-len(s) * p // 100) - 1))
    return s[int(k)]


def cmd_freshness(a):
    api_ports = [int(p) for p in a.api.split(",")]
    dns_ports = [int(p) for p in a.dns.split(",")]
    name = f"x.fresh.svc.{DOMAIN}"
    deadline = time.monotonic() + 60
    leader = leader_port(api_ports, deadline)
    if leader is None:
        print("no leader within 60 s", file=sys.stderr)
        return 1
    # Ready: the service exists and every replica's DNS answers it.
    status, body = http("PUT", leader, "/v1/services/fresh/x", {"kind": "external", "addresses": ["10.0.0.1"]})
    if status != 200:
        print(f"creating the external service fresh/x: HTTP {status}: {body[:300]!r}", file=sys.stderr)
        return 1
    socks = {}
    for port in dns_ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("127.0.0.1", port))
        s.settimeout(0.2)
        socks[port] = s
    qid = [0]

    def ask(port):
        qid[0] = (qid[0] + 1) & 0xFFFF
        s = socks[port]
        s.send(dns_query(qid[0], name))
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            try:
                got = a_records(s.recv(4096), qid[0])
            except socket.timeout:
                return None
            if got is not None:
                return got
        return None

    for port in dns_ports:
        end = time.monotonic() + 30
        while ask(port) != ["10.0.0.1"]:
            if time.monotonic() > end:
                print(f"DNS on {port} does not answer {name} within 30 s", file=sys.stderr)
                return 1
            time.sleep(0.05)
    leader_dns = dns_ports[api_ports.index(leader)]
    followers = [p for p in dns_ports if p != leader_dns]
    print(f"leader API 127.0.0.1:{leader}; polling followers' DNS on {followers}; "
          f"{a.trials} trials", file=sys.stderr)
    rng = random.Random(7)
    trials = []
    failed = 0
    started = time.monotonic()
    for t in range(a.trials):
        if time.monotonic() - started > a.time_limit:
            print(f"time limit {a.time_limit} s reached after {t} trials", file=sys.stderr)
            break
        # A random phase relative to the heartbeats.
        time.sleep(rng.uniform(0.02, 0.12))
        address = f"10.0.{(t + 2) // 250}.{(t + 2) % 250 + 1}"
        ack = {}

        def put():
            try:
                status, body = http("PUT", leader, "/v1/services/fresh/x",
                                    {"kind": "external", "addresses": [address]})
                ack["status"] = status
                if status != 200:
                    ack["body"] = body[:200].decode(errors="replace")
            except Exception as e:
                ack["error"] = str(e)
            ack["t"] = time.monotonic()

        writer = threading.Thread(target=put)
        t_send = time.monotonic()
        writer.start()
        seen = {}
        polls = 0
        end = t_send + a.trial_timeout
        while len(seen) < len(followers) and time.monotonic() < end:
            for port in followers:
                if port in seen:
                    continue
                got = ask(port)
                polls += 1
                if got == [address]:
                    seen[port] = time.monotonic()
            if a.poll_ms > 0:
                time.sleep(a.poll_ms / 1000.0)
        writer.join(timeout=10)
        if ack.get("status") != 200 or len(seen) < len(followers):
            failed += 1
            print(f"trial {t}: write {ack}, followers that answered: {sorted(seen)}", file=sys.stderr)
            new_leader = leader_port(api_ports, time.monotonic() + 10)
            if new_leader and new_leader != leader:
                print(f"the leader changed to 127.0.0.1:{new_leader}; stopping", file=sys.stderr)
                break
            continue
        trials.append({
            "commit_ms": (ack["t"] - t_send) * 1000,
            "from_send_ms": {str(p): (seen[p] - t_send) * 1000 for p in followers},
            "from_ack_ms": {str(p): (seen[p] - ack["t"]) * 1000 for p in followers},
            "polls": polls,
        })
        if (t + 1) % 50 == 0:
            print(f"  {t + 1} trials", file=sys.stderr)
    final_leader = leader_port(api_ports, time.monotonic() + 5)
    with open(a.out, "w") as f:
        json.dump({"trials": trials, "failed": failed, "followers": followers,
                   "leader_api": leader, "leader_after": final_leader, "poll_ms": a.poll_ms}, f)
    return 0 if trials and failed == 0 else 1


def cmd_freshness_report(a):
    data = json.load(open(a.file))
    trials = data["trials"]
    print("### Freshness (write through the leader -> a follower's DNS answers it)")
    print()
    if not trials:
        print("no successful trials")
        return 0
    commit = [t["commit_ms"] for t in trials]
    send_each = [v for t in trials for v in t["from_send_ms"].values()]
    send_both = [max(t["from_send_ms"].values()) for t in trials]
    ack_each = [v for t in trials for v in t["from_ack_ms"].values()]
    ack_both = [max(t["from_ack_ms"].values()) for t in trials]

    def row(label, values):
        print(f"| {label} | {len(values)} | {pct(values, 50):.1f} | {pct(values, 90):.1f} | "
              f"{pct(values, 99):.1f} | {max(values):.1f} |")

    print(f"{len(trials)} trials, {data['failed']} failed; polling every ~{data['poll_ms']} ms; "
          f"leader API port {data['leader_api']} before, {data['leader_after']} after.")
    print()
    print("| measure | samples | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|")
    row("write sent -> write acknowledged (commit, HTTP round trip)", commit)
    row("write sent -> a follower answers the new address (each follower)", send_each)
    row("write sent -> both followers answer it", send_both)
    row("acknowledgement -> a follower answers it (each follower)", ack_each)
    row("acknowledgement -> both followers answer it", ack_both)
    print()
    p99 = pct(send_each, 99)
    print(f"- goal commit -> changed answer on a follower p99 <= 100 ms: "
          f"{'met' if p99 <= 100 else 'NOT met'} (p99 {p99:.1f} ms counted from sending the write, "
          f"{pct(ack_each, 99):.1f} ms from its acknowledgement)")
    print()
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("zone")
    s.add_argument("--services", type=int, required=True)
    s.add_argument("--replicas", type=int, required=True)
    s.add_argument("--nodes", type=int, required=True)
    s.set_defaults(fn=cmd_zone)
    s = sub.add_parser("queries")
    s.add_argument("--services", type=int, required=True)
    s.add_argument("--count", type=int, required=True)
    s.set_defaults(fn=cmd_queries)
    s = sub.add_parser("dnsperf")
    s.add_argument("--server", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--mark", required=True)
    s.add_argument("--mark-alt", default="")
    s.add_argument("--queries", required=True)
    s.add_argument("--cpu", type=int, required=True)
    s.add_argument("--clients", type=int, required=True)
    s.add_argument("--outstanding", type=int, required=True)
    s.add_argument("--duration", type=int, required=True)
    s.add_argument("--round", type=int, required=True)
    s.add_argument("--log", required=True)
    s.set_defaults(fn=cmd_dnsperf)
    s = sub.add_parser("quiet")
    s.add_argument("--mark", required=True)
    s.add_argument("--max-pct", type=float, required=True)
    s.add_argument("--wait", type=float, required=True)
    s.set_defaults(fn=cmd_quiet)
    s = sub.add_parser("busy")
    s.add_argument("--max-pct", type=float, required=True)
    s.set_defaults(fn=cmd_busy)
    s = sub.add_parser("show-run")
    s.set_defaults(fn=cmd_show_run)
    s = sub.add_parser("throughput-report")
    s.add_argument("file")
    s.set_defaults(fn=cmd_throughput_report)
    s = sub.add_parser("freshness")
    s.add_argument("--api", required=True)
    s.add_argument("--dns", required=True)
    s.add_argument("--trials", type=int, default=200)
    s.add_argument("--poll-ms", type=float, default=1)
    s.add_argument("--trial-timeout", type=float, default=5)
    s.add_argument("--time-limit", type=float, default=600)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_freshness)
    s = sub.add_parser("freshness-report")
    s.add_argument("file")
    s.set_defaults(fn=cmd_freshness_report)
    a = p.parse_args()
    sys.exit(a.fn(a))


if __name__ == "__main__":
    main()
PYTHON
}

main "$@"
