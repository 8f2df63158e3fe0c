# shellcheck shell=bash
# Shared helpers of the benchmark scripts (scripts/bench-*.sh); sourced, not run.
#
# Starts 3-member clusters on loopback, each in its own directory under one
# temporary work directory (BENCH_WORK/SYSTEM), and removes everything
# (processes and data) at exit. The measuring itself is done by wrk with
# scripts/bench/put.lua and by bench_tool (a Python 3 helper, stdlib only,
# written into the work directory from this file).
#
# Systems (bench_start SYSTEM):
#   raftvisor           the product's default security: mutual TLS between
#                       replicas, HTTPS API, every call with a bearer token
#   raftvisor-insecure  the same with [tls] insecure = true (plain HTTP on
#                       both ports, token still required)
#   etcd                plain HTTP
#   etcd-tls            HTTPS for clients (server authentication only: wrk
#                       cannot present a client certificate), mutual TLS
#                       between members
# The certificates of the TLS systems come from one CA per run, made with
# the binary's own commands (`raftvisor certs init|issue`) in BENCH_WORK/certs;
# bench_tool (Python) verifies the servers against it (BENCH_CA_FILE), wrk
# speaks https without verifying certificates.
#
# Ports (chosen not to clash with the dev cluster on 7001-7003/7101-7103;
# both raftvisor systems share them, and so do both etcd systems: clusters
# run one at a time, each stopped before the next starts):
#   raftvisor  api 17001-17003  peer 17101-17103  dns 17201-17203
#   etcd       client 23791-23793  peer 23801-23803
#
# Environment knobs shared by all scripts:
#   RAFTVISOR_BIN=path   use this binary instead of building one
#   SKIP_BUILD=1         use target/release/raftvisor as it is
#   KEEP_WORKDIR=1       keep the work directory (logs, data) at exit
#   BENCH_ETCD_HEARTBEAT_MS / BENCH_ETCD_ELECTION_MS   etcd timing flags
#                        (unset: etcd's defaults, 100 ms / 1000 ms)
#   BENCH_RAFTVISOR_HEARTBEAT_MS / BENCH_RAFTVISOR_ELECTION_MIN_MS /
#   BENCH_RAFTVISOR_ELECTION_MAX_MS   raftvisor's [raft] timing (default 30/100/150)
# Other RAFTVISOR_* variables of the calling shell are not passed to the
# replicas (they would override the generated config files).

# The benchmark clusters have a CA of their own (BENCH_CA_FILE); one
# exported for the dev cluster must not leak into anything started here.
unset RAFTVISOR_CA BENCH_CA_FILE
BENCH_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_SCRIPTS_DIR=$(cd "$BENCH_LIB_DIR/.." && pwd)
BENCH_REPO=$(cd "$BENCH_SCRIPTS_DIR/.." && pwd)
# API tokens: ensure_token_file, use_token_file.
# shellcheck source=scripts/lib/token.sh
. "$(dirname "${BASH_SOURCE[0]}")/token.sh"
# shellcheck disable=SC2034 # used by the scripts that source this file
BENCH_LUA="$BENCH_SCRIPTS_DIR/bench/put.lua"
BENCH_WORK=""
BENCH_RV_HEARTBEAT_MS=${BENCH_RAFTVISOR_HEARTBEAT_MS:-30}
BENCH_RV_ELECTION_MIN_MS=${BENCH_RAFTVISOR_ELECTION_MIN_MS:-100}
BENCH_RV_ELECTION_MAX_MS=${BENCH_RAFTVISOR_ELECTION_MAX_MS:-150}
BENCH_TOOL=""
BENCH_CERTS=""
RAFTVISOR_BIN=${RAFTVISOR_BIN:-}

bench_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
bench_die() { bench_log "error: $*"; exit 1; }

# Installs the Debian packages behind any missing command; apt only runs
# when something is missing.
bench_need() {
    local missing=() pair cmd pkg
    for pair in "$@"; do
        cmd=${pair%%:*}
        pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || bench_die "need root or sudo to install: ${missing[*]}"
        sudo=(sudo)
    fi
    bench_log "installing ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}

bench_need_common() {
    bench_need wrk:wrk etcd:etcd-server etcdctl:etcd-client python3:python3 curl:curl
}

# Builds (or locates) the release binary.
bench_build_raftvisor() {
    if [[ -n $RAFTVISOR_BIN ]]; then
        [[ -x $RAFTVISOR_BIN ]] || bench_die "RAFTVISOR_BIN=$RAFTVISOR_BIN is not executable"
        return 0
    fi
    RAFTVISOR_BIN="$BENCH_REPO/target/release/raftvisor"
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        bench_log "cargo build --release"
        (cd "$BENCH_REPO" && cargo build --release --quiet) || bench_die "cargo build --release failed"
    fi
    [[ -x $RAFTVISOR_BIN ]] || bench_die "no binary at $RAFTVISOR_BIN"
}

# True if pid is alive and its command line mentions marker (our work dir),
# so a recycled pid is never signalled.
bench_pid_is_ours() {
    local pid=$1 marker=$2
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker"
}

# Stops every member of one cluster directory (TERM, then KILL after 3 s).
# The marker ends in a slash: BENCH_WORK/raftvisor must not match the
# members of BENCH_WORK/raftvisor-insecure.
bench_stop_cluster() {
    local dir=${1%/} pidfile pid pids=() i
    for pidfile in "$dir"/*/pid; do
        [[ -f $pidfile ]] || continue
        pid=$(<"$pidfile")
        if [[ $pid =~ ^[0-9]+$ ]] && bench_pid_is_ours "$pid" "$dir/"; then
            kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
        fi
    done
    for ((i = 0; i < 30; i++)); do
        local alive=0
        for pid in "${pids[@]}"; do
            bench_pid_is_ours "$pid" "$dir/" && alive=1
        done
        [[ $alive -eq 0 ]] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        bench_pid_is_ours "$pid" "$dir/" && kill -KILL "$pid" 2>/dev/null
    done
    return 0
}

bench_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $BENCH_WORK && -d $BENCH_WORK ]]; then
        local dir
        # Every cluster directory (members.tsv) of every system.
        for dir in "$BENCH_WORK"/*/; do
            [[ -f $dir/members.tsv ]] && bench_stop_cluster "$dir"
        done
        wait 2>/dev/null
        if [[ ${KEEP_WORKDIR:-0} == 1 ]]; then
            bench_log "work directory kept: $BENCH_WORK"
        else
            rm -rf "$BENCH_WORK"
        fi
    fi
    exit "$rc"
}

# Creates the work directory, installs the exit trap and writes bench_tool.
bench_init_workdir() {
    BENCH_WORK=$(mktemp -d "${TMPDIR:-/tmp}/raftvisor-bench.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    BENCH_TOOL="$BENCH_WORK/bench_tool.py"
    bench_write_tool >"$BENCH_TOOL"
    # A private copy, so a rebuild in the tree during the run (or a restart
    # in a failover trial) cannot switch binaries.
    if [[ -n $RAFTVISOR_BIN ]]; then
        cp "$RAFTVISOR_BIN" "$BENCH_WORK/raftvisor-bin"
        RAFTVISOR_BIN="$BENCH_WORK/raftvisor-bin"
    fi
}

bench_tool() { python3 "$BENCH_TOOL" "$@"; }

# The machine is shared: before measuring, wait (QUIET_WAIT seconds at most,
# default 900) until processes other than the benchmark's use at most
# QUIET_MAX_PCT (default 10) % of the CPU. QUIET_WAIT=0 measures at once.
QUIET_WAIT=${QUIET_WAIT:-900}
QUIET_MAX_PCT=${QUIET_MAX_PCT:-10}
# A run during which other processes used more than QUIET_MAX_PCT % of the
# CPU is measured again, up to MAX_TRIES (default 3) times in all.
MAX_TRIES=${MAX_TRIES:-3}
bench_quiet() {
    bench_tool quiet --mark "$BENCH_WORK" --max-pct "$QUIET_MAX_PCT" --wait "$QUIET_WAIT"
}

# True when the kv-point file shows that other processes stayed within
# QUIET_MAX_PCT during the run.
bench_point_clean() {
    python3 -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1])).get("foreign_cpu_pct", 0) <= float(sys.argv[2]) else 1)' \
        "$1" "$QUIET_MAX_PCT"
}

