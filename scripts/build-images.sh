#!/usr/bin/env bash
# Builds raftvisor's local images from binaries this project builds (no
# registry is ever contacted):
#   raftvisor:local       the agent (/raftvisor) with a static busybox shell
#   raftvisor-echo:local  the HTTP echo/health server of the tests and demo,
#                         with a static busybox shell for services' hooks
#   raftvisor-etcd:local  etcd and etcdctl from Debian's packages, for the
#                         etcd template (cluster-config/templates/etcd.toml)
#   raftvisor-redis:local redis-server and redis-cli from Debian's packages,
#                         for the Redis template (templates/redis.toml)
# With --failpoints, only:
#   raftvisor:failpoints  the agent built with the `failpoints` feature, for
#                         the failure harness's canary runs (jepsen/)
# Both binaries come from the one static release build (see lib/common.sh).
# Idempotent: an image whose inputs (binaries, Dockerfile) are unchanged is
# not rebuilt. The hash of the inputs is kept in a stamp file next to the
# build output, not as an image label: containers inherit image labels, and
# raftvisor reads the labels of the containers it manages.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$RAFTVISOR_ROOT"

if ! ensure_docker; then
    echo "error: the Docker Engine is not reachable ('docker info' fails):" >&2
    docker info 2>&1 | sed 's/^/    /' | tail -n 5 >&2 || true
    echo "start dockerd (or set DOCKER_HOST) and re-run scripts/build-images.sh" >&2
    exit 1
fi

ensure_rust
ensure_packages busybox-static binutils

target_dir="${CARGO_TARGET_DIR:-$RAFTVISOR_ROOT/target}"
bin_dir="$target_dir/$RAFTVISOR_TARGET/release"
stamp_dir="$target_dir/images"
mkdir -p "$stamp_dir"

failpoints=false
prebuilt=false
for arg in "$@"; do
    case "$arg" in
        --failpoints) failpoints=true ;;
        # The binaries in the target directory as they are (scripts/test.sh:
        # its tests have just built the agent with fail points).
        --prebuilt) prebuilt=true ;;
        *) die "unknown argument $arg (usage: scripts/build-images.sh [--failpoints] [--prebuilt])" ;;
    esac
done

if $prebuilt; then
    log "using the binaries already built in the target directory"
elif $failpoints; then
    # raftvisor:failpoints — the agent built with the `failpoints` feature,
    # for the failure harness (jepsen/): the same build the tests use.
    log "building raftvisor with fail points (release, static)"
    cargo build --release --locked --target "$RAFTVISOR_TARGET" --features failpoints --bin raftvisor
else
    log "building raftvisor and raftvisor-echo (release, static)"
    cargo build --release --locked --target "$RAFTVISOR_TARGET" --bin raftvisor --bin raftvisor-echo
fi

# busybox-static installs a statically linked /bin/busybox.
busybox=/bin/busybox
if [ ! -x "$busybox" ]; then
    echo "error: busybox-static is installed but $busybox is missing" >&2
    exit 1
fi

context_root="$(mktemp -d "${TMPDIR:-/tmp}/raftvisor-images.XXXXXX")"
trap 'rm -rf "$context_root"' EXIT

