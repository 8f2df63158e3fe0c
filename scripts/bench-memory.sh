#!/usr/bin/env bash
# Resident memory of replicas holding KEYS keys (default 100,000) with
# 256-byte values: a 3-replica raftvisor, and a 3-member etcd holding the
# same data as the side-by-side anchor (both on loopback, fsync on).
#
# For each system: start the cluster, read each member's RSS while empty,
# write the keys through the leader (bench_tool load: 16 concurrent
# keep-alive HTTP clients; etcd via POST /v3/kv/put, raftvisor via
# PUT /v1/kv/{key}), check the key count with a prefix query, wait SETTLE
# seconds and until all members have applied everything, read each member's
# RSS (VmRSS with its anonymous/file split and the peak VmHWM from
# /proc/PID/status) and data directory size; then restart all members and
# read RSS once more (the cost of holding the data, without what the write
# burst left behind).
#
# raftvisor runs with its default security (mutual TLS between replicas,
# HTTPS API with certificates the script makes with `raftvisor certs`, a
# token on every call); the loader speaks HTTPS to it. etcd runs plain HTTP.
# SYSTEMS may also name raftvisor-insecure or etcd-tls
# (see scripts/lib/bench-common.sh).
#
# Usage: scripts/bench-memory.sh
# Environment:
#   KEYS=100000  SETTLE=5  SYSTEMS="etcd raftvisor"   (also: raftvisor-insecure, etcd-tls)
#   plus those of scripts/lib/bench-common.sh (SKIP_BUILD, RAFTVISOR_BIN, KEEP_WORKDIR, ...)
set -euo pipefail

# shellcheck source=scripts/lib/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-common.sh"

KEYS=${KEYS:-100000}
SETTLE=${SETTLE:-5}
VALUE_SIZE=256
SYSTEMS=${SYSTEMS:-"etcd raftvisor"}
[[ $KEYS =~ ^[0-9]+$ && $KEYS -ge 1 && $KEYS -le 5000000 ]] || bench_die "KEYS must be 1..5000000"
[[ $SETTLE =~ ^[0-9]+$ && $SETTLE -le 600 ]] || bench_die "SETTLE must be 0..600 seconds"

bench_need_common
bench_build_raftvisor
bench_init_workdir

for system in $SYSTEMS; do
    dir="$BENCH_WORK/$system"
    bench_log "$system: starting 3 members"
    bench_start "$system"
    sleep 2
    bench_tool rss --cluster "$dir" >"$BENCH_WORK/$system-empty.json"
    bench_quiet
    url=$(bench_tool wait-ready --cluster "$dir" --system "$system" --timeout 60)
    bench_log "$system: writing $KEYS keys of $VALUE_SIZE B through the leader $url"
    bench_tool load --cluster "$dir" --system "$system" --url "$url" --count "$KEYS" \
        --value-size "$VALUE_SIZE" --prefix bench/mem/ --concurrency 16 --time-limit 1800 \
        >"$BENCH_WORK/$system-load.json" ||
        bench_die "$system: loading failed: $(cat "$BENCH_WORK/$system-load.json")"
    bench_log "$system: $(cat "$BENCH_WORK/$system-load.json")"
    sleep "$SETTLE"
    bench_tool wait-ready --cluster "$dir" --system "$system" --timeout 120 >/dev/null ||
        bench_die "$system: members did not catch up after loading"
    bench_tool rss --cluster "$dir" >"$BENCH_WORK/$system-loaded.json"
    bench_log "$system: restarting all members"
    bench_restart_cluster "$system"
    sleep "$SETTLE"
    bench_tool rss --cluster "$dir" >"$BENCH_WORK/$system-restarted.json"
    bench_log_problems "$system"
    bench_stop_cluster "$dir"
done

echo
echo "## bench-memory: $KEYS keys of $VALUE_SIZE B, 3 members each"
echo
bench_tool memory-report "$BENCH_WORK"
echo
# shellcheck disable=SC2086 # SYSTEMS is a list of words
bench_security $SYSTEMS
bench_timing
bench_machine