# bench_wrk SYSTEM OUT SECONDS URL wrk-options...: runs wrk with put.lua
# against SYSTEM at URL (http or https; wrk does not verify certificates)
# for SECONDS, output in OUT, plus a BENCH_FOREIGN line (CPU used meanwhile
# by processes that are not the benchmark's).
bench_wrk() {
    local system=$1 out=$2 seconds=$3 url=$4
    shift 4
    # wrk sends the URL's host as SNI, and an IP address there is illegal
    # (rustls logs a warning per connection): https goes to localhost, a
    # name in the certificates, which resolves to 127.0.0.1.
    [[ $url == https://127.0.0.1:* ]] && url="https://localhost:${url#https://127.0.0.1:}"
    # put.lua knows two APIs: etcd's (etcd, etcd-tls) and raftvisor's.
    BENCH_TARGET=${system%%-*} bench_tool run-wrk --mark "$BENCH_WORK" --out "$out" --time-limit $((seconds + 60)) \
        -- wrk "$@" -d "${seconds}s" --timeout 10s -s "$BENCH_LUA" "$url"
}

# Member launchers: each cluster directory holds members.tsv (name, url,
# launcher, pid file) and one directory per member with run.sh, which
# records its pid and execs the server, so the scripts and bench_tool
# (which restarts killed members) start members the same way.
bench_start_member() {
    bash "$1/run.sh" </dev/null >/dev/null 2>&1 &
    disown
}

# bench_certs NAME...: makes the run's CA (once) and a manager certificate
# for each NAME not issued yet (127.0.0.1 and localhost as SANs), all in
# BENCH_WORK/certs with the binary's own commands, and exports the CA's path
# as BENCH_CA_FILE for bench_tool.
bench_certs() {
    BENCH_CERTS="$BENCH_WORK/certs"
    if [[ ! -f $BENCH_CERTS/ca.pem ]]; then
        "$RAFTVISOR_BIN" certs init --dir "$BENCH_CERTS" >"$BENCH_WORK/certs.log" 2>&1 ||
            bench_die "raftvisor certs init failed: $(tail -n 3 "$BENCH_WORK/certs.log")"
    fi
    local name
    for name in "$@"; do
        [[ -f $BENCH_CERTS/$name.pem ]] && continue
        "$RAFTVISOR_BIN" certs issue --dir "$BENCH_CERTS" --role manager --name "$name" \
            --id "${name##*-}" --san 127.0.0.1 --san localhost >>"$BENCH_WORK/certs.log" 2>&1 ||
            bench_die "raftvisor certs issue $name failed: $(tail -n 3 "$BENCH_WORK/certs.log")"
    done
    BENCH_CA_FILE="$BENCH_CERTS/ca.pem"
    export BENCH_CA_FILE
}

# bench_start_raftvisor SYSTEM: SYSTEM is raftvisor (TLS on both ports with
# certificates of the run's CA, the product's default) or raftvisor-insecure
# ([tls] insecure = true); both need the admin token on every call.
bench_start_raftvisor() {
    local system=$1 dir="$BENCH_WORK/$1" i j scheme=http
    rm -rf "$dir"
    mkdir -p "$dir"
    if [[ $system == raftvisor ]]; then
        bench_certs replica-1 replica-2 replica-3
        scheme=https
    fi
    # The cluster's admin token, for bench_tool (Python) and wrk (put.lua).
    ensure_token_file "$dir/bootstrap.token"
    use_token_file "$dir/bootstrap.token"
    : >"$dir/members.tsv"
    for i in 1 2 3; do
        local m="$dir/r$i"
        mkdir -p "$m"
        {
            echo "id = $i"
            echo "data_dir = \"$m/data\""
            echo "api_addr = \"127.0.0.1:1700$i\""
            echo "peer_addr = \"127.0.0.1:1710$i\""
            echo "dns_addr = \"127.0.0.1:1720$i\""
            for j in 1 2 3; do
                echo
                echo "[[members]]"
                echo "id = $j"
                echo "api_addr = \"127.0.0.1:1700$j\""
                echo "peer_addr = \"127.0.0.1:1710$j\""
            done
            echo
            echo "[raft]"
            echo "heartbeat_ms = $BENCH_RV_HEARTBEAT_MS"
            echo "election_min_ms = $BENCH_RV_ELECTION_MIN_MS"
            echo "election_max_ms = $BENCH_RV_ELECTION_MAX_MS"
            echo "snapshot_threshold = 10000"
            echo
            echo "[auth]"
            echo "bootstrap_token_file = \"$dir/bootstrap.token\""
            echo
            echo "[tls]"
            if [[ $system == raftvisor ]]; then
                echo "ca_cert = \"$BENCH_CERTS/ca.pem\""
                echo "cert = \"$BENCH_CERTS/replica-$i.pem\""
                echo "key = \"$BENCH_CERTS/replica-$i-key.pem\""
            else
                echo "# raftvisor-insecure: plain HTTP, to measure what TLS costs."
                echo "insecure = true"
            fi
        } >"$m/config.toml"
        cat >"$m/run.sh" <<EOF
echo \$\$ > '$m/pid'
for v in \$(compgen -e RAFTVISOR_); do [[ \$v == RAFTVISOR_LOG ]] || unset "\$v"; done
export RAFTVISOR_LOG=\${RAFTVISOR_LOG:-warn}
exec '$RAFTVISOR_BIN' agent --config '$m/config.toml' >>'$m/log' 2>&1
EOF
        printf 'r%s\t%s://127.0.0.1:1700%s\t%s\t%s\n' "$i" "$scheme" "$i" "$m/run.sh" "$m/pid" >>"$dir/members.tsv"
    done
    for i in 1 2 3; do
        bench_start_member "$dir/r$i"
    done
    bench_tool wait-ready --cluster "$dir" --system "$system" --timeout 60 >/dev/null ||
        bench_die "$system cluster did not become ready (logs: $dir/r*/log)"
}

# bench_start_etcd SYSTEM: etcd (plain HTTP) or etcd-tls (HTTPS for clients
# without client certificates, as wrk cannot present one; mutual TLS between
# members; certificates of the run's CA).
bench_start_etcd() {
    local system=$1 dir="$BENCH_WORK/$1" i initial="" timing=() scheme=http
    rm -rf "$dir"
    mkdir -p "$dir"
    if [[ $system == etcd-tls ]]; then
        bench_certs etcd-1 etcd-2 etcd-3
        scheme=https
    fi
    : >"$dir/members.tsv"
    for i in 1 2 3; do
        initial+="${initial:+,}e$i=$scheme://127.0.0.1:2380$i"
    done
    [[ -n ${BENCH_ETCD_HEARTBEAT_MS:-} ]] && timing+=(--heartbeat-interval "$BENCH_ETCD_HEARTBEAT_MS")
    [[ -n ${BENCH_ETCD_ELECTION_MS:-} ]] && timing+=(--election-timeout "$BENCH_ETCD_ELECTION_MS")
    for i in 1 2 3; do
        local m="$dir/e$i" tls=""
        mkdir -p "$m"
        if [[ $system == etcd-tls ]]; then
            tls="--cert-file '$BENCH_CERTS/etcd-$i.pem' --key-file '$BENCH_CERTS/etcd-$i-key.pem'"
            tls+=" --peer-cert-file '$BENCH_CERTS/etcd-$i.pem' --peer-key-file '$BENCH_CERTS/etcd-$i-key.pem'"
            tls+=" --peer-trusted-ca-file '$BENCH_CERTS/ca.pem' --peer-client-cert-auth"
        fi
        cat >"$m/run.sh" <<EOF
echo \$\$ > '$m/pid'
exec etcd --name e$i --data-dir '$m/data' \\
    --listen-client-urls $scheme://127.0.0.1:2379$i --advertise-client-urls $scheme://127.0.0.1:2379$i \\
    --listen-peer-urls $scheme://127.0.0.1:2380$i --initial-advertise-peer-urls $scheme://127.0.0.1:2380$i \\
    --initial-cluster '$initial' --initial-cluster-token raftvisor-bench --initial-cluster-state new \\
    $tls --logger zap --log-level warn ${timing[*]} >>'$m/log' 2>&1
EOF
        printf 'e%s\t%s://127.0.0.1:2379%s\t%s\t%s\n' "$i" "$scheme" "$i" "$m/run.sh" "$m/pid" >>"$dir/members.tsv"
    done
    for i in 1 2 3; do
        bench_start_member "$dir/e$i"
    done
    bench_tool wait-ready --cluster "$dir" --system "$system" --timeout 60 >/dev/null ||
        bench_die "$system cluster did not become ready (logs: $dir/e*/log)"
}

bench_start() {
    case $1 in
        etcd | etcd-tls) bench_start_etcd "$1" ;;
        raftvisor | raftvisor-insecure) bench_start_raftvisor "$1" ;;
        *) bench_die "unknown system $1 (etcd, etcd-tls, raftvisor, raftvisor-insecure)" ;;
    esac
}

