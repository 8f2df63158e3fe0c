"""bench restart (scripts/bench-restart.sh): a container's main process
is SIGKILLed -> it runs again; raftvisor (three replicas, the local engine
as its node, a one-replica service of the echo image) against dockerd's own
`--restart=always` and against the floor: a container without a restart
policy that the poller itself starts (`POST /containers/{id}/start`) as
soon as it sees it exited. Trials alternate, each container up at least
SPACING_S before its kill so every trial is a first restart on every side.
The same Docker API poller measures all three."""
import json
import math
import os
import signal
import sys
import time

from . import docker, rvcluster, settings
from .console import Failure, log, table
from .stats import summary

SERVICE_TOML = """namespace = "bench"
name = "restart"

[spec]
image = "{image}"
replicas = 1

[spec.restart]
initial_backoff_ms = 100
max_backoff_ms = 30000
reset_after_ms = 10000
"""


def trial(engine, side, labels, min_uptime, poll_ms, timeout, start_it=False):
    """Kills the one running container of a side (once up min_uptime s) and
    polls until a container of that side runs again with another pid (with
    start_it, the poller starts it itself once it has exited); returns the
    record, None on time-out."""
    deadline = time.monotonic() + timeout + min_uptime + 10
    while True:
        if time.monotonic() > deadline:
            raise Failure(f"{side}: no single running container to kill")
        found = engine.running(labels)
        if len(found) == 1:
            info = engine.inspect(found[0]["Id"])
            if info and info["State"]["Running"] and info["State"]["Pid"] > 0:
                up = time.time() - (docker.parse_time(info["State"]["StartedAt"]) or time.time())
                if up >= min_uptime:
                    break
                time.sleep(min(min_uptime - up, min_uptime) + 0.01)
                continue
        time.sleep(0.1)
    cid, pid0 = info["Id"], info["State"]["Pid"]
    restarts0 = info.get("RestartCount", 0)
    t0 = time.monotonic()
    os.kill(pid0, signal.SIGKILL)
    polls = 0
    result = None
    while time.monotonic() - t0 < timeout:
        polls += 1
        now = engine.inspect(cid)
        if now and now["State"]["Running"] and now["State"]["Pid"] not in (0, pid0):
            result = {"same_container": True, "new_pid": now["State"]["Pid"],
                      "restart_count": now.get("RestartCount", 0) - restarts0}
        elif start_it and now and not now["State"]["Running"]:
            engine.start(cid)
            continue
        elif now is None or polls % 10 == 0:
            # Replaced by another container (e.g. re-placed)?
            for c in engine.running(labels):
                if c["Id"] != cid:
                    other = engine.inspect(c["Id"])
                    if other and other["State"]["Running"]:
                        result = {"same_container": False, "new_pid": other["State"]["Pid"]}
                        break
        if result is not None:
            break
        time.sleep(poll_ms / 1000.0)
    elapsed_ms = (time.monotonic() - t0) * 1000.0
    if result is None:
        print(f"{side}: not running again within {timeout} s of the kill", file=sys.stderr)
        return None
    result.update({"side": side, "ms": round(elapsed_ms, 1), "old_pid": pid0, "polls": polls,
                   "up_before_kill_s": round(up, 1)})
    print(f"{side:9s} {elapsed_ms:7.1f} ms  (pid {pid0} -> {result['new_pid']}, "
          f"{'same' if result['same_container'] else 'NEW'} container, {polls} polls)", file=sys.stderr)
    return result


