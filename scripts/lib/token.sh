# Token helpers of raftvisor's scripts; sourced, not run.
#
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
