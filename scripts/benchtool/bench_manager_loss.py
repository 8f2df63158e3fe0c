"""bench manager-loss (scripts/bench-manager-loss.sh): three managers as
raftvisor:local containers on the local engine, brought up by `raftvisor
bootstrap`. Each trial removes a follower manager's container for good
while a writer puts a KV key every WRITE_EVERY_MS through the API; measured:
the longest gap between two acknowledged writes around the loss, and the
time until the cluster has 3 voters again without the removed one.
Ports: API 37401-, peer 37451-, DNS 37491- (one more of each per
replacement); only this run's containers (label
raftvisor.manager.cluster=mloss<pid>) are touched, and removed at exit."""
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from . import docker, procs, settings
from .console import Failure, log, table
from .httpclient import Endpoint, bearer, call

MACHINE = """cluster = "{cluster}"
state_dir = "{state}"
image = "raftvisor:local"
replace_after_ms = {replace_after_ms}

[[machines]]
name = "local"
docker_endpoint = "unix:///var/run/docker.sock"
address = "127.0.0.1"
"""

MANAGER = """
[[managers]]
id = {i}
machine = "local"
api_port = {api}
peer_port = {peer}
dns_port = {dns}
"""


class Managers:
    """The API of the bootstrapped managers (HTTPS with the cluster's CA,
    the bootstrap admin token), whichever of them are alive."""

    def __init__(self, state):
        self.ca = os.path.join(state, "certs", "ca.pem")
        with open(os.path.join(state, "bootstrap.token")) as f:
            self.token = f.read().strip()
        self.endpoints = [Endpoint("127.0.0.1", 37400 + i, self.ca) for i in range(1, 60)]

    def call(self, endpoint, method, path, body=None):
        return call(endpoint, method, path, body, bearer(self.token), timeout=0.3)

    def status(self):
        """The first answering manager's view of the cluster, with a leader."""
        for endpoint in self.endpoints:
            try:
                _, body = self.call(endpoint, "GET", "/v1/cluster?stale")
                s = json.loads(body)
                if s.get("leader_id"):
                    return s
            except Exception:
                continue
        return None

    def endpoint_of(self, status, manager_id):
        for m in status["members"]:
            if m["id"] == manager_id:
                host, port = m["api_addr"].rsplit(":", 1)
                return Endpoint(host, port, self.ca)
        return None


def voters(status):
    return [m["id"] for m in status["members"] if m["voter"]]


def trial(managers, cluster, number, replace_after_ms, every_ms):
    s = procs.wait_until(60, lambda: (lambda v: v if v and len(voters(v)) == 3 else None)(managers.status()))
    if not s:
        raise Failure(f"no healthy cluster before trial {number}")
    leader = s["leader_id"]
    victim = max(v for v in voters(s) if v != leader)
    live = [managers.endpoint_of(s, v) for v in voters(s) if v != victim]
    acks = []
    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set():
            n += 1
            for endpoint in live:
                try:
                    code, _ = managers.call(endpoint, "PUT", f"/v1/kv/bench/mloss/{number}/{n}", b"x")
                    if code == 200:
                        acks.append(time.time())
                        break
                except Exception:
                    continue
            time.sleep(every_ms / 1000)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(1.0)
        removed_at = time.time()
        subprocess.run(["docker", "rm", "-f", f"rv-manager-{cluster}-{victim}"], check=True, capture_output=True)
        replaced_at = None
        limit = removed_at + replace_after_ms / 1000 + 60
        while time.time() < limit:
            s2 = managers.status()
            if s2 and len(voters(s2)) == 3 and victim not in voters(s2):
                replaced_at = time.time()
                break
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    window = [a for a in acks if a >= removed_at - 1.0]
    gaps = [b - a for a, b in zip(window, window[1:])]
    worst = max(gaps) * 1000 if gaps else float("nan")
    replaced_ms = (replaced_at - removed_at) * 1000 if replaced_at else float("nan")
    print(f"trial {number}: removed manager {victim} (leader {leader}); longest gap between acknowledged writes "
          f"{worst:.0f} ms; 3 voters again after {replaced_ms:.0f} ms; {len(window)} writes", flush=True)
    return worst, replaced_ms


def report(results, replace_after_ms):
    gaps = [r[0] for r in results]
    repl = [r[1] for r in results if r[1] == r[1]]
    print()
    rows = [["writes unavailable (longest gap between acknowledged writes)", len(gaps),
             f"{statistics.median(gaps):.0f}", f"{max(gaps):.0f}", "<= 500 ms"]]
    if repl:
        rows.append(["removal -> 3 voters again (replacement)", len(repl), f"{statistics.median(repl):.0f}",
                     f"{max(repl):.0f}", f"<= replace_after ({replace_after_ms} ms) + 10 s"])
    table([("measure", "l"), ("trials", "r"), ("median ms", "r"), ("max ms", "r"), ("goal", "l")], rows)
    print()
    ok_gap = max(gaps) <= 500
    ok_repl = len(repl) == len(results) and max(repl) <= replace_after_ms + 10000
    print(f"- goal writes never unavailable > 500 ms when a follower is lost: {'met' if ok_gap else 'NOT met'} "
          f"(max {max(gaps):.0f} ms)")
    print(f"- goal full replacement <= replace_after + 10 s: {'met' if ok_repl else 'NOT met'}"
          + (f" (max {max(repl):.0f} ms)" if repl else " (a trial never completed)"))


def main():
    trials = settings.whole("TRIALS", 10, 1, 50, "TRIALS must be 1..50")
    replace_after_ms = settings.whole("REPLACE_AFTER_MS", 5000, 1000, message="REPLACE_AFTER_MS must be >= 1000")
    every_ms = settings.whole("WRITE_EVERY_MS", 20)
    binary = settings.binary()
    cluster = f"mloss{os.getpid()}"
    with procs.Run("raftvisor-bench-mloss.") as run:
        run.at_exit(lambda: docker.remove_labelled(f"raftvisor.manager.cluster={cluster}"))
        state = run.path("state")
        with open(run.path("cluster.toml"), "w") as f:
            f.write(MACHINE.format(cluster=cluster, state=state, replace_after_ms=replace_after_ms))
            for i in (1, 2, 3):
                f.write(MANAGER.format(i=i, api=37400 + i, peer=37450 + i, dns=37490 + i))
        log(f"bootstrapping 3 managers (cluster {cluster})")
        with open(run.path("bootstrap.txt"), "w") as out:
            if procs.run_bounded([binary, "bootstrap", run.path("cluster.toml")], out, 600) != 0:
                raise Failure(f"bootstrap failed: {procs.tail(run.path('bootstrap.txt'))}")
        managers = Managers(state)
        results = [trial(managers, cluster, n, replace_after_ms, every_ms) for n in range(1, trials + 1)]
        sys.stdout.flush()
        report(results, replace_after_ms)