# bench_security [--wrk] SYSTEM...: one line per system on how it was
# secured (with --wrk, also how wrk treats https).
bench_security() {
    local system wrk=0
    [[ ${1:-} == --wrk ]] && wrk=1 && shift
    for system in "$@"; do
        case $system in
            raftvisor) echo "- raftvisor: TLS on both ports (mutual TLS between replicas, HTTPS API; ECDSA P-256 certificates from \`raftvisor certs\`) and a bearer token on every call: the product's default" ;;
            raftvisor-insecure) echo "- raftvisor-insecure: [tls] insecure = true (plain HTTP on both ports); bearer token still on every call" ;;
            etcd) echo "- etcd: plain HTTP, no authentication" ;;
            etcd-tls) echo "- etcd-tls: HTTPS for clients (server certificate only; no client certificates, no etcd auth), mutual TLS between members, same CA" ;;
        esac
    done
    case " $* " in
        *" raftvisor "* | *" etcd-tls "*)
            echo "- bench_tool (Python) verifies the servers' certificates against the run's CA"
            [[ $wrk -eq 1 ]] && echo "- wrk speaks https without verifying the server certificate (fine for load generation)"
            ;;
    esac
    return 0
}

# Prints warnings and errors the members logged (at most 20 lines).
bench_log_problems() {
    local dir="$BENCH_WORK/$1" n pattern
    # etcd logs JSON (its "warn" level is chatty, so errors only);
    # raftvisor logs tracing's text format.
    # raftvisor-insecure's expected "INSECURE" warnings are left out.
    pattern='"level":"(error|fatal|panic)"|[[:space:]](ERROR|WARN)[^A-Za-z]|panicked'
    n=$(cat "$dir"/*/log 2>/dev/null | grep -E "$pattern" | grep -cv 'INSECURE: ' || true)
    if [[ $n -gt 0 ]]; then
        bench_log "$1: $n warning/error lines in member logs; first ones:"
        { grep -hE "$pattern" "$dir"/*/log | grep -v 'INSECURE: ' | sed 's/\x1b\[[0-9;]*m//g' | head -n 20 >&2; } || true
    fi
}

bench_timing() {
    echo "- timing: etcd heartbeat ${BENCH_ETCD_HEARTBEAT_MS:-100} ms, election ${BENCH_ETCD_ELECTION_MS:-1000} ms" \
        "$([[ -z ${BENCH_ETCD_HEARTBEAT_MS:-}${BENCH_ETCD_ELECTION_MS:-} ]] && echo "(etcd's defaults)");" \
        "raftvisor heartbeat $BENCH_RV_HEARTBEAT_MS ms, election $BENCH_RV_ELECTION_MIN_MS-$BENCH_RV_ELECTION_MAX_MS ms"
}

# Stops and starts again every member of a cluster, keeping its data.
bench_restart_cluster() {
    local system=$1 dir="$BENCH_WORK/$1" m
    bench_stop_cluster "$dir"
    for m in "$dir"/*/; do
        [[ -f $m/run.sh ]] && bench_start_member "${m%/}"
    done
    bench_tool wait-ready --cluster "$dir" --system "$system" --timeout 120 >/dev/null ||
        bench_die "$system did not become ready after a restart (logs: $dir/*/log)"
}

