# shellcheck shell=bash
# Entry-point helpers of the benchmark scripts (scripts/bench-*.sh); sourced,
# not run. The measuring itself is scripts/benchtool (python3 -m benchtool,
# stdlib only, tested by scripts/test.sh); these helpers only install what a
# benchmark needs, find or build the release binary and start the tool.
#
# Environment shared by all benchmarks:
#   RAFTVISOR_BIN=path   use this binary instead of building one
#   SKIP_BUILD=1         use target/x86_64-unknown-linux-gnu/release/raftvisor as it is
#   CARGO_BUILD_JOBS     jobs of the release build (default 1: shared machine)
#   KEEP_WORKDIR=1       keep the run's work directory (logs, data, results)

# A binary named by the caller, before common.sh sets the default path.
BENCH_GIVEN_BIN=${RAFTVISOR_BIN:-}
# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}

# Exports RAFTVISOR_BIN: the given binary, the existing release build with
# SKIP_BUILD=1, or one built now (BENCH_BUILT=1 tells the report so).
bench_binary() {
    BENCH_BUILT=0
    if [[ -n $BENCH_GIVEN_BIN ]]; then
        [[ -x $BENCH_GIVEN_BIN ]] || die "RAFTVISOR_BIN=$BENCH_GIVEN_BIN is not executable"
        RAFTVISOR_BIN=$BENCH_GIVEN_BIN
    elif [[ ${SKIP_BUILD:-0} != 1 ]]; then
        build_release
        BENCH_BUILT=1
    fi
    [[ -x $RAFTVISOR_BIN ]] || die "no binary at $RAFTVISOR_BIN"
    export RAFTVISOR_BIN BENCH_BUILT
}

# bench_image IMAGE: builds the local images when IMAGE is missing.
bench_image() {
    command -v docker >/dev/null 2>&1 || die "docker (the CLI) is required"
    docker info >/dev/null 2>&1 || die "the Docker Engine does not answer ('docker info' fails)"
    docker image inspect "$1" >/dev/null 2>&1 || "$RAFTVISOR_ROOT/scripts/build-images.sh"
}

# bench_run BENCH: replaces the shell with `python3 -m benchtool BENCH`.
bench_run() {
    export PYTHONPATH="$RAFTVISOR_ROOT/scripts${PYTHONPATH:+:$PYTHONPATH}"
    exec python3 -m benchtool "$@"
}
