"""Statistics and number formatting of the reports: nearest-rank
percentiles, summaries, ratios. Pure functions; no I/O."""
import math
import statistics


def percentile(values, p):
    """Nearest-rank percentile: the value at rank ceil(p/100 * n) in
    ascending order (NaN for no values)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[min(len(ordered), int(rank)) - 1]


def summary(values):
    """n, min, median, p99 and max of the values that are not NaN, or None."""
    values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None
    return {"n": len(values), "min": min(values), "median": statistics.median(values),
            "p99": percentile(values, 99), "max": max(values)}


def ratio(a, b):
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(value, digits=1):
    """A number with thousands separators, `n/a` for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"
