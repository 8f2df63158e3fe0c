"""The Docker Engine API over its unix socket, as the supervisor
benchmarks poll it: a keep-alive connection, container inspection, running
containers by label, Docker's timestamps; and the docker CLI for the few
changes a benchmark makes (run, rm). Never removes a container it was not
told to."""
import datetime
import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.parse

SOCK = "/var/run/docker.sock"


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=5.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


class Docker:
    """A keep-alive connection to the Docker API, reopened after an error."""

    def __init__(self, path=SOCK):
        self.path = path
        self.conn = None

    def request(self, method, url):
        """(status, body bytes) of one request, retried once on a new
        connection after an error."""
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = UnixHTTPConnection(self.path)
                self.conn.request(method, url)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        raise RuntimeError("unreachable")

    def get(self, url):
        status, body = self.request("GET", url)
        return status, (json.loads(body) if body else None)

    def start(self, cid):
        """POST /containers/{cid}/start; True when the engine started it."""
        status, _ = self.request("POST", f"/containers/{cid}/start")
        return status in (204, 304)

    def inspect(self, cid):
        status, body = self.get(f"/containers/{cid}/json")
        return body if status == 200 else None

    def running(self, labels):
        """Running containers carrying every label of `labels` (k=v strings)."""
        filters = urllib.parse.quote(json.dumps({"label": labels, "status": ["running"]}))
        status, body = self.get(f"/containers/json?filters={filters}")
        if status != 200:
            raise RuntimeError(f"container list answered {status}: {body}")
        return body

    def wait_running(self, labels, count, timeout=60):
        """Waits until exactly `count` containers with the labels run."""
        deadline = time.monotonic() + timeout
        n = -1
        while time.monotonic() < deadline:
            n = len(self.running(labels))
            if n == count:
                return True
            time.sleep(0.2)
        print(f"{n} running containers with {labels}, expected {count}", file=sys.stderr)
        return False


def parse_time(text):
    """Docker's RFC 3339 time with nanoseconds -> seconds since the epoch
    (None for Docker's zero time)."""
    if not text or text.startswith("0001-"):
        return None
    base, _, frac = text.rstrip("Z").partition(".")
    dt = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return dt.timestamp() + (float("0." + frac) if frac else 0.0)


def cli(*args):
    """The docker CLI; (exit status, stdout)."""
    result = subprocess.run(["docker"] + list(args), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return result.returncode, result.stdout.strip()


def remove_labelled(label):
    """docker rm -f of every container carrying label (k=v)."""
    _, ids = cli("ps", "-aq", "--filter", f"label={label}")
    if ids:
        cli("rm", "-f", *ids.split())
