#!/usr/bin/env bash
# raftvisor's main job in one command: builds the binary and the images,
# brings up the local three-replica cluster (scripts/dev-cluster.sh), registers
# the local Docker Engine as node "local", deploys demo/echo (three echo
# containers, port "http") and waits until they run. The cluster is left
# running; the script ends by showing how to watch it heal.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$RAFTVISOR_ROOT"

ensure_packages curl
ensure_docker || die "the Docker Engine does not answer ('docker info' fails; see /tmp/raftvisor-dockerd.log)"
scripts/build-images.sh
scripts/dev-cluster.sh up
# The local cluster serves its API over HTTPS with a CA of its own.
export RAFTVISOR_CA="$RAFTVISOR_ROOT/.dev-cluster/certs/ca.pem"

TOKEN_FILE="$RAFTVISOR_ROOT/.dev-cluster/bootstrap.token"
export RAFTVISOR_TOKEN_FILE="$TOKEN_FILE"
rv() { "$RAFTVISOR_BIN" --addr 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 "$@"; }

log "registering the local Docker Engine as node 'local'"
rv node add local --docker unix:///var/run/docker.sock --address 127.0.0.1 --region local --zone local-a >/dev/null
log "deploying demo/echo"
rv service deploy cluster-config/services/echo.toml

log "waiting for three healthy echo instances"
deadline=$((SECONDS + 60))
until rv --output json service report demo/echo 2>/dev/null | grep -q '"running": 3'; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "demo/echo did not reach 3 running instances within 60 s:" >&2
        rv service report demo/echo >&2 || true
        exit 1
    fi
    sleep 0.5
done
rv service show demo/echo

port="$(rv --output json service show demo/echo | grep -o '"host_port": [0-9]*' | head -n1 | grep -o '[0-9]*$')"
cat <<MSG

demo/echo runs three echo containers supervised by a three-replica cluster.
Its API needs a token: the admin token is in $TOKEN_FILE
  export RAFTVISOR_TOKEN_FILE=$TOKEN_FILE    # the commands below use it
The replicas talk mutual TLS; the CA and their certificates are in
$RAFTVISOR_ROOT/.dev-cluster/certs/. Point the CLI at the CA first:
  export RAFTVISOR_CA=$RAFTVISOR_CA
  curl -s http://127.0.0.1:$port/            # one of the instances answers
  $RAFTVISOR_BIN service report demo/echo    # desired, running, restarts, events

Watch it heal:
  watch -n 0.5 $RAFTVISOR_BIN service show demo/echo
  docker kill \$(docker ps -q --filter label=raftvisor.service=echo | head -n1)    # a container dies: restarted
  kill -9 \$(cat .dev-cluster/pids/replica-1.pid)                                  # a manager dies: another leads
  $RAFTVISOR_BIN cluster status --addr 127.0.0.1:7002
  scripts/dev-cluster.sh up                                                        # bring the dead manager back

Stop everything: $RAFTVISOR_BIN service rm demo/echo && scripts/dev-cluster.sh down
MSG
