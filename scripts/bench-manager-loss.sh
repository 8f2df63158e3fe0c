#!/usr/bin/env bash
# Manager loss: three managers as containers (raftvisor:local, brought up by
# `raftvisor bootstrap`) on the local engine. TRIALS times, a follower
# manager's container is removed for good (`docker rm -f`) while a writer
# puts a KV key every WRITE_EVERY_MS through the API (any manager,
# 300 ms per request). Measured per trial:
#   - the longest time between two acknowledged writes around the loss
#     (writes unavailable), and
#   - the time from the removal until the cluster has 3 voters again, the
#     removed one not among them (full replacement).
# Prints each trial, the median and the max, and the goals: writes never
# unavailable longer than one election (<= 500 ms) when a follower is lost;
# full replacement <= replace_after + 10 s.
#
#   scripts/bench-manager-loss.sh           # TRIALS=10 REPLACE_AFTER_MS=5000
#
# Environment: TRIALS (10), REPLACE_AFTER_MS (5000), WRITE_EVERY_MS (20),
#   SKIP_BUILD=1 (use the binary and images as they are), KEEP_WORKDIR=1.
# Ports: API 37401-, peer 37451-, DNS 37491- (one more of each per
# replacement). Only 127.0.0.1 and this run's own containers (label
# raftvisor.manager.cluster=mloss<pid>) are touched; they are removed at exit.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

TRIALS=${TRIALS:-10}
REPLACE_AFTER_MS=${REPLACE_AFTER_MS:-5000}
WRITE_EVERY_MS=${WRITE_EVERY_MS:-20}
[[ $TRIALS =~ ^[0-9]+$ && $TRIALS -ge 1 && $TRIALS -le 50 ]] || die "TRIALS must be 1..50"
[[ $REPLACE_AFTER_MS =~ ^[0-9]+$ && $REPLACE_AFTER_MS -ge 1000 ]] || die "REPLACE_AFTER_MS must be >= 1000"

