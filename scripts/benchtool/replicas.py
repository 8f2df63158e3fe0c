"""Three raftvisor replicas on loopback as the benchmarks run them: the
config file of each, the cluster's admin token, certificates made with the
binary's own `raftvisor certs`, the agents' environment, and the CLI. Owns
no measuring; never touches a port outside the ones it is given."""
import os
import subprocess

from .console import Failure


class Ports:
    """API, peer and DNS ports of replicas 1, 2, 3 (lists of equal length)."""

    def __init__(self, api, peer, dns):
        self.api, self.peer, self.dns = list(api), list(peer), list(dns)

    @classmethod
    def from_base(cls, api, peer, dns, count=3):
        """Consecutive ports: api, api+1, ... (likewise peer, dns)."""
        return cls(range(api, api + count), range(peer, peer + count), range(dns, dns + count))

    def api_addrs(self):
        return ",".join(f"127.0.0.1:{p}" for p in self.api)


def replica_config(replica_id, data_dir, ports, token_file, tls=None, sections=None, member_peers=None):
    """The TOML config of replica replica_id (1-based) of a cluster on ports.
    tls: (ca_cert, cert, key) for mutual TLS and HTTPS, None for
    [tls] insecure = true (plain HTTP). sections: {"raft": ["heartbeat_ms = 30"], ...}.
    member_peers: the peer ports the members are reached at, when not
    their own (a delaying proxy in front of each)."""
    i = replica_id - 1
    lines = [f"id = {replica_id}", f'data_dir = "{data_dir}"', f'api_addr = "127.0.0.1:{ports.api[i]}"',
             f'peer_addr = "127.0.0.1:{ports.peer[i]}"', f'dns_addr = "127.0.0.1:{ports.dns[i]}"']
    reached_at = list(member_peers or ports.peer)
    for j in range(len(ports.api)):
        lines += ["", "[[members]]", f"id = {j + 1}", f'api_addr = "127.0.0.1:{ports.api[j]}"',
                  f'peer_addr = "127.0.0.1:{reached_at[j]}"']
    lines += ["", "[auth]", f'bootstrap_token_file = "{token_file}"', "", "[tls]"]
    if tls:
        ca_cert, cert, key = tls
        lines += [f'ca_cert = "{ca_cert}"', f'cert = "{cert}"', f'key = "{key}"']
    else:
        lines += ["# Benchmarks run plain HTTP unless they measure TLS.", "insecure = true"]
    for name, body in (sections or {}).items():
        lines += ["", f"[{name}]"] + list(body)
    return "\n".join(lines) + "\n"


def write_token(path):
    """A fresh admin token (rvt_<id>.<secret>, 256 random bits) in path, mode
    0600, unless path exists; returns the token."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        token = f"rvt_{os.urandom(6).hex()}.{os.urandom(32).hex()}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    with open(path) as f:
        return f.read().strip()


def issue_certs(binary, certs_dir, names, log_path):
    """The CA in certs_dir (once) and a manager certificate for each name not
    issued yet (its id is the number after the last dash; 127.0.0.1 and
    localhost as SANs); returns the CA's path."""
    def run(args, what):
        with open(log_path, "a") as log:
            if subprocess.run([binary] + args, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                with open(log_path) as f:
                    tail = "".join(f.readlines()[-3:])
                raise Failure(f"raftvisor {what} failed: {tail}")

    ca = os.path.join(certs_dir, "ca.pem")
    if not os.path.exists(ca):
        run(["certs", "init", "--dir", certs_dir], "certs init")
    for name in names:
        if not os.path.exists(os.path.join(certs_dir, f"{name}.pem")):
            run(["certs", "issue", "--dir", certs_dir, "--role", "manager", "--name", name,
                 "--id", name.rsplit("-", 1)[-1], "--san", "127.0.0.1", "--san", "localhost"],
                f"certs issue {name}")
    return ca


def tls_files(certs_dir, name):
    """(ca_cert, cert, key) of a certificate issue_certs made."""
    return (os.path.join(certs_dir, "ca.pem"), os.path.join(certs_dir, f"{name}.pem"),
            os.path.join(certs_dir, f"{name}-key.pem"))


def agent_env(log_default, token=None):
    """The environment of an agent: RAFTVISOR_* of the calling shell would
    override its config file, so only RAFTVISOR_LOG passes (default
    log_default); the CA exported for the dev cluster never does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTVISOR_")}
    env["RAFTVISOR_LOG"] = os.environ.get("RAFTVISOR_LOG") or log_default
    if token:
        env["RAFTVISOR_TOKEN"] = token
    return env


def cli(binary, ports, token, *args, check=True):
    """The raftvisor CLI against the replicas' API (plain HTTP clusters);
    returns its stdout."""
    env = agent_env("warn", token)
    result = subprocess.run([binary, "--addr", ports.api_addrs()] + list(args), env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise Failure(f"raftvisor {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout
