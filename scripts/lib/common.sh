# Shared helpers of raftvisor's scripts: repository root, the one build of
# the static release binary that tests, images and benchmarks all use, and
# idempotent installation of Debian packages.

RAFTVISOR_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RAFTVISOR_TARGET="x86_64-unknown-linux-gnu"
RAFTVISOR_BIN="$RAFTVISOR_ROOT/target/$RAFTVISOR_TARGET/release/raftvisor"
# Static (crt-static) so the same binary runs in FROM-scratch images.
# Added once, however often this file is sourced (a script sourcing it
# after another one exported RUSTFLAGS): cargo rebuilds the whole tree
# whenever the flags' text differs, so every script must pass the same.
case " ${RUSTFLAGS:-} " in
    *" -C target-feature=+crt-static "*) ;;
    *) export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" ;;
esac

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs the named Debian packages that are missing.
ensure_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# Makes the local Docker Engine answer: waits for a daemon that is starting,
# starts an installed one that is not running, installs Debian's docker.io
# when there is none. Returns non-zero (the caller decides how loudly) when
# the engine still does not answer after a minute. Never starts a second
# daemon beside one that runs: two daemons fight over the bridge network.
ensure_docker() {
    docker info >/dev/null 2>&1 && return 0
    [ -n "${DOCKER_HOST:-}" ] && return 1
    if ! pgrep -x dockerd >/dev/null 2>&1; then
        command -v dockerd >/dev/null 2>&1 || ensure_packages docker.io
        command -v dockerd >/dev/null 2>&1 || return 1
        log "starting the Docker Engine (log: /tmp/raftvisor-dockerd.log)"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo sh -c 'nohup dockerd >/tmp/raftvisor-dockerd.log 2>&1 &'
    else
        log "waiting for the Docker Engine to answer"
    fi
    local deadline=$((SECONDS + 60))
    while [ "$SECONDS" -lt "$deadline" ]; do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    return 1
}

ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo is required: install Rust with rustup (https://rustup.rs) and re-run" >&2
        exit 1
    fi
}

# Builds the static release binary (incremental: fast when nothing changed).
build_release() {
    ensure_rust
    log "building raftvisor (release, static)"
    (cd "$RAFTVISOR_ROOT" && cargo build --release --locked --target "$RAFTVISOR_TARGET" --bin raftvisor)
}


# API tokens: ensure_token_file, use_token_file, rv_curl.
. "$RAFTVISOR_ROOT/scripts/lib/token.sh"
