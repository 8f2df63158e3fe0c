"""The 3-member key-value clusters that bench kv, failover and memory
compare, each in its own directory of the run, one at a time:

  raftvisor           the product's default security: mutual TLS between
                      replicas, HTTPS API, every call with a bearer token
  raftvisor-insecure  the same with [tls] insecure = true (plain HTTP on
                      both ports, token still required)
  etcd                plain HTTP
  etcd-tls            HTTPS for clients (server authentication only: wrk
                      cannot present a client certificate), mutual TLS
                      between members

Certificates come from one CA per run, made with the binary's own
`raftvisor certs` in the run's certs/ directory; this module's client
verifies the servers against it. Ports (not the dev cluster's 7001-7003):
raftvisor api 17001-17003, peer 17101-17103, dns 17201-17203; etcd client
23791-23793, peer 23801-23803. Owns starting, stopping and asking these
clusters (status, readiness, writes); never measures or reports."""
import base64
import json
import os
import re
import shutil
import sys
import time

from . import machine, procs, replicas, settings
from .console import Failure, log
from .delayproxy import DelayProxy
from .httpclient import Endpoint, bearer, call

SYSTEMS = ("etcd", "etcd-tls", "raftvisor", "raftvisor-insecure")
RAFTVISOR_PORTS = replicas.Ports.from_base(17001, 17101, 17201)


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def integer(value):
    return int(value) if value not in (None, "") else 0


class Timing:
    """Raft timing of both systems: etcd's flags only when set (its defaults
    otherwise), raftvisor's [raft] section."""

    def __init__(self, env=os.environ):
        self.etcd_heartbeat_ms = env.get("BENCH_ETCD_HEARTBEAT_MS", "")
        self.etcd_election_ms = env.get("BENCH_ETCD_ELECTION_MS", "")
        self.rv_heartbeat_ms = int(env.get("BENCH_RAFTVISOR_HEARTBEAT_MS") or 30)
        self.rv_election_min_ms = int(env.get("BENCH_RAFTVISOR_ELECTION_MIN_MS") or 100)
        self.rv_election_max_ms = int(env.get("BENCH_RAFTVISOR_ELECTION_MAX_MS") or 150)

    def line(self):
        defaults = " (etcd's defaults)" if not (self.etcd_heartbeat_ms or self.etcd_election_ms) else ""
        return (f"- timing: etcd heartbeat {self.etcd_heartbeat_ms or 100} ms, election "
                f"{self.etcd_election_ms or 1000} ms{defaults}; raftvisor heartbeat {self.rv_heartbeat_ms} ms, "
                f"election {self.rv_election_min_ms}-{self.rv_election_max_ms} ms")


class Member:
    """One server process of a cluster: its API endpoint, how to start it,
    its directory (which its command line names) and log."""

    def __init__(self, name, endpoint, argv, env, directory):
        self.name, self.endpoint, self.argv, self.env, self.dir = name, endpoint, argv, env, directory
        self.url = endpoint.url
        self.log = os.path.join(directory, "log")
        self.process = None

    def start(self):
        self.process = procs.spawn(self.argv, self.log, env=self.env, append=True)

    def pid(self):
        """The member's pid if it is alive and really ours, else None."""
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid if procs.is_ours(self.process.pid, self.dir + "/") else None

    def connect(self, timeout):
        return self.endpoint.connect(timeout)


def metric_sum(text, name):
    """The sum of every sample of metric `name` (any labels) in a
    Prometheus text exposition."""
    total = 0.0
    for line in text.decode(errors="replace").splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def metrics_text(member, headers=None):
    """A member's Prometheus text, asked with `headers`."""
    code, data = call(member.endpoint, "GET", "/metrics", headers=headers, timeout=2)
    if code != 200:
        raise RuntimeError(f"GET /metrics: HTTP {code}")
    return data


LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_buckets(text, name, labels):
    """The cumulative counts of histogram `name` in a Prometheus text
    exposition, by bucket bound in seconds (inf for +Inf), summed over the
    series whose labels include every pair of `labels`."""
    prefix = name + "_bucket{"
    out = {}
    for line in text.decode(errors="replace").splitlines():
        if not line.startswith(prefix) or "}" not in line:
            continue
        series, _, value = line.rpartition(" ")
        found = dict(LABEL.findall(series[len(prefix):series.rindex("}")]))
        if "le" not in found or any(found.get(k) != v for k, v in labels.items()):
            continue
        bound = float(found["le"])
        out[bound] = out.get(bound, 0.0) + float(value)
    return out


