"""A mixed workload for one server: many threads and processes, sizes from 64 B to 1 MiB,
deadlines, cancellations, server and client streams.

Used by the mixed-load test (tests/rpc/test_load.py, bounded) and the soak script
(scripts/soak_rpc.py, not in CI). Run as separate processes (tests/ on sys.path):

    python -m rpc.load serve POOL NAME WORKERS      # prints "serving"; SIGUSR1 dumps stacks
    python -m rpc.load client POOL NAME THREADS SECONDS SEED [CALLS]
        # runs the mix for SECONDS (or until CALLS calls ended, SECONDS at most), then
        # prints one JSON line {"outcomes": {code: n}, "details": {...}, "ended": bool}

Every OK answer is checked against what was sent: a wrong payload counts as "CORRUPT".
"""

from __future__ import annotations

import collections
import ctypes
import faulthandler
import json
import os
import random
import signal
import sys
import threading
import time
import tracemalloc
from typing import Dict, Optional

import grpc

import notnets_rpc

from . import peer

SIZES = (64, 1024, 16 << 10, 200 << 10, 1 << 20)
SIZE_WEIGHTS = (50, 20, 15, 10, 5)
DEADLINES = (None, 0.5, 2.0, 5.0)


def _echo(request, context):
    return request


def _repeat(request, context):
    """Server stream: the request's first byte says how many copies of the request follow."""
    for _ in range(request[0] % 8 + 1):
        if not context.is_active():
            return
        yield request


def _collect(request_iterator, context):
    """Client stream: the concatenation of the requests."""
    return b"".join(request_iterator)


def _slow(request, context):
    """Holds its worker for the number of milliseconds in the request (cancels end it early)."""
    end = time.monotonic() + int(request or b"0") / 1000
    while time.monotonic() < end and context.is_active():
        time.sleep(0.005)
    return request


def handlers() -> grpc.GenericRpcHandler:
    uu = grpc.unary_unary_rpc_method_handler
    return grpc.method_handlers_generic_handler("load.L", {
        "Echo": uu(_echo), "Slow": uu(_slow),
        "Repeat": grpc.unary_stream_rpc_method_handler(_repeat),
        "Collect": grpc.stream_unary_rpc_method_handler(_collect),
    })


def serve(pool: str, name: str, workers: str) -> int:
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    report = os.environ.get(MEMREPORT_ENV)
    if report:
        signal.signal(signal.SIGUSR2, lambda *_: _write_memory_report(report))
    return peer.serve(pool, name, handlers(), int(workers))


MEMREPORT_ENV = "NOTNETS_LOAD_MEMREPORT"  # serve: on SIGUSR2, append memory_report() as JSON to this file


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def memory_report() -> dict:
    """Where this process's memory is, in MiB: /proc's split of RSS, glibc malloc's heap
    (in use, free, mmapped), Python's traced allocations (with PYTHONTRACEMALLOC) and
    their top sites, and the thread count."""
    out: dict = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads"):
                out[key] = int(rest.split()[0]) / (1 if key == "Threads" else 1024)
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
        mi = libc.mallinfo2()
        out["malloc"] = {"heap": mi.arena / 2**20, "in_use": mi.uordblks / 2**20, "free": mi.fordblks / 2**20,
                         "mmapped": mi.hblkhd / 2**20}
    except (OSError, AttributeError):
        pass
    out["python_blocks"] = sys.getallocatedblocks()
    if tracemalloc.is_tracing():
        current, peak = tracemalloc.get_traced_memory()
        out["traced"] = current / 2**20
        stats = tracemalloc.take_snapshot().statistics("lineno")[:8]
        out["top"] = [f"{st.size / 1024:.0f} KiB {st.count} {st.traceback[0]}" for st in stats]
    return out


def _write_memory_report(path: str) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(memory_report()) + "\n")


