#!/usr/bin/env python3
"""What a notnets_rpc.aio round trip costs in interpreter work: an aio server and an aio
client in one event loop (one thread, so no waiting and no thread hand-off), 64 B unary
echo. Prints wall and CPU time per call; under callgrind, the difference between two
call counts gives instructions per round trip:

    .venv/bin/python scripts/aio_cost.py [CALLS]
    valgrind --tool=callgrind .venv/bin/python scripts/aio_cost.py 200   # and 1200
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import notnets_rpc  # noqa: E402
import notnets_rpc.aio  # noqa: E402
from notnets_bench.protos import load_generated  # noqa: E402

echo_pb2, echo_pb2_grpc = load_generated(ROOT / "notnets_bench" / "echo", "echo")
WARMUP = 300


class AsyncEcho(echo_pb2_grpc.EchoServicer):
    async def Unary(self, request, context):
        return echo_pb2.EchoReply(payload=request.payload)


async def main(pool: str, calls: int) -> None:
    server = notnets_rpc.aio.server(pool=pool)
    echo_pb2_grpc.add_EchoServicer_to_server(AsyncEcho(), server)
    server.add_endpoint("cost")
    await server.start()
    try:
        async with notnets_rpc.aio.insecure_channel("notnets:cost", pool=pool) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            request = echo_pb2.EchoRequest(payload=b"x" * 64)
            for _ in range(WARMUP):
                await stub.Unary(request)
            wall, cpu = time.perf_counter(), time.thread_time()
            for _ in range(calls):
                await stub.Unary(request)
            wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    finally:
        await server.stop(0)
    print(f"{calls} calls: {wall / calls * 1e6:.1f} us wall, {cpu / calls * 1e6:.1f} us CPU per round trip")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    path = f"/dev/shm/notnets-aio-cost-{uuid.uuid4().hex[:8]}"
    notnets_rpc.create_pool(path, 16 << 20)
    try:
        asyncio.run(main(path, n))
    finally:
        os.unlink(path)
