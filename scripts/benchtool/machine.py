"""Facts about the machine and the build a report was measured on: cores,
CPU model, memory, kernel, tool versions, the revision of the tree. Reads
only; a fact that cannot be had is `?`."""
import datetime
import os
import platform
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def output(argv, cwd=None, any_status=False):
    """The first line a command prints (stdout, else stderr), `?` on failure
    (with any_status, whatever its exit status)."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (result.stdout.strip() or result.stderr.strip()).splitlines()
    return text[0].strip() if text and (any_status or result.returncode == 0) else "?"


def word(line, index):
    """Word `index` of a line, `?` when it has fewer."""
    words = line.split()
    return words[index] if -len(words) <= index < len(words) else "?"


def cores():
    return os.cpu_count() or 1


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def memory():
    """Total memory as `free -h` shows it (e.g. 23Gi)."""
    line = output(["sh", "-c", "free -h | awk '/^Mem:/ {print $2}'"])
    return line


def kernel():
    return platform.release()


def revision():
    """(short HEAD, whether src/, Cargo.toml or Cargo.lock have uncommitted changes)."""
    rev = output(["git", "rev-parse", "--short", "HEAD"], cwd=REPO)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "Cargo.toml",
                             "Cargo.lock"], capture_output=True, text=True, cwd=REPO)
    return ("unknown" if rev == "?" else rev), bool(status.stdout.strip())


def file_date(path):
    """A file's modification time, `YYYY-MM-DD HH:MM UTC`."""
    stamp = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
    return stamp.strftime("%Y-%m-%d %H:%M UTC")


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def package_version(package):
    return output(["dpkg-query", "-W", "-f=${Version}", package])


def built_by_this_run():
    """Whether the entry script built the binary just now (BENCH_BUILT=1)."""
    return os.environ.get("BENCH_BUILT") == "1"
