"""Latency samples to the numbers a benchmark row carries (pure; shared by the clients)."""

from __future__ import annotations

from typing import Sequence


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
