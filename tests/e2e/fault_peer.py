"""Runs inside a host for the fault tests: an echo server, or a client that reports how its
call ended (one line: "ok ...", "slept ..." or "error CODE ..."), never a traceback.

    python fault_peer.py serve NAME             # prints "serving", then "in Sleep" at each Sleep call
    python fault_peer.py call NAME TIMEOUT      # one Echo call
    python fault_peer.py slow NAME SECONDS      # one Sleep call that the server stretches over SECONDS
The pool is $NOTNETS_POOL; stdlib, grpc and notnets_rpc only (no generated code).
"""

from __future__ import annotations

import sys
import time
from concurrent import futures

import grpc

import notnets_rpc


def _sleep(request: bytes, context: grpc.ServicerContext) -> bytes:
    print("in Sleep", flush=True)  # what the tests wait for before they fault the server's host
    end = time.time() + float(request.decode())  # wall clock: a frozen and thawed server is already late
    while time.time() < end and context.is_active():
        time.sleep(0.01)
    return b"slept"


HANDLERS = grpc.method_handlers_generic_handler("fault.Peer", {
    "Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request),
    "Sleep": grpc.unary_unary_rpc_method_handler(_sleep),
})


def serve(name: str) -> int:
    """A restarted server may find its old self still listed until its heartbeat goes stale."""
    deadline = time.monotonic() + 30
    while True:
        server = notnets_rpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((HANDLERS,))
        server.add_endpoint(name)
        try:
            server.start()
            break
        except notnets_rpc.EndpointInUseError as err:
            if time.monotonic() > deadline:
                print(f"error {err}", flush=True)
                return 1
            server.stop(None)
            time.sleep(0.2)
    print("serving", flush=True)
    server.wait_for_termination()
    return 0


def _report(method: str, request: bytes, timeout: float) -> int:
    started = time.monotonic()
    print(f"calling {method}", flush=True)
    try:
        with notnets_rpc.insecure_channel(f"notnets:{sys.argv[2]}") as channel:
            reply = channel.unary_unary(f"/fault.Peer/{method}")(request, timeout=timeout)
        print(f"{'ok' if reply == request else reply.decode()} after {time.monotonic() - started:.2f} s", flush=True)
    except grpc.RpcError as err:
        print(f"error {err.code().name} after {time.monotonic() - started:.2f} s: {err.details()}", flush=True)
    except notnets_rpc.PoolError as err:  # e.g. a poisoned pool header
        print(f"error POOL after {time.monotonic() - started:.2f} s: {err}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "serve":
        return serve(argv[2])
    if len(argv) == 4 and argv[1] == "call":
        return _report("Echo", b"ping", float(argv[3]))
    if len(argv) == 4 and argv[1] == "slow":
        return _report("Sleep", argv[3].encode(), 120.0)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
