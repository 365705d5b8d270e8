#!/usr/bin/env python3
"""Where a 64 B round trip's time goes inside one host: interpreter, pool accesses, waiting.

Run it in a QEMU host (``notnets-emu exec HOST -- python scripts/guest_round_trip.py``)
to split the cross-host p50 that ``bench`` reports into its parts:

- ``inline``: client and server in one thread (scripts/count_hot_path.py's harness: no
  waiting, no scheduler), on a pool in this host's own RAM (/dev/shm) and on the host's
  pool (``--pool``, the CXL window in a QEMU guest), alternating rounds. What is left of
  the bench's p50 after the inline cost is waiting and hand-over between hosts; the gap
  between the two pools is what the window's accesses cost.
- ``accesses``: how many control words and copies one round trip makes in the pool
  (counted with the far-memory model at zero cost, notnets_rpc/farmem.py).
- ``word``: what one aligned 8-byte load from the pool costs here, over a load from
  private memory (a Python loop of loads, the empty loop subtracted).

Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import gc
import json
import mmap
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

COUNT_ENV = "NOTNETS_FARMEM"
MAP_BYTES = 2 << 20
COPY_SIZES = (8, 16, 64, 128, 256)  # a device-dax mapping must be a multiple of its 2 MiB alignment


def inline_us(calls: int, pool: "str | None") -> float:
    """The median round trip (a median: a guest's vCPU is preempted by the machine's load)."""
    import count_hot_path

    samples: list = []
    count_hot_path.run("plain", calls, pool, samples)
    return statistics.median(samples) / 1e3


def accesses(calls: int) -> dict:
    """Pool accesses per round trip: the far-memory model's counts, two runs differenced."""
    code = ("import json, sys; sys.path[:0] = [%r, %r]; import count_hot_path; from notnets_rpc import farmem; "
            "count_hot_path.run('plain', %d); count_hot_path.run('plain', %d); "
            "print(json.dumps(list(farmem.accounts().values())))") % (str(ROOT), str(ROOT / "scripts"), 0, calls)
    env = {**os.environ, COUNT_ENV: "latency_ns=0,bandwidth_gbps=1000000"}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    first, second = json.loads(out.strip().splitlines()[-1])
    return {key: round((second[key] - first[key]) / calls, 2) for key in ("words", "copies", "bytes")}


def load_ns(words, n: int) -> float:
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(n):
        words[0]
    return (clock() - start) / n


def copy_ns(view, nbytes: int, n: int) -> float:
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(n):
        bytes(view[64:64 + nbytes])
    return (clock() - start) / n


def word_cost(pool: str, n: int) -> dict:
    fd = os.open(pool, os.O_RDONLY)
    try:
        far = mmap.mmap(fd, MAP_BYTES, mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(fd)
    near = mmap.mmap(-1, MAP_BYTES)
    far_words, near_words = memoryview(far).cast("Q"), memoryview(near).cast("Q")
    best_far = min(load_ns(far_words, n) for _ in range(3))
    best_near = min(load_ns(near_words, n) for _ in range(3))
    copies = {}
    for size in COPY_SIZES:  # a frame's bytes copied out of the pool, over the same copy from RAM
        far_copy = min(copy_ns(memoryview(far), size, n) for _ in range(3))
        near_copy = min(copy_ns(memoryview(near), size, n) for _ in range(3))
        copies[f"extra_per_{size}B_copy_ns"] = round(far_copy - near_copy)
    far_words.release()
    near_words.release()
    far.close()
    near.close()
    return {"pool_load_ns": round(best_far), "ram_load_ns": round(best_near),
            "extra_per_pool_load_ns": round(best_far - best_near), **copies}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default=os.environ.get("NOTNETS_POOL"), help="the host's pool (default $NOTNETS_POOL)")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loads", type=int, default=20000)
    parser.add_argument("--gc", choices=("on", "freeze", "off"), default="on",
                        help="the collector during the round trips: as is, gc.freeze() first, or disabled")
    args = parser.parse_args()
    if args.gc == "freeze":
        gc.freeze()
    elif args.gc == "off":
        gc.disable()
    if args.pool:
        print(json.dumps({"word": args.pool, **word_cost(args.pool, args.loads)}), flush=True)
    print(json.dumps({"accesses_per_round_trip": accesses(args.calls)}), flush=True)
    for r in range(args.rounds):
        row = {"round": r, "inline_ram_us": round(inline_us(args.calls, None), 1)}
        if args.pool:
            row["inline_pool_us"] = round(inline_us(args.calls, args.pool), 1)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
