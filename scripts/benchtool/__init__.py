"""raftvisor's benchmark tool: the measuring behind every scripts/bench-*.sh.

Each benchmark is a subcommand (``python3 -m benchtool kv|failover|memory|
dns|restart|node-loss|manager-loss``); the shell scripts only install what a
benchmark needs, find the release binary and start the subcommand. This
package owns everything after that: the clusters it starts (raftvisor, etcd,
NSD, Knot, containers), the clients it measures with (HTTP, DNS, the Docker
API), the statistics and the Markdown reports. It must never change the
product or reach beyond 127.0.0.1, and it removes every process, container
and file it created when it ends, on failure and on Ctrl-C too.

Why Python and not a Rust binary beside ``jepsen/``: the benchmarks drive
peers side by side (etcd, NSD, Knot, dockerd) and external load generators
(wrk, dnsperf); what they need from a client is a handful of HTTP and DNS
calls, not the product's types. In Python they run with the standard library
only, start in well under a second and need no build, so a benchmark run
never competes with a compile of the workspace for the machine it measures.

Modules, one responsibility each:

- ``console``: log lines, the run's fatal error, Markdown tables;
- ``settings``: the environment knobs, validated once;
- ``stats``: percentiles, medians, ratios and number formatting;
- ``cpu``: CPU accounting from /proc (what else used the machine);
- ``procs``: the run's work directory, starting and stopping processes;
- ``httpclient``: HTTP(S) calls to raftvisor's API and to etcd;
- ``replicas``: raftvisor replica configs, tokens, certificates, agents;
- ``kvcluster``: the 3-member KV clusters compared (raftvisor, etcd);
- ``dnswire``: DNS messages over UDP;
- ``docker``: the Docker Engine API over its unix socket;
- ``machine``: the description of the machine and the build measured;
- ``bench_*``: one module per benchmark.
"""
