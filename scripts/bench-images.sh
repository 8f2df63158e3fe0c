#!/usr/bin/env bash
# Benchmark: a ~100 MB image to a running container on a node that lacks
# it. In one run, on the local Docker Engine and the same image: a plain
# `docker pull` + `docker run` from a local registry (Debian's
# docker-registry on loopback with TLS and htpasswd), raftvisor deploying a
# service of the image from that registry (three replicas, the registry
# login stored with `raftvisor registry login`), and raftvisor deploying it
# from a cluster import (`raftvisor image import`, timed from the start of
# the import). Every trial starts with the image removed from the engine.
#
#   scripts/bench-images.sh            # 5 trials per path, ~3 minutes
#   TRIALS=3 IMAGE_MB=50 scripts/bench-images.sh
#
# Environment:
#   TRIALS=5             trials per path
#   IMAGE_MB=100         random data added to the echo image
#   TRIAL_TIMEOUT_S=300  a trial fails if nothing runs within this
#   REGISTRY_PORT=27500  the registry's loopback port
#   plus those of scripts/lib/bench.sh (RAFTVISOR_BIN, SKIP_BUILD, KEEP_WORKDIR,
#   CARGO_BUILD_JOBS)
#
# Writes /etc/docker/certs.d/127.0.0.1:REGISTRY_PORT/ca.crt (root) so the
# engine trusts the registry's certificate, and removes it at exit, with the
# registry, the replicas, their containers, the benchmark's images and the
# work directory.
set -euo pipefail

# shellcheck source=scripts/lib/bench.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/bench.sh"
ensure_packages curl python3 docker-registry apache2-utils openssl
bench_image raftvisor-echo:local
bench_binary
bench_run images
