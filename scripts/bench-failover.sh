#!/usr/bin/env bash
# Leader failover: SIGKILL the leader of a 3-member etcd and of a 3-replica
# raftvisor (both on loopback, fsync on) and time how long it takes until a
# write through a surviving member is acknowledged.
#
# Each trial (scripts/benchtool/bench_failover.py):
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
# ([tls] insecure = true) or etcd-tls (see scripts/benchtool/kvcluster.py); the
# side-by-side table needs etcd and raftvisor.
#
# Before the trials, each cluster takes DURATION seconds of 64-client wrk
# write load, with the Raft term and leader read before and after: an
# unchanged term shows that the timing settings cause no spurious elections
# under load.
#
# After the trials, a raftvisor cluster whose peer links each go through a
# proxy that holds every chunk LINK_DELAY_MS each way
# (scripts/benchtool/delayproxy.py; the kernel here has no tc netem) idles
# for LINK_DELAY_S seconds, then takes LINK_DELAY_S seconds of the 64-client
# load; the term and leader before and after each show whether the delay
# caused an election.
#
# Usage: scripts/bench-failover.sh
# Environment:
#   TRIALS=30  POLL_MS=10  REQUEST_TIMEOUT_MS=100  SETTLE=1  TRIAL_TIMEOUT=15
#   DURATION=8  (the 64-client load check; 0 skips it)
#   LINK_DELAY_MS=10 LINK_DELAY_S=30  (the delayed-link check; 0 skips it;
#     proxies on 127.0.0.1:17151-17153)
#   SYSTEMS="etcd raftvisor"   (also: raftvisor-insecure, etcd-tls)
#   QUIET_MAX_PCT=10 QUIET_WAIT=900 MAX_TRIES=3: wait for a quiet machine
#     before each trial, and repeat a trial (at most TRIAL_REDO=2 times in a row) or the
#     load check when other processes used more than QUIET_MAX_PCT % of the
#     CPU during it
#   BENCH_ETCD_HEARTBEAT_MS, BENCH_ETCD_ELECTION_MS, BENCH_RAFTVISOR_HEARTBEAT_MS, ... as in
#   scripts/bench-kv.sh, plus those of scripts/lib/bench.sh (RAFTVISOR_BIN, SKIP_BUILD, KEEP_WORKDIR, ...)
set -euo pipefail

# shellcheck source=scripts/lib/bench.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/bench.sh"
ensure_packages wrk etcd-server etcd-client python3 curl
bench_binary
bench_run failover
