"""The run's work directory and the processes a benchmark starts: each in
its own session (so a process group can be cut or stopped as one), logged
to a file, recognised by the work directory in its command line. Signals
only processes whose command line names the run (a recycled pid is never
touched) and removes only the run's own directory."""
import os
import shutil
import signal
import subprocess
import tempfile
import time

from . import settings
from .console import log


class Run:
    """A temporary work directory (`prefix` + random) and the clean-ups
    registered on it, undone last-in first-out when the run ends, whatever
    ends it. KEEP_WORKDIR=1 keeps the directory (logs, configs, results)."""

    def __init__(self, prefix):
        self.dir = tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("TMPDIR") or "/tmp")
        self._undo = []

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def at_exit(self, undo):
        self._undo.append(undo)

    def private_copy(self, source, name):
        """A copy of a binary in the work directory: a rebuild in the tree
        during the run cannot swap it, and its processes name the run."""
        target = self.path(name)
        shutil.copy2(source, target)
        return target

    def close(self):
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception as e:  # clean up the rest whatever one step did
                log(f"clean-up step failed: {e}")
        if settings.flag("KEEP_WORKDIR"):
            log(f"work directory kept: {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def exit_on_signals():
    """SIGINT and SIGTERM end the run like a failure (exit 130, 143), so
    every Run's clean-up still happens."""
    def stop(code):
        def handler(_signum, _frame):
            raise SystemExit(code)
        return handler
    signal.signal(signal.SIGINT, stop(130))
    signal.signal(signal.SIGTERM, stop(143))


def is_ours(pid, mark):
    """True if pid is alive and its command line mentions mark."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return mark in cmdline


def spawn(argv, log_path, env=None, append=False):
    """Starts argv in its own session (its pid is its process group), stdin
    closed, stdout and stderr to log_path."""
    with open(log_path, "a" if append else "w") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)


def stop(processes, mark, grace=3.0, group=False):
    """TERM to each process (its whole group with group) that is still ours,
    KILL to what is left after grace seconds; reaps them."""
    def signal_all(sig):
        for p in processes:
            p.poll()
            if is_ours(p.pid, mark):
                try:
                    os.killpg(p.pid, sig) if group else os.kill(p.pid, sig)
                except OSError:
                    pass

    signal_all(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for p in processes:
            p.poll()
        if not any(is_ours(p.pid, mark) for p in processes):
            break
        time.sleep(0.1)
    signal_all(signal.SIGKILL)
    for p in processes:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def run_bounded(argv, out, limit_s, env=None):
    """Runs argv to its end, stdout and stderr appended to the open file
    out, killed after limit_s seconds; returns its exit status (-9 when
    killed)."""
    child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        return child.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        return -9


def tail(path, lines=3):
    """The last lines of a log file, joined ('' if it cannot be read)."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).strip()
    except OSError:
        return ""


def wait_until(deadline_s, check, pause=0.2):
    """Calls check() until it returns a true value or deadline_s seconds pass;
    returns that value (None on time-out)."""
    end = time.monotonic() + deadline_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= end:
            return None
        time.sleep(pause)
