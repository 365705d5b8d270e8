"""An aio Echo server in a process of its own whose Unary handler sleeps for the number
of seconds in the request's payload (tests/aio/test_loop_free.py).

    python tests/aio/slow_server.py POOL ENDPOINT     # prints "serving" once published
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import notnets_rpc.aio  # noqa: E402
from notnets_bench.protos import REPO, load_generated  # noqa: E402

echo_pb2, echo_pb2_grpc = load_generated(REPO / "notnets_bench" / "echo", "echo")


class SlowEcho(echo_pb2_grpc.EchoServicer):
    async def Unary(self, request, context):
        await asyncio.sleep(float(request.payload.decode()))
        return echo_pb2.EchoReply(payload=request.payload)


async def main(pool: str, endpoint: str) -> None:
    server = notnets_rpc.aio.server(pool=pool)
    echo_pb2_grpc.add_EchoServicer_to_server(SlowEcho(), server)
    server.add_endpoint(endpoint)
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("serving", flush=True)
    await stop.wait()
    await server.stop(0)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
