"""The server's malloc policy (serving/malloc_policy.py): one arena, and freed large buffers
kept for the next call, unless told otherwise."""

from __future__ import annotations

import subprocess
import sys

from .conftest import python_env

PROBE = """
import sys
from notnets_rpc.serving import malloc_policy as m
print(m.limit_arenas(int(sys.argv[1])))
"""

# a 1 MiB protobuf echo's handler in miniature: five 1 MiB buffers alive at once, then all freed
BURSTS = """
import resource, sys
from notnets_rpc.serving import malloc_policy as m
kept = m.keep_freed(int(sys.argv[1]))
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    held = [bytearray(1 << 20) for _ in range(5)]
    del held
before = faults()
for _ in range(20):
    held = [bytearray(1 << 20) for _ in range(5)]
    del held
print(kept, (faults() - before) / 20)
"""


def _clean_env(**env: str) -> dict:
    out = python_env(**env)
    for name in ("MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"):
        if name not in env:
            out.pop(name, None)
    return out


def _limit(arenas: int, **env: str) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE, str(arenas)], env=_clean_env(**env), capture_output=True,
                         text=True, timeout=60, check=True)
    return out.stdout.strip()


def _bursts(arenas: int, **env: str) -> tuple:
    out = subprocess.run([sys.executable, "-c", BURSTS, str(arenas)], env=_clean_env(**env), capture_output=True,
                         text=True, timeout=60, check=True)
    kept, faults = out.stdout.split()
    return kept, float(faults)


def test_arenas_are_limited_unless_the_environment_or_the_option_says_otherwise():
    assert _limit(1) == "True"
    assert _limit(0) == "False"  # the option's "leave malloc alone"
    assert _limit(1, MALLOC_ARENA_MAX="4") == "False"  # the user's setting wins


def test_freed_large_buffers_are_kept_so_the_next_burst_takes_no_page_faults():
    kept, faults = _bursts(1)
    assert kept == "True" and faults < 16, faults  # 5 MiB a burst: 1280 pages, none of them fresh
    kept, faults = _bursts(0)  # glibc's defaults: the freed top goes back, and every burst faults it in again
    assert kept == "False" and faults > 256, faults
    kept, _ = _bursts(1, MALLOC_TRIM_THRESHOLD_=str(1 << 20))  # the user's setting wins
    assert kept == "False"
    assert _bursts(1, GLIBC_TUNABLES="glibc.malloc.mmap_threshold=65536")[0] == "False"
    assert _bursts(1, GLIBC_TUNABLES="glibc.cpu.hwcaps=-ERMS")[0] == "True"  # (QEMU guests set this one)
