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
# With --previous-release, only:
#   raftvisor:TAG         the agent of the last release in RELEASES, built
#                         from that commit's tree (kept under
#                         target/releases/TAG), for the upgrade test
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
previous=false
for arg in "$@"; do
    case "$arg" in
        --failpoints) failpoints=true ;;
        --previous-release) previous=true ;;
        # The binaries in the target directory as they are (scripts/test.sh:
        # its tests have just built the agent with fail points).
        --prebuilt) prebuilt=true ;;
        *) die "unknown argument $arg (usage: scripts/build-images.sh [--failpoints | --previous-release] [--prebuilt])" ;;
    esac
done

# The last release's tree and binary: extracted from its commit (git
# archive: no tag needed) and built with the same toolchain and flags into
# the same target directory, so the dependencies, locked to the same
# versions, are shared and only raftvisor itself is compiled. That works
# because the release's package version differs from the tree's (cargo
# tells the two builds of raftvisor apart by name and version, not by
# path): every release bumps it, and the binary must report the release's
# version or it is refused. Cargo links this binary as
# target/…/release/raftvisor; the next build of the current tree links its
# own back, which scripts/test.sh does right after.
release_tree=""
release_bin=""
if $previous; then
    read -r release commit < <(grep -v '^[[:space:]]*\(#\|$\)' RELEASES | tail -n 1) \
        || die "RELEASES names no release"
    [ -n "${commit:-}" ] || die "RELEASES: the last line must read TAG COMMIT"
    release_tree="$target_dir/releases/$release/tree"
    release_bin="$target_dir/releases/$release/raftvisor"
    if [ ! -x "$release_bin" ] || [ ! -f "$release_tree/images/raftvisor/Dockerfile" ]; then
        git cat-file -e "$commit^{commit}" 2>/dev/null \
            || die "commit $commit of release $release is not in this clone (fetch it, or clone without --depth)"
        rm -rf "$release_tree"
        mkdir -p "$release_tree"
        git archive "$commit" | tar -x -C "$release_tree"
    fi
    if [ ! -x "$release_bin" ]; then
        log "building raftvisor $release ($commit) for the upgrade test"
        (cd "$release_tree" && CARGO_TARGET_DIR="$target_dir" \
            cargo build --release --locked --target "$RAFTVISOR_TARGET" --bin raftvisor)
        built="$("$bin_dir/raftvisor" --version)"
        [ "$built" = "raftvisor ${release#v}" ] \
            || die "building $release gave '$built', not raftvisor ${release#v}: does the tree's Cargo.toml still carry the release's version?"
        cp "$bin_dir/raftvisor" "$release_bin.tmp"
        mv "$release_bin.tmp" "$release_bin"
    fi
fi

if $previous; then
    log "using raftvisor $release from $release_bin"
elif $prebuilt; then
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

if $previous; then
    build_image "raftvisor:$release" "$release_tree/images/raftvisor/Dockerfile" "$release_bin" "$busybox"
elif $failpoints; then
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