class Raftvisor:
    def __init__(self, name, token):
        self.name, self.token = name, token

    def status(self, member, timeout=1.0):
        code, data = call(member.endpoint, "GET", "/v1/cluster", headers=bearer(self.token), timeout=timeout)
        if code != 200:
            raise RuntimeError(f"GET /v1/cluster: HTTP {code}")
        j = json.loads(data)
        leader = j.get("leader_id")
        return {"id": str(j["this_id"]), "leader": None if leader is None else str(leader),
                "term": integer(j.get("term")), "applied": integer(j.get("applied_index")),
                "state": j.get("state")}

    def put(self, key, value):
        return "PUT", "/v1/kv/" + key, value, bearer(self.token, {"Content-Type": "application/octet-stream"})

    def put_ok(self, code, data):
        return code == 200 and data.strip() == b"true"

    def metrics(self, member):
        return metrics_text(member, bearer(self.token))

    @staticmethod
    def fsyncs_in(metrics):
        """fsyncs of the Raft log so far (segment and meta file)."""
        return metric_sum(metrics, "raftvisor_raft_fsync_seconds_count")

    def count(self, member, prefix):
        code, data = call(member.endpoint, "GET", "/v1/kv/" + prefix + "?keys", headers=bearer(self.token),
                          timeout=30)
        if code == 404:
            return 0
        if code != 200:
            raise RuntimeError(f"GET keys: HTTP {code}")
        return len(json.loads(data))


class Etcd:
    def __init__(self, name):
        self.name = name
        self.token = None

    def status(self, member, timeout=1.0):
        code, data = call(member.endpoint, "POST", "/v3/maintenance/status", b"{}",
                          {"Content-Type": "application/json"}, timeout=timeout)
        if code != 200:
            raise RuntimeError(f"POST /v3/maintenance/status: HTTP {code}")
        j = json.loads(data)
        leader = j.get("leader")
        return {"id": str(j["header"]["member_id"]),
                "leader": None if leader in (None, "", "0") else str(leader),
                "term": integer(j.get("raftTerm") or j["header"].get("raft_term")),
                "applied": integer(j.get("raftAppliedIndex") or j.get("raftIndex")),
                "state": None}

    def put(self, key, value):
        body = json.dumps({"key": b64(key), "value": b64(value)})
        return "POST", "/v3/kv/put", body.encode(), {"Content-Type": "application/json"}

    def put_ok(self, code, data):
        if code != 200:
            return False
        try:
            return "header" in json.loads(data)
        except ValueError:
            return False

    def metrics(self, member):
        return metrics_text(member)

    @staticmethod
    def fsyncs_in(metrics):
        """fsyncs so far: the WAL's and the backend's commits (bbolt syncs
        its file on each)."""
        return (metric_sum(metrics, "etcd_disk_wal_fsync_duration_seconds_count")
                + metric_sum(metrics, "etcd_disk_backend_commit_duration_seconds_count"))

    def count(self, member, prefix):
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        body = json.dumps({"key": b64(prefix), "range_end": b64(end), "count_only": True})
        code, data = call(member.endpoint, "POST", "/v3/kv/range", body.encode(),
                          {"Content-Type": "application/json"}, timeout=30)
        if code != 200:
            raise RuntimeError(f"POST /v3/kv/range: HTTP {code}")
        return integer(json.loads(data).get("count"))


