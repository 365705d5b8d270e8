"""Byte sizes as people write them in topology files ("256M", "1G", 4096)."""

from __future__ import annotations

import re

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

_UNITS = {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": 1024 * GiB}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(?:([KMGT])(i|iB|B)?|(B)?)\s*$", re.IGNORECASE)


def parse_size(value: object) -> int:
    """Return the size in bytes; raises ValueError with a human reason.

    One grammar: a whole number, then K, M, G or T, each alone or as Ki/KiB, Mi/MiB,
    ... (all binary: K = 1024, as in QEMU's ``-m`` and ``size=``, so that what the user
    writes is what QEMU is told); ``B`` or nothing for bytes. ``KB``/``MB``/``GB`` are
    refused: they mean powers of 1000 elsewhere.
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
        raise ValueError(f"expected a size like 256M, 256Mi or 256MiB, got {value!r}")
    number_text, unit, tail = match.group(1), match.group(2) or "", match.group(3) or ""
    if tail.upper() == "B":
        raise ValueError(f"{value!r} is ambiguous ({unit.upper()}B is a power of 1000 elsewhere): write {number_text}{unit.upper()} "
                         f"or {number_text}{unit.upper()}iB (binary, K = 1024)")
    number = int(number_text) * _UNITS[unit.upper()]
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
