#!/usr/bin/env bash
# Benchmark: a container's main process dies (SIGKILL from the host, i.e. a
# crash) -> the container runs again. raftvisor (a three-replica cluster with
# the local Docker Engine as its only node, a one-replica service of the echo
# image) against dockerd's own `--restart=always` on the same engine, and
# against the floor: a container without a restart policy that the poller
# starts itself (POST /containers/{id}/start) as soon as it sees it exited.
#
# Each trial reads the host pid of the container's main process
# (State.Pid), kills it with SIGKILL and polls the Docker API over the unix
# socket until a container of that side runs again with another pid; the
# time from the kill to that poll is the trial's figure. The same poller
# (scripts/benchtool/bench_restart.py) measures both sides. Trials alternate
# between dockerd and raftvisor, and a container is only killed once it has
# been up for SPACING_S (11 s): dockerd resets its restart backoff after
# 10 s up, and the raftvisor service's restart.reset_after_ms is 10000, so
# every trial is a first restart on both sides. Containers are not
# published (no ports) and have no health check, on both sides.
#
#   scripts/bench-restart.sh            # 20 trials per side, ~8 minutes
#   TRIALS=5 scripts/bench-restart.sh
#
# Environment:
#   TRIALS=20         trials per side
#   SPACING_S=11      minimum uptime of a container before it is killed
#   POLL_MS=5         pause between two polls of the Docker API
#   TRIAL_TIMEOUT_S=30  a trial fails if nothing runs again within this
#   plus those of scripts/lib/bench.sh (RAFTVISOR_BIN, SKIP_BUILD, KEEP_WORKDIR,
#   CARGO_BUILD_JOBS)
#
# Ports (never the dev cluster's 7001-7003): API 27001-27003, peer
# 27101-27103, DNS 28601-28603. Everything runs in a mktemp directory;
# replicas, containers (raftvisor's by its cluster label, dockerd's by name)
# and the directory are removed at exit, also on failure or Ctrl-C.
set -euo pipefail

# shellcheck source=scripts/lib/bench.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/bench.sh"
ensure_packages curl python3
bench_image raftvisor-echo:local
bench_binary
bench_run restart
