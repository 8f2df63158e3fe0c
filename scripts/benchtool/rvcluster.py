"""The supervisor benchmarks' cluster (bench restart, node-loss): three
raftvisor replicas on loopback (API 27001-27003, peer 27101-27103, DNS
28601-28603, plain HTTP, the admin token) that run containers on the local
Docker Engine. Owns their start, the CLI against them, and the clean-up:
replicas, their containers (by the cluster's label), containers and process
groups the benchmark registers, and the work directory. Never touches the
dev cluster's ports or another cluster's containers."""
import json
import os
import socket
import time

from . import cpu, docker, machine, procs, replicas, settings
from .console import Failure, log
from .httpclient import Endpoint, bearer, call

PORTS = replicas.Ports.from_base(27001, 27101, 28601)
ECHO_IMAGE = "raftvisor-echo:local"


def port_in_use(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class SupervisorCluster:
    """A run's work directory, its binary copy and (once started) its replicas."""

    def __init__(self):
        os.environ.pop("RAFTVISOR_CA", None)
        source = settings.binary()
        if not os.path.exists(docker.SOCK):
            raise Failure(f"no Docker socket at {docker.SOCK}")
        for port in PORTS.api + PORTS.peer:
            if port_in_use(port):
                raise Failure(f"port {port} is in use (another run of this benchmark?)")
        self.run = procs.Run("raftvisor-svbench.")
        self.run.at_exit(self._clean_up)
        self.binary = self.run.private_copy(source, "raftvisor")
        self.revision = self._revision(source)
        self.replicas = []
        self.cluster_id = None
        self.token = None
        # Containers the benchmark started itself, and process groups (the
        # node-loss proxy) to kill at exit.
        self.containers = []
        self.groups = []

    @staticmethod
    def _revision(source):
        """Which source the binary is: the tree now (just built) or its file date."""
        rev, dirty = machine.revision()
        dirty = " + uncommitted changes" if dirty else ""
        if machine.built_by_this_run():
            return f"{rev}{dirty} (static release build made by this run)"
        return f"binary {source} of {machine.file_date(source)} (tree at {rev}{dirty} when the run started)"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.run.close()
        return False

    @property
    def dir(self):
        return self.run.dir

    def start(self, supervisor_lines):
        """Starts the three replicas with these [supervisor] settings (and a
        secrets key, for sealed values) and waits for a leader and the
        cluster id."""
        token_file = self.run.path("bootstrap.token")
        self.token = replicas.write_token(token_file)
        key_file = self.run.path("secrets.key")
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(32).hex())
        for i in (1, 2, 3):
            m = self.run.path(f"r{i}")
            os.makedirs(m)
            config = os.path.join(m, "config.toml")
            with open(config, "w") as f:
                f.write(replicas.replica_config(i, os.path.join(m, "data"), PORTS, token_file,
                                                sections={"supervisor": supervisor_lines,
                                                          "secrets": [f'key_file = "{key_file}"'],
                                                          # Write loads (bench-node-loss's soak)
                                                          # outgrow the default key quota.
                                                          "limits": ["max_kv_keys = 1000000"]}))
            env = replicas.agent_env("info,openraft=warn,hickory_server=warn")
            self.replicas.append(procs.spawn([self.binary, "agent", "--config", config], os.path.join(m, "log"),
                                             env=env, append=True))
        deadline = time.monotonic() + 60
        while True:
            self.cluster_id = self.cluster_id_now()
            if self.cluster_id:
                break
            if time.monotonic() > deadline:
                raise Failure(f"no leader and cluster id within 60 s (logs: {self.dir}/r*/log)")
            for i, p in enumerate(self.replicas):
                if p.poll() is not None:
                    raise Failure(f"replica {i + 1} exited: {procs.tail(self.run.path(f'r{i + 1}', 'log'))}")
            time.sleep(0.2)
        if not self.cluster_id.replace("-", "").replace("_", "").isalnum():
            raise Failure(f"unexpected cluster id {self.cluster_id!r}")
        log(f"cluster {self.cluster_id} is up (API {PORTS.api_addrs()})")

    def endpoint(self, i=0):
        return Endpoint("127.0.0.1", PORTS.api[i])

    def cluster_id_now(self):
        for i in range(len(PORTS.api)):
            try:
                code, body = call(self.endpoint(i), "GET", "/v1/cluster?stale", headers=bearer(self.token))
                cid = json.loads(body).get("cluster_id") if code == 200 else None
                if cid:
                    return cid
            except Exception:
                continue
        return None

    def cli(self, *args):
        return replicas.cli(self.binary, PORTS, self.token, *args)

    def labels(self, namespace, service):
        """The Docker label filters of a service's containers."""
        return [f"raftvisor.cluster={self.cluster_id}", f"raftvisor.namespace={namespace}",
                f"raftvisor.service={service}"]

    def activity(self):
        """Load average and the busiest processes that are not this benchmark's."""
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
        return f"load average {load}; {cpu.activity(self.dir, 2)}"

    def machine_lines(self):
        docker_version = docker.cli("version", "--format", "{{.Server.Version}}")[1]
        driver = docker.cli("info", "--format", "{{.Driver}}")[1]
        cgroup = docker.cli("info", "--format", "{{.CgroupVersion}}")[1]
        return [f"- machine: {machine.cores()} cores, {machine.cpu_model()}, {machine.memory()} RAM, "
                f"kernel {machine.kernel()}",
                f"- docker: {docker_version} (storage driver {driver}, cgroup {cgroup})",
                f"- raftvisor: {self.revision}",
                f"- date: {machine.now()}"]

    def print_context(self, command, before, after):
        """The head of a report: how to run it again, the machine, and what
        else used it before and after the trials."""
        print()
        print(command)
        print()
        for line in self.machine_lines():
            print(line)
        print(f"- during the run: before: {before}")
        print(f"  after: {after}")
        print()

    def _clean_up(self):
        for group in self.groups:
            if procs.is_ours(group.pid, self.dir):
                procs.stop([group], self.dir, grace=0, group=True)
        if self.replicas and not self.cluster_id:
            self.cluster_id = self.cluster_id_now()
        procs.stop(self.replicas, self.dir, grace=5)
        # The replicas are gone, so nothing recreates containers any more.
        if self.cluster_id:
            docker.remove_labelled(f"raftvisor.cluster={self.cluster_id}")
        for name in self.containers:
            docker.cli("rm", "-f", name)


def instances(cluster, service):
    """One line per instance of a service: generation, restarts, state."""
    code, body = call(cluster.endpoint(), "GET", f"/v1/services/{service}/instances",
                      headers=bearer(cluster.token), timeout=2.0)
    if code != 200:
        return ""
    return "\n".join(f"instance {i['id']}: generation {i['generation']}, restarts {i['restarts']}, "
                     f"state {i['state']}" for i in json.loads(body))
