"""bench kv (scripts/bench-kv.sh): write throughput and latency of a
3-member etcd against a 3-replica raftvisor, each driven alone by wrk with
put.lua at each point (threads:connections) against its leader, and the
Markdown report: writes/s, p50, p99 per client count with ratios, the TLS
cost, CPU shares, goals, the term and leader around every run, and where
raftvisor's writes spent their time by its own histograms."""
import math
import re
import sys

from . import kvcluster, loadgen, procs, settings
from .cpu import quiet_wait
from .console import Failure, log, table
from .stats import fmt, ratio


def kv_table(by, clients, base, other, cost=False):
    """Rows of writes/s, p50 and p99 of base and other at each client count,
    with the ratios other/base (and, with cost, the share of base's writes/s
    that other loses)."""
    columns = [("clients", "r"), (f"{base} writes/s", "r"), (f"{base} p50 ms", "r"), (f"{base} p99 ms", "r"),
               (f"{other} writes/s", "r"), (f"{other} p50 ms", "r"), (f"{other} p99 ms", "r"),
               ("writes/s ratio", "r"), ("p99 ratio", "r")]
    if cost:
        columns.append(("writes/s lost", "r"))
    rows = []
    for c in clients:
        b, o = by.get((base, c)), by.get((other, c))
        cells = [str(c)]
        for p in (b, o):
            cells += [fmt(p["ok_rps"], 0), fmt(p["p50_ms"], 2), fmt(p["p99_ms"], 2)] if p else ["n/a"] * 3
        tr = ratio(o["ok_rps"], b["ok_rps"]) if b and o else None
        cells.append(fmt(tr, 2))
        cells.append(fmt(ratio(o["p99_ms"], b["p99_ms"]), 2) if b and o else "n/a")
        if cost:
            cells.append("n/a" if tr is None else f"{(1 - tr) * 100:.0f} %")
        rows.append(cells)
    table(columns, rows)
    print()


