#!/usr/bin/env python3
"""A Docker volume driver (Docker's plugin protocol over a Unix socket in
/run/docker/plugins) whose volumes are directories under one root that
every node of a test cluster reaches: the tests' stand-in for network
storage (NFS, CIFS), which the test machines' kernels cannot mount. The
driver says its scope is "global": a volume made on one node is the same
volume on every other.

    shared_dir.py ROOT SOCKET
"""

import http.server
import json
import os
import shutil
import socketserver
import sys

ROOT, SOCKET = sys.argv[1], sys.argv[2]


def path_of(name):
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"bad volume name {name!r}")
    return os.path.join(ROOT, name)


def answer(method, body):
    name = body.get("Name", "")
    if method == "/Plugin.Activate":
        return {"Implements": ["VolumeDriver"]}
    if method == "/VolumeDriver.Capabilities":
        return {"Capabilities": {"Scope": "global"}}
    if method == "/VolumeDriver.Create":
        os.makedirs(path_of(name), exist_ok=True)
        return {"Err": ""}
    if method == "/VolumeDriver.Remove":
        shutil.rmtree(path_of(name), ignore_errors=True)
        return {"Err": ""}
    if method in ("/VolumeDriver.Mount", "/VolumeDriver.Path"):
        return {"Mountpoint": path_of(name), "Err": ""}
    if method == "/VolumeDriver.Unmount":
        return {"Err": ""}
    if method == "/VolumeDriver.Get":
        if os.path.isdir(path_of(name)):
            return {"Volume": {"Name": name, "Mountpoint": path_of(name), "Status": {}}, "Err": ""}
        return {"Err": f"no such volume {name}"}
    if method == "/VolumeDriver.List":
        names = sorted(os.listdir(ROOT))
        return {"Volumes": [{"Name": n, "Mountpoint": path_of(n)} for n in names], "Err": ""}
    return {"Err": f"unknown method {method}"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw.strip() else {}
            reply = answer(self.path, body or {})
        except (ValueError, OSError) as e:
            reply = {"Err": str(e)}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def address_string(self):
        return "docker"

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main():
    os.makedirs(ROOT, exist_ok=True)
    os.makedirs(os.path.dirname(SOCKET), exist_ok=True)
    if os.path.exists(SOCKET):
        os.unlink(SOCKET)
    with Server(SOCKET, Handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