def report(dockerd, raftvisor, bare=None):
    d, r = summary([t["ms"] for t in dockerd]), summary([t["ms"] for t in raftvisor])
    b = summary([t["ms"] for t in bare]) if bare else None
    if d is None or r is None:
        print("no results")
        return
    sides = [("dockerd --restart=always", d), ("raftvisor (3 replicas)", r)]
    if b is not None:
        sides.append(("bare docker start (the floor)", b))
    table([("side", "l"), ("trials", "r"), ("min", "r"), ("median", "r"), ("p99", "r"), ("max", "r")],
          [[name, s["n"], f"{s['min']:.0f} ms", f"{s['median']:.0f} ms", f"{s['p99']:.0f} ms", f"{s['max']:.0f} ms"]
           for name, s in sides])
    print()
    ratio_med = r["median"] / d["median"]
    ratio_p99 = r["p99"] / d["p99"]
    print(f"- ratio raftvisor/dockerd: median {ratio_med:.2f}x, p99 {ratio_p99:.2f}x, "
          f"max {r['max'] / d['max']:.2f}x")
    print(f"- goal <= 0.8x dockerd (median): {'met' if ratio_med <= 0.8 else 'NOT met'}; "
          f"p99: {'met' if ratio_p99 <= 0.8 else 'NOT met'}")
    if b is not None:
        over = r["median"] / b["median"] - 1
        print(f"- raftvisor against the bare start: median {over * 100:+.0f} %; goal within 10 %: "
              f"{'met' if over <= 0.10 else 'NOT met'}")
    replaced = sum(1 for t in raftvisor if not t["same_container"])
    if replaced:
        print(f"- raftvisor replaced the container (new container instead of a restart) in {replaced} trials")
    print(f"- p99 is the nearest-rank 99th percentile: with {r['n']} trials, value "
          f"{math.ceil(0.99 * r['n'])} of {r['n']} in ascending order")


def start_container(cluster, engine, name, label, options):
    """docker run -d of the echo image with `options`, named and labelled
    for this run (and removed with it); returns its label filter once it runs."""
    cluster.containers.append(name)
    code, out = docker.cli("run", "-d", *options, "--name", name, "--label", label, rvcluster.ECHO_IMAGE)
    if code != 0:
        raise Failure(f"docker run failed: {out}")
    if not engine.wait_running([label], 1, 60):
        raise Failure(f"container {name} did not start")
    return [label]


def main():
    trials = settings.whole("TRIALS", 20, 1, message="TRIALS must be a positive integer")
    spacing = settings.whole("SPACING_S", 11)
    poll_ms = settings.whole("POLL_MS", 5)
    timeout = settings.whole("TRIAL_TIMEOUT_S", 30)
    with rvcluster.SupervisorCluster() as cluster:
        run_id = os.path.basename(cluster.dir).rsplit(".", 1)[-1]
        log("starting the three-replica cluster")
        cluster.start(["node_grace_ms = 2000", "probe_interval_ms = 250"])
        cluster.cli("node", "add", "bench-local", "--docker", f"unix://{docker.SOCK}", "--address", "127.0.0.1")
        service = cluster.run.path("restart.toml")
        with open(service, "w") as f:
            f.write(SERVICE_TOML.format(image=rvcluster.ECHO_IMAGE))
        cluster.cli("service", "deploy", service)
        engine = docker.Docker()
        rv_labels = cluster.labels("bench", "restart")
        if not engine.wait_running(rv_labels, 1, 60):
            raise Failure("the raftvisor service did not start")
        d_labels = start_container(cluster, engine, f"rvbench-restart-{run_id}",
                                   f"raftvisor-bench.run={run_id}", ["--restart=always"])
        b_labels = start_container(cluster, engine, f"rvbench-bare-{run_id}",
                                   f"raftvisor-bench.bare={run_id}", [])

        before = cluster.activity()
        log(f"{trials} trials per side, alternating, each container up >= {spacing} s before its kill "
            f"(~{trials * (spacing + 1) // 60 + 1} min)")
        results = {"dockerd": [], "raftvisor": [], "bare": []}
        for i in range(1, trials + 1):
            for side, labels in (("dockerd", d_labels), ("raftvisor", rv_labels), ("bare", b_labels)):
                sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] trial {i}/{trials}: ")
                record = trial(engine, side, labels, spacing, poll_ms, timeout, start_it=side == "bare")
                if record is None:
                    raise Failure(f"{side} trial {i} failed")
                results[side].append(record)
                with open(cluster.run.path(f"{side}.jsonl"), "a") as f:
                    f.write(json.dumps(record) + "\n")
        after = cluster.activity()
        state = rvcluster.instances(cluster, "bench/restart")

        print()
        print("### Crash restart: raftvisor vs dockerd --restart=always and a bare docker start")
        cluster.print_context(f"TRIALS={trials} SPACING_S={spacing} POLL_MS={poll_ms} scripts/bench-restart.sh",
                              before, after)
        report(results["dockerd"], results["raftvisor"], results["bare"])
        if state:
            print(f"- raftvisor's view at the end: {state}")
