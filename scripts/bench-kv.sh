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
# the benchmark tool (scripts/benchtool) checks it against the CA.
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
#   BENCH_ETCD_HEARTBEAT_MS / BENCH_ETCD_ELECTION_MS   etcd timing flags
#     (unset: etcd's defaults, 100 ms / 1000 ms)
#   BENCH_RAFTVISOR_HEARTBEAT_MS / BENCH_RAFTVISOR_ELECTION_MIN_MS /
#   BENCH_RAFTVISOR_ELECTION_MAX_MS   raftvisor's [raft] timing (default 30/100/150)
#   plus those of scripts/lib/bench.sh (RAFTVISOR_BIN, SKIP_BUILD, KEEP_WORKDIR, ...)
set -euo pipefail

# shellcheck source=scripts/lib/bench.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/bench.sh"
ensure_packages wrk etcd-server etcd-client python3 curl
bench_binary
bench_run kv
