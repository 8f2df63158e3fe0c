"""The benchmarks' environment knobs (TRIALS=5 scripts/bench-restart.sh),
read and validated once, before anything starts. Reads the environment;
never writes it."""
import os

from .console import Failure


def whole(name, default, low=0, high=None, message=None):
    """The environment variable `name` as a whole number in [low, high]
    (`default` when unset or empty); a Failure naming the range otherwise."""
    text = os.environ.get(name, "")
    if text == "":
        return default
    if not text.isdigit() or int(text) < low or (high is not None and int(text) > high):
        if message:
            raise Failure(message)
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise Failure(f"{name} must be a whole number {bounds}, not {text!r}")
    return int(text)


def words(name, default):
    """A space-separated list, e.g. SYSTEMS="etcd raftvisor"."""
    return (os.environ.get(name) or default).split()


def flag(name):
    """True when the variable is 1 (KEEP_WORKDIR=1, SKIP_FRESHNESS=1)."""
    return os.environ.get(name, "0") == "1"


def text(name, default=""):
    return os.environ.get(name) or default


class Quiet:
    """The shared machine: before measuring, wait (QUIET_WAIT s at most)
    until other processes use at most QUIET_MAX_PCT % of the CPU; measure a
    run again (MAX_TRIES runs in all) when they used more during it."""

    def __init__(self, max_pct=10, wait=900, tries=3):
        self.max_pct = whole("QUIET_MAX_PCT", max_pct)
        self.wait = whole("QUIET_WAIT", wait)
        self.tries = whole("MAX_TRIES", tries, low=1)


def binary():
    """The release binary the entry script found or built (RAFTVISOR_BIN)."""
    path = os.environ.get("RAFTVISOR_BIN", "")
    if not path or not os.access(path, os.X_OK):
        raise Failure(f"no raftvisor binary at RAFTVISOR_BIN={path!r}")
    return path
