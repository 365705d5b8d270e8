#!/usr/bin/env python3
"""What one 1 MiB unary round trip costs in instructions besides copying, without the waiting.

The 1 MiB counterpart of scripts/count_hot_path.py: a real client and server in one
process and one thread on a 256 MiB pool (so the message travels as an extent), the
server's poller retired and its channel drained from the client's first empty poll.
``--callgrind`` runs it under callgrind twice (100 and 300 calls) and prints, for the
main thread only (the server's monitor thread ticks with wall time, which valgrind
stretches), the instructions per round trip and those outside memcpy, the part that is
NotNets' own Python:

    .venv/bin/python scripts/count_large_path.py --mode view --callgrind

Modes: ``view`` (as_view/as_bytes echo, the bench's ``view 1 MiB``), ``raw`` (bytes
echo), ``protobuf`` (the bench's ``unary 1 MiB``). Without ``--callgrind`` it prints the
p50 of each round trip and the CPU per call.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from notnets_bench.malloc_env import MALLOC_ENV  # noqa: E402


def run(mode: str, calls: int, timed: bool) -> None:
    import notnets_rpc
    from notnets_bench.echo.server import RAW_METHOD, VIEW_METHOD, Echo, echo_pb2, echo_pb2_grpc, raw_handlers
    from notnets_rpc.wire.ring import RingReader

    drains: dict = {}

    class Hooked(RingReader):
        __slots__ = ()

        def read(self):  # the first empty poll lets the server run
            frame = RingReader.read(self)
            if frame is None:
                server, ch = drains[id(self)]
                if ch.rx.pending():
                    server._drain(ch, -1)
                    frame = RingReader.read(self)
            return frame

    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        pool = os.path.join(tmp, "pool")
        notnets_rpc.create_pool(pool, 256 << 20)
        server = notnets_rpc.server(futures.ThreadPoolExecutor(2), pool=pool)
        echo_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
        server.add_generic_rpc_handlers((raw_handlers(),))
        server.add_endpoint("echo")
        server.start()
        channel = notnets_rpc.insecure_channel("notnets:echo", pool=pool)
        stub = echo_pb2_grpc.EchoStub(channel)
        stub.Unary(echo_pb2.EchoRequest(), timeout=30)  # connect while the poller runs
        server._max_pollers = 0
        server._leader = -1
        while server._pollers:
            time.sleep(0.01)
        conn = channel._conn
        conn._backoff.spin = conn._backoff.spin_max = 400
        conn.rx.__class__ = Hooked
        drains[id(conn.rx)] = (server, next(ch for ch in server._active if ch.client_pid == os.getpid()
                                            and ch.slot == conn.slot))
        payload = os.urandom(1 << 20)
        if mode == "view":
            call = channel.unary_unary(VIEW_METHOD, request_serializer=notnets_rpc.as_bytes,
                                       response_deserializer=notnets_rpc.as_view)
            request = payload
        elif mode == "raw":
            call, request = channel.unary_unary(RAW_METHOD), payload
        else:
            call, request = stub.Unary, echo_pb2.EchoRequest(payload=payload)
        for _ in range(50):
            call(request)
        if timed:
            clock = time.perf_counter_ns
            samples = []
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            for _ in range(calls):
                t = clock()
                call(request)
                samples.append(clock() - t)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            samples.sort()
            cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / calls * 1e6
            print(f"{mode}: p50 {samples[len(samples) // 2] / 1e3:.1f} us, CPU {cpu:.1f} us per round trip")
        else:
            for _ in range(calls):
                call(request)
        channel.close()
        server.stop(0).wait(2)


def callgrind(mode: str) -> "tuple[int, int]":
    """(instructions, outside memcpy) per round trip of the main thread: (300 - 100 calls) / 200."""
    totals, copies = [], []
    for n in (100, 300):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "cg")
            subprocess.run(["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}",
                            sys.executable, __file__, "--mode", mode, "--calls", str(n), "--untimed"],
                           check=True, capture_output=True, env=dict(os.environ, **MALLOC_ENV))
            main = out + "-01"
            totals.append(int(re.search(r"^totals: (\d+)", Path(main).read_text(errors="replace"), re.M).group(1)))
            listing = subprocess.run(["callgrind_annotate", main], check=True, capture_output=True, text=True).stdout
            copy = re.search(r"^\s*([\d,]+) .*memcpy", listing, re.M)
            copies.append(int(copy.group(1).replace(",", "")) if copy else 0)
    total = (totals[1] - totals[0]) // 200
    return total, total - (copies[1] - copies[0]) // 200


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("view", "raw", "protobuf"), default="view")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--callgrind", action="store_true", help="count under callgrind (main thread)")
    parser.add_argument("--untimed", action="store_true", help=argparse.SUPPRESS)  # (what callgrind runs)
    args = parser.parse_args()
    if args.callgrind:
        total, own = callgrind(args.mode)
        print(f"{args.mode}: {total} instructions per 1 MiB round trip, {own} outside memcpy (main thread, no polling)")
    else:
        run(args.mode, args.calls, timed=not args.untimed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