class Cluster:
    """One system's three members, started and asked through its API."""

    def __init__(self, system, directory, api, members):
        self.system, self.dir, self.api, self.members = system, directory, api, members
        # Delaying proxies in front of the members' peer ports, if any.
        self.proxies = []

    def start(self):
        for m in self.members:
            m.start()
        if self.wait_ready(60) is None:
            raise Failure(f"{self.system} cluster did not become ready (logs: {self.dir}/*/log)")

    def stop(self):
        procs.stop([m.process for m in self.members if m.process], self.dir + "/")

    def restart(self):
        """Stops and starts again every member, keeping its data."""
        self.stop()
        for m in self.members:
            m.start()
        if self.wait_ready(120) is None:
            raise Failure(f"{self.system} did not become ready after a restart (logs: {self.dir}/*/log)")

    def statuses(self, members=None, timeout=0.5):
        out = {}
        for m in members or self.members:
            try:
                out[m.name] = self.api.status(m, timeout)
            except Exception as e:  # an unreachable member
                out[m.name] = {"error": str(e)}
        return out

    def agreed_leader(self, view):
        """The member every replica names as leader, or None."""
        leaders = {s.get("leader") for s in view.values()}
        if len(leaders) != 1 or None in leaders or any("error" in s for s in view.values()):
            return None
        leader_id = leaders.pop()
        for m in self.members:
            if view[m.name]["id"] == leader_id:
                return m
        return None

    def try_put(self, member, key, value, timeout):
        method, path, body, headers = self.api.put(key, value)
        try:
            code, data = call(member.endpoint, method, path, body, headers, timeout=timeout)
            return self.api.put_ok(code, data)
        except Exception:
            return False

    def wait_ready(self, timeout, tag="ready"):
        """All members up, agreeing on a leader, accepting a write each, and
        caught up with the leader's applied index. Returns the leader."""
        deadline = time.monotonic() + timeout
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            leader = self.agreed_leader(self.statuses())
            if leader is None or any(m.pid() is None for m in self.members):
                time.sleep(0.05)
                continue
            if not all(self.try_put(m, f"bench/{tag}/{m.name}/{attempt}", b"x" * 16, 2.0) for m in self.members):
                time.sleep(0.05)
                continue
            try:
                target = self.api.status(leader)["applied"]
            except Exception:
                continue
            while time.monotonic() < deadline:
                view = self.statuses()
                if all("error" not in s and s["applied"] >= target for s in view.values()):
                    if self.agreed_leader(view) is leader:
                        return leader
                    break
                time.sleep(0.05)
        return None

    def metrics(self):
        """Each member's Prometheus text, by name (None where unreadable)."""
        out = {}
        for m in self.members:
            try:
                out[m.name] = self.api.metrics(m)
            except Exception:
                out[m.name] = None
        return out

    def fsyncs(self, metrics):
        """Each member's fsyncs so far in `metrics` (from `metrics()`), by
        name (None where unreadable)."""
        return {name: None if text is None else self.api.fsyncs_in(text) for name, text in metrics.items()}

    def status(self):
        """Leader, its URL, the highest term and every member's view."""
        view = self.statuses()
        leader = self.agreed_leader(view)
        terms = [s.get("term", 0) for s in view.values()]
        return {"leader": leader.name if leader else None, "leader_url": leader.url if leader else None,
                "term": max(terms) if terms else 0, "members": view}

    def log_problems(self):
        """Warnings and errors the members logged, the first 20 on stderr.
        etcd logs JSON (errors only: its warn level is chatty), raftvisor
        tracing's text; raftvisor-insecure's expected INSECURE warnings are
        left out."""
        pattern = re.compile(r'"level":"(error|fatal|panic)"|\s(ERROR|WARN)[^A-Za-z]|panicked')
        lines = []
        for m in self.members:
            try:
                with open(m.log, errors="replace") as f:
                    lines += [line for line in f if pattern.search(line) and "INSECURE: " not in line]
            except OSError:
                pass
        if lines:
            log(f"{self.system}: {len(lines)} warning/error lines in member logs; first ones:")
            for line in lines[:20]:
                sys.stderr.write(re.sub(r"\x1b\[[0-9;]*m", "", line))


# With a link delay, member i is reached at RAFTVISOR_DELAYED_PEERS[i - 1],
# a delaying proxy in front of its peer port.
RAFTVISOR_DELAYED_PEERS = [17151, 17152, 17153]


def start(run, system, binary, timing, link_delay_ms=0):
    """Starts SYSTEM's three members in run's directory SYSTEM (replacing
    what was there) and waits until they are ready. link_delay_ms (raftvisor
    only): every peer link goes through a proxy that delays it that much
    each way."""
    directory = run.path(system)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    if link_delay_ms and system not in ("raftvisor", "raftvisor-insecure"):
        raise Failure(f"a link delay is only made for raftvisor, not {system}")
    if system in ("raftvisor", "raftvisor-insecure"):
        cluster = _raftvisor(run, system, directory, binary, timing, link_delay_ms)
    elif system in ("etcd", "etcd-tls"):
        cluster = _etcd(run, system, directory, binary, timing)
    else:
        raise Failure(f"unknown system {system} ({', '.join(SYSTEMS)})")
    run.at_exit(cluster.stop)
    cluster.start()
    return cluster


# bench memory writes 100,000 keys, and readiness checks write a few more:
# above the default quota of 100,000 KV keys ([limits] max_kv_keys).
LIMITS = ["max_kv_keys = 1000000"]


def _raftvisor(run, system, directory, binary, timing, link_delay_ms=0):
    secure = system == "raftvisor"
    member_peers = None
    proxies = []
    if link_delay_ms:
        member_peers = RAFTVISOR_DELAYED_PEERS
        for listen, target in zip(member_peers, RAFTVISOR_PORTS.peer):
            proxy = DelayProxy(listen, target, link_delay_ms).start()
            run.at_exit(proxy.stop)
            proxies.append(proxy)
    certs = run.path("certs")
    ca = replicas.issue_certs(binary, certs, ["replica-1", "replica-2", "replica-3"],
                              run.path("certs.log")) if secure else None
    token_file = os.path.join(directory, "bootstrap.token")
    token = replicas.write_token(token_file)
    raft = [f"heartbeat_ms = {timing.rv_heartbeat_ms}", f"election_min_ms = {timing.rv_election_min_ms}",
            f"election_max_ms = {timing.rv_election_max_ms}", "snapshot_threshold = 10000"]
    members = []
    for i in (1, 2, 3):
        m = os.path.join(directory, f"r{i}")
        os.makedirs(m)
        config = os.path.join(m, "config.toml")
        with open(config, "w") as f:
            f.write(replicas.replica_config(i, os.path.join(m, "data"), RAFTVISOR_PORTS, token_file,
                                            tls=replicas.tls_files(certs, f"replica-{i}") if secure else None,
                                            sections={"raft": raft, "limits": LIMITS},
                                            member_peers=member_peers))
        endpoint = Endpoint("127.0.0.1", RAFTVISOR_PORTS.api[i - 1], ca)
        members.append(Member(f"r{i}", endpoint, [binary, "agent", "--config", config],
                              replicas.agent_env("warn"), m))
    cluster = Cluster(system, directory, Raftvisor(system, token), members)
    cluster.proxies = proxies
    return cluster