# build_image TAG DOCKERFILE FILE...: builds TAG from a context holding the
# given files (debug info stripped from ELF binaries), unless an image with
# the same input hash exists.
build_image() {
    local tag="$1" dockerfile="$2"
    shift 2
    local context="$context_root/${tag%%:*}"
    mkdir -p "$context"
    cp "$dockerfile" "$context/Dockerfile"
    local file
    for file in "$@"; do
        strip --strip-debug -o "$context/$(basename "$file")" "$file" 2>/dev/null \
            || cp "$file" "$context/$(basename "$file")"
    done
    local hash
    hash="$(cd "$context" && sha256sum -- * | sha256sum | cut -c1-32)"
    local stamp="$stamp_dir/${tag//[:\/]/_}.stamp" image_id
    image_id="$(docker image inspect -f '{{ .Id }}' "$tag" 2>/dev/null || true)"
    if [ -n "$image_id" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash $image_id" ]; then
        log "$tag is up to date"
        return
    fi
    log "building image $tag"
    local started=$SECONDS
    local output
    if ! output="$(docker build --quiet -t "$tag" "$context" 2>&1)"; then
        echo "$output" >&2
        echo "error: docker build of $tag failed" >&2
        exit 1
    fi
    local new_id
    new_id="$(docker image inspect -f '{{ .Id }}' "$tag")"
    echo "$hash $new_id" >"$stamp"
    # The previous build, now untagged (kept if a container still uses it).
    if [ -n "$image_id" ] && [ "$image_id" != "$new_id" ]; then
        docker image rm "$image_id" >/dev/null 2>&1 || true
    fi
    log "built $tag in $((SECONDS - started)) s ($(docker image inspect -f '{{ .Size }}' "$tag" | awk '{printf "%.1f MB", $1/1e6}'))"
}

# unpack_debs DIR PACKAGE...: Debian's packages downloaded and unpacked
# into DIR (not installed).
unpack_debs() {
    local dir="$1"
    shift
    mkdir -p "$dir/.debs"
    if ! (cd "$dir/.debs" && apt-get download "$@" >/dev/null 2>&1); then
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        (cd "$dir/.debs" && apt-get download "$@" >/dev/null)
    fi
    local deb
    for deb in "$dir"/.debs/*.deb; do dpkg-deb -x "$deb" "$dir"; done
}

# stage_libraries DIR BINARY...: copies the shared libraries the binaries
# link (as the loader finds them, the unpacked packages' first) into DIR
# under the names they are linked by; prints their paths.
stage_libraries() {
    local dir="$1"
    shift
    mkdir -p "$dir"
    local listing
    listing="$(LD_LIBRARY_PATH="$debs/usr/lib/x86_64-linux-gnu:$debs/lib/x86_64-linux-gnu" ldd "$@")"
    if grep -q "not found" <<<"$listing"; then
        echo "$listing" >&2
        die "a library of $* is missing (see above)"
    fi
    local name path
    while read -r name path; do
        cp -L "$path" "$dir/$name"
        echo "$dir/$name"
    done < <(awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 } $1 ~ /^\/.*ld-linux/ { n = split($1, p, "/"); print p[n], $1 }' <<<"$listing" | sort -u)
}

if $failpoints; then
    build_image raftvisor:failpoints images/raftvisor/Dockerfile "$bin_dir/raftvisor" "$busybox"
else
    build_image raftvisor:local images/raftvisor/Dockerfile "$bin_dir/raftvisor" "$busybox"
    build_image raftvisor-echo:local images/echo/Dockerfile "$bin_dir/raftvisor-echo" "$busybox"
    # etcd's and Redis's binaries, unpacked from Debian's packages (not
    # installed: no etcd or Redis service starts on this machine), each
    # image with the shared libraries its binaries link.
    debs="$context_root/debs"
    unpack_debs "$debs" etcd-server etcd-client \
        redis-server redis-tools libjemalloc2 liblzf1 libatomic1
    etcd_libs="$(stage_libraries "$context_root/etcd-libs" "$debs/usr/bin/etcd" "$debs/usr/bin/etcdctl")"
    # shellcheck disable=SC2086 # one path per word
    build_image raftvisor-etcd:local images/etcd/Dockerfile \
        "$debs/usr/bin/etcd" "$debs/usr/bin/etcdctl" "$busybox" $etcd_libs
    redis_libs="$(stage_libraries "$context_root/redis-libs" "$debs/usr/bin/redis-check-rdb" "$debs/usr/bin/redis-cli")"
    # redis-server is a link to redis-check-rdb: the binary picks its role
    # from the name it was started by.
    cp "$debs/usr/bin/redis-check-rdb" "$context_root/redis-server"
    # shellcheck disable=SC2086
    build_image raftvisor-redis:local images/redis/Dockerfile \
        "$context_root/redis-server" "$debs/usr/bin/redis-cli" "$busybox" $redis_libs
fi
