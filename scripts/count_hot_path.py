#!/usr/bin/env python3
"""What one 64 B unary round trip costs in instructions, without the waiting.

Wall clock on this shared 2-core machine moves with the load; instruction counts do not.
This runs a real client and a real server in one process and one thread: the server's
poller is retired after the channel is set up, and the client's response ring is
hooked so that its first empty poll runs the server's ``_drain`` right there. A round
trip then costs exactly: the client's serialize and ring write, one empty poll, the
server reading the frame, running the handler and answering, the client reading and
parsing the answer -- no spinning, no scheduler. Run under callgrind:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python scripts/count_hot_path.py --calls 1000 --calls 3000

which prints the total instructions for each count (from valgrind's client request via
``callgrind_control`` is not needed: run it twice with different ``--calls`` and take
the difference) -- or simply ``scripts/count_hot_path.py --callgrind`` which does that.
Modes: ``plain`` (stub call), ``timeout`` (stub call with timeout=60, as call chains do),
``relay`` (two hops: the first server's handler calls a second echo server with a
timeout, as a chain's middle tier does; its cost minus ``timeout``'s is what a hop adds),
``aio`` (a ``notnets_rpc.aio`` client awaiting the same stub call in an event loop: its
cost minus ``plain``'s is what the aio client adds to the sync client; with ``--empty-polls
N`` the server answers only at the client's N+1-th look, so each call waits N turns of the
loop, as across processes, and the difference per N is what one turn costs).
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


EMPTY_POLLS = [0, 0]  # [empty polls a call sees before the server answers, seen so far] (aio: turns of the loop)


def _answer_now() -> bool:
    if EMPTY_POLLS[1] < EMPTY_POLLS[0]:
        EMPTY_POLLS[1] += 1
        return False
    EMPTY_POLLS[1] = 0
    return True


def run(mode: str, calls: int, pool_path: "str | None" = None, samples: "list | None" = None) -> None:
    """The round trips; on a new 16 MiB pool in /dev/shm, or on ``pool_path`` (formatted
    already); with ``samples``, each sync round trip's ns are appended to it."""
    import notnets_rpc
    from notnets_bench.echo.server import Echo, echo_pb2, echo_pb2_grpc
    from notnets_rpc.wire.ring import RingReader

    drains: dict = {}  # id(response ring reader) -> the server and channel that answer into it

    class Hooked(RingReader):
        __slots__ = ()

        def read(self):  # the first empty poll lets the server that answers here run
            frame = RingReader.read(self)
            if frame is None:
                server, ch = drains[id(self)]
                if ch.rx.pending() and _answer_now():
                    server._drain(ch, -1)
                    frame = RingReader.read(self)
            return frame

    def serve(pool: str, name: str, servicer) -> object:
        server = notnets_rpc.server(futures.ThreadPoolExecutor(2), pool=pool)
        echo_pb2_grpc.add_EchoServicer_to_server(servicer, server)
        server.add_endpoint(name)
        server.start()
        return server

    def connect(pool: str, name: str, server) -> tuple:
        channel = notnets_rpc.insecure_channel(f"notnets:{name}", pool=pool)
        stub = echo_pb2_grpc.EchoStub(channel)
        stub.Unary(echo_pb2.EchoRequest(), timeout=30)  # connect while the server's poller runs
        return channel, stub

    def retire_poller(server, channel) -> None:
        """Stop the server's poller (and promotions); its channel is drained by the hook."""
        server._max_pollers = 0
        server._leader = -1
        while server._pollers:
            time.sleep(0.01)
        conn = channel._conn
        conn._backoff.spin = conn._backoff.spin_max = 400  # same process: it would not spin
        conn.rx.__class__ = Hooked
        drains[id(conn.rx)] = (server, next(ch for ch in server._active if ch.client_pid == os.getpid()
                                            and ch.slot == conn.slot))

    class Relay(echo_pb2_grpc.EchoServicer):
        """A middle tier: passes the request on, with a timeout, as a chain's tiers do."""

        def __init__(self, stub) -> None:
            self.stub = stub

        def Unary(self, request, context):
            return self.stub.Unary(request, timeout=60)

    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        pool = pool_path or os.path.join(tmp, "pool")
        if not pool_path:
            notnets_rpc.create_pool(pool, 16 << 20)
        servers, channels = [], []
        if mode == "relay":  # client -> relay -> echo: two hops
            leaf = serve(pool, "leaf", Echo())
            down, down_stub = connect(pool, "leaf", leaf)
            servers.append(leaf)
            channels.append(down)
            first = serve(pool, "echo", Relay(down_stub))
        else:
            first = serve(pool, "echo", Echo())
        servers.append(first)
        channel, stub = connect(pool, "echo", first)
        channels.append(channel)
        retire_poller(first, channel)
        if mode == "relay":
            retire_poller(servers[0], channels[0])
        request = echo_pb2.EchoRequest(payload=b"x" * 64)
        kw = {"timeout": 60} if mode in ("timeout", "relay") else {}
        if mode == "aio":
            asyncio.run(aio_calls(channel, request, calls))
        else:
            for _ in range(200):
                stub.Unary(request, **kw)
            assert threading.active_count() < 12
            if samples is None:
                for _ in range(calls):
                    stub.Unary(request, **kw)
            else:  # each round trip timed (scripts/guest_round_trip.py): not under callgrind
                clock = time.perf_counter_ns
                for _ in range(calls):
                    t = clock()
                    stub.Unary(request, **kw)
                    samples.append(clock() - t)
        assert all(not c._conn.calls for c in channels)
        for c in channels:
            c.close()
        for server in servers:
            server.stop(0).wait(2)


