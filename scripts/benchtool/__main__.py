"""`python3 -m benchtool BENCH`: runs one benchmark with the settings of the
environment (see each scripts/bench-*.sh). Maps a Failure to `error: ...`
and exit status 1; owns nothing else."""
import argparse
import importlib
import sys

from .console import Failure, log
from .procs import exit_on_signals

BENCHES = {
    "kv": "bench_kv",
    "failover": "bench_failover",
    "memory": "bench_memory",
    "dns": "bench_dns",
    "restart": "bench_restart",
    "node-loss": "bench_node_loss",
    "manager-loss": "bench_manager_loss",
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m benchtool",
                                     description="raftvisor's benchmarks (settings from the environment)")
    parser.add_argument("bench", choices=sorted(BENCHES))
    args = parser.parse_args(argv)
    exit_on_signals()
    module = importlib.import_module(f"benchtool.{BENCHES[args.bench]}")
    try:
        return module.main() or 0
    except Failure as e:
        log(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
