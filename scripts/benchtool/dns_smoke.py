"""dns-smoke (scripts/dns-smoke.sh): dig checks of a running three-replica
cluster's DNS, on every replica: leader.managers.<domain> is the leader's
API address (authoritative); an external service created through the API
resolves to its addresses, over UDP and TCP; an unknown name is NXDOMAIN
with the SOA. The cluster is the one SMOKE_API/SMOKE_DNS name, else the dev
cluster if it answers, else (or with --own) a temporary cluster of its own
(API 37011-37013, peer 37111-37113, DNS 38611-38613, mutual TLS with a CA
of its own). Prints `ok:` per check and stops at the first `FAIL:`. Removes
the service it created and everything it started."""
import json
import os
import sys

from . import procs, replicas, settings
from .bench_dns import dig
from .httpclient import Endpoint, bearer, call, leader_of
from .machine import REPO

OWN_PORTS = replicas.Ports.from_base(37011, 37111, 38611)
DEV_API = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
DEV_DNS = ["127.0.0.1:8601", "127.0.0.1:8602", "127.0.0.1:8603"]


class SmokeFailure(Exception):
    pass


def status_of(text):
    for line in text.splitlines():
        if "status:" in line:
            return line.split("status:", 1)[1].split(",")[0].strip()
    return None


def dig_at(addr, name, qtype, *options):
    host, port = addr.rsplit(":", 1)
    return dig(port, name, qtype, *options, host=host)


def a_answers(text):
    """The A records of dig's answer section, sorted and space-separated."""
    found = []
    in_answer = False
    for line in text.splitlines():
        fields = line.split()
        if line.startswith(";;"):
            in_answer = line.startswith(";; ANSWER SECTION:")
        elif in_answer and not line.startswith(";") and len(fields) >= 5 and fields[2:4] == ["IN", "A"]:
            found.append(fields[4])
    return " ".join(sorted(found))


def answers_are(addr, name, expected, *options):
    """The A answers equal `expected` and the answer is authoritative NOERROR."""
    out = dig_at(addr, name, "A", *options)
    return (status_of(out) == "NOERROR" and any(line.startswith(";; flags: qr aa") for line in out.splitlines())
            and a_answers(out) == expected)


def eventually(seconds, check):
    return procs.wait_until(seconds, check, 0.2) is not None


class Target:
    """The cluster checked: its API endpoints, DNS addresses and token."""

    def __init__(self, api, dns, token, ca=None):
        self.api = [Endpoint(*a.rsplit(":", 1), ca_file=ca) for a in api]
        self.dns, self.token = dns, token


def token_from(path):
    with open(path) as f:
        return f.read().strip()


def choose(own, run_factory):
    api, dns = os.environ.get("SMOKE_API", ""), os.environ.get("SMOKE_DNS", "")
    token = os.environ.get("RAFTVISOR_TOKEN", "")
    if api or dns:
        if not (api and dns):
            raise SmokeFailure("SMOKE_API and SMOKE_DNS go together")
        if len(api.split(",")) != len(dns.split(",")):
            raise SmokeFailure("SMOKE_API and SMOKE_DNS list different numbers of replicas")
        if not token and os.environ.get("RAFTVISOR_TOKEN_FILE"):
            token = token_from(os.environ["RAFTVISOR_TOKEN_FILE"])
        return Target(api.split(","), dns.split(","), token, os.environ.get("SMOKE_CA") or None)
    dev = os.path.join(REPO, ".dev-cluster")
    dev_ca = os.path.join(dev, "certs", "ca.pem")
    ca = os.environ.get("SMOKE_CA") or (dev_ca if os.path.exists(dev_ca) else None)
    if not own and dev_answers(ca):
        if not token and os.path.exists(os.path.join(dev, "bootstrap.token")):
            token = token_from(os.path.join(dev, "bootstrap.token"))
        print(f"using the dev cluster (API {' '.join(DEV_API)}, DNS {' '.join(DEV_DNS)})")
        return Target(DEV_API, DEV_DNS, token, ca)
    return start_own(run_factory())


def dev_answers(ca):
    try:
        return call(Endpoint("127.0.0.1", 7001, ca), "GET", "/v1/health", timeout=3)[0] == 200
    except Exception:
        return False


