#!/usr/bin/env bash
# Runs every test of raftvisor: formatting, lints, unit tests and the
# integration tests (real replica processes on loopback, containers on the
# local Docker Engine). Installs what the tests need and builds the local
# images first. This is what CI runs (.ci/run). With CI set, Docker is
# required; without it, the tests that need Docker skip loudly.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$RAFTVISOR_ROOT"

ensure_rust
ensure_packages curl python3-pip nsd
if ! python3 -c 'import consul' 2>/dev/null; then
    log "installing py-consul (a Consul client library the KV tests drive)"
    python3 -m pip install --quiet --disable-pip-version-check py-consul 2>/dev/null \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages py-consul
fi

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --locked --all-targets --target "$RAFTVISOR_TARGET" -- -D warnings
cargo clippy --locked --all-targets --target "$RAFTVISOR_TARGET" --features failpoints -- -D warnings
if docker info >/dev/null 2>&1; then
    scripts/build-images.sh
elif [ -n "${CI:-}" ]; then
    echo "error: CI is set but the Docker Engine is not reachable ('docker info' fails);" >&2
    echo "the runtime tests need it: start dockerd (or set DOCKER_HOST) and re-run" >&2
    exit 1
else
    echo "warning: the Docker Engine is not reachable ('docker info' fails):" >&2
    echo "warning: tests that need Docker will be SKIPPED (set CI=1 to make that an error)" >&2
fi
log "tests (release, static, with the fail points the failure tests drive)"
cargo test --release --locked --target "$RAFTVISOR_TARGET" --features failpoints -- --test-threads="${TEST_THREADS:-3}"
