#!/usr/bin/env bash
# DNS smoke check with dig against a local three-replica raftvisor cluster.
#
#   scripts/dns-smoke.sh          # the dev cluster (scripts/dev-cluster.sh up:
#                                 # API 7001-7003, DNS 8601-8603) if it answers,
#                                 # otherwise a temporary cluster of its own
#   scripts/dns-smoke.sh --own    # always a temporary cluster of its own
#
# Checks, on every replica:
#   1. leader.managers.<domain> A answers the leader's API address (NOERROR, aa);
#   2. an external service created through the API (smoke/ext-<pid>, two
#      TEST-NET addresses that are only data) resolves to its addresses;
#   3. the same over TCP (dig +tcp);
#   4. an unknown name under the domain is NXDOMAIN with the SOA.
# The service is deleted again at the end. Prints one line per check and
# exits 1 with a "FAIL:" line naming the first check that failed.
#
# Environment:
#   SMOKE_API=127.0.0.1:7001,...   API addresses of the cluster to check, and
#   SMOKE_DNS=127.0.0.1:8601,...   its DNS addresses (same order; both or none)
#   RAFTVISOR_TOKEN / RAFTVISOR_TOKEN_FILE   an operator or admin token of that
#                                  cluster (the dev cluster's and its own
#                                  cluster's are found without them)
#   SMOKE_CA=FILE                  CA certificate of that cluster's HTTPS API
#                                  (unset: plain HTTP, an insecure cluster)
#   DOMAIN=cluster.local           the cluster's DNS domain
#   SKIP_BUILD=1                   (own cluster) use the release binary as it is
#   CARGO_BUILD_JOBS               jobs of the release build (default 1)
#
# Its own cluster: API 37011-37013, peer 37111-37113, DNS 38611-38613 on
# 127.0.0.1, data and certificates (a CA of its own, mutual TLS between the
# replicas) in a temporary directory; stopped and removed at exit.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}

DOMAIN=${DOMAIN:-cluster.local}
OWN=0
case "${1:-}" in
    --own) OWN=1 ;;
    "") ;;
    *)
        echo "usage: $0 [--own]" >&2
        exit 2
        ;;
esac

API=()
DNS=()
WORK=""
PIDS=()
SERVICE="ext-$$"
CREATED=""
# CA of the cluster's HTTPS API; empty: plain HTTP.
CA="${SMOKE_CA:-}"

ok() { echo "ok:   $*"; }
fail() {
    echo "FAIL: $*"
    exit 1
}

