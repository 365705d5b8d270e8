"""Greeter server: one servicer, served over a NotNets pool and/or over TCP.

    python -m examples.greeter.server                      # notnets:greeter on $NOTNETS_POOL
    python -m examples.greeter.server --port 0.0.0.0:50051 # also (or, with --no-pool, only) TCP

Prints one line containing "serving" when ready, then serves until killed.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent import futures
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from notnets_bench.protos import load_generated  # noqa: E402
from notnets_bench.serving import serve_until_stopped  # noqa: E402


def load_protos():
    """The generated greeter modules (generated on the spot if `make setup` has not run)."""
    return load_generated(HERE, "greeter")


greeter_pb2, greeter_pb2_grpc = load_protos()
import notnets_rpc  # noqa: E402


class Greeter(greeter_pb2_grpc.GreeterServicer):
    """Greets, naming the host it runs on (so a reply shows which host answered)."""

    def __init__(self, host_id: int) -> None:
        self.host_id = host_id

    def SayHello(self, request, context):
        return greeter_pb2.HelloReply(message=f"Hello, {request.name}!", host=self.host_id)

    def SayHelloStream(self, request, context):
        for i in range(max(1, request.times)):
            yield greeter_pb2.HelloReply(message=f"Hello #{i + 1}, {request.name}!", host=self.host_id)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Greeter server over NotNets and/or TCP")
    parser.add_argument("--endpoint", default="greeter", help="name published in the pool (notnets:NAME)")
    parser.add_argument("--pool", default=os.environ.get("NOTNETS_POOL"), help="pool file or DAX device")
    parser.add_argument("--port", help="also serve over TCP at this address, e.g. 0.0.0.0:50051")
    parser.add_argument("--no-pool", action="store_true", help="TCP only")
    args = parser.parse_args(argv)
    use_pool = not args.no_pool and bool(args.pool)
    if not use_pool and not args.port:
        parser.error("nothing to serve on: give --pool (or set NOTNETS_POOL) and/or --port")
    server = notnets_rpc.server(futures.ThreadPoolExecutor(max_workers=8), pool=args.pool)
    host_id = int(os.environ.get("NOTNETS_HOST_ID", "0") or 0)  # set by the guest agent
    greeter_pb2_grpc.add_GreeterServicer_to_server(Greeter(host_id), server)
    where = []
    if use_pool:
        server.add_endpoint(args.endpoint)
        where.append(f"notnets:{args.endpoint} (pool {args.pool}, host {host_id})")
    if args.port:
        port = server.add_insecure_port(args.port)
        where.append(f"tcp {args.port.rsplit(':', 1)[0]}:{port}")
    try:
        server.start()
    except notnets_rpc.PoolError as exc:
        print(f"greeter server: {exc}", file=sys.stderr)
        return 1
    serve_until_stopped(server, "greeter serving on " + " and ".join(where))
    return 0


if __name__ == "__main__":
    sys.exit(main())