async def aio_calls(sync_channel, request, calls: int) -> None:
    """The ``aio`` mode's calls: an aio channel over the (connected, hooked) sync channel."""
    import notnets_rpc.aio
    from notnets_bench.echo.server import echo_pb2_grpc

    channel = notnets_rpc.aio.Channel(sync_channel)
    stub = echo_pb2_grpc.EchoStub(channel)
    for _ in range(200):
        await stub.Unary(request)
    for _ in range(calls):
        await stub.Unary(request)


def callgrind(mode: str, main_thread: bool = False) -> int:
    """Instructions per round trip: the difference of a 3000- and a 1000-call run / 2000.

    With ``main_thread``, only the main thread's (callgrind ``--separate-threads=yes``, 5000
    and 1000 calls): the beat and monitor threads' share moves with valgrind's slowness, so
    the main thread's count repeats within ~0.5%, all threads' within ~1.5%."""
    counts = (1000, 5000) if main_thread else (1000, 3000)
    totals = []
    for n in counts:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "cg")
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                            f"--separate-threads={'yes' if main_thread else 'no'}", sys.executable,
                            __file__, "--mode", mode, "--calls", str(n), "--empty-polls", str(EMPTY_POLLS[0])],
                           check=True, capture_output=True)
            text = Path(out + "-01" if main_thread else out).read_text(errors="replace")
            totals.append(int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1)))
    return (totals[1] - totals[0]) // (counts[1] - counts[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("plain", "timeout", "relay", "aio"), default="plain")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--callgrind", action="store_true", help="count under callgrind and print per round trip")
    parser.add_argument("--main-thread", action="store_true", help="(--callgrind) count the main thread only")
    parser.add_argument("--empty-polls", type=int, default=0, help="(aio) empty looks before each answer")
    args = parser.parse_args()
    EMPTY_POLLS[0] = args.empty_polls
    if args.callgrind:
        polling = f"{args.empty_polls} empty polls" if args.empty_polls else "no polling"
        polling += ", main thread" if args.main_thread else ""
        print(f"{args.mode}: {callgrind(args.mode, args.main_thread)} instructions per round trip (client + server, {polling})")
    else:
        run(args.mode, args.calls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
