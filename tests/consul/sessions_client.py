"""Takes locks on raftvisor's KV with py-consul, a Consul client library:
sessions (create, info, list, renew, destroy), `?acquire=` / `?release=`
with two competing sessions, lock-delay, the `delete` behaviour, and an
all-or-nothing transaction.

Usage: sessions_client.py HOST PORT PREFIX CA TOKEN. Exits non-zero on the
first failed expectation, naming it.
"""

import base64
import json
import sys
import time

import consul
import consul.callback


def expect(condition, what):
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr, flush=True)
        sys.exit(1)


def main():
    host, port, prefix, ca, token = sys.argv[1:6]
    c = consul.Consul(host=host, port=int(port), token=token, scheme="https", verify=ca)
    lock = f"{prefix}/leader"

    first = c.session.create(name="first", ttl=10, lock_delay=0, behavior="release")
    second = c.session.create(name="second", lock_delay=0, checks=[])
    expect(first and second and first != second, f"two session ids ({first}, {second})")
    _, info = c.session.info(first)
    expect(info and info["Name"] == "first" and info["TTL"] == "10s", f"info shows the session: {info}")
    _, sessions = c.session.list()
    expect({first, second} <= {s["ID"] for s in sessions}, f"list shows both: {sessions}")
    renewed = c.session.renew(first)
    expect(renewed and renewed["ID"] == first, f"renew answers the session: {renewed}")

    expect(c.kv.put(lock, "one", acquire=first) is True, "the first session acquires")
    expect(c.kv.put(lock, "two", acquire=second) is False, "the second session is refused")
    expect(c.kv.put(lock, "one again", acquire=first) is True, "its holder re-acquires")
    _, entry = c.kv.get(lock)
    expect(entry["Session"] == first, f"the entry names its holder: {entry}")
    expect(entry["LockIndex"] == 1, f"one acquisition so far: {entry}")
    expect(entry["Value"] == b"one again", f"the holder's write is the value: {entry}")
    expect(c.kv.put(lock, "x", release=second) is False, "only the holder releases")
    expect(c.kv.put(lock, "released", release=first) is True, "the holder releases")
    _, entry = c.kv.get(lock)
    expect("Session" not in entry or entry["Session"] is None, f"released: {entry}")
    expect(c.kv.put(lock, "two", acquire=second) is True, "the second session acquires once free")
    _, entry = c.kv.get(lock)
    expect(entry["LockIndex"] == 2, f"two acquisitions: {entry}")

    # Destroying a session releases what it holds (behaviour release).
    expect(c.session.destroy(second) is True, "destroy answers true")
    _, entry = c.kv.get(lock)
    expect(entry is not None and entry.get("Session") is None, f"the key stays, unlocked: {entry}")
    _, gone = c.session.info(second)
    expect(gone is None, f"a destroyed session is gone: {gone}")

    # A session with behaviour delete takes its keys with it.
    doomed = c.session.create(name="doomed", behavior="delete", lock_delay=0)
    expect(c.kv.put(f"{prefix}/member", "m", acquire=doomed) is True, "acquires the member key")
    c.session.destroy(doomed)
    _, member = c.kv.get(f"{prefix}/member")
    expect(member is None, f"the delete behaviour removed the key: {member}")

    # Lock-delay: a key freed by an invalidated session waits.
    delayed = c.session.create(name="delayed", lock_delay=2)
    expect(c.kv.put(f"{prefix}/delayed", "d", acquire=delayed) is True, "acquires the delayed key")
    c.session.destroy(delayed)
    third = c.session.create(name="third", lock_delay=0)
    expect(c.kv.put(f"{prefix}/delayed", "t", acquire=third) is False, "refused during the lock-delay")
    time.sleep(2.2)
    expect(c.kv.put(f"{prefix}/delayed", "t", acquire=third) is True, "acquired after the lock-delay")

    # An unknown session is Consul's 500 "invalid session".
    try:
        c.kv.put(lock, "z", acquire="00000000-0000-0000-0000-000000000000")
        expect(False, "an unknown session is refused")
    except consul.ConsulException as error:
        expect("invalid session" in str(error), f"Consul's words: {error}")

    # Transactions: all or nothing. py-consul's txn.put sends no token;
    # its HTTP client with the token header is what an ACL-enabled
    # Consul needs as well.
    def txn(ops):
        return c.http.put(consul.callback.CB.json(), "/v1/txn", data=json.dumps(ops),
                          headers={"X-Consul-Token": token})

    b64 = lambda s: base64.b64encode(s.encode()).decode()
    ok = txn([
        {"KV": {"Verb": "set", "Key": f"{prefix}/t1", "Value": b64("1")}},
        {"KV": {"Verb": "lock", "Key": f"{prefix}/t2", "Value": b64("2"), "Session": third}},
        {"KV": {"Verb": "get", "Key": f"{prefix}/t1"}},
    ])
    expect(len(ok["Results"]) == 3, f"three results: {ok}")
    expect(base64.b64decode(ok["Results"][2]["KV"]["Value"]) == b"1", f"get sees the set before it: {ok}")
    try:
        txn([
            {"KV": {"Verb": "set", "Key": f"{prefix}/t3", "Value": b64("3")}},
            {"KV": {"Verb": "check-not-exists", "Key": f"{prefix}/t1"}},
        ])
        expect(False, "a failing transaction is refused")
    except consul.ConsulException as error:
        expect("exists" in str(error), f"the failed operation is named: {error}")
    _, t3 = c.kv.get(f"{prefix}/t3")
    expect(t3 is None, f"nothing of the failed transaction stays: {t3}")
    _, t2 = c.kv.get(f"{prefix}/t2")
    expect(t2["Session"] == third, f"the transaction's lock holds: {t2}")
    print("all expectations held", flush=True)


if __name__ == "__main__":
    main()