class Tally:
    """Outcomes by status code name, shared by the threads of one process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Dict[str, int] = collections.Counter()
        self.details: Dict[str, str] = {}  # the first details seen per unexpected code

    def add(self, outcome: str, details: str = "") -> None:
        with self.lock:
            self.counts[outcome] += 1
            if details and outcome not in self.details:
                self.details[outcome] = details

    def snapshot(self) -> Dict[str, int]:
        with self.lock:
            return dict(self.counts)

    def total(self) -> int:
        return sum(self.counts.values())


def _payload(rng: random.Random) -> bytes:
    size = rng.choices(SIZES, SIZE_WEIGHTS)[0]
    return rng.randbytes(size)


def one_call(channel: grpc.Channel, rng: random.Random, tally: Tally) -> None:
    """One randomly chosen call; its outcome goes to ``tally``."""
    timeout = rng.choice(DEADLINES)
    kind = rng.random()
    payload = _payload(rng)
    try:
        if kind < 0.55:
            got = channel.unary_unary("/load.L/Echo")(payload, timeout=timeout)
            tally.add("OK" if got == payload else "CORRUPT")
        elif kind < 0.65:
            future = channel.unary_unary("/load.L/Slow").future(str(rng.randint(0, 50)).encode(), timeout=timeout)
            time.sleep(rng.random() * 0.02)
            future.cancel()
            try:
                future.result()
                tally.add("OK")
            except grpc.FutureCancelledError:
                tally.add("CANCELLED")
        elif kind < 0.8:
            got = list(channel.unary_stream("/load.L/Repeat")(payload, timeout=timeout))
            tally.add("OK" if got == [payload] * (payload[0] % 8 + 1) else "CORRUPT")
        elif kind < 0.95:
            parts = [_payload(rng)[:4096] for _ in range(rng.randint(0, 6))]
            got = channel.stream_unary("/load.L/Collect")(iter(parts), timeout=timeout)
            tally.add("OK" if got == b"".join(parts) else "CORRUPT")
        else:
            stream = channel.unary_stream("/load.L/Repeat")(payload, timeout=timeout)
            next(stream)
            stream.cancel()
            tally.add("CANCELLED")
    except grpc.RpcError as exc:
        code = exc.code().name
        tally.add(code, "" if code in ("OK", "CANCELLED", "DEADLINE_EXCEEDED") else str(exc.details()))


def run_threads(channel: grpc.Channel, threads: int, seconds: float, seed: int, tally: Tally,
                calls: Optional[int] = None) -> bool:
    """Run the mix on ``threads`` threads for ``seconds``, or (``calls``) until that many
    calls have ended, ``seconds`` at most: the work then scales with what finished, not
    with how fast a loaded machine runs. False if a thread did not end."""
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        while time.monotonic() < stop and (calls is None or tally.total() < calls):
            one_call(channel, rng, tally)

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(seconds + 30)
    return not any(t.is_alive() for t in pool)


def client(pool: str, name: str, threads: str, seconds: str, seed: str, calls: Optional[str] = None) -> int:
    tally = Tally()
    with notnets_rpc.insecure_channel(f"notnets:{name}", pool=pool) as channel:
        ended = run_threads(channel, int(threads), float(seconds), int(seed), tally,
                            None if calls is None else int(calls))
    counts = tally.snapshot()
    print(json.dumps({"outcomes": counts, "details": tally.details, "ended": ended}), flush=True)
    return 0 if ended else 1


class HeartbeatWatch:
    """Watches a server's heartbeat from outside, as the server publishes it: the word
    holds the wall-clock milliseconds of the server's last beat, and on the same machine
    ``sample()`` compares it with this process's wall clock right after reading it. So
    a watcher that is itself slow to run (a busy machine, threads of its own holding the
    GIL) never reads its own delay as the server's; it can only miss a stall that ends
    between two of its looks. (Clients judge liveness differently, by change over their
    own clock: hosts' clocks differ, docs/rpc.md "Liveness"; here both sides share one.)"""

    def __init__(self, pool: str, name: str) -> None:
        from notnets_rpc.pool import Pool

        self._pool = Pool.acquire(pool)
        self._name = name
        self._seen = time.monotonic()  # when an entry was last found (the age while none is)
        self.max_age = 0.0

    def _offset(self):
        from notnets_rpc.wire import layout as L

        for h, s, off in self._pool.entries():
            ep = self._pool.read_endpoint(h, s)
            if ep is not None and ep.name == self._name and ep.state == L.DIR_LIVE:
                return off + L.DIR_HEARTBEAT
        return None

    def sample(self) -> float:
        """Look once; returns the age of the newest beat in seconds."""
        from notnets_rpc.pool import now_ms

        off = self._offset()
        if off is None:
            age = time.monotonic() - self._seen
        else:
            beat = self._pool.mem.load(off)
            age = max(0, now_ms() - beat) / 1000
            self._seen = time.monotonic()
        self.max_age = max(self.max_age, age)
        return age

    def close(self) -> None:
        self._pool.release()


def main(argv: list) -> int:
    command, *args = argv
    return {"serve": serve, "client": client}[command](*args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
