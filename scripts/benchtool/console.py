"""What a benchmark says: timestamped progress on stderr, the error that
ends a run, and Markdown tables on stdout. Never measures anything."""
import sys
import time


class Failure(Exception):
    """The run cannot go on; the message says why (printed as `error: ...`)."""


def log(message):
    """One progress line on stderr, `[HH:MM:SS] message`."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def table(columns, rows, out=None):
    """A Markdown table. columns: (title, align) pairs, align "l" or "r";
    rows: lists of cells already formatted as text."""
    out = out or sys.stdout
    out.write("| " + " | ".join(title for title, _ in columns) + " |\n")
    out.write("|" + "|".join("---:" if align == "r" else "---" for _, align in columns) + "|\n")
    for row in rows:
        out.write("| " + " | ".join(str(cell) for cell in row) + " |\n")
    out.flush()