CLUSTER="mloss$$"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/raftvisor-bench-mloss.XXXXXX")
cleanup() {
    local ids
    ids=$(docker ps -aq --filter "label=raftvisor.manager.cluster=$CLUSTER" 2>/dev/null || true)
    [[ -n $ids ]] && docker rm -f $ids >/dev/null 2>&1
    if [[ ${KEEP_WORKDIR:-0} == 1 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_packages python3 curl
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    "$RAFTVISOR_ROOT/scripts/build-images.sh"
fi
[[ -x $RAFTVISOR_BIN ]] || die "no binary at $RAFTVISOR_BIN"
docker image inspect raftvisor:local >/dev/null 2>&1 || die "image raftvisor:local is missing: run scripts/build-images.sh"

cat >"$WORK/cluster.toml" <<EOF
cluster = "$CLUSTER"
state_dir = "$WORK/state"
image = "raftvisor:local"
replace_after_ms = $REPLACE_AFTER_MS

[[machines]]
name = "local"
docker_endpoint = "unix:///var/run/docker.sock"
address = "127.0.0.1"
EOF
for i in 1 2 3; do
    cat >>"$WORK/cluster.toml" <<EOF

[[managers]]
id = $i
machine = "local"
api_port = $((37400 + i))
peer_port = $((37450 + i))
dns_port = $((37490 + i))
EOF
done
log "bootstrapping 3 managers (cluster $CLUSTER)"
"$RAFTVISOR_BIN" bootstrap "$WORK/cluster.toml" >"$WORK/bootstrap.txt" 2>&1 ||
    die "bootstrap failed: $(tail -n 3 "$WORK/bootstrap.txt")"

python3 - "$WORK" "$CLUSTER" "$TRIALS" "$REPLACE_AFTER_MS" "$WRITE_EVERY_MS" <<'PY'
import json, os, ssl, statistics, subprocess, sys, threading, time, urllib.request

work, cluster, trials, replace_after_ms, every_ms = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
state = os.path.join(work, "state")
ctx = ssl.create_default_context(cafile=os.path.join(state, "certs", "ca.pem"))
token = open(os.path.join(state, "bootstrap.token")).read().strip()

def managers():
    plan = json.load(open(os.path.join(state, "plan.json"))) if os.path.exists(os.path.join(state, "plan.json")) else None
    return plan

def call(addr, method, path, body=None, timeout=0.3):
    req = urllib.request.Request(f"https://{addr}{path}", data=body, method=method,
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
        return r.status, r.read()

addrs = [f"127.0.0.1:{37400 + i}" for i in range(1, 60)]

def status():
    for addr in addrs:
        try:
            code, body = call(addr, "GET", "/v1/cluster?stale", timeout=0.3)
            s = json.loads(body)
            if s.get("leader_id"):
                return s
        except Exception:
            continue
    return None

def api_of(s, mid):
    for m in s["members"]:
        if m["id"] == mid:
            return m["api_addr"]
    return None

results = []
for trial in range(1, trials + 1):
    s = None
    deadline = time.time() + 60
    while time.time() < deadline:
        s = status()
        if s and sum(1 for m in s["members"] if m["voter"]) == 3:
            break
        time.sleep(0.2)
    if not s:
        sys.exit("no healthy cluster before trial %d" % trial)
    leader = s["leader_id"]
    voters = [m["id"] for m in s["members"] if m["voter"]]
    victim = max(v for v in voters if v != leader)
    live = [api_of(s, v) for v in voters if v != victim]
    acks = []
    stop = threading.Event()
    def writer():
        n = 0
        while not stop.is_set():
            n += 1
            for addr in live:
                try:
                    code, _ = call(addr, "PUT", f"/v1/kv/bench/mloss/{trial}/{n}", b"x")
                    if code == 200:
                        acks.append(time.time())
                        break
                except Exception:
                    continue
            time.sleep(every_ms / 1000)
    t = threading.Thread(target=writer)
    t.start()
    time.sleep(1.0)
    removed_at = time.time()
    subprocess.run(["docker", "rm", "-f", f"rv-manager-{cluster}-{victim}"], check=True, capture_output=True)
    replaced_at = None
    limit = removed_at + replace_after_ms / 1000 + 60
    while time.time() < limit:
        s2 = status()
        if s2:
            v2 = [m["id"] for m in s2["members"] if m["voter"]]
            if len(v2) == 3 and victim not in v2:
                replaced_at = time.time()
                break
        time.sleep(0.05)
    time.sleep(0.5)
    stop.set()
    t.join()
    window = [a for a in acks if a >= removed_at - 1.0]
    gaps = [b - a for a, b in zip(window, window[1:])]
    worst = max(gaps) * 1000 if gaps else float("nan")
    replaced_ms = (replaced_at - removed_at) * 1000 if replaced_at else float("nan")
    results.append((trial, victim, leader, worst, replaced_ms, len(window)))
    print(f"trial {trial}: removed manager {victim} (leader {leader}); longest gap between acknowledged writes "
          f"{worst:.0f} ms; 3 voters again after {replaced_ms:.0f} ms; {len(window)} writes", flush=True)

gaps = [r[3] for r in results]
repl = [r[4] for r in results if r[4] == r[4]]
print()
print("| measure | trials | median ms | max ms | goal |")
print("|---|---:|---:|---:|---|")
print(f"| writes unavailable (longest gap between acknowledged writes) | {len(gaps)} | {statistics.median(gaps):.0f} | {max(gaps):.0f} | <= 500 ms |")
if repl:
    print(f"| removal -> 3 voters again (replacement) | {len(repl)} | {statistics.median(repl):.0f} | {max(repl):.0f} | <= replace_after ({replace_after_ms} ms) + 10 s |")
print()
ok_gap = max(gaps) <= 500
ok_repl = len(repl) == len(results) and max(repl) <= replace_after_ms + 10000
print(f"- goal writes never unavailable > 500 ms when a follower is lost: {'met' if ok_gap else 'NOT met'} (max {max(gaps):.0f} ms)")
print(f"- goal full replacement <= replace_after + 10 s: {'met' if ok_repl else 'NOT met'}"
      + (f" (max {max(repl):.0f} ms)" if repl else " (a trial never completed)"))
PY
