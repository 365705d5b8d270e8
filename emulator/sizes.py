"""Byte sizes as people write them in topology files ("256M", "1G", 4096)."""

from __future__ import annotations

import re

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

_UNITS = {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": 1024 * GiB}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(value: object) -> int:
    """Return the size in bytes; raises ValueError with a human reason.

    Suffixes are binary (K = 1024), as in QEMU's ``-m`` and ``size=`` options, so that
    what the user writes is exactly what QEMU is told.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 256M, got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"size must be positive, got {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size like 256M, got {value!r}")
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueError(f"expected a size like 256M or 1G, got {value!r}")
    number = int(match.group(1)) * _UNITS[match.group(2).upper()]
    if number <= 0:
        raise ValueError(f"size must be positive, got {value!r}")
    return number


def format_size(nbytes: int) -> str:
    """The shortest exact spelling (``268435456`` -> ``256M``), as QEMU accepts it."""
    for suffix in ("T", "G", "M", "K"):
        unit = _UNITS[suffix]
        if nbytes % unit == 0:
            return f"{nbytes // unit}{suffix}"
    return str(nbytes)
