#!/usr/bin/env bash
# Write throughput and latency: a 3-member etcd against a 3-replica raftvisor
# on loopback, all fsyncing every acknowledged write, each driven by the same
# wrk Lua generator (scripts/bench/put.lua) with random keys and 256-byte
# values: etcd through its JSON gateway (POST /v3/kv/put), raftvisor through
# PUT /v1/kv/{key}. Each cluster runs alone (the others are stopped) and wrk
# sends to its leader. Nothing is pinned with taskset: on a 2-core machine
# the 3 members and wrk share both cores, the same way for every system.
#
# raftvisor runs with its default security: mutual TLS between replicas, the
# API over HTTPS, certificates of a CA the script makes with
# `raftvisor certs init|issue`, and the admin token on every request.
# raftvisor-insecure is the same cluster with [tls] insecure = true (plain
# HTTP, token still required), so the run also shows what TLS costs. etcd
# runs plain HTTP; etcd-tls (not in the default SYSTEMS) serves HTTPS to
# clients and mutual TLS between members with the same CA. wrk speaks https
# without verifying the server's certificate (fine for load generation);
# bench_tool checks it against the CA.
#
# Prints Markdown tables (writes/s, p50, p99 per client count): raftvisor
# (TLS) against etcd with ratios raftvisor/etcd; the TLS cost, raftvisor
# against raftvisor-insecure; raftvisor-insecure against etcd; with etcd-tls
# also etcd's own TLS cost and raftvisor against etcd-tls. Then whether the
# 64-client goals are met (raftvisor with TLS against etcd), and the Raft
# term and leader before and after every run (an unchanged term means no
# election happened under that load).
#
# Usage: scripts/bench-kv.sh
# Environment:
#   DURATION=8          seconds per point
#   WARMUP=2            seconds of unmeasured load before the first point
#   POINTS="1:1 2:16 2:64"   wrk threads:connections per point
#   SYSTEMS="etcd raftvisor raftvisor-insecure"   (also: etcd-tls)
#   QUIET_MAX_PCT=10 QUIET_WAIT=900 MAX_TRIES=3: wait for a quiet machine
#     before each point, and measure a point again when other processes
#     used more than QUIET_MAX_PCT % of the CPU during it
#   plus those of scripts/lib/bench-common.sh (SKIP_BUILD, RAFTVISOR_BIN, KEEP_WORKDIR, ...)
set -euo pipefail

# shellcheck source=scripts/lib/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-common.sh"

DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
POINTS=${POINTS:-"1:1 2:16 2:64"}
SYSTEMS=${SYSTEMS:-"etcd raftvisor raftvisor-insecure"}
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 1 && $DURATION -le 600 ]] || bench_die "DURATION must be 1..600 seconds"
[[ $WARMUP =~ ^[0-9]+$ && $WARMUP -le 600 ]] || bench_die "WARMUP must be 0..600 seconds"

bench_need_common
bench_build_raftvisor
bench_init_workdir

results=()
for system in $SYSTEMS; do
    dir="$BENCH_WORK/$system"
    bench_log "$system: starting 3 members"
    bench_start "$system"
    if [[ $WARMUP -gt 0 ]]; then
        url=$(bench_tool wait-ready --cluster "$dir" --system "$system" --timeout 60)
        bench_wrk "$system" "$dir/warmup.txt" "$WARMUP" "$url" -t 2 -c 16 ||
            bench_die "$system: warm-up failed: $(tail -n 3 "$dir/warmup.txt")"
    fi
    for point in $POINTS; do
        threads=${point%%:*}
        clients=${point#*:}
        out="$dir/wrk-$clients.txt"
        for ((try = 1; try <= MAX_TRIES; try++)); do
            bench_quiet
            url=$(bench_tool wait-ready --cluster "$dir" --system "$system" --timeout 60) ||
                bench_die "$system: cluster not healthy before the $clients-client run"
            bench_tool status --cluster "$dir" --system "$system" >"$dir/before-$clients.json"
            bench_log "$system: wrk -t $threads -c $clients -d ${DURATION}s against the leader $url (try $try)"
            bench_wrk "$system" "$out" "$DURATION" "$url" -t "$threads" -c "$clients" --latency ||
                bench_die "$system: wrk failed: $(tail -n 5 "$out")"
            bench_tool status --cluster "$dir" --system "$system" >"$dir/after-$clients.json"
            bench_tool kv-point --system "$system" --clients "$clients" --threads "$threads" --wrk-output "$out" \
                --before "$dir/before-$clients.json" --after "$dir/after-$clients.json" --out "$dir/point-$clients.json"
            bench_point_clean "$dir/point-$clients.json" && break
            bench_log "$system: other processes loaded the CPU during the run ($(grep BENCH_FOREIGN "$out"))"
        done
        results+=("$dir/point-$clients.json")
        grep -E '^ +(50|99)%|Requests/sec|Non-2xx|Socket errors' "$out" | sed "s/^/    $system c=$clients /" >&2 || true
    done
    bench_log_problems "$system"
    bench_stop_cluster "$dir"
done

echo
echo "## bench-kv: $DURATION s per point, 256-byte values, fsync on, 3 members each"
echo
bench_tool kv-report "${results[@]}"
echo
# shellcheck disable=SC2086 # SYSTEMS is a list of words
bench_security --wrk $SYSTEMS
bench_timing
bench_machine
