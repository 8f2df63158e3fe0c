"""Write load from wrk with scripts/bench/put.lua (the same generator for
etcd's gateway and raftvisor's KV API), bounded in time, with the CPU that
the members, wrk and everything else used meanwhile; and the measured point
made of wrk's result and the cluster's term and leader before and after.
Starts only wrk; never touches the clusters' processes."""
import json
import os
import resource
import time

from . import cpu, procs
from .machine import REPO

PUT_LUA = os.path.join(REPO, "scripts", "bench", "put.lua")


def by_name(url):
    """wrk sends the URL's host as SNI, and an IP address there is illegal
    (rustls logs a warning per connection): https goes to localhost, a name
    in the certificates, which resolves to 127.0.0.1."""
    if url.startswith("https://127.0.0.1:"):
        return "https://localhost:" + url[len("https://127.0.0.1:"):]
    return url


def run_wrk(mark, system, token, out, seconds, url, options):
    """Runs wrk with put.lua against system at url (http or https; wrk does
    not verify certificates) for `seconds`, its output in `out`, plus a
    BENCH_FOREIGN line: the CPU share of processes other than the
    benchmark's (the members, whose command lines name `mark`, and wrk),
    from /proc/stat minus their own time. Returns wrk's exit status."""
    url = by_name(url)
    env = dict(os.environ)
    # put.lua knows two APIs: etcd's (etcd, etcd-tls) and raftvisor's.
    env["BENCH_TARGET"] = system.split("-")[0]
    env["RAFTVISOR_TOKEN"] = token or ""
    command = ["wrk"] + list(options) + ["-d", f"{seconds}s", "--timeout", "10s", "-s", PUT_LUA, url]
    before = cpu.snapshot()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    with open(out, "w") as f:
        rc = procs.run_bounded(command, f, seconds + 60, env=env)
    elapsed = time.monotonic() - t0
    after = cpu.snapshot()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_ticks = (children.ru_utime + children.ru_stime - children_before.ru_utime - children_before.ru_stime) * cpu.HZ
    ours = cpu.ticks_used(before, after, lambda _pid, cmdline: mark in cmdline)
    foreign_ticks = max(0.0, after.busy - before.busy - ours - wrk_ticks)
    scale = 100.0 / (cpu.HZ * cpu.CORES * elapsed)
    _, top = cpu.foreign_share(mark, before, after, elapsed)
    with open(out, "a") as f:
        f.write("BENCH_FOREIGN " + json.dumps({"foreign_cpu_pct": round(foreign_ticks * scale, 1), "top": top,
                                                "wrk_cpu_pct": round(wrk_ticks * scale, 1),
                                                "members_cpu_pct": round(ours * scale, 1)}) + "\n")
    return rc


def point(system, clients, threads, wrk_output, before, after):
    """wrk's BENCH_JSON and BENCH_FOREIGN lines with the status before and
    after the run, as one dict; None if wrk printed no result."""
    line = foreign = None
    with open(wrk_output) as f:
        for text in f:
            if text.startswith("BENCH_JSON "):
                line = json.loads(text[len("BENCH_JSON "):])
            elif text.startswith("BENCH_FOREIGN "):
                foreign = json.loads(text[len("BENCH_FOREIGN "):])
    if line is None:
        return None
    line.update(foreign or {})
    line.update({"system": system, "clients": clients, "threads": threads,
                 "term_before": before["term"], "term_after": after["term"],
                 "leader_before": before["leader"], "leader_after": after["leader"]})
    return line


def clean(p, max_pct):
    """True when other processes stayed within max_pct % of the CPU during the run."""
    return p.get("foreign_cpu_pct", 0) <= max_pct
