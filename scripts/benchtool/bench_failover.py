"""bench failover (scripts/bench-failover.sh): SIGKILL the leader of a
3-member etcd and of a 3-replica raftvisor and time how long until a write
through a survivor is acknowledged; before the trials, a 64-client write
load with the term and leader read around it (no spurious elections). The
killed member is started again with its data after each trial."""
import json
import math
import os
import queue
import signal
import statistics
import sys
import threading
import time

from . import cpu, kvcluster, settings
from .bench_kv import measure_point
from .console import Failure, log, table
from .stats import fmt, percentile, ratio


def poll_writes(cluster, survivors, t0, poll_s, req_timeout, limit_s, tag):
    """Starts a write to a survivor every poll_s seconds (each with its own
    short timeout, alternating survivors) until one is acknowledged.
    Returns (seconds from t0 to the first acknowledgement or None,
    attempts, failed attempts, name of the acknowledging member)."""
    results = queue.Queue()
    active = [0]
    lock = threading.Lock()
    max_active = int(math.ceil(req_timeout / poll_s)) + 4

    def attempt(member, key):
        ok = cluster.try_put(member, key, b"f" * 256, req_timeout)
        done = time.monotonic()
        with lock:
            active[0] -= 1
        results.put((ok, done, member.name))

    sent = failed = 0
    next_send = t0
    first = None
    while first is None:
        now = time.monotonic()
        if now - t0 > limit_s:
            break
        if now >= next_send:
            with lock:
                room = active[0] < max_active
                if room:
                    active[0] += 1
            if room:
                member = survivors[sent % len(survivors)]
                threading.Thread(target=attempt, args=(member, f"bench/failover/{tag}/{sent}"),
                                 daemon=True).start()
                sent += 1
            next_send += poll_s
            if next_send < now:
                next_send = now + poll_s
        wait = max(0.0, min(next_send, t0 + limit_s) - time.monotonic())
        try:
            ok, done, name = results.get(timeout=wait)
        except queue.Empty:
            continue
        while True:
            if ok and first is None:
                first = (done - t0, name)
            elif not ok:
                failed += 1
            try:
                ok, done, name = results.get_nowait()
            except queue.Empty:
                break
    # let the attempts still out finish (each is bounded by req_timeout)
    end = time.monotonic() + req_timeout + 1.0
    while time.monotonic() < end:
        with lock:
            if active[0] == 0:
                break
        time.sleep(0.01)
    if first is None:
        return None, sent, failed, None
    return first[0], sent, failed, first[1]


def trials(run, cluster, a):
    """a.trials failover trials; returns the summary with every record."""
    name = cluster.system
    times = []
    failures = 0
    records = []
    redo = 0
    trial = 0
    while trial < a.trials:
        if redo == 0:
            trial += 1
        leader = cluster.wait_ready(a.ready_timeout, tag=f"ready{trial}")
        if leader is None:
            raise Failure(f"{name}: cluster not healthy before trial {trial}; stopping")
        foreign = cpu.quiet_wait(run.dir, a.quiet.max_pct, a.quiet.wait, max(a.settle, 0.5))
        view = cluster.statuses()
        leader = cluster.agreed_leader(view)
        pid = leader.pid() if leader else None
        if leader is None or pid is None:
            print(f"{name}: leader changed while settling before trial {trial}; retrying", file=sys.stderr)
            continue
        term_before = view[leader.name]["term"]
        survivors = [m for m in cluster.members if m is not leader]
        ticks_before = cpu.snapshot()
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        elapsed, sent, failed, via = poll_writes(cluster, survivors, t0, a.poll_ms / 1000.0,
                                                 a.request_timeout_ms / 1000.0, a.trial_timeout, f"t{trial}")
        during, _ = cpu.foreign_share(run.dir, ticks_before, cpu.snapshot(), time.monotonic() - t0)
        after = cluster.statuses(survivors)
        term_after = max((s.get("term", 0) for s in after.values()), default=0)
        # the killed process must be gone before it is started again
        gone_by = time.monotonic() + 5
        while leader.pid() is not None and time.monotonic() < gone_by:
            time.sleep(0.01)
        leader.start()
        record = {"trial": trial, "killed": leader.name, "term_before": term_before,
                  "term_after": term_after, "attempts": sent, "failed_attempts": failed,
                  "ack_via": via, "ms": None if elapsed is None else round(elapsed * 1000, 2),
                  "foreign_cpu_pct_before": round(foreign, 1), "foreign_cpu_pct_during": round(during, 1)}
        if during > a.quiet.max_pct and redo < a.max_redo:
            redo += 1
            print(f"{name} trial {trial:2d}: other processes used {during:.0f}% of the CPU during the "
                  f"trial ({'n/a' if elapsed is None else f'{elapsed * 1000:.1f} ms'}); measuring it again",
                  file=sys.stderr)
            continue
        redo = 0
        records.append(record)
        if elapsed is None:
            failures += 1
            print(f"{name} trial {trial:2d}: killed {leader.name}; NO write acknowledged within "
                  f"{a.trial_timeout:.0f} s ({sent} attempts)", file=sys.stderr)
        else:
            times.append(elapsed * 1000)
            print(f"{name} trial {trial:2d}: killed {leader.name} (term {term_before}) -> first ack "
                  f"{elapsed * 1000:7.1f} ms via {via}, term now {term_after}, {sent} attempts "
                  f"({failed} failed)", file=sys.stderr)
    if cluster.wait_ready(a.ready_timeout, tag="ready-end") is None:
        print(f"{name}: cluster not healthy after the last trial", file=sys.stderr)
    return {"system": name, "trials": len(records), "failures": failures,
            "median_ms": statistics.median(times) if times else None,
            "p99_ms": percentile(times, 99) if times else None,
            "max_ms": max(times) if times else None,
            "min_ms": min(times) if times else None,
            "mean_ms": statistics.mean(times) if times else None,
            "poll_ms": a.poll_ms, "request_timeout_ms": a.request_timeout_ms,
            "records": records}


