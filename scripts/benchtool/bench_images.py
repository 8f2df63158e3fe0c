"""bench images (scripts/bench-images.sh): the time for a ~100 MB image to
be running on a node that lacks it. Three ways, in one run, on the same
engine and the same image: a plain `docker pull` + `docker run` from a
local registry (Debian's docker-registry on loopback, TLS and htpasswd),
raftvisor deploying a service of that image from the same registry (its
login stored with `raftvisor registry login`), and raftvisor deploying it
from a cluster import (`raftvisor image import`, timed from the start of
the import). Before every trial the image (every tag and digest of it) is
removed from the engine, so each trial fetches its 100 MB layer again;
trials alternate between the sides."""
import json
import os
import subprocess
import time

from . import docker, rvcluster, settings
from .console import Failure, log, table
from .stats import summary

USER, PASSWORD = "bench", "bench-images-password"


class Registry:
    """docker-registry on a loopback port with a self-signed certificate the
    engine trusts (/etc/docker/certs.d/HOST/ca.crt) and one htpasswd user."""

    def __init__(self, run, port):
        self.run, self.port = run, port
        self.host = f"127.0.0.1:{port}"
        self.dir = run.path("registry")
        os.makedirs(self.dir)
        self.certs_dir = f"/etc/docker/certs.d/{self.host}"
        self.proc = None

    def start(self):
        key, cert = os.path.join(self.dir, "key.pem"), os.path.join(self.dir, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
        os.makedirs(self.certs_dir, exist_ok=True)
        with open(cert) as src, open(os.path.join(self.certs_dir, "ca.crt"), "w") as dst:
            dst.write(src.read())
        self.run.at_exit(self.stop)
        htpasswd = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True)
        with open(os.path.join(self.dir, "htpasswd"), "w") as f:
            f.write(htpasswd.stdout)
        config = os.path.join(self.dir, "config.yml")
        with open(config, "w") as f:
            f.write(f"""version: 0.1
log: {{level: warn}}
storage: {{filesystem: {{rootdirectory: {self.dir}/storage}}, delete: {{enabled: true}}}}
http: {{addr: {self.host}, tls: {{certificate: {cert}, key: {key}}}}}
auth: {{htpasswd: {{realm: bench, path: {self.dir}/htpasswd}}}}
""")
        log_file = open(os.path.join(self.dir, "log"), "a")
        self.proc = subprocess.Popen(["docker-registry", "serve", config], stdout=log_file, stderr=log_file,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not rvcluster.port_in_use(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise Failure(f"the registry did not start (log: {self.dir}/log)")
            time.sleep(0.1)
        self.docker("login", self.host, "-u", USER, "--password-stdin", stdin=PASSWORD)

    def docker(self, *args, stdin=None):
        env = dict(os.environ, DOCKER_CONFIG=os.path.join(self.dir, "docker-config"))
        result = subprocess.run(["docker"] + list(args), env=env, input=stdin, capture_output=True, text=True)
        if result.returncode != 0:
            raise Failure(f"docker {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout.strip()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        subprocess.run(["rm", "-rf", self.certs_dir])


def forget_image(repositories):
    """Removes from the engine every tag and digest of these repositories."""
    _, out = docker.cli("images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}")
    for line in out.splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[0] not in repositories:
            continue
        repository, tag, digest = parts
        if tag != "<none>":
            docker.cli("rmi", f"{repository}:{tag}")
        if digest != "<none>":
            docker.cli("rmi", f"{repository}@{digest}")


def wait_gone(engine, labels, timeout=60):
    deadline = time.monotonic() + timeout
    while engine.running(labels) or docker.cli("ps", "-aq", *sum((["--filter", f"label={l}"] for l in labels), []))[1]:
        if time.monotonic() > deadline:
            raise Failure(f"containers {labels} were not removed")
        time.sleep(0.2)


def raftvisor_trial(cluster, engine, name, image, timeout):
    """Deploys bench/NAME of IMAGE and times it until its container runs."""
    path = cluster.run.path(f"{name}.toml")
    with open(path, "w") as f:
        f.write(f'namespace = "bench"\nname = "{name}"\n[spec]\nimage = "{image}"\nreplicas = 1\n')
    t0 = time.monotonic()
    cluster.cli("service", "deploy", path)
    labels = cluster.labels("bench", name)
    if not engine.wait_running(labels, 1, timeout):
        raise Failure(f"bench/{name} did not run within {timeout} s")
    ms = (time.monotonic() - t0) * 1000
    cluster.cli("service", "rm", f"bench/{name}")
    wait_gone(engine, labels)
    return ms


def main():
    trials = settings.whole("TRIALS", 5, 1, message="TRIALS must be a positive integer")
    size_mb = settings.whole("IMAGE_MB", 100, 1)
    timeout = settings.whole("TRIAL_TIMEOUT_S", 300)
    port = settings.whole("REGISTRY_PORT", 27500)
    with rvcluster.SupervisorCluster() as cluster:
        run_id = os.path.basename(cluster.dir).rsplit(".", 1)[-1]
        registry = Registry(cluster.run, port)
        log(f"starting the registry on {registry.host}")
        registry.start()
        repo = f"{registry.host}/bench/big"
        local = f"raftvisor-bench-big:{run_id}"
        log(f"building a {size_mb} MB image")
        context = cluster.run.path("context")
        os.makedirs(context)
        with open(os.path.join(context, "blob"), "wb") as f:
            for _ in range(size_mb):
                f.write(os.urandom(1024 * 1024))
        with open(os.path.join(context, "Dockerfile"), "w") as f:
            f.write(f"FROM {rvcluster.ECHO_IMAGE}\nCOPY blob /blob\n")
        registry.docker("build", "-q", "-t", local, context)
        registry.docker("tag", local, f"{repo}:1")
        registry.docker("push", f"{repo}:1")
        archive = cluster.run.path("big.tar")
        registry.docker("save", "-o", archive, local)
        size = os.path.getsize(archive)
        forget_image([repo, "raftvisor-bench-big"])

        log("starting the three-replica cluster")
        cluster.start(["node_grace_ms = 2000", "probe_interval_ms = 250"])
        cluster.cli("node", "add", "bench-local", "--docker", f"unix://{docker.SOCK}", "--address", "127.0.0.1")
        env = dict(os.environ, RAFTVISOR_REGISTRY_PASSWORD=PASSWORD)
        result = subprocess.run([cluster.binary, "--addr", rvcluster.PORTS.api_addrs(), "registry", "login",
                                 registry.host, "--username", USER],
                                env=dict(env, RAFTVISOR_TOKEN=cluster.token), capture_output=True, text=True,
                                stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise Failure(f"registry login: {result.stderr.strip()}")
        engine = docker.Docker()
        results = {"docker": [], "registry": [], "import": []}
        for i in range(1, trials + 1):
            # docker pull + docker run
            forget_image([repo, "raftvisor-bench-big"])
            name = f"rvbench-images-{run_id}-{i}"
            cluster.containers.append(name)
            t0 = time.monotonic()
            registry.docker("pull", "-q", f"{repo}:1")
            # `docker run -d` answers once the container has started.
            registry.docker("run", "-d", "--name", name, f"{repo}:1")
            ms = (time.monotonic() - t0) * 1000
            docker.cli("rm", "-f", name)
            results["docker"].append(ms)
            log(f"trial {i}/{trials}: docker pull + run {ms:.0f} ms")
            # raftvisor from the registry
            forget_image([repo, "raftvisor-bench-big"])
            ms = raftvisor_trial(cluster, engine, f"reg{i}", f"{repo}:1", timeout)
            results["registry"].append(ms)
            log(f"trial {i}/{trials}: raftvisor from the registry {ms:.0f} ms")
            # raftvisor from a cluster import
            forget_image([repo, "raftvisor-bench-big"])
            t0 = time.monotonic()
            out = subprocess.run([cluster.binary, "--addr", rvcluster.PORTS.api_addrs(), "image", "import", archive],
                                 env=dict(os.environ, RAFTVISOR_TOKEN=cluster.token), capture_output=True, text=True,
                                 stdin=subprocess.DEVNULL)
            if out.returncode != 0:
                raise Failure(f"image import: {out.stderr.strip()}")
            import_ms = (time.monotonic() - t0) * 1000
            ms = import_ms + raftvisor_trial(cluster, engine, f"imp{i}", local, timeout)
            results["import"].append(ms)
            log(f"trial {i}/{trials}: raftvisor import ({import_ms:.0f} ms) + deploy {ms:.0f} ms")
            with open(cluster.run.path("trials.jsonl"), "a") as f:
                f.write(json.dumps({k: v[-1] for k, v in results.items()}) + "\n")
        forget_image([repo, "raftvisor-bench-big"])

        print()
        print("### Images: a ~100 MB image to a running container on a node that lacks it")
        cluster.print_context(f"TRIALS={trials} IMAGE_MB={size_mb} scripts/bench-images.sh",
                              cluster.activity(), cluster.activity())
        stats = {k: summary(v) for k, v in results.items()}
        table([("path", "l"), ("trials", "r"), ("min", "r"), ("median", "r"), ("max", "r")],
              [[label, stats[k]["n"], f"{stats[k]['min']:.0f} ms", f"{stats[k]['median']:.0f} ms",
                f"{stats[k]['max']:.0f} ms"]
               for k, label in (("docker", "docker pull + docker run (registry)"),
                                ("registry", "raftvisor deploy (registry pull)"),
                                ("import", "raftvisor image import + deploy"))])
        print()
        ratio = stats["registry"]["median"] / stats["docker"]["median"]
        print(f"- image: {size / 1e6:.0f} MB archive ({size_mb} MB of random data on the echo image)")
        print(f"- ratio raftvisor (registry) / docker pull + run: median {ratio:.2f}x; "
              f"goal <= 1.2x: {'met' if ratio <= 1.2 else 'NOT met'}")
        print(f"- ratio raftvisor (import + deploy) / docker pull + run: median "
              f"{stats['import']['median'] / stats['docker']['median']:.2f}x")
