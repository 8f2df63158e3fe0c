#!/usr/bin/env bash
# Runs every test of raftvisor: the benchmark tool's unit tests
# (scripts/benchtool), formatting, lints, unit tests, the integration tests
# (real replica processes on loopback, containers on the local Docker
# Engine) and the failure harness's smoke suite (five manager containers
# under partitions, crashes, pauses, membership changes and disk faults,
# scripts/jepsen.sh --smoke). Installs what the tests need and builds the local
# images first. This is what CI runs (.ci/run). With CI set, Docker is
# required; without it, the tests that need Docker skip loudly.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$RAFTVISOR_ROOT"

ensure_rust
ensure_packages curl python3-pip nsd docker-registry apache2-utils prometheus \
    patroni postgresql python3-consul chromium chromium-driver python3-selenium git
pip_install() { # MODULE PACKAGE: installs PACKAGE from PyPI unless python3 imports MODULE
    python3 -c "import $1" 2>/dev/null && return 0
    log "installing $2 from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check "$2" 2>/dev/null \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$2"
}
pip_install consul py-consul         # a Consul client library the KV tests drive
pip_install schemathesis schemathesis  # fuzzes the API against its OpenAPI description

log "benchmark tool: unit tests (scripts/benchtool)"
(cd scripts && python3 -m unittest discover -s benchtool/tests -t .)
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --locked --workspace --all-targets --target "$RAFTVISOR_TARGET" -- -D warnings
cargo clippy --locked --all-targets --target "$RAFTVISOR_TARGET" --features failpoints -- -D warnings
have_docker=false
if ensure_docker; then
    have_docker=true
    # The last release's manager image, for the upgrade test; first, as
    # the current tree's build that follows links its own binary back.
    scripts/build-images.sh --previous-release
    scripts/build-images.sh
elif [ -n "${CI:-}" ]; then
    echo "error: CI is set but the Docker Engine is not reachable ('docker info' fails);" >&2
    echo "the runtime tests need it and it did not start within a minute (see /tmp/raftvisor-dockerd.log)" >&2
    exit 1
else
    echo "warning: the Docker Engine is not reachable ('docker info' fails):" >&2
    echo "warning: tests that need Docker will be SKIPPED (set CI=1 to make that an error)" >&2
fi
log "tests (release, static, with the fail points the failure tests drive)"
cargo test --release --locked --target "$RAFTVISOR_TARGET" --features failpoints -- --test-threads="${TEST_THREADS:-3}"
log "failure harness: unit tests (checkers, nemesis shapes, history)"
cargo test --release --locked --target "$RAFTVISOR_TARGET" -p raftvisor-jepsen
if $have_docker; then
    # The agent with fail points (built by the tests above) for the canary
    # run, which must be caught; then a few seeded runs under faults.
    scripts/build-images.sh --failpoints --prebuilt
    log "failure harness: scripts/jepsen.sh --smoke"
    JEPSEN_SKIP_BUILD=1 scripts/jepsen.sh --smoke
else
    echo "warning: the Docker Engine is not reachable: scripts/jepsen.sh --smoke SKIPPED" >&2
fi
