#!/usr/bin/env bash
# Manager loss: three managers as containers (raftvisor:local, brought up by
# `raftvisor bootstrap`) on the local engine. TRIALS times, a follower
# manager's container is removed for good (`docker rm -f`) while a writer
# puts a KV key every WRITE_EVERY_MS through the API (any manager,
# 300 ms per request). Measured per trial:
#   - the longest time between two acknowledged writes around the loss
#     (writes unavailable), and
#   - the time from the removal until the cluster has 3 voters again, the
#     removed one not among them (full replacement).
# Prints each trial, the median and the max, and the goals: writes never
# unavailable longer than one election (<= 500 ms) when a follower is lost;
# full replacement <= replace_after + 10 s.
#
#   scripts/bench-manager-loss.sh           # TRIALS=10 REPLACE_AFTER_MS=5000
#
# Environment: TRIALS (10), REPLACE_AFTER_MS (5000), WRITE_EVERY_MS (20),
#   SKIP_BUILD=1 (use the binary and images as they are), RAFTVISOR_BIN,
#   KEEP_WORKDIR=1 (scripts/lib/bench.sh). The measuring is
#   scripts/benchtool/bench_manager_loss.py.
# Ports: API 37401-, peer 37451-, DNS 37491- (one more of each per
# replacement). Only 127.0.0.1 and this run's own containers (label
# raftvisor.manager.cluster=mloss<pid>) are touched; they are removed at exit.
set -euo pipefail

# shellcheck source=scripts/lib/bench.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/bench.sh"
ensure_packages python3 curl
# The images hold the binary: building them builds it.
[[ ${SKIP_BUILD:-0} == 1 ]] || "$RAFTVISOR_ROOT/scripts/build-images.sh"
SKIP_BUILD=1 bench_binary
docker image inspect raftvisor:local >/dev/null 2>&1 || die "image raftvisor:local is missing: run scripts/build-images.sh"
bench_run manager-loss