def report(points):
    by = {(p["system"], p["clients"]): p for p in points}
    clients = sorted({p["clients"] for p in points})
    systems = {p["system"] for p in points}
    print("raftvisor (TLS on both ports + token, the default) against etcd (plain HTTP); "
          "ratios raftvisor/etcd:")
    print()
    kv_table(by, clients, "etcd", "raftvisor")
    if "raftvisor-insecure" in systems:
        print("TLS cost: raftvisor (TLS) against raftvisor-insecure (plain HTTP), both with the token; "
              "ratios TLS/insecure, writes/s lost = 1 - ratio:")
        print()
        kv_table(by, clients, "raftvisor-insecure", "raftvisor", cost=True)
        if "etcd" in systems:
            print("Plain HTTP on both sides: raftvisor-insecure against etcd; ratios raftvisor-insecure/etcd:")
            print()
            kv_table(by, clients, "etcd", "raftvisor-insecure")
    if "etcd-tls" in systems:
        if "etcd" in systems:
            print("etcd's TLS cost: etcd-tls (HTTPS clients, mutual TLS peers) against etcd (plain HTTP); "
                  "ratios etcd-tls/etcd:")
            print()
            kv_table(by, clients, "etcd", "etcd-tls", cost=True)
        print("TLS on both sides: raftvisor (TLS) against etcd-tls; ratios raftvisor/etcd-tls:")
        print()
        kv_table(by, clients, "etcd-tls", "raftvisor")
    print("fsyncs per acknowledged write during each run: leader / busiest follower "
          "(raftvisor: its Raft log's segment and meta file; etcd: WAL and backend commits)")
    print()
    for p in points:
        f = p.get("fsyncs")
        if f:
            print(f"- {p['system']} {p['clients']} clients: {fmt(f['leader'], 3)} / {fmt(f['follower'], 3)}")
    print()
    splits = [p for p in points if p.get("time_split")]
    if splits:
        print("Where raftvisor's writes spent their time during each run, by its own histograms "
              "(the bounds of the buckets that hold the p50 / the p99 / the slowest, ms)")
        print()
        for p in splits:
            for what, p50, p99, top in p["time_split"]:
                print(f"- {p['system']} {p['clients']} clients, {what}: "
                      f"{bound_ms(p50)} / {bound_ms(p99)} / {bound_ms(top)}")
        print()
    print("CPU during each run (share of all cores): members / wrk / other processes")
    print()
    for p in points:
        if "foreign_cpu_pct" in p:
            busy = p["foreign_cpu_pct"] > 5
            top = f" ({', '.join(p['top'])})" if p["top"] and busy else ""
            print(f"- {p['system']} {p['clients']} clients: {p['members_cpu_pct']:.0f}% / {p['wrk_cpu_pct']:.0f}% / "
                  f"{p['foreign_cpu_pct']:.0f}%{top}{'  <-- OTHER LOAD ON THE MACHINE' if busy else ''}")
    print()
    for p in points:
        if p["errors"]:
            print(f"- {p['system']} at {p['clients']} clients: {p['errors']} failed requests "
                  f"({p['status_errors']} non-2xx, {p['timeouts']} timeouts)")
    costs = []
    for c in clients:
        s, i = by.get(("raftvisor", c)), by.get(("raftvisor-insecure", c))
        tr = ratio(s["ok_rps"], i["ok_rps"]) if s and i else None
        if tr is not None:
            costs.append(f"{c} clients {(1 - tr) * 100:.0f} % of the writes/s "
                         f"(p99 {fmt(s['p99_ms'], 2)} vs {fmt(i['p99_ms'], 2)} ms)")
    if costs:
        print("- TLS cost (raftvisor against raftvisor-insecure): " + "; ".join(costs))
    e, r = by.get(("etcd", 64)), by.get(("raftvisor", 64))
    if e and r:
        tr = ratio(r["ok_rps"], e["ok_rps"])
        ok1 = tr is not None and tr >= 1.5
        ok2 = r["p99_ms"] <= e["p99_ms"]
        print(f"- goal at 64 clients, raftvisor (TLS) >= 1.5x etcd's writes/s: {'MET' if ok1 else 'NOT MET'} "
              f"({fmt(r['ok_rps'], 0)} vs {fmt(e['ok_rps'], 0)} writes/s, ratio {fmt(tr, 2)})")
        print(f"- goal at 64 clients, raftvisor (TLS) p99 no worse than etcd's: {'MET' if ok2 else 'NOT MET'} "
              f"({fmt(r['p99_ms'], 2)} ms vs {fmt(e['p99_ms'], 2)} ms)")
    t1, r1 = by.get(("etcd-tls", 1)), by.get(("raftvisor", 1))
    if t1 and r1:
        pr = ratio(r1["p50_ms"], t1["p50_ms"])
        print(f"- goal at 1 client, raftvisor (TLS) p50 <= 0.8x etcd-tls's: "
              f"{'MET' if pr is not None and pr <= 0.8 else 'NOT MET'} "
              f"({fmt(r1['p50_ms'], 2)} vs {fmt(t1['p50_ms'], 2)} ms, ratio {fmt(pr, 2)})")
    for c in (16, 64):
        t, r = by.get(("etcd-tls", c)), by.get(("raftvisor", c))
        if t and r:
            tr = ratio(r["ok_rps"], t["ok_rps"])
            ok = tr is not None and tr >= 2.5 and r["p99_ms"] <= t["p99_ms"]
            print(f"- goal at {c} clients, raftvisor (TLS) p99 <= etcd-tls's with >= 2.5x its writes/s: "
                  f"{'MET' if ok else 'NOT MET'} (p99 {fmt(r['p99_ms'], 2)} vs {fmt(t['p99_ms'], 2)} ms; "
                  f"{fmt(r['ok_rps'], 0)} vs {fmt(t['ok_rps'], 0)} writes/s, ratio {fmt(tr, 2)})")
    for p in points:
        if "term_before" in p:
            same = p["term_before"] == p["term_after"] and p["leader_before"] == p["leader_after"]
            print(f"- {p['system']} {p['clients']} clients: term {p['term_before']} -> {p['term_after']}, "
                  f"leader {p['leader_before']} -> {p['leader_after']}: "
                  f"{'no election during the run' if same else 'ELECTION(S) DURING THE RUN'}")


# Where a raftvisor write spends its time, by the members' own histograms:
# (what, histogram, labels, whose: the leader or the slowest follower).
TIME_SPLIT = (
    ("API PUT on the leader", "raftvisor_api_request_duration_seconds",
     {"route": "/v1/kv/{*key}", "method": "PUT"}, "leader"),
    ("proposal to applied on the leader", "raftvisor_raft_commit_seconds", {}, "leader"),
    ("one apply call (the state's write lock) on the leader", "raftvisor_raft_apply_seconds", {}, "leader"),
    ("segment fsync on the leader", "raftvisor_raft_fsync_seconds", {"file": "segment"}, "leader"),
    ("segment fsync on the slowest follower", "raftvisor_raft_fsync_seconds", {"file": "segment"}, "follower"),
)


def bucket_quantile(before, after, q):
    """The upper bound (seconds) of the histogram bucket that holds
    quantile q of what was counted between two scrapes (cumulative counts
    by bound, from kvcluster.metric_buckets); inf past the last finite
    bound, None when nothing was counted."""
    bounds = sorted(after)
    if not bounds:
        return None
    total = after[bounds[-1]] - before.get(bounds[-1], 0.0)
    if total <= 0:
        return None
    for bound in bounds:
        if after[bound] - before.get(bound, 0.0) >= q * total:
            return bound
    return math.inf


