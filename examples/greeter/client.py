"""Greeter client: a few calls, one line of result with latency.

    python -m examples.greeter.client                       # notnets:greeter on $NOTNETS_POOL
    python -m examples.greeter.client --target 10.0.0.1:50051

The same code runs over both transports; only the target differs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from server import load_protos  # noqa: E402  (same directory; generates protos if needed)

greeter_pb2, greeter_pb2_grpc = load_protos()
import grpc  # noqa: E402

import notnets_rpc  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Greeter client over NotNets or TCP")
    parser.add_argument("--target", default="notnets:greeter", help="notnets:NAME or host:port")
    parser.add_argument("--pool", default=os.environ.get("NOTNETS_POOL"), help="pool file or DAX device")
    parser.add_argument("--name", default="world")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the server")
    args = parser.parse_args(argv)
    if args.target.startswith("notnets:") and not args.pool:
        parser.error("a notnets: target needs --pool or NOTNETS_POOL")
    try:
        with notnets_rpc.insecure_channel(args.target, pool=args.pool) as channel:
            stub = greeter_pb2_grpc.GreeterStub(channel)
            t0 = time.perf_counter()
            reply = stub.SayHello(greeter_pb2.HelloRequest(name=args.name), timeout=args.wait, wait_for_ready=True)
            first_us = (time.perf_counter() - t0) * 1e6
            latencies = []
            for _ in range(max(0, args.calls - 1)):
                t = time.perf_counter()
                reply = stub.SayHello(greeter_pb2.HelloRequest(name=args.name), timeout=10)
                latencies.append((time.perf_counter() - t) * 1e6)
            streamed = list(stub.SayHelloStream(greeter_pb2.HelloRequest(name=args.name, times=3), timeout=10))
    except grpc.RpcError as exc:
        print(f"greeter client: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except notnets_rpc.PoolError as exc:
        print(f"greeter client: {exc}", file=sys.stderr)
        return 1
    median = statistics.median(latencies) if latencies else first_us
    print(f"greeter: {reply.message!r} from host {reply.host} via {args.target}: {args.calls} calls, "
          f"median {median:.0f} us, first {first_us:.0f} us, stream {len(streamed)} replies", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
