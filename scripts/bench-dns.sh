#!/usr/bin/env bash
# DNS benchmark: raftvisor's DNS server against NSD and Knot DNS on one
# equivalent zone, and how soon a follower answers a committed change.
#
# 1. Throughput. The same zone is served three ways on loopback:
#    - raftvisor: examples/dns_zone.rs, one in-process replica that commits
#      SERVICES services x REPLICAS instances through Raft (PutNode,
#      PutService, PlaceInstance, SetInstanceStatus) and answers from its
#      state machine with the production handler (src/dns/server.rs);
#    - NSD and Knot: a zone file written here with the same records (A of
#      svcN.default.svc.cluster.local, SRV of
#      _http._tcp.svcN.default.svc.cluster.local with targets
#      nodeK.node.cluster.local and their A records, SOA, NS), each server
#      with one worker (nsd server-count 1, knot udp-workers 1), run in the
#      foreground with its own config and data in the work directory.
#    Before measuring, a sample of names is asked of all three and the
#    answers must be equal. Then, ROUNDS times, in turn for each server:
#      taskset -c DNSPERF_CPU dnsperf -s 127.0.0.1 -p PORT -d QUERYFILE \
#          -c CLIENTS -q OUTSTANDING -l DURATION
#    with one file of QUERIES random A/SRV queries for all (servers
#    unpinned). Printed: queries/s, average latency, lost queries, the CPU
#    the server used, the median per server and the ratios of the medians.
# 2. Freshness. A three-replica cluster of real `raftvisor agent` processes
#    (supervisor disabled): FRESH_TRIALS times, the external service
#    fresh/x is given a new address through the leader's API
#    (PUT /v1/services/fresh/x) while both followers' DNS servers are polled
#    over UDP (about every POLL_MS); the time from sending the write (and
#    from its acknowledgement, i.e. the commit) until each follower answers
#    the new address is recorded; p50/p99/max are printed. Then, in the
#    same cluster, SWITCH_TRIALS blue-green switches of release `cut`
#    (entry x, external in namespaces cut-blue and cut-green, two
#    addresses each) through POST /v1/releases/cut/switch while both
#    followers resolve cut.release.cluster.local: the time until each
#    answers the other environment, and every answer seen classified
#    (blue, green, a mix, empty).
# Goals: raftvisor >= 0.5x NSD's queries/s; write -> changed answer on a
# follower p99 <= 100 ms; a switch answered by every follower within
# 100 ms, never a mixed or empty answer.
#
#   scripts/bench-dns.sh                 # ~4 minutes after the build
#   ROUNDS=1 FRESH_TRIALS=50 scripts/bench-dns.sh
#
# Environment:
#   SERVICES=1000 REPLICAS=3 NODES=10   the zone
#   QUERIES=100000       queries in the query file (half A, half SRV, random)
#   DURATION=10 CLIENTS=4 OUTSTANDING=200 DNSPERF_CPU=1   dnsperf -l -c -q, taskset
#   ROUNDS=3             dnsperf runs per server (interleaved)
#   FRESH_TRIALS=200 POLL_MS=1   freshness trials, pause between two polls
#   SWITCH_TRIALS=100    release switches (0 leaves them out)
#   QUIET_MAX_PCT=20 QUIET_WAIT=300   the machine is shared: before each
#                        dnsperf run, wait (at most QUIET_WAIT s) until other
#                        processes use at most QUIET_MAX_PCT % of one core, and
#                        repeat a run during which they used more (MAX_TRIES=3
#                        runs in all); the figures say how busy it was anyway
#   SKIP_THROUGHPUT=1 / SKIP_FRESHNESS=1   leave a part out
#   DNS_ZONE_BIN=path    use this build of examples/dns_zone.rs instead of building it
#   plus those of scripts/lib/bench.sh (RAFTVISOR_BIN, SKIP_BUILD: use the
#   release builds in target/ as they are, KEEP_WORKDIR, CARGO_BUILD_JOBS)
#
# Ports: raftvisor's zone 38501, NSD 38502, Knot 38503 (UDP and TCP);
# freshness cluster API 37001-37003, peer 37101-37103, DNS 38601-38603.
# Only 127.0.0.1 is contacted. Every process started here is stopped at
# exit (also on failure or Ctrl-C) and the work directory is removed.
set -euo pipefail

# shellcheck source=scripts/lib/bench.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/bench.sh"
ensure_packages dnsperf nsd knot bind9-dnsutils curl python3 util-linux
bench_binary
if [[ -z ${DNS_ZONE_BIN:-} ]]; then
    DNS_ZONE_BIN="$RAFTVISOR_ROOT/target/$RAFTVISOR_TARGET/release/examples/dns_zone"
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        log "building examples/dns_zone (release, static)"
        (cd "$RAFTVISOR_ROOT" && cargo build --release --locked --target "$RAFTVISOR_TARGET" --example dns_zone)
    fi
fi
export DNS_ZONE_BIN
bench_run dns
