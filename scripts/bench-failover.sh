#!/usr/bin/env bash
# Leader failover: SIGKILL the leader of a 3-member etcd and of a 3-replica
# raftvisor (both on loopback, fsync on) and time how long it takes until a
# write through a surviving member is acknowledged.
#
# Each trial (bench_tool failover, Python 3 stdlib):
#   1. wait until the cluster is healthy: all members up, agreeing on one
#      leader, each accepting a write, all caught up; then SETTLE seconds;
#   2. t0 = monotonic clock, SIGKILL the leader;
#   3. every POLL_MS, start a new write (a fresh HTTP connection with a
#      REQUEST_TIMEOUT_MS timeout) to a survivor, alternating between the
#      two; the time of the first acknowledged one, minus t0, is the result
#      (a write that stays unanswered past TRIAL_TIMEOUT seconds fails the trial);
#   4. restart the killed member with the same data directory.
# etcd writes go to POST /v3/kv/put, raftvisor's to PUT /v1/kv/{key}; an
# acknowledgement is HTTP 200 with a put response (etcd) or `true` (raftvisor).
#
# raftvisor runs with its default security (mutual TLS between replicas,
# HTTPS API with certificates the script makes with `raftvisor certs`, a
# token on every call), so each trial write to raftvisor includes a TLS
# handshake; etcd runs plain HTTP. SYSTEMS may also name raftvisor-insecure
# ([tls] insecure = true) or etcd-tls (see scripts/lib/bench-common.sh); the
# side-by-side table needs etcd and raftvisor.
#
# Before the trials, each cluster takes DURATION seconds of 64-client wrk
# write load, with the Raft term and leader read before and after: an
# unchanged term shows that the timing settings cause no spurious elections
# under load.
#
# Usage: scripts/bench-failover.sh
# Environment:
#   TRIALS=20  POLL_MS=10  REQUEST_TIMEOUT_MS=100  SETTLE=1  TRIAL_TIMEOUT=15
#   DURATION=8  (the 64-client load check; 0 skips it)
#   SYSTEMS="etcd raftvisor"   (also: raftvisor-insecure, etcd-tls)
#   QUIET_MAX_PCT=10 QUIET_WAIT=900 MAX_TRIES=3: wait for a quiet machine
#     before each trial, and repeat a trial (at most TRIAL_REDO=2 times in a row) or the
#     load check when other processes used more than QUIET_MAX_PCT % of the
#     CPU during it
#   plus those of scripts/lib/bench-common.sh (SKIP_BUILD, RAFTVISOR_BIN,
#   BENCH_ETCD_HEARTBEAT_MS, BENCH_ETCD_ELECTION_MS, KEEP_WORKDIR, ...)
set -euo pipefail

# shellcheck source=scripts/lib/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-common.sh"

TRIALS=${TRIALS:-20}
POLL_MS=${POLL_MS:-10}
REQUEST_TIMEOUT_MS=${REQUEST_TIMEOUT_MS:-100}
SETTLE=${SETTLE:-1}
TRIAL_TIMEOUT=${TRIAL_TIMEOUT:-15}
TRIAL_REDO=${TRIAL_REDO:-2}
DURATION=${DURATION:-8}
SYSTEMS=${SYSTEMS:-"etcd raftvisor"}
[[ $TRIALS =~ ^[0-9]+$ && $TRIALS -ge 1 && $TRIALS -le 1000 ]] || bench_die "TRIALS must be 1..1000"
[[ $POLL_MS =~ ^[0-9]+$ && $POLL_MS -ge 1 && $POLL_MS -le 10 ]] || bench_die "POLL_MS must be 1..10"
[[ $DURATION =~ ^[0-9]+$ && $DURATION -le 600 ]] || bench_die "DURATION must be 0..600 seconds"
[[ $TRIAL_REDO =~ ^[0-9]+$ && $TRIAL_REDO -le 10 ]] || bench_die "TRIAL_REDO must be 0..10"
[[ $TRIAL_TIMEOUT =~ ^[0-9]+$ && $TRIAL_TIMEOUT -ge 1 && $TRIAL_TIMEOUT -le 120 ]] || bench_die "TRIAL_TIMEOUT must be 1..120 seconds"

bench_need_common
bench_build_raftvisor
bench_init_workdir

points=()
for system in $SYSTEMS; do
    dir="$BENCH_WORK/$system"
    bench_log "$system: starting 3 members"
    bench_start "$system"
    if [[ $DURATION -gt 0 ]]; then
        for ((try = 1; try <= MAX_TRIES; try++)); do
            bench_quiet
            url=$(bench_tool wait-ready --cluster "$dir" --system "$system" --timeout 60)
            bench_tool status --cluster "$dir" --system "$system" >"$dir/before-load.json"
            bench_log "$system: 64-client write load for ${DURATION}s (term check, try $try)"
            bench_wrk "$system" "$dir/load.txt" "$DURATION" "$url" -t 2 -c 64 ||
                bench_die "$system: wrk failed: $(tail -n 5 "$dir/load.txt")"
            bench_tool status --cluster "$dir" --system "$system" >"$dir/after-load.json"
            bench_tool kv-point --system "$system" --clients 64 --threads 2 --wrk-output "$dir/load.txt" \
                --before "$dir/before-load.json" --after "$dir/after-load.json" --out "$dir/load-point.json"
            bench_point_clean "$dir/load-point.json" && break
        done
        points+=("$dir/load-point.json")
    fi
    bench_log "$system: $TRIALS failover trials"
    bench_tool failover --cluster "$dir" --system "$system" --trials "$TRIALS" --poll-ms "$POLL_MS" \
        --request-timeout-ms "$REQUEST_TIMEOUT_MS" --settle "$SETTLE" --trial-timeout "$TRIAL_TIMEOUT" \
        --quiet-mark "$BENCH_WORK" --quiet-max-pct "$QUIET_MAX_PCT" --quiet-wait "$QUIET_WAIT" --max-redo "$TRIAL_REDO" \
        --out "$BENCH_WORK/failover-$system.json" ||
        bench_die "$system: failover trials could not run (logs: $dir/*/log)"
    bench_log_problems "$system"
    bench_stop_cluster "$dir"
done

echo
echo "## bench-failover: $TRIALS trials each, SIGKILL of the leader, 3 members, fsync on"
echo
if [[ -f $BENCH_WORK/failover-etcd.json && -f $BENCH_WORK/failover-raftvisor.json ]]; then
    bench_tool failover-report --etcd "$BENCH_WORK/failover-etcd.json" --raftvisor "$BENCH_WORK/failover-raftvisor.json"
else
    for f in "$BENCH_WORK"/failover-*.json; do
        [[ -f $f ]] && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print({k: v for k, v in d.items() if k != "records"})' "$f"
    done
fi
if [[ ${#points[@]} -gt 0 ]]; then
    echo
    bench_tool term-check "${points[@]}"
fi
# shellcheck disable=SC2086 # SYSTEMS is a list of words
bench_security --wrk $SYSTEMS
bench_timing
echo
bench_machine
