"""Drives raftvisor's KV API with py-consul, a Consul client library, to
show that existing Consul clients work unchanged.

Usage: kv_client.py HOST PORT PREFIX [CA [TOKEN]]. CA ("-" for none) is the
PEM of the CA that signed the cluster's HTTPS certificates; the API token
(also taken from CONSUL_HTTP_TOKEN) is handed to py-consul, which sends it
as Consul does. Exits non-zero on the first failed expectation, naming it.
"""

import os
import sys
import threading
import time

import consul


def expect(condition, what):
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def main():
    host, port, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    # Optional CA certificate: the cluster serves HTTPS signed by it.
    ca = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "-" else None
    token = sys.argv[5] if len(sys.argv) > 5 else os.environ.get("CONSUL_HTTP_TOKEN")
    if ca:
        c = consul.Consul(host=host, port=port, token=token, scheme="https", verify=ca)
    else:
        c = consul.Consul(host=host, port=port, token=token)
    kv = c.kv
    key = f"{prefix}/config"

    index, data = kv.get(key)
    expect(data is None, f"missing key reads as None, got {data!r}")
    expect(int(index) >= 1, f"X-Consul-Index is reported for a missing key ({index!r})")

    expect(kv.put(key, "v1") is True, "put answers True")
    index, data = kv.get(key)
    expect(data["Value"] == b"v1", f"value round-trips, got {data!r}")
    expect(data["CreateIndex"] == data["ModifyIndex"], "create and modify index agree on create")
    modify = data["ModifyIndex"]

    # Compare-and-set: 0 means create-only; a stale index fails.
    expect(kv.put(key, "v2", cas=0) is False, "cas=0 on an existing key answers False")
    expect(kv.put(key, "v2", cas=modify + 1000) is False, "stale cas answers False")
    expect(kv.get(key)[1]["Value"] == b"v1", "failed cas changed nothing")
    expect(kv.put(key, "v2", cas=modify, flags=42) is True, "matching cas answers True")
    _, data = kv.get(key)
    expect(data["Value"] == b"v2" and data["Flags"] == 42, f"cas write applied with flags, got {data!r}")

    for name in ("a", "b/c", "b/d"):
        expect(kv.put(f"{prefix}/tree/{name}", name) is True, f"put tree/{name}")
    _, entries = kv.get(f"{prefix}/tree/", recurse=True)
    expect([e["Key"] for e in entries] == [f"{prefix}/tree/a", f"{prefix}/tree/b/c", f"{prefix}/tree/b/d"], f"recurse lists the tree, got {entries!r}")
    _, keys = kv.get(f"{prefix}/tree/", keys=True, separator="/")
    expect(keys == [f"{prefix}/tree/a", f"{prefix}/tree/b/"], f"keys with separator, got {keys!r}")

    _, stale = kv.get(key, consistency="stale")
    expect(stale["Value"] == b"v2", "stale read answers")
    _, consistent = kv.get(key, consistency="consistent")
    expect(consistent["Value"] == b"v2", "consistent read answers")

    # Blocking query: returns when the key changes.
    index, _ = kv.get(key)
    result = {}

    def watch():
        result["answer"] = kv.get(key, index=index, wait="10s")

    watcher = threading.Thread(target=watch)
    started = time.monotonic()
    watcher.start()
    time.sleep(0.3)
    expect(watcher.is_alive(), "blocking query waits for a change")
    expect(kv.put(key, "v3") is True, "put during a blocking query")
    watcher.join(timeout=5)
    expect(not watcher.is_alive(), "blocking query returned after the change")
    new_index, data = result["answer"]
    expect(data["Value"] == b"v3" and int(new_index) > int(index), f"blocking query saw the change, got {result!r}")
    expect(time.monotonic() - started < 5, "blocking query returned promptly")

    expect(kv.delete(key, cas=1) is False, "delete with a stale cas answers False")
    expect(kv.delete(key, cas=data["ModifyIndex"]) is True, "delete with the right cas answers True")
    expect(kv.get(key)[1] is None, "deleted key is gone")
    expect(kv.delete(f"{prefix}/tree/", recurse=True) is True, "recursive delete")
    expect(kv.get(f"{prefix}/tree/", recurse=True)[1] is None, "tree is gone")
    print("py-consul drove the KV API: all expectations held")


if __name__ == "__main__":
    main()
