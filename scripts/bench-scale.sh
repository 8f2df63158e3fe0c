#!/usr/bin/env bash
# Scale benchmark of issue 13: a 3-replica cluster driving 5,000 simulated
# nodes (in-memory engines), 10,000 services and 100,000 instances, with a
# 3-member etcd on loopback as the side-by-side peer for commit throughput.
# The measuring is the Rust program benches/scale/ (its header lists the
# phases and every SCALE_* setting); this script installs what it needs,
# builds it, runs it and leaves its results in OUT:
#   OUT/scale.md    the docs/benchmarks.md table of the run (also printed)
#   OUT/scale.json  every figure, the settings and the commit
#
#   scripts/bench-scale.sh                          # full size, ~10-20 min
#   SCALE_NODES=500 SCALE_SERVICES=1000 scripts/bench-scale.sh   # a quick check
#
# Environment: OUT (target/bench-scale), CARGO (cargo; e.g. "flock /tmp/cargo.lock cargo" on a shared machine),
# and the SCALE_* settings of benches/scale/main.rs. Its processes (the
# bench, etcd) end with it; its temporary directory is removed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=${OUT:-$root/target/bench-scale}
mkdir -p "$out"

# The peer: Debian's etcd.
if ! command -v etcd >/dev/null 2>&1; then
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "bench-scale: installing etcd-server etcd-client" >&2
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq etcd-server etcd-client >/dev/null
fi
export SCALE_ETCD=${SCALE_ETCD:-$(command -v etcd)}

commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- src benches Cargo.toml Cargo.lock || commit="$commit+changes"
export SCALE_COMMIT=${SCALE_COMMIT:-$commit}
export SCALE_JSON=$out/scale.json SCALE_MARKDOWN=$out/scale.md

export RUSTFLAGS=${RUSTFLAGS:--C target-feature=+crt-static}
read -r -a cargo <<<"${CARGO:-cargo}"
build=("${cargo[@]}" bench --locked --target x86_64-unknown-linux-gnu --features failpoints --bench scale --no-run)
# The benchmark's own artifact: the agent binary it depends on is built
# in the same run and may be reported after it.
bench=$("${build[@]}" --message-format=json |
    grep '"kind":\["bench"\]' |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -x "$bench" ] || { echo "bench-scale: no benchmark executable built" >&2; exit 1; }

echo "bench-scale: $bench on $SCALE_COMMIT, $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)" >&2
"$bench"
