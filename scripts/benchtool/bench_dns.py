"""bench dns (scripts/bench-dns.sh): raftvisor's DNS server against NSD and
Knot DNS on one equivalent zone (dnsperf, rounds interleaved, answers
checked equal first), and freshness: how soon both followers of a real
three-replica cluster answer an address changed through the leader.

Ports: raftvisor's zone 38501, NSD 38502, Knot 38503 (UDP and TCP);
freshness cluster API 37001-37003, peer 37101-37103, DNS 38601-38603.
Only 127.0.0.1 is contacted; every server runs in its own session and is
stopped with its group."""
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time

from . import cpu, dnswire, machine, procs, replicas, settings
from .console import Failure, log, table
from .httpclient import Endpoint, bearer, call, leader_of
from .stats import percentile

DOMAIN = "cluster.local"
TTL = 5
RV_ZONE_PORT, NSD_PORT, KNOT_PORT = 38501, 38502, 38503
FRESH_PORTS = replicas.Ports.from_base(37001, 37101, 38601)
SERVERS = ("nsd", "knot", "raftvisor")
PORT_OF = {"nsd": NSD_PORT, "knot": KNOT_PORT, "raftvisor": RV_ZONE_PORT}


class Settings:
    def __init__(self):
        w = settings.whole
        self.services, self.replicas, self.nodes = w("SERVICES", 1000), w("REPLICAS", 3), w("NODES", 10)
        self.queries, self.duration = w("QUERIES", 100000, 1), w("DURATION", 10, 1)
        self.clients, self.outstanding, self.cpu = w("CLIENTS", 4), w("OUTSTANDING", 200), w("DNSPERF_CPU", 1)
        self.rounds = w("ROUNDS", 3, 1)
        self.fresh_trials, self.poll_ms = w("FRESH_TRIALS", 200), w("POLL_MS", 1)
        self.switch_trials = w("SWITCH_TRIALS", 100)
        self.quiet = settings.Quiet(max_pct=20, wait=300)


# The layout of examples/dns_zone.rs: node K has address 127.0.1.(K+1);
# slot S of svcI runs on node (I+S) % NODES with host port
# 20000 + (I*REPLICAS+S) % 40000.
def node_address(k):
    return f"127.0.1.{k + 1}"


def zone(services, replicas_per_service, nodes):
    """The zone file NSD and Knot serve: the records raftvisor answers."""
    out = [f"$ORIGIN {DOMAIN}.", f"$TTL {TTL}", f"@ IN SOA ns.{DOMAIN}. hostmaster.{DOMAIN}. 1 60 10 3600 {TTL}",
           f"@ IN NS ns.{DOMAIN}.", "ns IN A 127.0.0.1", "leader.managers IN A 127.0.0.1"]
    out += [f"node{k}.node IN A {node_address(k)}" for k in range(nodes)]
    for i in range(services):
        name = f"svc{i}.default.svc"
        out += [f"{name} IN A {node_address((i + s) % nodes)}" for s in range(replicas_per_service)]
        for s in range(replicas_per_service):
            port = 20000 + (i * replicas_per_service + s) % 40000
            out.append(f"_http._tcp.{name} IN SRV 0 1 {port} node{(i + s) % nodes}.node.{DOMAIN}.")
    return "\n".join(out) + "\n"


def queries(services, count):
    """dnsperf's query file: half A, half SRV of random services, fixed seed."""
    rng = random.Random(20240601)
    lines = []
    for _ in range(count):
        i = rng.randrange(services)
        if rng.random() < 0.5:
            lines.append(f"svc{i}.default.svc.{DOMAIN} A")
        else:
            lines.append(f"_http._tcp.svc{i}.default.svc.{DOMAIN} SRV")
    return "\n".join(lines) + "\n"


