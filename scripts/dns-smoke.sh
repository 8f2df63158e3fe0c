#!/usr/bin/env bash
# DNS smoke check with dig against a local three-replica raftvisor cluster.
#
#   scripts/dns-smoke.sh          # the dev cluster (scripts/dev-cluster.sh up:
#                                 # API 7001-7003, DNS 8601-8603) if it answers,
#                                 # otherwise a temporary cluster of its own
#   scripts/dns-smoke.sh --own    # always a temporary cluster of its own
#
# Checks, on every replica:
#   1. leader.managers.<domain> A answers the leader's API address (NOERROR, aa);
#   2. an external service created through the API (smoke/ext-<pid>, two
#      TEST-NET addresses that are only data) resolves to its addresses;
#   3. the same over TCP (dig +tcp);
#   4. an unknown name under the domain is NXDOMAIN with the SOA.
# The service is deleted again at the end. Prints one line per check and
# exits 1 with a "FAIL:" line naming the first check that failed.
#
# Environment:
#   SMOKE_API=127.0.0.1:7001,...   API addresses of the cluster to check, and
#   SMOKE_DNS=127.0.0.1:8601,...   its DNS addresses (same order; both or none)
#   RAFTVISOR_TOKEN / RAFTVISOR_TOKEN_FILE   an operator or admin token of that
#                                  cluster (the dev cluster's and its own
#                                  cluster's are found without them)
#   SMOKE_CA=FILE                  CA certificate of that cluster's HTTPS API
#                                  (unset: plain HTTP, an insecure cluster)
#   DOMAIN=cluster.local           the cluster's DNS domain
#   SKIP_BUILD=1, RAFTVISOR_BIN    (own cluster) use the release binary as it is,
#                                  or this one (scripts/lib/bench.sh)
#   CARGO_BUILD_JOBS               jobs of the release build (default 1)
#
# The checks are scripts/benchtool/dns_smoke.py (python3 -m benchtool dns-smoke).
#
# Its own cluster: API 37011-37013, peer 37111-37113, DNS 38611-38613 on
# 127.0.0.1, data and certificates (a CA of its own, mutual TLS between the
# replicas) in a temporary directory; stopped and removed at exit.
set -euo pipefail

# shellcheck source=scripts/lib/bench.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/bench.sh"
case "${1:-}" in
    --own | "") ;;
    *)
        echo "usage: $0 [--own]" >&2
        exit 2
        ;;
esac
command -v dig >/dev/null 2>&1 || ensure_packages bind9-dnsutils
command -v python3 >/dev/null 2>&1 || ensure_packages python3
# Only a cluster of its own needs the binary; the build is quick when nothing changed.
if [[ -z ${SMOKE_API:-}${SMOKE_DNS:-} ]]; then
    bench_binary >&2
fi
bench_run dns-smoke "$@"