def _etcd(run, system, directory, binary, timing):
    secure = system == "etcd-tls"
    scheme = "https" if secure else "http"
    certs = run.path("certs")
    ca = replicas.issue_certs(binary, certs, ["etcd-1", "etcd-2", "etcd-3"],
                              run.path("certs.log")) if secure else None
    initial = ",".join(f"e{i}={scheme}://127.0.0.1:2380{i}" for i in (1, 2, 3))
    flags = []
    if timing.etcd_heartbeat_ms:
        flags += ["--heartbeat-interval", timing.etcd_heartbeat_ms]
    if timing.etcd_election_ms:
        flags += ["--election-timeout", timing.etcd_election_ms]
    members = []
    for i in (1, 2, 3):
        m = os.path.join(directory, f"e{i}")
        os.makedirs(m)
        tls = []
        if secure:
            _, cert, key = replicas.tls_files(certs, f"etcd-{i}")
            tls = ["--cert-file", cert, "--key-file", key, "--peer-cert-file", cert, "--peer-key-file", key,
                   "--peer-trusted-ca-file", ca, "--peer-client-cert-auth"]
        client = f"{scheme}://127.0.0.1:2379{i}"
        peer = f"{scheme}://127.0.0.1:2380{i}"
        argv = (["etcd", "--name", f"e{i}", "--data-dir", os.path.join(m, "data"),
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", initial, "--initial-cluster-token", "raftvisor-bench",
                 "--initial-cluster-state", "new"] + tls + ["--logger", "zap", "--log-level", "warn"] + flags)
        members.append(Member(f"e{i}", Endpoint("127.0.0.1", 23790 + i, ca), argv, None, m))
    return Cluster(system, directory, Etcd(system), members)


def security_lines(systems, wrk=False):
    """How each system was secured (with wrk, also how wrk treats https)."""
    says = {
        "raftvisor": "- raftvisor: TLS on both ports (mutual TLS between replicas, HTTPS API; ECDSA P-256 "
                     "certificates from `raftvisor certs`) and a bearer token on every call: the product's default",
        "raftvisor-insecure": "- raftvisor-insecure: [tls] insecure = true (plain HTTP on both ports); "
                              "bearer token still on every call",
        "etcd": "- etcd: plain HTTP, no authentication",
        "etcd-tls": "- etcd-tls: HTTPS for clients (server certificate only; no client certificates, no etcd "
                    "auth), mutual TLS between members, same CA",
    }
    lines = [says[s] for s in systems if s in says]
    if "raftvisor" in systems or "etcd-tls" in systems:
        lines.append("- the benchmark tool (Python) verifies the servers' certificates against the run's CA")
        if wrk:
            lines.append("- wrk speaks https without verifying the server certificate (fine for load generation)")
    return lines


def open_run():
    """The work directory of a KV benchmark and its private copy of the
    binary. The clusters have a CA of their own: one exported for the dev
    cluster must not leak into anything started here."""
    os.environ.pop("RAFTVISOR_CA", None)
    source = settings.binary()
    run = procs.Run("raftvisor-bench.")
    return run, run.private_copy(source, "raftvisor-bin")


def report_tail(systems, timing, wrk=False, gap=False):
    """The lines after a KV report: security of each system, Raft timing,
    (with gap, an empty line,) the machine and the build."""
    rev, dirty = machine.revision()
    return security_lines(systems, wrk) + [timing.line()] + ([""] if gap else []) + [
        f"- cores: {machine.cores()}",
        f"- CPU: {machine.cpu_model()}",
        f"- memory: {machine.memory()}",
        f"- kernel: {machine.kernel()}",
        f"- etcd: {machine.output(['etcd', '--version']).replace('etcd Version: ', '')}",
        f"- wrk: {machine.word(machine.output(['wrk', '-v'], any_status=True), 1)}",
        f"- raftvisor: {rev}{' with uncommitted changes in src/' if dirty else ''} (release build)",
        f"- date: {machine.now()}",
    ]