def report(e, r):
    rows = [("median", "median_ms"), ("p99", "p99_ms"), ("max", "max_ms"), ("min", "min_ms"), ("mean", "mean_ms")]
    table([("SIGKILL leader -> first acknowledged write", "l"), ("etcd (ms)", "r"), ("raftvisor (ms)", "r"),
           ("raftvisor/etcd", "r")],
          [[label, fmt(e[key]), fmt(r[key]), fmt(ratio(r[key], e[key]), 2)] for label, key in rows]
          + [["trials (failed)", f"{e['trials']} ({e['failures']})", f"{r['trials']} ({r['failures']})", ""]])
    print()
    med = ratio(r["median_ms"], e["median_ms"])
    goal1 = med is not None and med <= 0.15 and r["failures"] == 0
    goal2 = (r["p99_ms"] is not None and r["p99_ms"] <= 300 and r["failures"] == 0
             and r["trials"] >= 30)
    print(f"- goal median <= 0.15x etcd: {'MET' if goal1 else 'NOT MET'} (ratio {fmt(med, 2)})")
    print(f"- goal p99 <= 300 ms over >= 30 trials: {'MET' if goal2 else 'NOT MET'} "
          f"(p99 {fmt(r['p99_ms'])} ms over {r['trials']} trials)")
    print(f"- p99 is nearest-rank over {r['trials']} trials; writes every {r['poll_ms']} ms, "
          f"{r['request_timeout_ms']} ms timeout each")
    for d in (e, r):
        shares = [t["foreign_cpu_pct_during"] for t in d["records"] if t.get("foreign_cpu_pct_during") is not None]
        if shares:
            print(f"- {d['system']}: other processes used at most {max(shares):.0f}% of the CPU during a "
                  f"counted trial (median {statistics.median(shares):.0f}%)")


def idle_check(cluster, seconds, link_delay_ms):
    """One line: did the term or leader change while the cluster idled for
    `seconds` with its peer links delayed?"""
    if cluster.wait_ready(60) is None:
        raise Failure("raftvisor with delayed peer links: not healthy")
    before = cluster.status()
    time.sleep(seconds)
    after = cluster.status()
    same = before["term"] == after["term"] and before["leader"] == after["leader"]
    return (f"- raftvisor idle for {seconds} s with its peer links delayed {link_delay_ms} ms each way: "
            f"term {before['term']} -> {after['term']}, leader {before['leader']} -> {after['leader']}: "
            f"{'no election' if same else 'ELECTION(S) DURING THE RUN'}")


