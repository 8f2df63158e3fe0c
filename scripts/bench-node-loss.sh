#!/usr/bin/env bash
# Benchmark: a node becomes unreachable -> every instance it ran runs on
# another node. Goal: <= 3 s (published defaults: Docker Swarm ~15 s,
# Nomad ~20-30 s, Kubernetes ~6 min).
#
# One three-replica cluster, two nodes on the local Docker Engine:
#   n1  reached through a TCP proxy to the Docker socket
#       (socat TCP-LISTEN:PORT,fork UNIX-CONNECT:/var/run/docker.sock in its
#       own process group); killing that group cuts the node, established
#       connections (event streams, keep-alive) included;
#   n2  the Docker socket itself.
# A service with REPLICAS instances (default 4) is spread over both nodes
# (2 + 2). A trial kills the proxy and polls the Docker API until REPLICAS
# containers of the service labelled raftvisor.node=n2 run; it also notes
# when the API first shows n1 down. Between trials the proxy is restarted,
# n1 is fenced and marked ready by raftvisor again (its stale containers
# removed), and the service is deleted and deployed anew so it is spread
# 2 + 2 again.
#
# The supervisor runs with its defaults: node_grace_ms 2000 (a node is down
# after 2 s without a successful /_ping), probe_interval_ms 250.
#
#   scripts/bench-node-loss.sh            # 10 trials, ~3 minutes
#   TRIALS=3 scripts/bench-node-loss.sh
#
# Environment: TRIALS=10, REPLICAS=4, NODE_GRACE_MS=2000, PROBE_MS=250,
# POLL_MS=10, TRIAL_TIMEOUT_S=60, PROXY_PORT=27501, and RAFTVISOR_BIN,
# SKIP_BUILD, KEEP_WORKDIR, CARGO_BUILD_JOBS as in bench-restart.sh, whose
# cluster helpers this script sources. Ports: API 27001-27003, peer
# 27101-27103, DNS 28601-28603, proxy 27501. Everything (replicas, proxy,
# containers, work directory) is removed at exit.
set -euo pipefail
# shellcheck source=scripts/bench-restart.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-restart.sh"

NL_PROXY_PORT=${PROXY_PORT:-27501}
NL_PROXY_PGID=""

# Starts the proxy in its own session (its pid is its process group).
nl_proxy_up() {
    if (exec 3<>"/dev/tcp/127.0.0.1/$NL_PROXY_PORT") 2>/dev/null; then
        svb_die "port $NL_PROXY_PORT is in use"
    fi
    # -lf names the work directory on socat's command line, so the exit
    # trap recognises it (and never signals a recycled process group).
    setsid socat -lf "$SVB_WORK/socat.log" "TCP-LISTEN:$NL_PROXY_PORT,bind=127.0.0.1,reuseaddr,fork" \
        "UNIX-CONNECT:$SVB_DOCKER_SOCK" </dev/null >/dev/null 2>&1 &
    NL_PROXY_PGID=$!
    # Not a job of this shell: no "Killed" notice when a trial cuts it.
    disown "$NL_PROXY_PGID"
    SVB_PGIDS=("$NL_PROXY_PGID")
    local i
    for ((i = 0; i < 50; i++)); do
        curl -fsS --max-time 1 "http://127.0.0.1:$NL_PROXY_PORT/_ping" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fsS --max-time 1 "http://127.0.0.1:$NL_PROXY_PORT/_ping" >/dev/null 2>&1 ||
        svb_die "the proxy on port $NL_PROXY_PORT does not answer"
    [[ $(ps -o pgid= -p "$NL_PROXY_PGID" | tr -d ' ') == "$NL_PROXY_PGID" ]] ||
        svb_die "socat is not the leader of its process group"
}

nl_node_state() {
    rv_curl -fsS --max-time 1 "http://127.0.0.1:${SVB_API_PORTS[0]}/v1/nodes/$1" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])'
}

