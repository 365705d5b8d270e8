"""What a benchmark result must say about where it was taken, so others can compare.

These machines are shared and noisy: the load average before and after a run is part
of the result, next to the CPU, the accelerator, the pool's backing and the versions.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from typing import Any, Optional

from emulator.paths import REPO_ROOT


def _first_line(argv: list[str]) -> Optional[str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=REPO_ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0] if done.returncode == 0 and lines else None


def cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def memory_gib() -> Optional[float]:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return None


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def versions(backend: str) -> dict[str, Optional[str]]:
    import grpc

    found: dict[str, Optional[str]] = {"python": platform.python_version(), "grpcio": grpc.__version__,
                                       "kernel": platform.release()}
    if backend == "qemu":
        found["qemu"] = _first_line(["qemu-system-x86_64", "--version"])
    return found


def machine_meta(backend: str) -> dict[str, Any]:
    """Everything about this machine and checkout that a reader needs to weigh the numbers."""
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": memory_gib(),
        "load_before": load_average(),
        "versions": versions(backend),
        "commit": _first_line(["git", "rev-parse", "--short", "HEAD"]),
    }