def start_own(run):
    """A temporary cluster: certificates of its own CA, the admin token,
    supervisor off, the DNS domain of DOMAIN."""
    binary = run.private_copy(settings.binary(), "raftvisor")
    token_file = run.path("bootstrap.token")
    token = replicas.write_token(token_file)
    certs = run.path("certs")
    ca = replicas.issue_certs(binary, certs, [f"replica-{i}" for i in (1, 2, 3)], run.path("certs.log"))
    agents = []
    for i in (1, 2, 3):
        d = run.path(f"r{i}")
        os.makedirs(d)
        config = os.path.join(d, "config.toml")
        with open(config, "w") as f:
            f.write(replicas.replica_config(i, os.path.join(d, "data"), OWN_PORTS, token_file,
                                            tls=replicas.tls_files(certs, f"replica-{i}"),
                                            sections={"supervisor": ["enabled = false"],
                                                      "dns": [f'domain = "{domain()}"']}))
        agents.append(procs.spawn([binary, "agent", "--config", config], os.path.join(d, "log"),
                                  env=replicas.agent_env("warn")))
    run.at_exit(lambda: procs.stop(agents, run.dir, grace=5))
    api = [f"127.0.0.1:{p}" for p in OWN_PORTS.api]
    dns = [f"127.0.0.1:{p}" for p in OWN_PORTS.dns]
    print(f"started a temporary cluster (API {' '.join(api)}, DNS {' '.join(dns)}; work directory {run.dir})")
    return Target(api, dns, token, ca)


def domain():
    return settings.text("DOMAIN", "cluster.local")


def check(target, run):
    d = domain()
    leader = leader_of(target.api, target.token, 30)
    if leader is None:
        raise SmokeFailure(f"no leader among {' '.join(e.addr for e in target.api)} within 30 s")
    for addr in target.dns:
        if not eventually(10, lambda: answers_are(addr, f"leader.managers.{d}", leader.host)):
            got = a_answers(dig_at(addr, f"leader.managers.{d}", "A"))
            raise SmokeFailure(f"{addr}: leader.managers.{d} A is not {leader.host}: {got}")
        print(f"ok:   {addr}: leader.managers.{d} A {leader.host}")

    service = f"ext-{os.getpid()}"
    path = f"/v1/services/smoke/{service}"
    first = target.api[0]
    body = json.dumps({"kind": "external", "addresses": ["192.0.2.11", "192.0.2.10"]}).encode()
    try:
        code, answer = call(first, "PUT", path, body, bearer(target.token, {"Content-Type": "application/json"}),
                            timeout=10)
    except Exception as e:
        raise SmokeFailure(f"PUT {path} on {first.addr} failed: {e}")
    if code != 200:
        raise SmokeFailure(f"PUT {path} on {first.addr}: HTTP {code}: {answer.decode(errors='replace')}")
    created = [first]
    # Deleted again whatever happens next.
    run.at_exit(lambda: created and call(first, "DELETE", path, headers=bearer(target.token), timeout=5))
    print(f"ok:   created the external service smoke/{service} through {first.addr}")
    name = f"{service}.smoke.svc.{d}"
    expected = "192.0.2.10 192.0.2.11"
    for addr in target.dns:
        if not eventually(10, lambda: answers_are(addr, name, expected)):
            raise SmokeFailure(f"{addr}: {name} A is not {expected} within 10 s: {a_answers(dig_at(addr, name, 'A'))}")
        print(f"ok:   {addr}: {name} A {expected} (UDP)")
        if not answers_are(addr, name, expected, "+tcp"):
            out = dig_at(addr, name, "A", "+tcp")
            said = [line for line in out.splitlines() if "status:" in line or "connection" in line or "timed out" in line]
            raise SmokeFailure(f"{addr}: {name} A over TCP: {' '.join(said[:2])}")
        print(f"ok:   {addr}: {name} A {expected} (TCP)")

    name = f"nothing-{os.getpid()}.smoke.svc.{d}"
    for addr in target.dns:
        out = dig_at(addr, name, "A")
        if not out:
            raise SmokeFailure(f"{addr}: no answer for {name}")
        if status_of(out) != "NXDOMAIN":
            raise SmokeFailure(f"{addr}: {name} is {status_of(out)}, not NXDOMAIN")
        authority = out.split(";; AUTHORITY SECTION:", 1)[1] if ";; AUTHORITY SECTION:" in out else ""
        if not any(len(f) > 3 and f[3] == "SOA" for f in (line.split() for line in authority.splitlines())):
            raise SmokeFailure(f"{addr}: the NXDOMAIN answer for {name} has no SOA in the authority section")
        print(f"ok:   {addr}: {name} NXDOMAIN with the SOA")

    code, _ = call(first, "DELETE", path, headers=bearer(target.token), timeout=10)
    created.clear()
    if code not in (200, 204):
        raise SmokeFailure(f"DELETE {path}: HTTP {code}")
    print(f"ok:   deleted smoke/{service}")
    print(f"DNS smoke check passed on {len(target.dns)} replicas")


def main(*options):
    if options not in ((), ("--own",)):
        print("usage: scripts/dns-smoke.sh [--own]", file=sys.stderr)
        return 2
    own = options == ("--own",)
    # A CA exported for the dev cluster is used only through SMOKE_CA.
    os.environ.pop("RAFTVISOR_CA", None)
    with procs.Run("raftvisor-dns-smoke.") as run:
        try:
            check(choose(own, lambda: run), run)
        except SmokeFailure as e:
            print(f"FAIL: {e}")
            sys.stdout.flush()
            return 1
    return 0