nl_wait_node_ready() {
    local deadline=$((SECONDS + 60)) state=""
    while [[ $SECONDS -lt $deadline ]]; do
        state=$(nl_node_state "$1" 2>/dev/null || true)
        [[ $state == ready ]] && return 0
        sleep 0.2
    done
    svb_die "node $1 is not ready again within 60 s (state: ${state:-unknown})"
}

# Deploys the service and waits until it runs spread over both nodes.
nl_deploy() {
    local replicas=$1 per_node=$(($1 / 2))
    rv service deploy "$SVB_WORK/nodeloss.toml" >/dev/null
    svb_tool wait "${NL_LABELS[@]}" --count "$replicas" --timeout 60 ||
        svb_die "the service did not reach $replicas running containers"
    svb_tool wait "${NL_LABELS[@]}" --label raftvisor.node=n1 --count "$per_node" --timeout 30 ||
        svb_die "the service is not spread over both nodes ($per_node on n1 expected)"
}

nl_remove_service() {
    rv service rm bench/nodeloss >/dev/null
    svb_tool wait "${NL_LABELS[@]}" --count 0 --timeout 60 ||
        svb_die "the service's containers were not removed"
}

bench_node_loss_main() {
    local trials=${TRIALS:-10} replicas=${REPLICAS:-4} poll_ms=${POLL_MS:-10} timeout=${TRIAL_TIMEOUT_S:-60}
    local grace=${NODE_GRACE_MS:-2000} probe=${PROBE_MS:-250}
    [[ $trials =~ ^[1-9][0-9]*$ ]] || svb_die "TRIALS must be a positive integer"
    [[ $replicas =~ ^[1-9][0-9]*$ && $((replicas % 2)) -eq 0 ]] || svb_die "REPLICAS must be even and positive"
    ensure_packages socat
    svb_init
    nl_proxy_up
    svb_log "starting the three-replica cluster (node_grace_ms $grace, probe_interval_ms $probe)"
    svb_start_cluster "node_grace_ms = $grace" "probe_interval_ms = $probe"
    rv node add n1 --docker "tcp://127.0.0.1:$NL_PROXY_PORT" --address 127.0.0.1 >/dev/null
    rv node add n2 --docker "unix://$SVB_DOCKER_SOCK" --address 127.0.0.1 >/dev/null
    cat >"$SVB_WORK/nodeloss.toml" <<TOML
namespace = "bench"
name = "nodeloss"

[spec]
image = "$SVB_ECHO_IMAGE"
replicas = $replicas
TOML
    NL_LABELS=(--label "raftvisor.cluster=$SVB_CLUSTER_ID" --label raftvisor.namespace=bench --label raftvisor.service=nodeloss)

    local before after i
    before=$(svb_activity)
    for ((i = 1; i <= trials; i++)); do
        nl_deploy "$replicas"
        # Let the leader see the spread state settle (statuses written).
        sleep 1
        printf '[%s] trial %d/%d: ' "$(date +%H:%M:%S)" "$i" "$trials" >&2
        svb_tool node-loss-trial "${NL_LABELS[@]}" --count "$replicas" --cut-pgid "$NL_PROXY_PGID" \
            --cut-node n1 --service bench/nodeloss --target-node n2 --api "127.0.0.1:${SVB_API_PORTS[0]}" \
            --poll-ms "$poll_ms" --timeout "$timeout" --out "$SVB_WORK/node-loss.jsonl" >&2 ||
            svb_die "trial $i failed"
        # Restore n1; raftvisor fences it (removes its stale containers).
        nl_proxy_up
        nl_wait_node_ready n1
        nl_remove_service
    done
    after=$(svb_activity)

    echo
    echo "### Node loss: unreachable node -> its instances running elsewhere"
    echo
    echo "TRIALS=$trials REPLICAS=$replicas scripts/bench-node-loss.sh   (node_grace_ms $grace, probe_interval_ms $probe, poll ${poll_ms} ms)"
    echo
    svb_machine
    echo "- during the run: before: $before"
    echo "  after: $after"
    echo
    svb_tool report-node-loss --results "$SVB_WORK/node-loss.jsonl" --count "$replicas"
}

bench_node_loss_main "$@"
