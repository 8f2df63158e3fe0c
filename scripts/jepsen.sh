#!/usr/bin/env bash
# The failure-injection harness (jepsen/): five raftvisor managers as
# containers under partitions, crashes, pauses, packet loss and delay,
# membership changes and disk faults, checked for linearizability, lost
# writes, duplicate or stopped workloads, DNS and liveness.
#
#   scripts/jepsen.sh --smoke          a few seeds (<= 5 minutes), part of scripts/test.sh
#   scripts/jepsen.sh --full           every nemesis group x every workload, a minute each
#   scripts/jepsen.sh run --seed 7 --nemesis partition --workload register --duration 30
#   scripts/jepsen.sh check target/jepsen/<run>/history.jsonl
#
# Extra arguments go to raftvisor-jepsen (e.g. --smoke --only canary,
# --smoke --failpoints read-index-local=return to see the suite fail on the
# known bug). Outputs: target/jepsen/<run>/ (history.jsonl, verdict.json,
# summary.txt, timeline.svg, supervisor.jsonl, cluster/logs/). Needs root
# (iptables and nsenter in the managers' network namespaces) and a Docker
# Engine. JEPSEN_SKIP_BUILD=1 uses the images and binaries as they are.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$RAFTVISOR_ROOT"

if [ "$#" -eq 0 ]; then
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
    die "the harness sets iptables rules inside containers' network namespaces: run it as root"
fi
ensure_docker || die "the Docker Engine does not answer ('docker info' fails; see /tmp/raftvisor-dockerd.log)"
ensure_rust
ensure_packages iptables iproute2 util-linux

if [ -z "${JEPSEN_SKIP_BUILD:-}" ]; then
    scripts/build-images.sh
    scripts/build-images.sh --failpoints
fi
log "building raftvisor-jepsen"
cargo build --release --locked --target "$RAFTVISOR_TARGET" -p raftvisor-jepsen
jepsen="$RAFTVISOR_ROOT/target/$RAFTVISOR_TARGET/release/raftvisor-jepsen"

case "$1" in
    --smoke) shift; exec "$jepsen" suite --smoke "$@" ;;
    --full) shift; exec "$jepsen" suite --full "$@" ;;
    *) exec "$jepsen" "$@" ;;
esac