bench_machine() {
    echo "- cores: $(nproc)"
    echo "- CPU: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)"
    echo "- memory: $(free -h | awk '/^Mem:/ {print $2}')"
    echo "- kernel: $(uname -r)"
    echo "- etcd: $(etcd --version 2>/dev/null | head -n 1 | sed 's/^etcd Version: //')"
    echo "- wrk: $(wrk -v 2>&1 | head -n 1 | awk '{print $2}')"
    local rev dirty=""
    rev=$(cd "$BENCH_REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
    [[ -n $(cd "$BENCH_REPO" && git status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null) ]] &&
        dirty=" with uncommitted changes in src/"
    echo "- raftvisor: $rev$dirty (release build)"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
}

bench_write_tool() {
    cat <<'PYTHON'
"""Measuring helper of the raftvisor benchmark scripts (stdlib only)."""
import argparse
import base64
import http.client
import json
import math
import os
import queue
import signal
import ssl
import statistics
import subprocess
import sys
import threading
import time


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def integer(value):
    return int(value) if value not in (None, "") else 0


_contexts = {}


def tls_context():
    """Client TLS context trusting only the run's CA (BENCH_CA_FILE, made by
    bench_certs); it checks the server's certificate and name."""
    cafile = os.environ.get("BENCH_CA_FILE")
    if not cafile:
        raise RuntimeError("https member but no BENCH_CA_FILE")
    if cafile not in _contexts:
        _contexts[cafile] = ssl.create_default_context(cafile=cafile)
    return _contexts[cafile]


class Member:
    def __init__(self, name, url, run, pidfile):
        self.name, self.url, self.run, self.pidfile = name, url, run, pidfile
        scheme, host_port = url.split("://", 1)
        self.tls = scheme == "https"
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.dir = os.path.dirname(run)

    def connect(self, timeout):
        """A new (not yet connected) HTTP or HTTPS connection to the member."""
        if self.tls:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=tls_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def pid(self):
        """The member's pid if it is alive and really ours, else None."""
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError):
            return None
        if self.dir not in cmdline or state in ("Z", "X"):
            return None
        return pid


def load_members(cluster):
    members = []
    with open(os.path.join(cluster, "members.tsv")) as f:
        for line in f:
            if line.strip():
                members.append(Member(*line.rstrip("\n").split("\t")))
    return members


def call(member, method, path, body=None, headers=None, timeout=1.0, conn=None):
    own = conn is None
    if own:
        conn = member.connect(timeout)
    headers = dict(headers or {})
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


def raftvisor_headers(extra=None):
    """raftvisor's API needs a token: the cluster's admin token, which
    bench_start_raftvisor exports. (Never sent to etcd: its gateway takes
    an Authorization header for an etcd auth token and refuses the request.)"""
    headers = dict(extra or {})
    token = os.environ.get("RAFTVISOR_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


class Raftvisor:
    def __init__(self, name):
        self.name = name

    def status(self, member, timeout=1.0):
        code, data = call(member, "GET", "/v1/cluster", headers=raftvisor_headers(), timeout=timeout)
        if code != 200:
            raise RuntimeError(f"GET /v1/cluster: HTTP {code}")
        j = json.loads(data)
        leader = j.get("leader_id")
        return {"id": str(j["this_id"]), "leader": None if leader is None else str(leader),
                "term": integer(j.get("term")), "applied": integer(j.get("applied_index")),
                "state": j.get("state")}

    def put(self, key, value):
        return "PUT", "/v1/kv/" + key, value, raftvisor_headers({"Content-Type": "application/octet-stream"})

    def put_ok(self, code, data):
        return code == 200 and data.strip() == b"true"

    def count(self, member, prefix):
        code, data = call(member, "GET", "/v1/kv/" + prefix + "?keys", headers=raftvisor_headers(), timeout=30)
        if code == 404:
            return 0
        if code != 200:
            raise RuntimeError(f"GET keys: HTTP {code}")
        return len(json.loads(data))


class Etcd:
    def __init__(self, name):
        self.name = name

    def status(self, member, timeout=1.0):
        code, data = call(member, "POST", "/v3/maintenance/status", b"{}",
                          {"Content-Type": "application/json"}, timeout=timeout)
        if code != 200:
            raise RuntimeError(f"POST /v3/maintenance/status: HTTP {code}")
        j = json.loads(data)
        leader = j.get("leader")
        return {"id": str(j["header"]["member_id"]),
                "leader": None if leader in (None, "", "0") else str(leader),
                "term": integer(j.get("raftTerm") or j["header"].get("raft_term")),
                "applied": integer(j.get("raftAppliedIndex") or j.get("raftIndex")),
                "state": None}

    def put(self, key, value):
        body = json.dumps({"key": b64(key), "value": b64(value)})
        return "POST", "/v3/kv/put", body.encode(), {"Content-Type": "application/json"}

    def put_ok(self, code, data):
        if code != 200:
            return False
        try:
            return "header" in json.loads(data)
        except ValueError:
            return False

    def count(self, member, prefix):
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        body = json.dumps({"key": b64(prefix), "range_end": b64(end), "count_only": True})
        code, data = call(member, "POST", "/v3/kv/range", body.encode(),
                          {"Content-Type": "application/json"}, timeout=30)
        if code != 200:
            raise RuntimeError(f"POST /v3/kv/range: HTTP {code}")
        return integer(json.loads(data).get("count"))


# Names as in bench_start; the scheme (http/https) comes from members.tsv.
SYSTEMS = {"raftvisor": Raftvisor("raftvisor"), "raftvisor-insecure": Raftvisor("raftvisor-insecure"),
           "etcd": Etcd("etcd"), "etcd-tls": Etcd("etcd-tls")}


def statuses(api, members, timeout=0.5):
    out = {}
    for m in members:
        try:
            out[m.name] = api.status(m, timeout)
        except Exception as e:  # unreachable member
            out[m.name] = {"error": str(e)}
    return out


def agreed_leader(members, view):
    """The member every replica names as leader, or None."""
    leaders = {s.get("leader") for s in view.values()}
    if len(leaders) != 1 or None in leaders or any("error" in s for s in view.values()):
        return None
    leader_id = leaders.pop()
    for m in members:
        if view[m.name]["id"] == leader_id:
            return m
    return None


def try_put(api, member, key, value, timeout):
    method, path, body, headers = api.put(key, value)
    try:
        code, data = call(member, method, path, body, headers, timeout=timeout)
        return api.put_ok(code, data)
    except Exception:
        return False


def wait_ready(api, members, timeout, tag="ready"):
    """All members up, agreeing on a leader, accepting a write each, and
    caught up with the leader's applied index. Returns the leader."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        leader = agreed_leader(members, statuses(api, members))
        if leader is None or any(m.pid() is None for m in members):
            time.sleep(0.05)
            continue
        if not all(try_put(api, m, f"bench/{tag}/{m.name}/{attempt}", b"x" * 16, 2.0) for m in members):
            time.sleep(0.05)
            continue
        try:
            target = api.status(leader)["applied"]
        except Exception:
            continue
        while time.monotonic() < deadline:
            view = statuses(api, members)
            if all("error" not in s and s["applied"] >= target for s in view.values()):
                if agreed_leader(members, view) is leader:
                    return leader
                break
            time.sleep(0.05)
    return None


def percentile(values, p):
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def cmd_wait_ready(args):
    members = load_members(args.cluster)
    leader = wait_ready(SYSTEMS[args.system], members, args.timeout)
    if leader is None:
        print("not ready", file=sys.stderr)
        return 1
    print(leader.url)
    return 0


def cmd_status(args):
    api = SYSTEMS[args.system]
    members = load_members(args.cluster)
    view = statuses(api, members)
    leader = agreed_leader(members, view)
    terms = [s.get("term", 0) for s in view.values()]
    print(json.dumps({"leader": leader.name if leader else None,
                      "leader_url": leader.url if leader else None,
                      "term": max(terms) if terms else 0,
                      "members": view}))
    return 0


def poll_writes(api, survivors, t0, poll_s, req_timeout, limit_s, tag):
    """Starts a write to a survivor every poll_s seconds (each with its own
    short timeout, alternating survivors) until one is acknowledged.
    Returns (seconds from t0 to the first acknowledgement or None,
    attempts, failed attempts, name of the acknowledging member)."""
    results = queue.Queue()
    active = [0]
    lock = threading.Lock()
    max_active = int(math.ceil(req_timeout / poll_s)) + 4

    def attempt(member, key):
        ok = try_put(api, member, key, b"f" * 256, req_timeout)
        done = time.monotonic()
        with lock:
            active[0] -= 1
        results.put((ok, done, member.name))

    sent = failed = 0
    next_send = t0
    first = None
    while first is None:
        now = time.monotonic()
        if now - t0 > limit_s:
            break
        if now >= next_send:
            with lock:
                room = active[0] < max_active
                if room:
                    active[0] += 1
            if room:
                member = survivors[sent % len(survivors)]
                threading.Thread(target=attempt, args=(member, f"bench/failover/{tag}/{sent}"),
                                 daemon=True).start()
                sent += 1
            next_send += poll_s
            if next_send < now:
                next_send = now + poll_s
        wait = max(0.0, min(next_send, t0 + limit_s) - time.monotonic())
        try:
            ok, done, name = results.get(timeout=wait)
        except queue.Empty:
            continue
        while True:
            if ok and first is None:
                first = (done - t0, name)
            elif not ok:
                failed += 1
            try:
                ok, done, name = results.get_nowait()
            except queue.Empty:
                break
    # let the attempts still out finish (each is bounded by req_timeout)
    end = time.monotonic() + req_timeout + 1.0
    while time.monotonic() < end:
        with lock:
            if active[0] == 0:
                break
        time.sleep(0.01)
    if first is None:
        return None, sent, failed, None
    return first[0], sent, failed, first[1]


def cmd_failover(args):
    api = SYSTEMS[args.system]
    members = load_members(args.cluster)
    children = []
    times = []
    failures = 0
    trials = []
    redo = 0
    trial = 0
    while trial < args.trials:
        if redo == 0:
            trial += 1
        leader = wait_ready(api, members, args.ready_timeout, tag=f"ready{trial}")
        if leader is None:
            print(f"{api.name}: cluster not healthy before trial {trial}; stopping", file=sys.stderr)
            return 1
        if args.quiet_mark:
            foreign = quiet_wait(args.quiet_mark, args.quiet_max_pct, args.quiet_wait, max(args.settle, 0.5))
        else:
            foreign = None
            time.sleep(args.settle)
        view = statuses(api, members)
        leader = agreed_leader(members, view)
        pid = leader.pid() if leader else None
        if leader is None or pid is None:
            print(f"{api.name}: leader changed while settling before trial {trial}; retrying", file=sys.stderr)
            continue
        term_before = view[leader.name]["term"]
        survivors = [m for m in members if m is not leader]
        ticks_before = cpu_ticks() if args.quiet_mark else None
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        elapsed, sent, failed, via = poll_writes(api, survivors, t0, args.poll_ms / 1000.0,
                                                 args.request_timeout_ms / 1000.0, args.trial_timeout,
                                                 f"t{trial}")
        during = None
        if ticks_before is not None:
            during, _ = foreign_share(args.quiet_mark, ticks_before, cpu_ticks(), time.monotonic() - t0)
        after = statuses(api, survivors)
        term_after = max((s.get("term", 0) for s in after.values()), default=0)
        # the killed process must be gone before it is started again
        gone_by = time.monotonic() + 5
        while leader.pid() is not None and time.monotonic() < gone_by:
            for child in children:
                child.poll()
            time.sleep(0.01)
        children.append(subprocess.Popen(["bash", leader.run], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True))
        record = {"trial": trial, "killed": leader.name, "term_before": term_before,
                  "term_after": term_after, "attempts": sent, "failed_attempts": failed,
                  "ack_via": via, "ms": None if elapsed is None else round(elapsed * 1000, 2),
                  "foreign_cpu_pct_before": None if foreign is None else round(foreign, 1),
                  "foreign_cpu_pct_during": None if during is None else round(during, 1)}
        if during is not None and during > args.quiet_max_pct and redo < args.max_redo:
            redo += 1
            print(f"{api.name} trial {trial:2d}: other processes used {during:.0f}% of the CPU during the "
                  f"trial ({'n/a' if elapsed is None else f'{elapsed * 1000:.1f} ms'}); measuring it again",
                  file=sys.stderr)
            continue
        redo = 0
        trials.append(record)
        if elapsed is None:
            failures += 1
            print(f"{api.name} trial {trial:2d}: killed {leader.name}; NO write acknowledged within "
                  f"{args.trial_timeout:.0f} s ({sent} attempts)", file=sys.stderr)
        else:
            times.append(elapsed * 1000)
            print(f"{api.name} trial {trial:2d}: killed {leader.name} (term {term_before}) -> first ack "
                  f"{elapsed * 1000:7.1f} ms via {via}, term now {term_after}, {sent} attempts "
                  f"({failed} failed)", file=sys.stderr)
    if wait_ready(api, members, args.ready_timeout, tag="ready-end") is None:
        print(f"{api.name}: cluster not healthy after the last trial", file=sys.stderr)
    for child in children:
        child.poll()
    summary = {"system": api.name, "trials": len(trials), "failures": failures,
               "median_ms": statistics.median(times) if times else None,
               "p99_ms": percentile(times, 99) if times else None,
               "max_ms": max(times) if times else None,
               "min_ms": min(times) if times else None,
               "mean_ms": statistics.mean(times) if times else None,
               "poll_ms": args.poll_ms, "request_timeout_ms": args.request_timeout_ms,
               "records": trials}
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    return 0


def fmt(value, digits=1):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def cmd_failover_report(args):
    with open(args.etcd) as f:
        e = json.load(f)
    with open(args.raftvisor) as f:
        r = json.load(f)
    rows = [("median", "median_ms"), ("p99", "p99_ms"), ("max", "max_ms"), ("min", "min_ms"), ("mean", "mean_ms")]
    print("| SIGKILL leader -> first acknowledged write | etcd (ms) | raftvisor (ms) | raftvisor/etcd |")
    print("|---|---:|---:|---:|")
    for label, key in rows:
        print(f"| {label} | {fmt(e[key])} | {fmt(r[key])} | {fmt(ratio(r[key], e[key]), 2)} |")
    print(f"| trials (failed) | {e['trials']} ({e['failures']}) | {r['trials']} ({r['failures']}) | |")
    print()
    med = ratio(r["median_ms"], e["median_ms"])
    goal1 = med is not None and med <= 0.3 and r["failures"] == 0
    goal2 = r["p99_ms"] is not None and r["p99_ms"] <= 500 and r["failures"] == 0
    print(f"- goal median <= 0.3x etcd: {'MET' if goal1 else 'NOT MET'} (ratio {fmt(med, 2)})")
    print(f"- goal p99 <= 500 ms: {'MET' if goal2 else 'NOT MET'} (p99 {fmt(r['p99_ms'])} ms)")
    print(f"- p99 is nearest-rank over {r['trials']} trials; writes every {r['poll_ms']} ms, "
          f"{r['request_timeout_ms']} ms timeout each")
    for d in (e, r):
        shares = [t["foreign_cpu_pct_during"] for t in d["records"] if t.get("foreign_cpu_pct_during") is not None]
        if shares:
            print(f"- {d['system']}: other processes used at most {max(shares):.0f}% of the CPU during a "
                  f"counted trial (median {statistics.median(shares):.0f}%)")
    return 0


def kv_table(by, clients, base, other, cost=False):
    """Rows of writes/s, p50 and p99 of base and other at each client count,
    with the ratios other/base (and, with cost, the share of base's writes/s
    that other loses)."""
    head = (f"| clients | {base} writes/s | {base} p50 ms | {base} p99 ms | {other} writes/s "
            f"| {other} p50 ms | {other} p99 ms | writes/s ratio | p99 ratio |")
    rule = "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    if cost:
        head += " writes/s lost |"
        rule += "---:|"
    print(head)
    print(rule)
    for c in clients:
        b, o = by.get((base, c)), by.get((other, c))
        cells = [str(c)]
        for p in (b, o):
            cells += [fmt(p["ok_rps"], 0), fmt(p["p50_ms"], 2), fmt(p["p99_ms"], 2)] if p else ["n/a"] * 3
        tr = ratio(o["ok_rps"], b["ok_rps"]) if b and o else None
        cells.append(fmt(tr, 2))
        cells.append(fmt(ratio(o["p99_ms"], b["p99_ms"]), 2) if b and o else "n/a")
        if cost:
            cells.append("n/a" if tr is None else f"{(1 - tr) * 100:.0f} %")
        print("| " + " | ".join(cells) + " |")
    print()


def cmd_kv_report(args):
    points = []
    for path in args.results:
        with open(path) as f:
            points.append(json.load(f))
    by = {(p["system"], p["clients"]): p for p in points}
    clients = sorted({p["clients"] for p in points})
    systems = {p["system"] for p in points}
    print("raftvisor (TLS on both ports + token, the default) against etcd (plain HTTP); "
          "ratios raftvisor/etcd:")
    print()
    kv_table(by, clients, "etcd", "raftvisor")
    if "raftvisor-insecure" in systems:
        print("TLS cost: raftvisor (TLS) against raftvisor-insecure (plain HTTP), both with the token; "
              "ratios TLS/insecure, writes/s lost = 1 - ratio:")
        print()
        kv_table(by, clients, "raftvisor-insecure", "raftvisor", cost=True)
        if "etcd" in systems:
            print("Plain HTTP on both sides: raftvisor-insecure against etcd; ratios raftvisor-insecure/etcd:")
            print()
            kv_table(by, clients, "etcd", "raftvisor-insecure")
    if "etcd-tls" in systems:
        if "etcd" in systems:
            print("etcd's TLS cost: etcd-tls (HTTPS clients, mutual TLS peers) against etcd (plain HTTP); "
                  "ratios etcd-tls/etcd:")
            print()
            kv_table(by, clients, "etcd", "etcd-tls", cost=True)
        print("TLS on both sides: raftvisor (TLS) against etcd-tls; ratios raftvisor/etcd-tls:")
        print()
        kv_table(by, clients, "etcd-tls", "raftvisor")
    print("CPU during each run (share of all cores): members / wrk / other processes")
    print()
    for p in points:
        if "foreign_cpu_pct" in p:
            flag = "  <-- OTHER LOAD ON THE MACHINE" if p["foreign_cpu_pct"] > 5 else ""
            print(f"- {p['system']} {p['clients']} clients: {p['members_cpu_pct']:.0f}% / {p['wrk_cpu_pct']:.0f}% / "
                  f"{p['foreign_cpu_pct']:.0f}%{' (' + ', '.join(p['top']) + ')' if p['top'] and p['foreign_cpu_pct'] > 5 else ''}{flag}")
    print()
    for p in points:
        if p["errors"]:
            print(f"- {p['system']} at {p['clients']} clients: {p['errors']} failed requests "
                  f"({p['status_errors']} non-2xx, {p['timeouts']} timeouts)")
    costs = []
    for c in clients:
        s, i = by.get(("raftvisor", c)), by.get(("raftvisor-insecure", c))
        tr = ratio(s["ok_rps"], i["ok_rps"]) if s and i else None
        if tr is not None:
            costs.append(f"{c} clients {(1 - tr) * 100:.0f} % of the writes/s "
                         f"(p99 {fmt(s['p99_ms'], 2)} vs {fmt(i['p99_ms'], 2)} ms)")
    if costs:
        print("- TLS cost (raftvisor against raftvisor-insecure): " + "; ".join(costs))
    e, r = by.get(("etcd", 64)), by.get(("raftvisor", 64))
    if e and r:
        tr = ratio(r["ok_rps"], e["ok_rps"])
        ok1 = tr is not None and tr >= 1.5
        ok2 = r["p99_ms"] <= e["p99_ms"]
        print(f"- goal at 64 clients, raftvisor (TLS) >= 1.5x etcd's writes/s: {'MET' if ok1 else 'NOT MET'} "
              f"({fmt(r['ok_rps'], 0)} vs {fmt(e['ok_rps'], 0)} writes/s, ratio {fmt(tr, 2)})")
        print(f"- goal at 64 clients, raftvisor (TLS) p99 no worse than etcd's: {'MET' if ok2 else 'NOT MET'} "
              f"({fmt(r['p99_ms'], 2)} ms vs {fmt(e['p99_ms'], 2)} ms)")
    for p in points:
        if "term_before" in p:
            same = p["term_before"] == p["term_after"] and p["leader_before"] == p["leader_after"]
            print(f"- {p['system']} {p['clients']} clients: term {p['term_before']} -> {p['term_after']}, "
                  f"leader {p['leader_before']} -> {p['leader_after']}: "
                  f"{'no election during the run' if same else 'ELECTION(S) DURING THE RUN'}")
    return 0


def cmd_kv_point(args):
    """Combines wrk's BENCH_JSON line with the before/after status into one file."""
    line = None
    with open(args.wrk_output) as f:
        for text in f:
            if text.startswith("BENCH_JSON "):
                line = json.loads(text[len("BENCH_JSON "):])
    if line is None:
        print(f"no BENCH_JSON line in {args.wrk_output}", file=sys.stderr)
        return 1
    with open(args.before) as f:
        before = json.load(f)
    with open(args.after) as f:
        after = json.load(f)
    with open(args.wrk_output) as f:
        for text in f:
            if text.startswith("BENCH_FOREIGN "):
                line.update(json.loads(text[len("BENCH_FOREIGN "):]))
    line.update({"system": args.system, "clients": args.clients, "threads": args.threads,
                 "term_before": before["term"], "term_after": after["term"],
                 "leader_before": before["leader"], "leader_after": after["leader"]})
    with open(args.out, "w") as f:
        json.dump(line, f)
    return 0


def cmd_term_check(args):
    """One line per kv-point file: did the term or leader change during the run?"""
    for path in args.points:
        with open(path) as f:
            p = json.load(f)
        same = p["term_before"] == p["term_after"] and p["leader_before"] == p["leader_after"]
        print(f"- {p['system']} under {p['clients']}-client write load for {p['duration_s']:.0f} s "
              f"({fmt(p['ok_rps'], 0)} writes/s, {p['errors']} errors): term {p['term_before']} -> "
              f"{p['term_after']}, leader {p['leader_before']} -> {p['leader_after']}: "
              f"{'no election' if same else 'ELECTION(S) DURING THE RUN'}"
              + (f" (other processes used {p['foreign_cpu_pct']:.0f}% of the CPU meanwhile)"
                 if p.get("foreign_cpu_pct", 0) > 5 else ""))
    return 0


def cpu_ticks():
    """(total busy ticks of the machine, {pid: (ticks, cmdline)})."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    busy = fields[0] + fields[1] + fields[2] + sum(fields[5:8])
    procs = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
            comm = text[text.find("(") + 1:text.rfind(")")]
            rest = text.rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        procs[int(entry)] = (int(rest[11]) + int(rest[12]), cmdline, comm)
    return busy, procs


def foreign_share(mark, before, after, seconds, own_pids=()):
    """Share of the machine's CPU (0..100 %) used by processes that are not
    the benchmark's (cmdline without mark, pid not in own_pids), plus the
    heaviest of them."""
    hz = os.sysconf("SC_CLK_TCK")
    ncpu = os.cpu_count() or 1
    used = {}
    for pid, (ticks, cmdline, comm) in after[1].items():
        if mark in cmdline or pid in own_pids or pid == os.getpid():
            continue
        used[pid] = (ticks - before[1].get(pid, (0,))[0], comm)
    total = sum(t for t, _ in used.values())
    top = sorted(used.values(), reverse=True)[:3]
    pct = 100.0 * total / (hz * ncpu * seconds)
    return pct, [f"{c} {100.0 * t / (hz * ncpu * seconds):.0f}%" for t, c in top if t > 0]


def quiet_wait(mark, max_pct, wait, sample=2.0):
    """Waits (at most wait seconds) until processes outside the benchmark
    use at most max_pct of the CPU over a sample; returns the last share."""
    start = time.monotonic()
    told = -60.0
    while True:
        before = cpu_ticks()
        time.sleep(sample)
        after = cpu_ticks()
        pct, top = foreign_share(mark, before, after, sample)
        waited = time.monotonic() - start
        if pct <= max_pct:
            if waited > sample + 1:
                print(f"machine quiet after {waited:.0f} s (other processes {pct:.0f}% CPU)", file=sys.stderr)
            return pct
        if waited >= wait:
            print(f"WARNING: machine still busy after {waited:.0f} s: other processes use {pct:.0f}% "
                  f"of the CPU ({', '.join(top)}); measuring anyway", file=sys.stderr)
            return pct
        if waited - told >= 60:
            told = waited
            print(f"waiting for a quiet machine: other processes use {pct:.0f}% of the CPU "
                  f"({', '.join(top)})", file=sys.stderr)
        time.sleep(1)


def cmd_quiet(args):
    quiet_wait(args.mark, args.max_pct, args.wait)
    return 0


def cmd_run_wrk(args):
    """Runs wrk (bounded in time), and appends to its output a BENCH_FOREIGN
    line: the CPU share that processes other than the benchmark's (its
    members and wrk) used meanwhile, from /proc/stat minus their own time."""
    hz = os.sysconf("SC_CLK_TCK")
    ncpu = os.cpu_count() or 1
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    before = cpu_ticks()
    t0 = time.monotonic()
    with open(args.out, "w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            rc = child.wait(timeout=args.time_limit)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            rc = -9
    seconds = time.monotonic() - t0
    after = cpu_ticks()
    wrk_ticks = 0
    try:
        import resource
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk_ticks = (usage.ru_utime + usage.ru_stime) * hz
    except Exception:
        pass
    ours = sum(t - before[1].get(pid, (0,))[0] for pid, (t, c, _) in after[1].items() if args.mark in c)
    machine = after[0] - before[0]
    foreign_ticks = max(0.0, machine - ours - wrk_ticks)
    pct = 100.0 * foreign_ticks / (hz * ncpu * seconds)
    _, top = foreign_share(args.mark, before, after, seconds)
    with open(args.out, "a") as out:
        out.write("BENCH_FOREIGN " + json.dumps({"foreign_cpu_pct": round(pct, 1), "top": top,
                                                  "wrk_cpu_pct": round(100.0 * wrk_ticks / (hz * ncpu * seconds), 1),
                                                  "members_cpu_pct": round(100.0 * ours / (hz * ncpu * seconds), 1)})
                  + "\n")
    return rc


def cmd_load(args):
    """Writes keys prefix000000.. with value_size-byte random printable values."""
    api = SYSTEMS[args.system]
    members = load_members(args.cluster)
    target = next(m for m in members if m.url == args.url)
    failures = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + args.time_limit

    def worker(index):
        conn = None
        for n in range(index, args.count, args.concurrency):
            if time.monotonic() > deadline:
                return
            value = b64(os.urandom(args.value_size))[: args.value_size].encode()
            method, path, body, headers = api.put(f"{args.prefix}{n:07d}", value)
            for _ in range(5):
                try:
                    if conn is None:
                        conn = target.connect(10)
                    code, data = call(target, method, path, body, headers, conn=conn)
                    if api.put_ok(code, data):
                        break
                except Exception:
                    if conn is not None:
                        conn.close()
                    conn = None
            else:
                with lock:
                    failures[0] += 1
        if conn is not None:
            conn.close()

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - start
    count = api.count(target, args.prefix)
    print(json.dumps({"system": api.name, "written": args.count, "value_size": args.value_size,
                      "failed": failures[0],
                      "seconds": round(took, 1), "keys_found": count}))
    return 0 if failures[0] == 0 and count >= args.count else 1


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0])  # kB
    return out


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def cmd_rss(args):
    members = load_members(args.cluster)
    out = {}
    for m in members:
        pid = m.pid()
        out[m.name] = proc_status(pid) if pid else {"error": "not running"}
        out[m.name]["disk_kB"] = dir_bytes(os.path.join(m.dir, "data")) // 1024
    print(json.dumps(out))
    return 0


def cmd_memory_report(args):
    def read(system, what):
        path = os.path.join(args.dir, f"{system}-{what}.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def mib(kb):
        return fmt(kb / 1024.0, 1) if isinstance(kb, (int, float)) else "n/a"

    print("| system | member | RSS empty | RSS with the keys | anon | file | peak (VmHWM) "
          "| RSS after restart | data dir |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    largest = {}
    for system in ("etcd", "etcd-tls", "raftvisor", "raftvisor-insecure"):
        full = read(system, "loaded")
        if full is None:
            continue
        empty = read(system, "empty") or {}
        again = read(system, "restarted") or {}
        for name in sorted(full):
            s, z, r = full[name], empty.get(name, {}), again.get(name, {})
            print(f"| {system} | {name} | {mib(z.get('VmRSS'))} | {mib(s.get('VmRSS'))} | {mib(s.get('RssAnon'))} "
                  f"| {mib(s.get('RssFile'))} | {mib(s.get('VmHWM'))} | {mib(r.get('VmRSS'))} | {mib(s.get('disk_kB'))} |")
        rss = [s.get("VmRSS") for s in full.values() if isinstance(s.get("VmRSS"), int)]
        largest[system] = max(rss) if rss else None
    print()
    print("(MiB; RSS = VmRSS, anon = RssAnon, file = RssFile, from /proc/PID/status)")
    print()
    if largest.get("etcd") and largest.get("raftvisor"):
        print(f"- largest replica RSS holding the keys: raftvisor {mib(largest['raftvisor'])} MiB, "
              f"etcd {mib(largest['etcd'])} MiB, ratio raftvisor/etcd {fmt(largest['raftvisor'] / largest['etcd'], 2)}")
    for system in ("etcd", "etcd-tls", "raftvisor", "raftvisor-insecure"):
        load = read(system, "load")
        if load:
            print(f"- {system}: {load['written']} keys of {load['value_size']} B written in {load['seconds']} s "
                  f"({load['failed']} failed), {load['keys_found']} found by a prefix count")
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("wait-ready")
    s.add_argument("--cluster", required=True)
    s.add_argument("--system", required=True, choices=SYSTEMS)
    s.add_argument("--timeout", type=float, default=60)
    s.set_defaults(fn=cmd_wait_ready)
    s = sub.add_parser("status")
    s.add_argument("--cluster", required=True)
    s.add_argument("--system", required=True, choices=SYSTEMS)
    s.set_defaults(fn=cmd_status)
    s = sub.add_parser("failover")
    s.add_argument("--cluster", required=True)
    s.add_argument("--system", required=True, choices=SYSTEMS)
    s.add_argument("--trials", type=int, default=20)
    s.add_argument("--poll-ms", type=float, default=10)
    s.add_argument("--request-timeout-ms", type=float, default=100)
    s.add_argument("--trial-timeout", type=float, default=15)
    s.add_argument("--ready-timeout", type=float, default=60)
    s.add_argument("--settle", type=float, default=1.0)
    s.add_argument("--quiet-mark", default="")
    s.add_argument("--quiet-max-pct", type=float, default=10)
    s.add_argument("--quiet-wait", type=float, default=900)
    s.add_argument("--max-redo", type=int, default=2)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_failover)
    s = sub.add_parser("failover-report")
    s.add_argument("--etcd", required=True)
    s.add_argument("--raftvisor", required=True)
    s.set_defaults(fn=cmd_failover_report)
    s = sub.add_parser("kv-point")
    for name in ("--system", "--wrk-output", "--before", "--after", "--out"):
        s.add_argument(name, required=True)
    s.add_argument("--clients", type=int, required=True)
    s.add_argument("--threads", type=int, required=True)
    s.set_defaults(fn=cmd_kv_point)
    s = sub.add_parser("kv-report")
    s.add_argument("results", nargs="+")
    s.set_defaults(fn=cmd_kv_report)
    s = sub.add_parser("quiet")
    s.add_argument("--mark", required=True)
    s.add_argument("--max-pct", type=float, default=10)
    s.add_argument("--wait", type=float, default=900)
    s.set_defaults(fn=cmd_quiet)
    s = sub.add_parser("run-wrk")
    s.add_argument("--mark", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--time-limit", type=float, required=True)
    s.add_argument("command", nargs=argparse.REMAINDER)
    s.set_defaults(fn=cmd_run_wrk)
    s = sub.add_parser("term-check")
    s.add_argument("points", nargs="+")
    s.set_defaults(fn=cmd_term_check)
    s = sub.add_parser("load")
    s.add_argument("--cluster", required=True)
    s.add_argument("--system", required=True, choices=SYSTEMS)
    s.add_argument("--url", required=True)
    s.add_argument("--count", type=int, default=100000)
    s.add_argument("--value-size", type=int, default=256)
    s.add_argument("--prefix", default="bench/mem/")
    s.add_argument("--concurrency", type=int, default=16)
    s.add_argument("--time-limit", type=float, default=900)
    s.set_defaults(fn=cmd_load)
    s = sub.add_parser("rss")
    s.add_argument("--cluster", required=True)
    s.set_defaults(fn=cmd_rss)
    s = sub.add_parser("memory-report")
    s.add_argument("dir")
    s.set_defaults(fn=cmd_memory_report)
    args = p.parse_args()
    sys.exit(args.fn(args))


if __name__ == "__main__":
    main()
PYTHON
}
