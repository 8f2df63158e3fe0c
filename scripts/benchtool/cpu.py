"""CPU accounting from /proc: how much of the machine a benchmark's own
processes used and how much everything else did, so a run on a busy
(shared) machine is waited for, repeated or at least labelled. A process is
the benchmark's when its command line names the run's work directory (the
`mark`). Reads /proc only; never signals or changes a process."""
import os
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


class Snapshot:
    """Busy ticks of the whole machine and {pid: (ticks, cmdline, name)}."""

    def __init__(self, busy, procs):
        self.busy = busy
        self.procs = procs


def snapshot():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    busy = fields[0] + fields[1] + fields[2] + sum(fields[5:8])
    procs = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        name = text[text.find("(") + 1:text.rfind(")")]
        rest = text[text.rfind(")") + 2:].split()
        procs[int(entry)] = (int(rest[11]) + int(rest[12]), cmdline, name)
    return Snapshot(busy, procs)


def ticks_used(before, after, select):
    """Ticks used between two snapshots by the processes select(pid, cmdline) picks."""
    return sum(ticks - before.procs.get(pid, (0,))[0]
               for pid, (ticks, cmdline, _) in after.procs.items() if select(pid, cmdline))


def foreign_share(mark, before, after, seconds, per_core=False):
    """Share of the CPU (of all cores, or of one core with per_core) used by
    processes that are not the benchmark's, and the heaviest three of them."""
    used = {}
    for pid, (ticks, cmdline, name) in after.procs.items():
        if mark in cmdline or pid == os.getpid():
            continue
        used[pid] = (ticks - before.procs.get(pid, (0,))[0], name)
    scale = 100.0 / (HZ * seconds * (1 if per_core else CORES))
    total = sum(t for t, _ in used.values())
    top = sorted(used.values(), reverse=True)[:3]
    return total * scale, [f"{name} {t * scale:.0f}%" for t, name in top if t > 0]


def quiet_wait(mark, max_pct, wait, sample=2.0, per_core=False):
    """Waits (at most `wait` s) until processes outside the benchmark use at
    most max_pct % of the CPU (of one core with per_core) over a sample;
    returns the last share."""
    unit = "of a core" if per_core else "of the CPU"
    start = time.monotonic()
    told = -60.0
    while True:
        before = snapshot()
        time.sleep(sample)
        pct, top = foreign_share(mark, before, snapshot(), sample, per_core)
        waited = time.monotonic() - start
        if pct <= max_pct:
            if waited > sample + 1:
                print(f"machine quiet after {waited:.0f} s (other processes {pct:.0f}% {unit})", file=sys.stderr)
            return pct
        if waited >= wait:
            print(f"WARNING: machine still busy after {waited:.0f} s: other processes use {pct:.0f}% "
                  f"{unit} ({', '.join(top)}); measuring anyway", file=sys.stderr)
            return pct
        if waited - told >= 60:
            told = waited
            print(f"waiting for a quiet machine: other processes use {pct:.0f}% {unit} "
                  f"({', '.join(top)})", file=sys.stderr)
        time.sleep(1)


def activity(mark, seconds=2.0):
    """One line: CPU use of processes other than the benchmark's over a short window."""
    before = snapshot()
    time.sleep(seconds)
    after = snapshot()
    used = []
    for pid, (ticks, cmdline, name) in after.procs.items():
        if mark in cmdline or pid == os.getpid():
            continue
        delta = ticks - before.procs.get(pid, (ticks,))[0]
        if delta > 0:
            used.append((100.0 * delta / (HZ * seconds), name))
    used.sort(reverse=True)
    total = sum(p for p, _ in used)
    top = ", ".join(f"{name} {p:.0f}%" for p, name in used[:4]) or "none"
    return f"other processes used {total:.0f}% of one core (of {CORES}) over {seconds:.0f} s: {top}"
