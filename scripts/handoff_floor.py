#!/usr/bin/env python3
"""The floor of a call chain's hand-offs: a token passed down a line of processes and back.

    .venv/bin/python scripts/handoff_floor.py --depth 3 --rounds 3000 [--modes spin,yield,futex,spin+futex]

A chain of depth D is D+1 processes (the client and D tiers) and 2D hand-offs per call:
the request goes down, the reply comes back up. This does exactly that and nothing
else: each process waits for a word of a /dev/shm file to change, then changes the next
process's word (and wakes it, if it sleeps in the kernel). No RPC, no serialization:
what it measures is what the waiting alone costs on this machine at its present load,
for each way of waiting:

- ``spin``: read the word in a Python loop until it changes;
- ``yield``: the same with ``sched_yield`` between reads;
- ``futex``: flag "asleep", FUTEX_WAIT on the word; the writer wakes a flagged sleeper
  (notnets_rpc's own wait_word/wake_word, the extension's calls without the GIL);
- ``spin+futex``: spin up to ``--spin`` reads, then as ``futex``;
- ``backoff``: spin up to ``--spin`` reads, then 16 yields, then as ``futex`` (the shape of
  notnets_rpc's rule for same-host peers: its spin budget adapts between 16 and 400).

Prints the p50 and p90 of a call (the client's round trip) per mode and the CPU the
processes used per call; modes alternate over ``--repeat`` passes.
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from notnets_rpc.memory import Memory  # noqa: E402

WORD = 64  # one cache line per process: its token word, then its "asleep" flag


def waiter(mem: Memory, me: int, mode: str, spin: int):
    """A function that waits until ``me``'s token word differs from ``seen``; returns the new value."""
    tok = me * WORD
    flag = tok + 8
    load, store = mem.load, mem.store

    def wait(seen: int) -> int:
        if mode in ("spin", "spin+futex", "backoff"):
            for _ in range(spin if mode != "spin" else 1 << 62):
                v = load(tok)
                if v != seen:
                    return v
        if mode == "backoff":  # notnets_rpc's rule for a waiter its peer wakes: then 16 yields, then the kernel
            for _ in range(16):
                os.sched_yield()
                v = load(tok)
                if v != seen:
                    return v
        if mode == "yield":
            while True:
                v = load(tok)
                if v != seen:
                    return v
                os.sched_yield()
        while True:  # futex, spin+futex after its spin
            store(flag, 1)
            v = load(tok)
            if v == seen:
                mem.wait_word(tok, seen, 0.05)
                v = load(tok)
            store(flag, 0)
            if v != seen:
                return v
    return wait


def send(mem: Memory, to: int, value: int) -> None:
    mem.store(to * WORD, value)
    if mem.load(to * WORD + 8):
        mem.wake_word(to * WORD)


def tier(path: str, me: int, depth: int, mode: str, spin: int, rounds: int, cpu_q) -> None:
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 0)
    mem = Memory(mm)
    wait = waiter(mem, me, mode, spin)
    seen = 0
    cpu = time.process_time()
    for _ in range(rounds):
        seen = wait(seen)  # the request from above (2i)
        if me < depth:
            send(mem, me + 1, seen)
            seen = wait(seen)  # the reply from below (2i + 1)
            send(mem, me - 1, seen)
        else:
            send(mem, me - 1, seen + 1)
    cpu_q.put(time.process_time() - cpu)
    del wait
    mem.release()
    mm.close()


def run(depth: int, mode: str, spin: int, rounds: int) -> "tuple[list, float]":
    ctx = get_context("fork")
    fd, path = tempfile.mkstemp(prefix="notnets-handoff-", dir="/dev/shm")
    try:
        os.ftruncate(fd, WORD * (depth + 1))
        os.close(fd)
        cpu_q = ctx.Queue()
        procs = [ctx.Process(target=tier, args=(path, i, depth, mode, spin, rounds, cpu_q)) for i in range(1, depth + 1)]
        for p in procs:
            p.start()
        with open(path, "r+b") as f:
            mm = mmap.mmap(f.fileno(), 0)
        mem = Memory(mm)
        wait = waiter(mem, 0, mode, spin)
        samples = []
        seen = 0
        cpu = time.process_time()
        for i in range(1, rounds + 1):
            t = time.perf_counter_ns()
            send(mem, 1, 2 * i)
            seen = wait(seen)
            samples.append(time.perf_counter_ns() - t)
        cpu = time.process_time() - cpu + sum(cpu_q.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(10)
        del wait
        mem.release()
        mm.close()
        return samples, cpu / rounds
    finally:
        os.unlink(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--modes", default="spin,yield,futex,spin+futex")
    parser.add_argument("--spin", type=int, default=200, help="reads before the kernel sleep (spin+futex)")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    modes = args.modes.split(",")
    print(f"depth {args.depth} ({2 * args.depth} hand-offs a call), {args.rounds} calls, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    for _ in range(args.repeat):
        for mode in modes:
            samples, cpu = run(args.depth, mode, args.spin, args.rounds)
            samples.sort()
            print(f"  {mode:<11} p50 {samples[len(samples) // 2] / 1000:8.1f} us  p90 "
                  f"{samples[len(samples) * 9 // 10] / 1000:8.1f} us  mean {statistics.mean(samples) / 1000:8.1f} us  "
                  f"CPU {cpu * 1e6:7.1f} us per call (all processes)", flush=True)
    print(f"load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
