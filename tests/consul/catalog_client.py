"""Reads raftvisor's Consul catalog and health API with py-consul, a Consul
client library, the way service-discovery tools do: the service list, the
instances of one service, the healthy ones only, the nodes, the agent, and
a blocking health query that must return when an instance stops.

Usage: catalog_client.py HOST PORT CA TOKEN SERVICE COUNT

SERVICE is the Consul name (`echo.demo`), COUNT how many instances run.
After the first reads it prints `BLOCKING <index>` and waits (up to 60 s)
on `health.service(SERVICE, passing=True, index=<index>)`; the caller then
stops one instance. Exits non-zero on the first failed expectation.
"""

import sys
import time

import consul
import consul.callback


def expect(condition, what):
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr, flush=True)
        sys.exit(1)


def main():
    host, port, ca, token, service, count = sys.argv[1:7]
    port, count = int(port), int(count)
    c = consul.Consul(host=host, port=port, token=token, scheme="https", verify=ca)

    index, services = c.catalog.services()
    expect(service in services, f"{service} is in the catalog's services: {services}")
    expect("namespace=" + service.split(".")[1] in services[service],
           f"{service}'s tags name its namespace: {services[service]}")
    expect(int(index) >= 1, f"X-Consul-Index is reported ({index!r})")

    index, entries = c.catalog.service(service)
    expect(len(entries) == count, f"{count} catalog entries of {service}, got {len(entries)}")
    for entry in entries:
        expect(entry["ServiceName"] == service, f"entry names its service: {entry}")
        expect(entry["ServicePort"] > 0, f"entry has a published port: {entry}")
        expect(entry["ServiceAddress"], f"entry has an address: {entry}")
        expect(entry["ServiceMeta"].get("port_http") == str(entry["ServicePort"]),
               f"the http port is in the meta: {entry}")
        expect("version" in entry["ServiceMeta"], f"the version is in the meta: {entry}")
    ids = sorted(e["ServiceID"] for e in entries)

    _, tagged = c.catalog.service(service, tag="port=http")
    expect(len(tagged) == count, f"?tag=port=http keeps every entry, got {len(tagged)}")
    _, none = c.catalog.service(service, tag="port=nope")
    expect(none == [], f"?tag=port=nope keeps none, got {none}")

    index, healthy = c.health.service(service, passing=True)
    expect(len(healthy) == count, f"{count} passing instances, got {len(healthy)}")
    for entry in healthy:
        statuses = {check["CheckID"]: check["Status"] for check in entry["Checks"]}
        expect(all(s == "passing" for s in statuses.values()), f"passing entries pass: {statuses}")
        expect(entry["Service"]["ID"] in ids, f"health names a catalog instance: {entry['Service']}")

    _, nodes = c.catalog.nodes()
    node_names = {n["Node"] for n in nodes}
    expect({e["Node"] for e in entries} <= node_names, f"instances' nodes are listed: {node_names}")

    # py-consul sends no token with agent.self(); ask with one, as a
    # client of an ACL-enabled Consul must.
    agent = c.http.get(consul.callback.CB.json(), "/v1/agent/self", headers={"X-Consul-Token": token})
    expect(agent["Config"]["Datacenter"], f"the agent names its datacenter: {agent['Config']}")

    _, missing = c.health.service("no-such-service")
    expect(missing == [], f"an unknown service has no instances: {missing}")

    print(f"BLOCKING {index}", flush=True)
    started = time.monotonic()
    new_index, after = c.health.service(service, passing=True, index=index, wait="60s")
    waited = time.monotonic() - started
    expect(int(new_index) > int(index), f"the blocking query returned a newer index ({index} -> {new_index})")
    expect(waited < 55, f"the blocking query returned on the change, not the timeout ({waited:.1f} s)")
    expect(len(after) == count - 1, f"{count - 1} passing after one stopped, got {len(after)}")
    print(f"returned after {waited:.2f} s", flush=True)
    print("all expectations held", flush=True)


if __name__ == "__main__":
    main()