def time_split(before, after, leader):
    """[(what, p50 bound, p99 bound, max bound)] for each TIME_SPLIT line whose
    histogram counted something during the point, from each member's
    metrics text before and after it; a follower line is the follower with
    the highest p99."""
    rows = []
    for what, name, labels, whose in TIME_SPLIT:
        names = [leader] if whose == "leader" else [n for n in after if n != leader]
        worst = None
        for n in names:
            if before.get(n) is None or after.get(n) is None:
                continue
            b = kvcluster.metric_buckets(before[n], name, labels)
            a = kvcluster.metric_buckets(after[n], name, labels)
            p50, p99, top = (bucket_quantile(b, a, q) for q in (0.5, 0.99, 1.0))
            if p99 is not None and (worst is None or (p99, top) > (worst[2], worst[3])):
                worst = (what, p50, p99, top)
        if worst:
            rows.append(worst)
    return rows


def bound_ms(bound):
    """A bucket bound in seconds as the report's "<= N ms"."""
    return "> 10,000" if bound == math.inf else f"<= {bound * 1000:g}"


def fsyncs_per_write(before, after, leader, p):
    """fsyncs per acknowledged write during a point: on the leader and
    on the busiest follower (None where a member's metrics were unreadable)."""
    writes = (p.get("ok_rps") or 0) * (p.get("duration_s") or 0)
    if not writes:
        return None
    per = {name: (after[name] - before[name]) / writes
           for name in before if before.get(name) is not None and after.get(name) is not None}
    followers = [v for name, v in per.items() if name != leader]
    return {"leader": per.get(leader), "follower": max(followers) if followers else None}


def measure_point(run, cluster, quiet, threads, clients, seconds, wrk_options, name):
    """One wrk run at threads:clients, repeated (quiet.tries in all) while
    other processes loaded the CPU during it; returns the point."""
    system, d = cluster.system, cluster.dir
    for attempt in range(1, quiet.tries + 1):
        quiet_wait(run.dir, quiet.max_pct, quiet.wait)
        leader = cluster.wait_ready(60)
        if leader is None:
            raise Failure(f"{system}: cluster not healthy before the {clients}-client run")
        before = cluster.status()
        metrics_before = cluster.metrics()
        log(f"{system}: wrk -t {threads} -c {clients} -d {seconds}s against the leader {leader.url} (try {attempt})")
        out = f"{d}/{name}.txt"
        if loadgen.run_wrk(run.dir, system, cluster.api.token, out, seconds, leader.url,
                           ["-t", str(threads), "-c", str(clients)] + wrk_options) != 0:
            raise Failure(f"{system}: wrk failed: {procs.tail(out, 5)}")
        p = loadgen.point(system, clients, threads, out, before, cluster.status())
        if p is None:
            raise Failure(f"no BENCH_JSON line in {out}")
        metrics_after = cluster.metrics()
        p["fsyncs"] = fsyncs_per_write(cluster.fsyncs(metrics_before), cluster.fsyncs(metrics_after),
                                       before["leader"], p)
        if system.startswith("raftvisor"):
            p["time_split"] = time_split(metrics_before, metrics_after, before["leader"])
        if loadgen.clean(p, quiet.max_pct):
            break
        log(f"{system}: other processes loaded the CPU during the run (foreign {p['foreign_cpu_pct']}%)")
    return p


def main():
    duration = settings.whole("DURATION", 8, 1, 600, "DURATION must be 1..600 seconds")
    warmup = settings.whole("WARMUP", 2, 0, 600, "WARMUP must be 0..600 seconds")
    points = settings.words("POINTS", "1:1 2:16 2:64")
    systems = settings.words("SYSTEMS", "etcd raftvisor raftvisor-insecure")
    quiet = settings.Quiet()
    timing = kvcluster.Timing()
    run, binary = kvcluster.open_run()
    with run:
        results = []
        for system in systems:
            log(f"{system}: starting 3 members")
            cluster = kvcluster.start(run, system, binary, timing)
            if warmup > 0:
                leader = cluster.wait_ready(60)
                out = f"{cluster.dir}/warmup.txt"
                if leader is None or loadgen.run_wrk(run.dir, system, cluster.api.token, out, warmup, leader.url,
                                                     ["-t", "2", "-c", "16"]) != 0:
                    raise Failure(f"{system}: warm-up failed: {procs.tail(out, 3)}")
            for spec in points:
                threads, _, clients = spec.partition(":")
                p = measure_point(run, cluster, quiet, int(threads), int(clients), duration, ["--latency"],
                                  f"wrk-{clients}")
                results.append(p)
                grep_wrk(f"{cluster.dir}/wrk-{clients}.txt", f"    {system} c={clients} ")
            cluster.log_problems()
            cluster.stop()
        print()
        print(f"## bench-kv: {duration} s per point, 256-byte values, fsync on, 3 members each")
        print()
        report(results)
        print()
        for line in kvcluster.report_tail(systems, timing, wrk=True):
            print(line)


def grep_wrk(path, prefix):
    """wrk's percentiles, rate and error lines on stderr, each with prefix."""
    pattern = re.compile(r"^ +(50|99)%|Requests/sec|Non-2xx|Socket errors")
    with open(path, errors="replace") as f:
        for line in f:
            if pattern.search(line):
                sys.stderr.write(prefix + line)
