# Shared helpers of raftvisor's scripts: repository root, the one build of
# the static release binary that tests, images and benchmarks all use, and
# idempotent installation of Debian packages.

RAFTVISOR_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RAFTVISOR_TARGET="x86_64-unknown-linux-gnu"
RAFTVISOR_BIN="$RAFTVISOR_ROOT/target/$RAFTVISOR_TARGET/release/raftvisor"
# Static (crt-static) so the same binary runs in FROM-scratch images.
export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

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

# API tokens. Every API call but GET /v1/health needs one: a script that
# starts its own cluster names a bootstrap token file in the replicas'
# [auth] section and fills it first with ensure_token_file, so that token is
# the cluster's admin token; RAFTVISOR_TOKEN carries it to the CLI, curl
# (rv_curl) and the scripts' Python and wrk helpers.

# ensure_token_file FILE: writes a fresh token (rvt_<id>.<secret>, 256
# random bits) to FILE, mode 0600, unless FILE exists; prints nothing.
ensure_token_file() {
    [ -s "$1" ] && return 0
    mkdir -p "$(dirname "$1")"
    local id secret
    id=$(od -An -tx1 -N6 /dev/urandom | tr -d ' \n')
    secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
    (umask 077 && printf 'rvt_%s.%s\n' "$id" "$secret" >"$1")
}

# use_token_file FILE: exports the token in FILE as RAFTVISOR_TOKEN.
use_token_file() {
    RAFTVISOR_TOKEN=$(tr -d ' \n' <"$1")
    export RAFTVISOR_TOKEN
}

# rv_curl ARGS...: curl sending $RAFTVISOR_TOKEN as the bearer token.
rv_curl() { curl -H "Authorization: Bearer ${RAFTVISOR_TOKEN:-}" "$@"; }
