#!/usr/bin/env bash
# Resident memory of replicas holding KEYS keys (default 100,000) with
# 256-byte values: a 3-replica raftvisor, and a 3-member etcd holding the
# same data as the side-by-side anchor (both on loopback, fsync on).
#
# For each system: start the cluster, read each member's RSS while empty,
# write the keys through the leader (16 concurrent
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
# (see scripts/benchtool/kvcluster.py).
#
# Usage: scripts/bench-memory.sh
# Environment:
#   KEYS=100000  SETTLE=5  SYSTEMS="etcd raftvisor"   (also: raftvisor-insecure, etcd-tls)
#   BENCH_ETCD_HEARTBEAT_MS, ... as in scripts/bench-kv.sh, plus those of
#   scripts/lib/bench.sh (RAFTVISOR_BIN, SKIP_BUILD, KEEP_WORKDIR, ...)
set -euo pipefail

# shellcheck source=scripts/lib/bench.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/bench.sh"
ensure_packages wrk etcd-server etcd-client python3 curl
bench_binary
bench_run memory
