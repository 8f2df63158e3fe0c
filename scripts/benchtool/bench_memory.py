"""bench memory (scripts/bench-memory.sh): resident memory of replicas
holding KEYS keys of 256 B, raftvisor beside etcd holding the same data:
RSS empty, after a bulk load through the leader (16 keep-alive clients),
and after a restart of every member, with the data directories' size."""
import json
import os
import threading
import time

from . import cpu, kvcluster, settings
from .console import Failure, log, table
from .httpclient import call
from .stats import fmt

VALUE_SIZE = 256
ORDER = ("etcd", "etcd-tls", "raftvisor", "raftvisor-insecure")


def load(cluster, target, count, value_size, prefix, concurrency, time_limit):
    """Writes keys prefix0000000.. with value_size-byte random printable
    values through target; returns the summary (written, failed, seconds,
    keys found by a prefix count)."""
    api = cluster.api
    failures = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit

    def worker(index):
        conn = None
        for n in range(index, count, concurrency):
            if time.monotonic() > deadline:
                return
            value = kvcluster.b64(os.urandom(value_size))[:value_size].encode()
            method, path, body, headers = api.put(f"{prefix}{n:07d}", value)
            for _ in range(5):
                try:
                    if conn is None:
                        conn = target.connect(10)
                    code, data = call(target.endpoint, method, path, body, headers, conn=conn)
                    if api.put_ok(code, data):
                        break
                except Exception:
                    if conn is not None:
                        conn.close()
                    conn = None
            else:
                with lock:
                    failures[0] += 1
        if conn is not None:
            conn.close()

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - start
    return {"system": api.name, "written": count, "value_size": value_size, "failed": failures[0],
            "seconds": round(took, 1), "keys_found": api.count(target, prefix)}


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0])  # kB
    return out


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def rss(cluster):
    """{member: VmRSS, VmHWM, RssAnon, RssFile, disk_kB} now."""
    out = {}
    for m in cluster.members:
        pid = m.pid()
        out[m.name] = proc_status(pid) if pid else {"error": "not running"}
        out[m.name]["disk_kB"] = dir_bytes(os.path.join(m.dir, "data")) // 1024
    return out


def mib(kb):
    return fmt(kb / 1024.0, 1) if isinstance(kb, (int, float)) else "n/a"


def report(results):
    """results: {system: {"empty", "loaded", "restarted", "load"}}."""
    rows = []
    largest = {}
    for system in ORDER:
        r = results.get(system, {})
        full = r.get("loaded")
        if full is None:
            continue
        empty, again = r.get("empty") or {}, r.get("restarted") or {}
        for name in sorted(full):
            s, z, a = full[name], empty.get(name, {}), again.get(name, {})
            rows.append([system, name, mib(z.get("VmRSS")), mib(s.get("VmRSS")), mib(s.get("RssAnon")),
                         mib(s.get("RssFile")), mib(s.get("VmHWM")), mib(a.get("VmRSS")), mib(s.get("disk_kB"))])
        sizes = [s.get("VmRSS") for s in full.values() if isinstance(s.get("VmRSS"), int)]
        largest[system] = max(sizes) if sizes else None
    table([("system", "l"), ("member", "l"), ("RSS empty", "r"), ("RSS with the keys", "r"), ("anon", "r"),
           ("file", "r"), ("peak (VmHWM)", "r"), ("RSS after restart", "r"), ("data dir", "r")], rows)
    print()
    print("(MiB; RSS = VmRSS, anon = RssAnon, file = RssFile, from /proc/PID/status)")
    print()
    if largest.get("etcd") and largest.get("raftvisor"):
        print(f"- largest replica RSS holding the keys: raftvisor {mib(largest['raftvisor'])} MiB, "
              f"etcd {mib(largest['etcd'])} MiB, ratio raftvisor/etcd {fmt(largest['raftvisor'] / largest['etcd'], 2)}")
    for system in ORDER:
        summary = results.get(system, {}).get("load")
        if summary:
            print(f"- {system}: {summary['written']} keys of {summary['value_size']} B written in "
                  f"{summary['seconds']} s ({summary['failed']} failed), {summary['keys_found']} found by a prefix count")


def main():
    keys = settings.whole("KEYS", 100000, 1, 5000000, "KEYS must be 1..5000000")
    settle = settings.whole("SETTLE", 5, 0, 600, "SETTLE must be 0..600 seconds")
    systems = settings.words("SYSTEMS", "etcd raftvisor")
    quiet = settings.Quiet()
    timing = kvcluster.Timing()
    run, binary = kvcluster.open_run()
    with run:
        results = {}
        for system in systems:
            r = results[system] = {}
            log(f"{system}: starting 3 members")
            cluster = kvcluster.start(run, system, binary, timing)
            time.sleep(2)
            r["empty"] = rss(cluster)
            cpu.quiet_wait(run.dir, quiet.max_pct, quiet.wait)
            leader = cluster.wait_ready(60)
            if leader is None:
                raise Failure(f"{system}: not ready before loading")
            log(f"{system}: writing {keys} keys of {VALUE_SIZE} B through the leader {leader.url}")
            r["load"] = load(cluster, leader, keys, VALUE_SIZE, "bench/mem/", 16, 1800)
            if r["load"]["failed"] or r["load"]["keys_found"] < keys:
                raise Failure(f"{system}: loading failed: {json.dumps(r['load'])}")
            log(f"{system}: {json.dumps(r['load'])}")
            time.sleep(settle)
            if cluster.wait_ready(120) is None:
                raise Failure(f"{system}: members did not catch up after loading")
            r["loaded"] = rss(cluster)
            log(f"{system}: restarting all members")
            cluster.restart()
            time.sleep(settle)
            r["restarted"] = rss(cluster)
            with open(run.path(f"{system}-memory.json"), "w") as f:
                json.dump(r, f)
            cluster.log_problems()
            cluster.stop()
        print()
        print(f"## bench-memory: {keys} keys of {VALUE_SIZE} B, 3 members each")
        print()
        report(results)
        print()
        for line in kvcluster.report_tail(systems, timing):
            print(line)
