"""HTTP(S) calls of the benchmarks: one endpoint type for raftvisor's API
and etcd's gateway, HTTPS verified against the run's own CA, raftvisor's
bearer token, and the few raftvisor API reads every benchmark needs (the
cluster status, the leader). Talks to 127.0.0.1 and localhost only; never
retries on its own (the callers decide what a failure means)."""
import http.client
import json
import ssl
import time

_contexts = {}


def tls_context(ca_file):
    """Client TLS context trusting only ca_file; it checks the server's
    certificate and name."""
    if ca_file not in _contexts:
        _contexts[ca_file] = ssl.create_default_context(cafile=ca_file)
    return _contexts[ca_file]


class Endpoint:
    """host:port over HTTP, or HTTPS checked against ca_file."""

    def __init__(self, host, port, ca_file=None):
        self.host, self.port, self.ca_file = host, int(port), ca_file

    @classmethod
    def parse(cls, url, ca_file=None):
        """From http://host:port or https://host:port (https needs ca_file)."""
        scheme, host_port = url.split("://", 1)
        host, port = host_port.rsplit(":", 1)
        if scheme == "https" and not ca_file:
            raise RuntimeError(f"{url}: https but no CA file")
        return cls(host, port, ca_file if scheme == "https" else None)

    @property
    def url(self):
        return f"{'https' if self.ca_file else 'http'}://{self.host}:{self.port}"

    @property
    def addr(self):
        return f"{self.host}:{self.port}"

    def connect(self, timeout):
        """A new (not yet connected) connection."""
        if self.ca_file:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=tls_context(self.ca_file))
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


def call(endpoint, method, path, body=None, headers=None, timeout=1.0, conn=None):
    """(status, body bytes); on a connection of its own unless conn is given."""
    own = conn is None
    if own:
        conn = endpoint.connect(timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


def bearer(token, extra=None):
    """Headers with raftvisor's API token. (Never sent to etcd: its gateway
    takes an Authorization header for an etcd auth token and refuses the
    request.)"""
    headers = dict(extra or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def cluster_status(endpoint, token, stale=False, timeout=1.0):
    """raftvisor's GET /v1/cluster as a dict (RuntimeError unless 200)."""
    code, data = call(endpoint, "GET", "/v1/cluster" + ("?stale" if stale else ""),
                      headers=bearer(token), timeout=timeout)
    if code != 200:
        raise RuntimeError(f"GET /v1/cluster: HTTP {code}")
    return json.loads(data)


def leader_of(endpoints, token, deadline_s, timeout=1.0):
    """The endpoint of the replica the first answering replica names as
    leader (same scheme and CA), waiting up to deadline_s; None if none."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for endpoint in endpoints:
            try:
                status = cluster_status(endpoint, token, timeout=timeout)
            except Exception:
                continue
            leader = status.get("leader_id")
            for member in status.get("members", []):
                if leader and member.get("id") == leader and member.get("api_addr"):
                    host, port = member["api_addr"].rsplit(":", 1)
                    return Endpoint(host, port, endpoint.ca_file)
        time.sleep(0.2)
    return None
