"""Latency samples to the numbers a benchmark row carries (pure; shared by the clients)."""

from __future__ import annotations

from typing import Sequence

from notnets_bench.results import point_key


def percentile(sorted_ns: Sequence[int], q: float) -> float:
    """Nearest-rank percentile of already sorted samples (0 for none)."""
    if not sorted_ns:
        return 0.0
    return float(sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))])


def summarize(samples_ns: Sequence[int], elapsed_s: float, size: int) -> dict:
    """p50/p99/mean in microseconds, calls, and the closed-loop rate of one client.

    ``mbps`` counts the payload one way (MB = 10^6 bytes), so that it reads as
    "how fast does one client move its payload through the echo".
    """
    ordered = sorted(samples_ns)
    n = len(ordered)
    return {
        "calls": n,
        "p50_us": round(percentile(ordered, 0.50) / 1e3, 2),
        "p99_us": round(percentile(ordered, 0.99) / 1e3, 2),
        "mean_us": round(sum(ordered) / n / 1e3, 2) if n else 0.0,
        "rps": round(n / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        "mbps": round(n * size / elapsed_s / 1e6, 3) if elapsed_s > 0 else 0.0,
    }


def pool_rounds(rows: Sequence[dict]) -> list[dict]:
    """Rows of the same points measured in several rounds -> one row per point, computed
    over all the rounds' samples (``samples_ns``, ``elapsed_s``), with each round's p50
    kept in ``p50_rounds_us``. Rows keep their first round's order."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["transport"], *point_key(row)), []).append(row)
    pooled = []
    for parts in groups.values():
        samples = [s for part in parts for s in part["samples_ns"]]
        elapsed = sum(part["elapsed_s"] for part in parts)
        base = {k: v for k, v in parts[0].items() if k not in ("samples_ns", "elapsed_s")}
        pooled.append({**base, **summarize(samples, elapsed, base["size"]), "rounds": len(parts),
                       "p50_rounds_us": [part["p50_us"] for part in parts]})
    return pooled
