"""Echo server for benchmarks: unary and streaming echo of opaque bytes.

    python -m notnets_bench.echo.server --target notnets:echo [--pool PATH]
    python -m notnets_bench.echo.server --target 127.0.0.1:50051

Prints one line containing "serving" when ready, then serves until killed.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent import futures
from pathlib import Path

HERE = Path(__file__).resolve().parent

from notnets_bench.protos import load_generated  # noqa: E402
from notnets_bench.serving import serve_until_stopped  # noqa: E402


def load_protos():
    """The generated echo modules (generated on the spot if `make setup` has not run)."""
    return load_generated(HERE, "echo")


echo_pb2, echo_pb2_grpc = load_protos()
import grpc  # noqa: E402

import notnets_rpc  # noqa: E402

UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


class Echo(echo_pb2_grpc.EchoServicer):
    def Unary(self, request, context):
        return echo_pb2.EchoReply(payload=request.payload)

    def ServerStream(self, request, context):
        reply = echo_pb2.EchoReply(payload=request.payload)
        for _ in range(max(1, request.count)):
            yield reply

    def ClientStream(self, request_iterator, context):
        return echo_pb2.EchoReply(payload=b"".join(r.payload for r in request_iterator))

    def Bidi(self, request_iterator, context):
        for request in request_iterator:
            yield echo_pb2.EchoReply(payload=request.payload)


RAW_METHOD = "/echo.Raw/Unary"  # the same echo on raw bytes (no protobuf): measures the transport alone
VIEW_METHOD = "/echo.Raw/View"  # raw echo that takes the request as a view and sends it back as it is (zero copy)


def raw_handlers() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler("echo.Raw", {
        "Unary": grpc.unary_unary_rpc_method_handler(lambda request, context: request),
        "View": grpc.unary_unary_rpc_method_handler(lambda request, context: request,
                                                    request_deserializer=notnets_rpc.as_view,
                                                    response_serializer=notnets_rpc.as_bytes),
    })


def build_server(target: str, pool, workers: int = 8):
    """A server for ``notnets:NAME`` or ``host:port``; returns (server, description)."""
    server = notnets_rpc.server(futures.ThreadPoolExecutor(max_workers=workers), pool=pool, options=UNLIMITED)
    echo_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
    server.add_generic_rpc_handlers((raw_handlers(),))
    if target.startswith(notnets_rpc.SCHEME):
        name = target[len(notnets_rpc.SCHEME):]
        server.add_endpoint(name)
        return server, f"{target} (pool {pool})"
    port = server.add_insecure_port(target)
    return server, f"tcp {target.rsplit(':', 1)[0]}:{port}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Echo server over NotNets or TCP")
    parser.add_argument("--target", default="notnets:echo", help="notnets:NAME or host:port to listen on")
    parser.add_argument("--pool", default=os.environ.get("NOTNETS_POOL"), help="pool file or DAX device")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args(argv)
    if args.target.startswith(notnets_rpc.SCHEME) and not args.pool:
        parser.error("a notnets: target needs --pool or NOTNETS_POOL")
    try:
        server, where = build_server(args.target, args.pool, args.workers)
        server.start()
    except notnets_rpc.PoolError as exc:
        print(f"echo server: {exc}", file=sys.stderr)
        return 1
    serve_until_stopped(server, f"echo serving on {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
