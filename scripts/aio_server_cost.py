#!/usr/bin/env python3
"""What the notnets_rpc.aio server costs per 64 B unary call, against the sync server.

One process, one thread, no waiting: a sync client calls an echo server whose rings
the calling thread reads itself (``Server.poll_rings``, as the aio server's event loop
does): the client's first empty poll of its response ring takes one look at the
server's rings, which reads the CALL, runs the handler and writes the answer. The
client's work is the same for both servers, so the difference between ``--server aio``
(an ``async def`` handler, called from a callback of the running loop, as when the loop
reads the rings) and ``--server sync`` is what the aio server adds. Under callgrind:

    .venv/bin/python scripts/aio_server_cost.py --callgrind   # both servers, instructions per call
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WARMUP = 300


def run(kind: str, calls: int) -> None:
    import notnets_rpc
    import notnets_rpc.aio
    from notnets_bench.echo.server import echo_pb2, echo_pb2_grpc
    from notnets_rpc.wire.ring import RingReader

    class AsyncEcho(echo_pb2_grpc.EchoServicer):
        async def Unary(self, request, context):
            return echo_pb2.EchoReply(payload=request.payload)

    class SyncEcho(echo_pb2_grpc.EchoServicer):
        def Unary(self, request, context):
            return echo_pb2.EchoReply(payload=request.payload)

    looks: list = []  # the look at the server's rings an empty client poll takes

    class Hooked(RingReader):
        __slots__ = ()

        def read(self):
            frame = RingReader.read(self)
            if frame is None and looks[0]():
                frame = RingReader.read(self)
            return frame

    request = echo_pb2.EchoRequest(payload=b"x" * 64)

    def calls_on_this_thread(channel, stub, sync_server, me: int) -> None:
        sync_server._max_pollers = 0  # no poller thread takes the rings back
        looks.append(lambda: sync_server.poll_rings(me))
        conn = channel._conn
        conn._backoff.spin = conn._backoff.spin_max = 400  # same thread: the answer is there at the first poll
        conn.rx.__class__ = Hooked
        for _ in range(WARMUP):
            stub.Unary(request)
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(calls):
            stub.Unary(request)
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        assert not conn.calls
        print(f"{calls} calls: {wall / calls * 1e6:.1f} us wall, {cpu / calls * 1e6:.1f} us CPU per call")

    async def main(pool: str) -> None:
        loop = asyncio.get_running_loop()
        me = threading.get_ident()
        if kind == "aio":
            server = notnets_rpc.aio.server(pool=pool)
            echo_pb2_grpc.add_EchoServicer_to_server(AsyncEcho(), server)
        else:
            server = notnets_rpc.server(futures.ThreadPoolExecutor(2), pool=pool)
            echo_pb2_grpc.add_EchoServicer_to_server(SyncEcho(), server)
        server.add_endpoint("cost")
        await server.start() if kind == "aio" else server.start()
        sync_server = server.pool_server if kind == "aio" else server
        if kind == "aio":
            server._reader._idle_after = float("inf")  # the loop keeps the rings, however slow (valgrind)
        channel = notnets_rpc.insecure_channel("notnets:cost", pool=pool)
        stub = echo_pb2_grpc.EchoStub(channel)
        for _ in range(3):  # connect, with the server's poller (which passes the rings to the loop: aio)
            await loop.run_in_executor(None, lambda: stub.Unary(request, timeout=30))
        if kind == "aio":
            assert server._reader.reading  # (its looks wait while bench() holds the loop; the client's polls look)
            sync_server._max_pollers = 0
        else:
            sync_server._max_pollers = 0
            sync_server._leader = me
            while sync_server._pollers:
                await asyncio.sleep(0.01)
            sync_server._pollers = 1  # counted for ``me``, as pass_lead does
        done = loop.create_future()

        def bench() -> None:  # a callback of the running loop, not a task: as the loop reader's look
            try:
                calls_on_this_thread(channel, stub, sync_server, me)
                done.set_result(None)
            except BaseException as exc:
                done.set_exception(exc)

        loop.call_soon(bench)
        await done
        channel.close()
        if kind == "aio":
            await server.stop(0)
        else:
            server.stop(0).wait(2)

    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        pool = os.path.join(tmp, "pool")
        notnets_rpc.create_pool(pool, 16 << 20)
        asyncio.run(main(pool))


def callgrind(kind: str) -> int:
    """Instructions per call: the difference of a 3000- and a 1000-call run / 2000."""
    totals = []
    for n in (1000, 3000):
        with tempfile.NamedTemporaryFile(suffix=".cg") as out:
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out.name}", sys.executable,
                            __file__, "--server", kind, "--calls", str(n)], check=True, capture_output=True)
            text = Path(out.name).read_text(errors="replace")
            totals.append(int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1)))
    return (totals[1] - totals[0]) // 2000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("aio", "sync"), default="aio")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--callgrind", action="store_true", help="count both servers under callgrind")
    args = parser.parse_args()
    if args.callgrind:
        counts = {kind: callgrind(kind) for kind in ("sync", "aio")}
        print(f"sync client + sync server: {counts['sync']} instructions per call")
        print(f"sync client + aio server:  {counts['aio']} instructions per call "
              f"(the aio server adds {counts['aio'] - counts['sync']})")
    else:
        run(args.server, args.calls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
