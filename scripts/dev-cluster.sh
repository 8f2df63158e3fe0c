#!/usr/bin/env bash
# A local three-replica raftvisor cluster on 127.0.0.1.
#   up      build, start whichever replicas are not running (keeping their
#           data), wait for a leader, print where data and logs are
#   down    stop the replicas (data is kept)
#   status  members, leader, processes, data and log locations
#   clean   stop the replicas and delete their data and logs
# Replica N: API 700N, peer 710N, DNS 860N; configs in cluster-config/local-3/.
# The cluster's admin token is in .dev-cluster/bootstrap.token (written by
# `up` before the first start; use it with --token-file or
# RAFTVISOR_TOKEN_FILE).
# The replicas talk mutual TLS and serve HTTPS: the first 'up' creates a CA
# and their certificates in .dev-cluster/certs/ (the CLI finds the CA
# through RAFTVISOR_CA=.dev-cluster/certs/ca.pem).
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
cd "$RAFTVISOR_ROOT"

STATE_DIR="$RAFTVISOR_ROOT/.dev-cluster"
CERT_DIR="$STATE_DIR/certs"
IDS=(1 2 3)
TOKEN_FILE="$STATE_DIR/bootstrap.token"
# The CLI trusts the cluster CA (and so speaks HTTPS) through RAFTVISOR_CA.
export RAFTVISOR_CA="$CERT_DIR/ca.pem"

pid_file() { echo "$STATE_DIR/pids/replica-$1.pid"; }
log_file() { echo "$STATE_DIR/logs/replica-$1.log"; }

running_pid() {
    local file pid
    file="$(pid_file "$1")"
    [ -f "$file" ] || return 1
    pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null && grep -q raftvisor "/proc/$pid/cmdline" 2>/dev/null; then
        echo "$pid"
    else
        return 1
    fi
}

api() { rv_curl -fsS --max-time 2 --cacert "$RAFTVISOR_CA" "https://127.0.0.1:700$1$2"; }

# Creates the CA and the replicas' certificates that do not exist yet.
ensure_certs() {
    if [ ! -f "$CERT_DIR/ca.pem" ]; then
        log "creating the cluster CA in $CERT_DIR"
        "$RAFTVISOR_BIN" certs init --dir "$CERT_DIR" >/dev/null
    fi
    for id in "${IDS[@]}"; do
        # Certificates from before manager certificates named their Raft id
        # are refused by the peers: issue them anew.
        if [ -f "$CERT_DIR/replica-$id.pem" ] &&
            ! "$RAFTVISOR_BIN" certs show --output json "$CERT_DIR/replica-$id.pem" | grep -q "\"raft_id\":$id,"; then
            log "replica-$id's certificate names no Raft id; issuing a new one"
            rm -f "$CERT_DIR/replica-$id.pem" "$CERT_DIR/replica-$id-key.pem"
        fi
        if [ ! -f "$CERT_DIR/replica-$id.pem" ]; then
            "$RAFTVISOR_BIN" certs issue --dir "$CERT_DIR" --role manager --name "replica-$id" \
                --id "$id" --san 127.0.0.1 --san localhost >/dev/null
        fi
    done
}

wait_for_leader() {
    local deadline=$((SECONDS + 30))
    while [ "$SECONDS" -lt "$deadline" ]; do
        for id in "${IDS[@]}"; do
            if api "$id" /v1/cluster 2>/dev/null | grep -q '"leader_id":[0-9]'; then
                return 0
            fi
        done
        sleep 0.2
    done
    echo "no leader was elected within 30 s; see the logs in $STATE_DIR/logs" >&2
    return 1
}

up() {
    ensure_packages curl
    build_release
    mkdir -p "$STATE_DIR/pids" "$STATE_DIR/logs" "$STATE_DIR/data"
    if [[ ! -s $STATE_DIR/secrets.key ]]; then
        # The key that seals services' secret_env (every replica shares it).
        (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$STATE_DIR/secrets.key")
        log "created the secrets key $STATE_DIR/secrets.key"
    fi
    # Before the first start: the cluster takes it as its admin token.
    ensure_token_file "$TOKEN_FILE"
    use_token_file "$TOKEN_FILE"
    ensure_certs
    for id in "${IDS[@]}"; do
        if pid="$(running_pid "$id")"; then
            log "replica $id already running (pid $pid)"
            continue
        fi
        log "starting replica $id"
        RAFTVISOR_LOG="${RAFTVISOR_LOG:-info,openraft=warn,hickory_server=warn}" nohup "$RAFTVISOR_BIN" agent \
            --config "cluster-config/local-3/replica-$id.toml" >>"$(log_file "$id")" 2>&1 &
        echo $! >"$(pid_file "$id")"
    done
    sleep 0.3
    for id in "${IDS[@]}"; do
        if ! running_pid "$id" >/dev/null; then
            echo "replica $id exited at start; last lines of $(log_file "$id"):" >&2
            tail -n 5 "$(log_file "$id")" >&2
            exit 1
        fi
    done
    wait_for_leader
    status
    cat <<MSG

The cluster is up, with TLS and API tokens. The CA and the certificates are
in $CERT_DIR, the admin token is in $TOKEN_FILE. Try:
  export RAFTVISOR_CA=$RAFTVISOR_CA RAFTVISOR_TOKEN_FILE=$TOKEN_FILE
  $RAFTVISOR_BIN kv put hello world
  $RAFTVISOR_BIN kv get hello
  $RAFTVISOR_BIN cluster status
  $RAFTVISOR_BIN token create --role read --name me     # a read-only token
  curl -s --cacert \$RAFTVISOR_CA -H "Authorization: Bearer \$(cat $TOKEN_FILE)" https://127.0.0.1:7002/v1/kv/hello
Stop it with: scripts/dev-cluster.sh down   (data is kept; 'clean' deletes it)
MSG
}

down() {
    for id in "${IDS[@]}"; do
        if pid="$(running_pid "$id")"; then
            log "stopping replica $id (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$(pid_file "$id")"
    done
}

status() {
    local answered=""
    for id in "${IDS[@]}"; do
        if pid="$(running_pid "$id")"; then
            echo "replica $id: running (pid $pid), api 127.0.0.1:700$id, peer 127.0.0.1:710$id"
            [ -n "$answered" ] || answered="$id"
        else
            echo "replica $id: stopped"
        fi
        echo "  data: $STATE_DIR/data/replica-$id"
        echo "  log:  $(log_file "$id")"
        echo "  cert: $CERT_DIR/replica-$id.pem"
    done
    echo "admin token: $TOKEN_FILE"
    echo "CA: $RAFTVISOR_CA (export RAFTVISOR_CA=$RAFTVISOR_CA for the CLI)"
    if [ -n "$answered" ] && [ -x "$RAFTVISOR_BIN" ]; then
        echo
        RAFTVISOR_TOKEN_FILE="$TOKEN_FILE" "$RAFTVISOR_BIN" --addr "127.0.0.1:700$answered" cluster status || true
    fi
}

clean() {
    down
    log "deleting $STATE_DIR"
    rm -rf "$STATE_DIR"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    clean) clean ;;
    *)
        echo "usage: $0 up|down|status|clean" >&2
        exit 2
        ;;
esac
