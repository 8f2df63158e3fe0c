"""`python3 -m benchtool BENCH [OPTIONS]`: runs one benchmark (or the DNS
smoke check) with the settings of the environment (see each
scripts/bench-*.sh and scripts/dns-smoke.sh). Maps a Failure to `error: ...`
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
    "images": "bench_images",
    "dns-smoke": "dns_smoke",
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m benchtool",
                                     description="raftvisor's benchmarks (settings from the environment)")
    parser.add_argument("bench", choices=sorted(BENCHES))
    args, options = parser.parse_known_args(argv)
    if options and args.bench != "dns-smoke":
        parser.error(f"{args.bench} takes its settings from the environment, not {' '.join(options)}")
    exit_on_signals()
    module = importlib.import_module(f"benchtool.{BENCHES[args.bench]}")
    try:
        return module.main(*options) or 0
    except Failure as e:
        log(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
