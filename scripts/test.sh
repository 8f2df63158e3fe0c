#!/usr/bin/env bash
# Runs every test of raftvisor: formatting, lints, unit tests and the
# integration tests (real replica processes on loopback). Installs what
# the tests need first. This is what CI runs (.ci/run).
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$RAFTVISOR_ROOT"

ensure_rust
ensure_packages curl python3-pip
if ! python3 -c 'import consul' 2>/dev/null; then
    log "installing py-consul (a Consul client library the KV tests drive)"
    python3 -m pip install --quiet --disable-pip-version-check py-consul 2>/dev/null \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages py-consul
fi

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --locked --all-targets --target "$RAFTVISOR_TARGET" -- -D warnings
log "tests (release, static: the binary the images and benchmarks use)"
cargo test --release --locked --target "$RAFTVISOR_TARGET" -- --test-threads="${TEST_THREADS:-3}"