ours() {
    [[ -n $WORK && -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$WORK"
}

cleanup() {
    local rc=$? pid i alive
    trap - EXIT INT TERM
    if [[ -n $CREATED ]]; then
        curl_api "$CREATED" "/v1/services/smoke/$SERVICE" -fsS --max-time 5 -X DELETE >/dev/null 2>&1 || true
    fi
    for pid in "${PIDS[@]}"; do
        ours "$pid" && kill -TERM "$pid" 2>/dev/null
    done
    for ((i = 0; i < 50; i++)); do
        alive=0
        for pid in "${PIDS[@]}"; do
            ours "$pid" && alive=1
        done
        [[ $alive -eq 0 ]] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
        ours "$pid" && kill -KILL "$pid" 2>/dev/null
    done
    [[ -n $WORK && -d $WORK ]] && rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# curl_api ADDR PATH [curl options...]: HTTPS with the CA when there is one.
curl_api() {
    local addr=$1 path=$2
    shift 2
    if [[ -n $CA ]]; then
        rv_curl --cacert "$CA" "$@" "https://$addr$path"
    else
        rv_curl "$@" "http://$addr$path"
    fi
}

# api_get ADDR PATH
api_get() { curl_api "$1" "$2" -fsS --max-time 3; }

# dig_at ADDR NAME TYPE [dig options...]
dig_at() {
    local addr=$1 name=$2 type=$3
    shift 3
    dig @"${addr%:*}" -p "${addr##*:}" +norecurse +time=2 +tries=2 "$@" "$name" "$type"
}

# The dev cluster if it answers, unless --own or SMOKE_API/SMOKE_DNS say otherwise.
choose_cluster() {
    if [[ -n ${SMOKE_API:-} || -n ${SMOKE_DNS:-} ]]; then
        IFS=, read -r -a API <<<"${SMOKE_API:?SMOKE_API and SMOKE_DNS go together}"
        IFS=, read -r -a DNS <<<"${SMOKE_DNS:?SMOKE_API and SMOKE_DNS go together}"
        [[ ${#API[@]} -eq ${#DNS[@]} ]] || fail "SMOKE_API and SMOKE_DNS list different numbers of replicas"
        if [[ -z ${RAFTVISOR_TOKEN:-} && -n ${RAFTVISOR_TOKEN_FILE:-} ]]; then
            use_token_file "$RAFTVISOR_TOKEN_FILE"
        fi
        return
    fi
    local dev_ca="$RAFTVISOR_ROOT/.dev-cluster/certs/ca.pem"
    [[ -f $dev_ca ]] && CA=$dev_ca
    if [[ $OWN -eq 0 ]] && api_get 127.0.0.1:7001 /v1/health >/dev/null 2>&1; then
        API=(127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003)
        DNS=(127.0.0.1:8601 127.0.0.1:8602 127.0.0.1:8603)
        # The dev cluster's admin token (scripts/dev-cluster.sh).
        if [[ -z ${RAFTVISOR_TOKEN:-} && -f $RAFTVISOR_ROOT/.dev-cluster/bootstrap.token ]]; then
            use_token_file "$RAFTVISOR_ROOT/.dev-cluster/bootstrap.token"
        fi
        echo "using the dev cluster (API ${API[*]}, DNS ${DNS[*]})"
        return
    fi
    CA=""
    start_own
}

start_own() {
    local i j bin
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        build_release >&2
    fi
    [[ -x $RAFTVISOR_BIN ]] || fail "no raftvisor binary at $RAFTVISOR_BIN"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/raftvisor-dns-smoke.XXXXXX")
    bin="$WORK/raftvisor"
    cp "$RAFTVISOR_BIN" "$bin"
    # The cluster's admin token, written before the start.
    ensure_token_file "$WORK/bootstrap.token"
    use_token_file "$WORK/bootstrap.token"
    "$bin" certs init --dir "$WORK/certs" >/dev/null
    for i in 1 2 3; do
        "$bin" certs issue --dir "$WORK/certs" --role manager --name "replica-$i" --id "$i" --san 127.0.0.1 --san localhost >/dev/null
    done
    CA="$WORK/certs/ca.pem"
    for i in 1 2 3; do
        API+=("127.0.0.1:3701$i")
        DNS+=("127.0.0.1:3861$i")
    done
    for i in 1 2 3; do
        mkdir -p "$WORK/r$i"
        {
            echo "id = $i"
            echo "data_dir = \"$WORK/r$i/data\""
            echo "api_addr = \"127.0.0.1:3701$i\""
            echo "peer_addr = \"127.0.0.1:3711$i\""
            echo "dns_addr = \"127.0.0.1:3861$i\""
            for j in 1 2 3; do
                echo
                echo "[[members]]"
                echo "id = $j"
                echo "api_addr = \"127.0.0.1:3701$j\""
                echo "peer_addr = \"127.0.0.1:3711$j\""
            done
            echo
            echo "[supervisor]"
            echo "enabled = false"
            echo
            echo "[dns]"
            echo "domain = \"$DOMAIN\""
            echo
            echo "[auth]"
            echo "bootstrap_token_file = \"$WORK/bootstrap.token\""
            echo "[tls]"
            echo "ca_cert = \"$CA\""
            echo "cert = \"$WORK/certs/replica-$i.pem\""
            echo "key = \"$WORK/certs/replica-$i-key.pem\""
        } >"$WORK/r$i/config.toml"
        env -u RAFTVISOR_ID -u RAFTVISOR_DATA_DIR -u RAFTVISOR_API_ADDR -u RAFTVISOR_PEER_ADDR \
            -u RAFTVISOR_DNS_ADDR -u RAFTVISOR_BOOTSTRAP_TOKEN_FILE -u RAFTVISOR_TLS_CA_CERT \
            -u RAFTVISOR_TLS_CERT -u RAFTVISOR_TLS_KEY -u RAFTVISOR_TLS_INSECURE RAFTVISOR_LOG="${RAFTVISOR_LOG:-warn}" \
            "$bin" agent --config "$WORK/r$i/config.toml" >"$WORK/r$i/log" 2>&1 </dev/null &
        PIDS+=("$!")
    done
    echo "started a temporary cluster (API ${API[*]}, DNS ${DNS[*]}; work directory $WORK)"
}

# Prints the leader's API address, waiting up to 30 s for one.
leader_api() {
    local deadline=$((SECONDS + 30)) addr out
    while [[ $SECONDS -lt $deadline ]]; do
        for addr in "${API[@]}"; do
            out=$(api_get "$addr" /v1/cluster 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
leader = s.get("leader_id")
for m in s.get("members", []):
    if leader and m.get("id") == leader:
        print(m.get("api_addr", ""))
' 2>/dev/null) || true
            if [[ -n $out ]]; then
                echo "$out"
                return 0
            fi
        done
        sleep 0.2
    done
    return 1
}

# eventually SECONDS command...: retries the command every 0.2 s.
eventually() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [[ $SECONDS -lt $deadline ]] || return 1
        sleep 0.2
    done
}

status_of() { awk '/status:/ { s = $6; sub(/,.*/, "", s); print s; exit }'; }

# answers_are ADDR NAME EXPECTED [dig options]: the A answers, sorted and
# space-separated, equal EXPECTED and the answer is authoritative.
answers_are() {
    local addr=$1 name=$2 expected=$3 out got
    shift 3
    out=$(dig_at "$addr" "$name" A "$@") || return 1
    [[ $(status_of <<<"$out") == NOERROR ]] || return 1
    grep -q '^;; flags: qr aa' <<<"$out" || return 1
    got=$(awk '/^;/ || NF < 5 { next } $3 == "IN" && $4 == "A" { print $5 }' <<<"$out" | sort | tr '\n' ' ')
    [[ ${got% } == "$expected" ]]
}

main() {
    command -v dig >/dev/null 2>&1 || ensure_packages bind9-dnsutils
    command -v curl >/dev/null 2>&1 || ensure_packages curl
    command -v python3 >/dev/null 2>&1 || ensure_packages python3
    choose_cluster
    local leader leader_ip addr i name out
    leader=$(leader_api) || fail "no leader among ${API[*]} within 30 s"
    leader_ip=${leader%:*}

    for i in "${!DNS[@]}"; do
        addr=${DNS[$i]}
        eventually 10 answers_are "$addr" "leader.managers.$DOMAIN" "$leader_ip" ||
            fail "$addr: leader.managers.$DOMAIN A is not $leader_ip: $(dig_at "$addr" "leader.managers.$DOMAIN" A +short | tr '\n' ' ')"
        ok "$addr: leader.managers.$DOMAIN A $leader_ip"
    done

    out=$(curl_api "${API[0]}" "/v1/services/smoke/$SERVICE" -sS --max-time 10 -w '\n%{http_code}' -X PUT \
        -H 'Content-Type: application/json' -d '{"kind": "external", "addresses": ["192.0.2.11", "192.0.2.10"]}') ||
        fail "PUT /v1/services/smoke/$SERVICE on ${API[0]} failed"
    [[ ${out##*$'\n'} == 200 ]] || fail "PUT /v1/services/smoke/$SERVICE on ${API[0]}: HTTP ${out##*$'\n'}: ${out%$'\n'*}"
    CREATED=${API[0]}
    ok "created the external service smoke/$SERVICE through ${API[0]}"
    name="$SERVICE.smoke.svc.$DOMAIN"
    for addr in "${DNS[@]}"; do
        eventually 10 answers_are "$addr" "$name" "192.0.2.10 192.0.2.11" ||
            fail "$addr: $name A is not 192.0.2.10 192.0.2.11 within 10 s: $(dig_at "$addr" "$name" A +short | tr '\n' ' ')"
        ok "$addr: $name A 192.0.2.10 192.0.2.11 (UDP)"
        answers_are "$addr" "$name" "192.0.2.10 192.0.2.11" +tcp ||
            fail "$addr: $name A over TCP: $(dig_at "$addr" "$name" A +tcp 2>&1 | grep -E 'status:|connection|timed out' | head -n 2 | tr '\n' ' ')"
        ok "$addr: $name A 192.0.2.10 192.0.2.11 (TCP)"
    done

    name="nothing-$$.smoke.svc.$DOMAIN"
    for addr in "${DNS[@]}"; do
        out=$(dig_at "$addr" "$name" A) || fail "$addr: no answer for $name"
        [[ $(status_of <<<"$out") == NXDOMAIN ]] || fail "$addr: $name is $(status_of <<<"$out"), not NXDOMAIN"
        awk '/^;; AUTHORITY SECTION:/ { a = 1; next } a && $4 == "SOA" { found = 1 } END { exit !found }' <<<"$out" ||
            fail "$addr: the NXDOMAIN answer for $name has no SOA in the authority section"
        ok "$addr: $name NXDOMAIN with the SOA"
    done

    out=$(curl_api "${API[0]}" "/v1/services/smoke/$SERVICE" -sS --max-time 10 -o /dev/null -w '%{http_code}' -X DELETE) || true
    CREATED=""
    [[ $out == 204 || $out == 200 ]] || fail "DELETE /v1/services/smoke/$SERVICE: HTTP $out"
    ok "deleted smoke/$SERVICE"
    echo "DNS smoke check passed on ${#DNS[@]} replicas"
}

main