def dig(port, name, qtype, *options, timeout=2, tries=2, host="127.0.0.1"):
    """dig's text answer from the server at host:port (no recursion)."""
    result = subprocess.run(["dig", f"@{host}", "-p", str(port), "+norecurse", f"+time={timeout}",
                             f"+tries={tries}"] + list(options) + [name, qtype],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return result.stdout


def sections(text):
    """dig's answer as one comparable line: "1 status X;2 <answer record>;...
    3~<authority and additional record>;..." (SOA records, TTLs and the OPT
    record left out; records sorted)."""
    lines = []
    section = 0
    for line in text.splitlines():
        fields = line.split()
        if "status:" in line and len(fields) > 5:
            lines.append("1 status " + fields[5].split(",")[0])
        elif line.startswith(";; ANSWER SECTION:"):
            section = 2
        elif line.startswith(";; AUTHORITY SECTION:") or line.startswith(";; ADDITIONAL SECTION:"):
            section = 3
        elif line.startswith(";") or len(fields) < 5:
            continue
        elif section and fields[2] == "IN" and fields[3] != "SOA":
            lines.append(("3~" if section == 3 else "2") + " " + " ".join([fields[0]] + fields[2:]))
    return "".join(line + ";" for line in sorted(lines))


def wait_dns(port, name, seconds):
    """Until a DNS server on 127.0.0.1:port answers the apex SOA."""
    if not procs.wait_until(seconds, lambda: "status: NOERROR" in dig(port, DOMAIN, "SOA", timeout=1, tries=1)):
        raise Failure(f"{name} did not answer on 127.0.0.1:{port} within {seconds} s")


def check_equal(s):
    """The three servers must give the same rcode and answer section for a
    sample of names; differences in the other sections are reported."""
    names = []
    for i in (0, 1, s.services // 2, s.services - 1):
        names += [(f"svc{i}.default.svc.{DOMAIN}", "A"), (f"_http._tcp.svc{i}.default.svc.{DOMAIN}", "SRV")]
    names += [(f"node0.node.{DOMAIN}", "A"), (f"node{s.nodes - 1}.node.{DOMAIN}", "A"),
              (f"nope.default.svc.{DOMAIN}", "A"), (DOMAIN, "NS"), (f"svc0.default.svc.{DOMAIN}", "AAAA")]
    for name, qtype in names:
        ref = sections(dig(RV_ZONE_PORT, name, qtype))
        for port in (NSD_PORT, KNOT_PORT):
            out = sections(dig(port, name, qtype))
            if out.split("3~")[0] != ref.split("3~")[0]:
                log(f"answers differ for {name} {qtype}:")
                log(f"  raftvisor (port {RV_ZONE_PORT}): {ref}")
                log(f"  port {port}: {out}")
                raise Failure("the three servers do not serve the same zone")
            if out != ref:
                log(f"note: {name} {qtype}: same answer, other sections differ: raftvisor: {ref} / port {port}: {out}")
    log(f"the three servers give the same rcode and answer records for {len(names)} sample questions")


class Servers:
    """The DNS servers of the run, each in its own session."""

    def __init__(self, run):
        self.run = run
        self.groups = []
        run.at_exit(self.stop_all)

    def start(self, name, log_path, argv):
        p = procs.spawn(argv, log_path)
        self.groups.append(p)
        log(f"started {name} (pid {p.pid})")
        return p

    def stop_all(self):
        procs.stop(self.groups, self.run.dir, group=True)
        self.groups = []


def start_raftvisor_zone(run, servers, s, dns_zone):
    log_path = run.path("raftvisor-zone.log")
    p = servers.start(f"raftvisor zone ({s.services} services x {s.replicas})", log_path,
                      [dns_zone, "--dns", f"127.0.0.1:{RV_ZONE_PORT}", "--services", str(s.services),
                       "--replicas", str(s.replicas), "--nodes", str(s.nodes), "--setup-timeout-seconds", "300",
                       "--measure-lookups", "20000"])

    def ready():
        with open(log_path, errors="replace") as f:
            lines = f.read().splitlines()
        if "ready" in lines:
            return lines
        if p.poll() is not None:
            raise Failure(f"dns_zone exited: {' '.join(lines[-3:])}")
        return None

    lines = procs.wait_until(330, ready, 0.5)
    if lines is None:
        raise Failure("dns_zone was not ready within 330 s")
    for line in lines:
        if line.startswith("dns_zone:"):
            print(line, file=sys.stderr)


def check(argv, what):
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise Failure(f"{what}: {result.stdout}{result.stderr}")


def start_nsd(run, servers):
    d = run.path("nsd")
    os.makedirs(d)
    with open(os.path.join(d, "cluster.local.zone"), "w") as f, open(run.path("cluster.local.zone")) as z:
        f.write(z.read())
    with open(os.path.join(d, "nsd.conf"), "w") as f:
        f.write(f"""server:
    ip-address: 127.0.0.1@{NSD_PORT}
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{d}"
    database: ""
    zonelistfile: "{d}/zone.list"
    xfrdfile: "{d}/xfrd.state"
    xfrdir: "{d}"
    pidfile: "{d}/nsd.pid"
    logfile: "{d}/nsd.log"
    hide-version: yes
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: cluster.local
    zonefile: "{d}/cluster.local.zone"
""")
    check(["nsd-checkconf", f"{d}/nsd.conf"], f"nsd-checkconf rejected {d}/nsd.conf")
    check(["nsd-checkzone", "cluster.local", f"{d}/cluster.local.zone"], "nsd-checkzone rejected the zone")
    version = machine.word(machine.output(["nsd", "-v"], any_status=True), -1)
    servers.start(f"nsd {version}", f"{d}/stdout.log", ["nsd", "-d", "-c", f"{d}/nsd.conf"])
    wait_dns(NSD_PORT, "nsd", 30)


def start_knot(run, servers):
    d = run.path("knot")
    os.makedirs(f"{d}/db")
    with open(os.path.join(d, "cluster.local.zone"), "w") as f, open(run.path("cluster.local.zone")) as z:
        f.write(z.read())
    with open(os.path.join(d, "knot.conf"), "w") as f:
        f.write(f"""server:
    rundir: "{d}"
    pidfile: "{d}/knot.pid"
    listen: 127.0.0.1@{KNOT_PORT}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
control:
    listen: "{d}/knot.sock"
database:
    storage: "{d}/db"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "{d}"
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: cluster.local
""")
    check(["knotc", "-c", f"{d}/knot.conf", "conf-check"], f"knotc conf-check rejected {d}/knot.conf")
    version = machine.word(machine.output(["knotd", "-V"], any_status=True), -1)
    servers.start(f"knotd {version}", f"{d}/stdout.log", ["knotd", "-c", f"{d}/knot.conf"])
    wait_dns(KNOT_PORT, "knot", 30)


def parse_dnsperf(text):
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Queries sent:"):
            out["sent"] = int(line.split()[2])
        elif line.startswith("Queries completed:"):
            out["completed"] = int(line.split()[2])
        elif line.startswith("Queries lost:"):
            out["lost"] = int(line.split()[2])
        elif line.startswith("Response codes:"):
            out["rcodes"] = line.split(":", 1)[1].strip()
        elif line.startswith("Average packet size:"):
            parts = line.replace(",", "").split()
            out["request_bytes"] = int(parts[4])
            out["response_bytes"] = int(parts[6])
        elif line.startswith("Queries per second:"):
            out["qps"] = float(line.split()[3])
        elif line.startswith("Average Latency (s):"):
            parts = line.replace("(", " ").replace(")", " ").replace(",", " ").split()
            # Average Latency s : AVG min MIN max MAX
            out["latency_avg_ms"] = float(parts[4]) * 1000
            out["latency_min_ms"] = float(parts[6]) * 1000
            out["latency_max_ms"] = float(parts[8]) * 1000
        elif line.startswith("Latency StdDev (s):"):
            out["latency_stddev_ms"] = float(line.split()[3]) * 1000
    return out


def dnsperf(run, s, server, round_no, query_file):
    """One dnsperf run against server, with the CPU the server, dnsperf and
    everything else used meanwhile (% of one core)."""
    marks = [run.path(server)] + ([run.path("dns_zone")] if server == "raftvisor" else [])
    command = ["taskset", "-c", str(s.cpu), "dnsperf", "-s", "127.0.0.1", "-p", str(PORT_OF[server]),
               "-d", query_file, "-c", str(s.clients), "-q", str(s.outstanding), "-l", str(s.duration)]
    log_path = run.path(f"dnsperf-{server}-{round_no}.txt")
    before = cpu.snapshot()
    t0 = time.monotonic()
    with open(log_path, "w") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        rc = procs.run_bounded(command, out, s.duration + 60)
    seconds = time.monotonic() - t0
    after = cpu.snapshot()
    with open(log_path) as f:
        text = f.read()
    result = parse_dnsperf(text)
    if rc != 0 or "qps" not in result:
        raise Failure(f"dnsperf against {server} failed (exit {rc}); output: {' '.join(text.splitlines()[-5:])}")
    server_ticks = cpu.ticks_used(before, after, lambda pid, c: pid != os.getpid() and any(m in c for m in marks))
    perf = cpu.ticks_used(before, after, lambda pid, c: "dnsperf" in c and query_file in c)
    me = cpu.ticks_used(before, after, lambda pid, c: pid == os.getpid())
    other = max(0, after.busy - before.busy - server_ticks - perf - me)
    scale = 100.0 / (cpu.HZ * seconds)
    result.update({"server": server, "round": round_no, "seconds": round(seconds, 2),
                   "server_cpu_pct": round(server_ticks * scale, 1), "dnsperf_cpu_pct": round(perf * scale, 1),
                   "other_cpu_pct": round(other * scale, 1), "cores": cpu.CORES})
    return result


def show_run(r):
    print(f"  {r['server']:>9}: {r['qps']:9.0f} q/s, avg latency {r['latency_avg_ms']:.3f} ms "
          f"(max {r['latency_max_ms']:.1f}), lost {r.get('lost', '?')}, server CPU {r['server_cpu_pct']:.0f}% "
          f"of one core, other processes {r['other_cpu_pct']:.0f}%", file=sys.stderr)


def throughput(run, servers, s, dns_zone):
    log(f"writing the zone file and {s.queries} queries")
    with open(run.path("cluster.local.zone"), "w") as f:
        f.write(zone(s.services, s.replicas, s.nodes))
    query_file = run.path("queries.txt")
    with open(query_file, "w") as f:
        f.write(queries(s.services, s.queries))
    start_raftvisor_zone(run, servers, s, dns_zone)
    start_nsd(run, servers)
    start_knot(run, servers)
    check_equal(s)
    runs = []
    for round_no in range(1, s.rounds + 1):
        for server in SERVERS:
            for attempt in range(1, s.quiet.tries + 1):
                cpu.quiet_wait(run.dir, s.quiet.max_pct, s.quiet.wait, per_core=True)
                log(f"round {round_no}/{s.rounds}: dnsperf against {server} (127.0.0.1:{PORT_OF[server]}, "
                    f"{s.duration} s)")
                r = dnsperf(run, s, server, round_no, query_file)
                show_run(r)
                if r["other_cpu_pct"] > s.quiet.max_pct and attempt < s.quiet.tries:
                    log(f"other processes used more than {s.quiet.max_pct} % of a core meanwhile: measuring again")
                    continue
                runs.append(r)
                break
    servers.stop_all()
    with open(run.path("throughput.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in runs)
    return runs


def throughput_report(runs):
    by = {}
    for r in runs:
        by.setdefault(r["server"], []).append(r)
    print("### Throughput (dnsperf)")
    print()
    table([("server", "l"), ("round", "r"), ("queries/s", "r"), ("avg latency ms", "r"), ("max latency ms", "r"),
           ("lost", "r"), ("response codes", "l"), ("bytes req/resp", "l"), ("server CPU (% of a core)", "r"),
           ("other processes CPU", "r")],
          [[server, r["round"], f"{r['qps']:.0f}", f"{r['latency_avg_ms']:.3f}", f"{r['latency_max_ms']:.1f}",
            r.get("lost", "?"), r.get("rcodes", "?"), f"{r.get('request_bytes', '?')}/{r.get('response_bytes', '?')}",
            f"{r['server_cpu_pct']:.0f}", f"{r['other_cpu_pct']:.0f}%"]
           for server in SERVERS for r in by.get(server, [])])
    print()
    med = {s: statistics.median([r["qps"] for r in rs]) for s, rs in by.items()}
    lat = {s: statistics.median([r["latency_avg_ms"] for r in rs]) for s, rs in by.items()}
    use = {s: statistics.median([r["server_cpu_pct"] for r in rs]) for s, rs in by.items()}
    rows = []
    for s in SERVERS:
        if s in med:
            per_cpu = med[s] / (use[s] / 100.0) if use[s] > 0 else float("nan")
            rows.append([s, f"{med[s]:.0f}", f"{lat[s]:.3f}", f"{use[s]:.0f}%", f"{per_cpu:.0f}"])
    table([("server", "l"), ("median queries/s", "r"), ("median avg latency ms", "r"), ("median server CPU", "r"),
           ("queries per CPU-second", "r")], rows)
    print()
    rv = med.get("raftvisor")
    if rv:
        for ref in ("nsd", "knot"):
            if med.get(ref):
                per_cpu = ""
                if use.get(ref) and use.get("raftvisor"):
                    per_cpu = (f"; queries per CPU-second raftvisor / {ref}: "
                               f"{(rv / use['raftvisor']) / (med[ref] / use[ref]):.2f}")
                print(f"- raftvisor / {ref} queries/s: {rv / med[ref]:.3f}; "
                      f"average latency raftvisor / {ref}: {lat['raftvisor'] / lat[ref]:.2f}{per_cpu}")
        if med.get("nsd"):
            ok = rv >= med["nsd"]
            print(f"- goal raftvisor >= 1.0x NSD's queries/s: {'met' if ok else 'NOT met'} "
                  f"({rv:.0f} vs {med['nsd']:.0f})")
    print()


def one_trial(write, followers, ask, done, poll_ms, trial_timeout):
    """Sends `write()` (returns (status, body)) from a thread while asking
    each follower (`ask(port)`) until `done(answer)` holds for every one or
    `trial_timeout` s pass: (ack, seen, polls, t_send) with the write's
    status and time in ack and each follower's first good answer in seen."""
    ack = {}

    def send():
        try:
            status, body = write()
            ack["status"] = status
            if status != 200:
                ack["body"] = body[:200].decode(errors="replace")
        except Exception as e:
            ack["error"] = str(e)
        ack["t"] = time.monotonic()

    writer = threading.Thread(target=send)
    t_send = time.monotonic()
    writer.start()
    seen = {}
    polls = 0
    end = t_send + trial_timeout
    while len(seen) < len(followers) and time.monotonic() < end:
        for port in followers:
            if port in seen:
                continue
            got = ask(port)
            polls += 1
            if done(got):
                seen[port] = time.monotonic()
        if poll_ms > 0:
            time.sleep(poll_ms / 1000.0)
    writer.join(timeout=10)
    return ack, seen, polls, t_send


def timings(ack, seen, t_send, followers):
    """A trial's times: the commit and each follower's answer, in ms."""
    return {
        "commit_ms": (ack["t"] - t_send) * 1000,
        "from_send_ms": {str(p): (seen[p] - t_send) * 1000 for p in followers},
        "from_ack_ms": {str(p): (seen[p] - ack["t"]) * 1000 for p in followers},
    }


def measure_freshness(token, trials_wanted, poll_ms, trial_timeout=5, time_limit=600):
    """FRESH_TRIALS changes of fresh/x through the leader while both
    followers' DNS is polled; returns the trials and what went wrong."""
    api = [Endpoint("127.0.0.1", p) for p in FRESH_PORTS.api]
    name = f"x.fresh.svc.{DOMAIN}"
    leader = leader_of(api, token, 60)
    if leader is None:
        raise Failure("no leader within 60 s")

    def put(address):
        body = json.dumps({"kind": "external", "addresses": [address]}).encode()
        return call(leader, "PUT", "/v1/services/fresh/x", body,
                    bearer(token, {"Content-Type": "application/json"}), timeout=5)

    # Ready: the service exists and every replica's DNS answers it.
    status, body = put("10.0.0.1")
    if status != 200:
        raise Failure(f"creating the external service fresh/x: HTTP {status}: {body[:300]!r}")
    askers = {port: dnswire.Asker("127.0.0.1", port) for port in FRESH_PORTS.dns}
    for port, asker in askers.items():
        if not procs.wait_until(30, lambda: asker.a(name) == ["10.0.0.1"], 0.05):
            raise Failure(f"DNS on {port} does not answer {name} within 30 s")
    leader_dns = FRESH_PORTS.dns[FRESH_PORTS.api.index(leader.port)]
    followers = [p for p in FRESH_PORTS.dns if p != leader_dns]
    print(f"leader API 127.0.0.1:{leader.port}; polling followers' DNS on {followers}; "
          f"{trials_wanted} trials", file=sys.stderr)
    rng = random.Random(7)
    trials = []
    failed = 0
    started = time.monotonic()
    for t in range(trials_wanted):
        if time.monotonic() - started > time_limit:
            print(f"time limit {time_limit} s reached after {t} trials", file=sys.stderr)
            break
        # A random phase relative to the heartbeats.
        time.sleep(rng.uniform(0.02, 0.12))
        address = f"10.0.{(t + 2) // 250}.{(t + 2) % 250 + 1}"
        ack, seen, polls, t_send = one_trial(lambda: put(address), followers, lambda p: askers[p].a(name),
                                             lambda got: got == [address], poll_ms, trial_timeout)
        if ack.get("status") != 200 or len(seen) < len(followers):
            failed += 1
            print(f"trial {t}: write {ack}, followers that answered: {sorted(seen)}", file=sys.stderr)
            new_leader = leader_of(api, token, 10)
            if new_leader and new_leader.port != leader.port:
                print(f"the leader changed to 127.0.0.1:{new_leader.port}; stopping", file=sys.stderr)
                break
            continue
        trials.append({**timings(ack, seen, t_send, followers), "polls": polls})
        if (t + 1) % 50 == 0:
            print(f"  {t + 1} trials", file=sys.stderr)
    for asker in askers.values():
        asker.close()
    final = leader_of(api, token, 5)
    return {"trials": trials, "failed": failed, "followers": followers, "leader_api": leader.port,
            "leader_after": final.port if final else None, "poll_ms": poll_ms}


BLUE = ["10.1.0.1", "10.1.0.2"]
GREEN = ["10.2.0.1", "10.2.0.2"]


def classify(answer):
    """blue, green, or what else a release's name answered (a mix, nothing)."""
    if answer is None:
        return "no answer"
    got = sorted(answer)
    if got == BLUE:
        return "blue"
    if got == GREEN:
        return "green"
    return "empty" if not got else "mix"


def measure_switch(token, trials_wanted, poll_ms, trial_timeout=5, time_limit=300):
    """SWITCH_TRIALS blue-green switches of release `cut` (entry x: an
    external service in namespaces cut-blue and cut-green) through the
    leader while both followers' DNS is polled; every answer seen is
    classified, and the time until each follower answers the new
    environment is recorded."""
    api = [Endpoint("127.0.0.1", p) for p in FRESH_PORTS.api]
    name = f"cut.release.{DOMAIN}"
    leader = leader_of(api, token, 60)
    if leader is None:
        raise Failure("no leader within 60 s")
    headers = bearer(token, {"Content-Type": "application/json"})

    def send(method, path, body):
        return call(leader, method, path, json.dumps(body).encode(), headers, timeout=5)

    for namespace, addresses in (("cut-blue", BLUE), ("cut-green", GREEN)):
        status, body = send("PUT", f"/v1/services/{namespace}/x", {"kind": "external", "addresses": addresses})
        if status != 200:
            raise Failure(f"creating {namespace}/x: HTTP {status}: {body[:300]!r}")
    status, body = send("PUT", "/v1/releases/cut", {"entry": "x", "blue": "cut-blue", "green": "cut-green"})
    if status != 200:
        raise Failure(f"creating release cut: HTTP {status}: {body[:300]!r}")
    askers = {port: dnswire.Asker("127.0.0.1", port) for port in FRESH_PORTS.dns}
    for port, asker in askers.items():
        if not procs.wait_until(30, lambda: classify(asker.a(name)) == "blue", 0.05):
            raise Failure(f"DNS on {port} does not answer {name} within 30 s")
    leader_dns = FRESH_PORTS.dns[FRESH_PORTS.api.index(leader.port)]
    followers = [p for p in FRESH_PORTS.dns if p != leader_dns]
    print(f"release switches: polling followers' DNS on {followers}; {trials_wanted} trials", file=sys.stderr)
    rng = random.Random(11)
    trials, failed = [], 0
    answers = {}
    live = "blue"
    started = time.monotonic()
    for t in range(trials_wanted):
        if time.monotonic() - started > time_limit:
            print(f"time limit {time_limit} s reached after {t} switches", file=sys.stderr)
            break
        time.sleep(rng.uniform(0.02, 0.12))
        target = "green" if live == "blue" else "blue"

        def ask(port):
            got = classify(askers[port].a(name))
            answers[got] = answers.get(got, 0) + 1
            return got

        ack, seen, _, t_send = one_trial(lambda: send("POST", "/v1/releases/cut/switch", {}), followers, ask,
                                         lambda got: got == target, poll_ms, trial_timeout)
        if ack.get("status") != 200 or len(seen) < len(followers):
            failed += 1
            print(f"switch {t}: {ack}, followers that answered {target}: {sorted(seen)}", file=sys.stderr)
            break
        live = target
        trials.append(timings(ack, seen, t_send, followers))
    for asker in askers.values():
        asker.close()
    return {"trials": trials, "failed": failed, "answers": answers, "followers": followers,
            "poll_ms": poll_ms}


def freshness(run, servers, s, binary):
    """A three-replica cluster of real agents (supervisor off) and the
    freshness trials against it."""
    token_file = run.path("fresh", "bootstrap.token")
    token = replicas.write_token(token_file)
    for i in (1, 2, 3):
        d = run.path("fresh", f"r{i}")
        os.makedirs(d, exist_ok=True)
        config = os.path.join(d, "config.toml")
        with open(config, "w") as f:
            f.write(replicas.replica_config(i, os.path.join(d, "data"), FRESH_PORTS, token_file,
                                            sections={"supervisor": ["enabled = false"]}))
        p = procs.spawn([binary, "agent", "--config", config], os.path.join(d, "log"), env=replicas.agent_env("warn"))
        servers.groups.append(p)
        log(f"started raftvisor agent r{i} (pid {p.pid})")
    try:
        data = measure_freshness(token, s.fresh_trials, s.poll_ms)
        if s.switch_trials:
            data["switch"] = measure_switch(token, s.switch_trials, s.poll_ms)
    except Failure as e:
        raise Failure(f"the freshness measurement failed: {e} (logs: {run.dir}/fresh/r*/log)")
    with open(run.path("freshness.json"), "w") as f:
        json.dump(data, f)
    if not data["trials"] or data["failed"]:
        raise Failure(f"the freshness measurement failed (logs: {run.dir}/fresh/r*/log)")
    switch = data.get("switch")
    if switch and (not switch["trials"] or switch["failed"]):
        raise Failure(f"the release switch measurement failed (logs: {run.dir}/fresh/r*/log)")
    servers.stop_all()
    return data


def freshness_report(data):
    trials = data["trials"]
    print("### Freshness (write through the leader -> a follower's DNS answers it)")
    print()
    if not trials:
        print("no successful trials")
        return
    commit = [t["commit_ms"] for t in trials]
    send_each = [v for t in trials for v in t["from_send_ms"].values()]
    send_both = [max(t["from_send_ms"].values()) for t in trials]
    ack_each = [v for t in trials for v in t["from_ack_ms"].values()]
    ack_both = [max(t["from_ack_ms"].values()) for t in trials]

    def row(label, values):
        return [label, len(values), f"{percentile(values, 50):.1f}", f"{percentile(values, 90):.1f}",
                f"{percentile(values, 99):.1f}", f"{max(values):.1f}"]

    print(f"{len(trials)} trials, {data['failed']} failed; polling every ~{data['poll_ms']} ms; "
          f"leader API port {data['leader_api']} before, {data['leader_after']} after.")
    print()
    table([("measure", "l"), ("samples", "r"), ("p50 ms", "r"), ("p90 ms", "r"), ("p99 ms", "r"), ("max ms", "r")], [
        row("write sent -> write acknowledged (commit, HTTP round trip)", commit),
        row("write sent -> a follower answers the new address (each follower)", send_each),
        row("write sent -> both followers answer it", send_both),
        row("acknowledgement -> a follower answers it (each follower)", ack_each),
        row("acknowledgement -> both followers answer it", ack_both)])
    print()
    p99 = percentile(send_each, 99)
    print(f"- goal commit -> changed answer on a follower p99 <= 100 ms: "
          f"{'met' if p99 <= 100 else 'NOT met'} (p99 {p99:.1f} ms counted from sending the write, "
          f"{percentile(ack_each, 99):.1f} ms from its acknowledgement)")
    print()
    if data.get("switch"):
        switch_report(data["switch"], row)


def switch_report(data, row):
    trials = data["trials"]
    print("### Blue-green switch (release switch through the leader -> a follower's DNS answers the other environment)")
    print()
    if not trials:
        print("no successful switches")
        return
    commit = [t["commit_ms"] for t in trials]
    send_each = [v for t in trials for v in t["from_send_ms"].values()]
    ack_each = [v for t in trials for v in t["from_ack_ms"].values()]
    ack_both = [max(t["from_ack_ms"].values()) for t in trials]
    answers = data["answers"]
    print(f"{len(trials)} switches, {data['failed']} failed; polling every ~{data['poll_ms']} ms; "
          f"answers seen while switching: " + ", ".join(f"{k} {v}" for k, v in sorted(answers.items())))
    print()
    table([("measure", "l"), ("samples", "r"), ("p50 ms", "r"), ("p90 ms", "r"), ("p99 ms", "r"), ("max ms", "r")], [
        row("switch sent -> acknowledged (commit, HTTP round trip)", commit),
        row("switch sent -> a follower answers the other environment", send_each),
        row("acknowledgement -> a follower answers it (each follower)", ack_each),
        row("acknowledgement -> both followers answer it", ack_both)])
    print()
    bad = sum(v for k, v in answers.items() if k not in ("blue", "green"))
    p99 = percentile(send_each, 99)
    print(f"- goal every follower answers the new environment within 100 ms of the commit: "
          f"{'met' if p99 <= 100 else 'NOT met'} (p99 {p99:.1f} ms from sending the switch, "
          f"{percentile(ack_each, 99):.1f} ms from its acknowledgement)")
    print(f"- goal never a mix or an empty answer: {'met' if bad == 0 else 'NOT met'} ({bad} such answers)")
    print()


def machine_lines(source):
    rev, _ = machine.revision()
    return [f"- machine: {machine.cores()} cores, {machine.cpu_model()}, {machine.memory()} memory, "
            f"kernel {machine.kernel()}",
            f"- dnsperf {machine.package_version('dnsperf')}, NSD {machine.package_version('nsd')}, "
            f"Knot {machine.package_version('knot')}; raftvisor release build of {machine.file_date(source)} "
            f"(HEAD now {rev if rev != 'unknown' else '?'})"]


class Tee:
    """Writes to stdout and to a file (the run's results.md)."""

    def __init__(self, path):
        self.file = open(path, "w")

    def write(self, text):
        sys.__stdout__.write(text)
        self.file.write(text)

    def flush(self):
        sys.__stdout__.flush()
        self.file.flush()


def main():
    s = Settings()
    source = settings.binary()
    dns_zone = settings.text("DNS_ZONE_BIN")
    if not os.access(dns_zone, os.X_OK):
        raise Failure(f"no example binary at DNS_ZONE_BIN={dns_zone!r}")
    # The benchmark clusters run plain HTTP: a CA exported for the dev
    # cluster must not reach anything started here.
    os.environ.pop("RAFTVISOR_CA", None)
    with procs.Run("raftvisor-bench-dns.") as run:
        binary = run.private_copy(source, "raftvisor")
        dns_zone = run.private_copy(dns_zone, "dns_zone")
        servers = Servers(run)
        lines = machine_lines(source)
        runs = [] if settings.flag("SKIP_THROUGHPUT") else throughput(run, servers, s, dns_zone)
        fresh = None if settings.flag("SKIP_FRESHNESS") else freshness(run, servers, s, binary)
        sys.stdout = Tee(run.path("results.md"))
        try:
            print("## DNS benchmark results")
            print()
            for line in lines:
                print(line)
            if runs:
                print(f"- zone: {s.services} services x {s.replicas} instances on {s.nodes} nodes; {s.queries} random "
                      f"A/SRV queries; `taskset -c {s.cpu} dnsperf -c {s.clients} -q {s.outstanding} -l {s.duration}`, "
                      f"{s.rounds} round(s), servers unpinned")
            if os.path.exists(run.path("raftvisor-zone.log")):
                with open(run.path("raftvisor-zone.log"), errors="replace") as f:
                    for line in f:
                        if line.startswith("dns_zone: "):
                            print("- raftvisor zone (examples/dns_zone.rs): " + line[len("dns_zone: "):].rstrip("\n"))
            print()
            if runs:
                throughput_report(runs)
            if fresh and fresh["trials"]:
                freshness_report(fresh)
        finally:
            sys.stdout.flush()
            sys.stdout = sys.__stdout__