def term_check(p):
    """One line: did the term or leader change during the load run?"""
    same = p["term_before"] == p["term_after"] and p["leader_before"] == p["leader_after"]
    delayed = (f" with its peer links delayed {p['link_delay_ms']} ms each way"
               if p.get("link_delay_ms") else "")
    return (f"- {p['system']} under {p['clients']}-client write load for {p['duration_s']:.0f} s{delayed} "
            f"({fmt(p['ok_rps'], 0)} writes/s, {p['errors']} errors): term {p['term_before']} -> "
            f"{p['term_after']}, leader {p['leader_before']} -> {p['leader_after']}: "
            f"{'no election' if same else 'ELECTION(S) DURING THE RUN'}"
            + (f" (other processes used {p['foreign_cpu_pct']:.0f}% of the CPU meanwhile)"
               if p.get("foreign_cpu_pct", 0) > 5 else ""))


class Trials:
    """The trial settings, from the environment."""

    def __init__(self):
        self.trials = settings.whole("TRIALS", 30, 1, 1000, "TRIALS must be 1..1000")
        self.poll_ms = settings.whole("POLL_MS", 10, 1, 10, "POLL_MS must be 1..10")
        self.request_timeout_ms = settings.whole("REQUEST_TIMEOUT_MS", 100, 1)
        self.settle = float(settings.text("SETTLE", "1"))
        self.trial_timeout = settings.whole("TRIAL_TIMEOUT", 15, 1, 120, "TRIAL_TIMEOUT must be 1..120 seconds")
        self.max_redo = settings.whole("TRIAL_REDO", 2, 0, 10, "TRIAL_REDO must be 0..10")
        self.ready_timeout = 60
        self.quiet = settings.Quiet()


def main():
    a = Trials()
    duration = settings.whole("DURATION", 8, 0, 600, "DURATION must be 0..600 seconds")
    link_delay_ms = settings.whole("LINK_DELAY_MS", 10, 0, 1000, "LINK_DELAY_MS must be 0..1000")
    delay_s = settings.whole("LINK_DELAY_S", 30, 0, 600, "LINK_DELAY_S must be 0..600 seconds")
    systems = settings.words("SYSTEMS", "etcd raftvisor")
    timing = kvcluster.Timing()
    run, binary = kvcluster.open_run()
    with run:
        points = []
        summaries = {}
        for system in systems:
            log(f"{system}: starting 3 members")
            cluster = kvcluster.start(run, system, binary, timing)
            if duration > 0:
                log(f"{system}: 64-client write load for {duration}s (term check)")
                points.append(measure_point(run, cluster, a.quiet, 2, 64, duration, [], "load"))
            log(f"{system}: {a.trials} failover trials")
            summaries[system] = trials(run, cluster, a)
            with open(run.path(f"failover-{system}.json"), "w") as f:
                json.dump(summaries[system], f, indent=1)
            cluster.log_problems()
            cluster.stop()
        delayed = []
        if link_delay_ms and delay_s and "raftvisor" in systems:
            log(f"raftvisor: peer links delayed {link_delay_ms} ms each way: {delay_s}s idle, "
                f"then {delay_s}s of 64-client writes (term check)")
            cluster = kvcluster.start(run, "raftvisor", binary, timing, link_delay_ms)
            delayed.append(idle_check(cluster, delay_s, link_delay_ms))
            point = measure_point(run, cluster, a.quiet, 2, 64, delay_s, [], "load-delayed")
            point["link_delay_ms"] = link_delay_ms
            delayed.append(term_check(point))
            proxies = cluster.proxies
            delayed.append(f"- the delaying proxies carried {sum(p.connections for p in proxies)} peer connections, "
                           f"{sum(p.chunks for p in proxies):,} chunks, {sum(p.bytes for p in proxies):,} bytes")
            cluster.log_problems()
            cluster.stop()
        print()
        print(f"## bench-failover: {a.trials} trials each, SIGKILL of the leader, 3 members, fsync on")
        print()
        if "etcd" in summaries and "raftvisor" in summaries:
            report(summaries["etcd"], summaries["raftvisor"])
        else:
            for s in summaries.values():
                print({k: v for k, v in s.items() if k != "records"})
        if points or delayed:
            print()
            for p in points:
                print(term_check(p))
            for line in delayed:
                print(line)
        for line in kvcluster.report_tail(systems, timing, wrk=True, gap=True):
            print(line)
