"""A separate process for the multi-process tests: a server, or a client.

    python -m rpc.peer serve POOL NAME           # prints "serving", serves until killed
    python -m rpc.peer calls POOL NAME N         # N echo calls + a stream; exit 0 if all good
    python -m rpc.peer unary POOL NAME N TIMEOUT # N echo calls with a timeout each; exit 0 if all good
    python -m rpc.peer slow POOL NAME SECONDS    # one Sleep call; prints "started" first
    python -m rpc.peer wait POOL NAME TIMEOUT    # one call with wait_for_ready
    python -m rpc.peer idle POOL NAME            # a call, "ready", then a call per stdin line
    python -m rpc.peer hold POOL NAME BYTES      # echo BYTES in 8 KiB calls, "ready", again per stdin line
(run with tests/ on sys.path; NOTNETS_HOST_ID picks the host partition)
"""

from __future__ import annotations

import os
import sys
import time
from concurrent import futures
from typing import Optional

import grpc

import notnets_rpc

from . import service
from .service import test_handlers


def serve(pool: str, name: str, handlers: Optional[grpc.GenericRpcHandler] = None, workers: int = 8) -> int:
    """Serve ``handlers`` (default: the test service) as ``name`` until killed.

    A server on a restarted host may find its old self still listed (its pid number
    reused in the new PID namespace) until that entry's heartbeat goes stale: retry."""
    deadline = time.monotonic() + 30
    while True:
        server = notnets_rpc.server(futures.ThreadPoolExecutor(max_workers=workers), pool=pool)
        server.add_generic_rpc_handlers((handlers or test_handlers(),))
        server.add_endpoint(name)
        try:
            server.start()
            break
        except notnets_rpc.EndpointInUseError:
            server.stop(None)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    service.ANNOUNCE = lambda event: print(event, flush=True)
    print("serving", flush=True)
    server.wait_for_termination()
    return 0


def calls(pool: str, name: str, n: int) -> int:
    host = os.environ.get("NOTNETS_HOST_ID", "0")
    with notnets_rpc.insecure_channel(f"notnets:{name}", pool=pool) as channel:
        echo = channel.unary_unary("/test.T/Echo")
        for i in range(n):
            payload = f"h{host}-p{os.getpid()}-{i}".encode() * (1 + i % 50)
            if echo(payload, timeout=30) != payload:
                print(f"bad echo at {i}", file=sys.stderr)
                return 1
        got = list(channel.unary_stream("/test.T/Count")(b"4", timeout=30))
        if got != [b"0", b"1", b"2", b"3"]:
            print(f"bad stream {got}", file=sys.stderr)
            return 1
    print("ok", flush=True)
    return 0


def unary(pool: str, name: str, n: str, timeout: str) -> int:
    """``n`` echo calls, each with ``timeout``, after one that connects (with a timeout of
    its own: nobody wakes a client waiting to be accepted); exit 0 if all came back right."""
    with notnets_rpc.insecure_channel(f"notnets:{name}", pool=pool) as channel:
        echo = channel.unary_unary("/test.T/Echo")
        echo(b"connect", timeout=60)
        for i in range(int(n)):
            payload = f"p{os.getpid()}-{i}".encode()
            try:
                if echo(payload, timeout=float(timeout)) != payload:
                    print(f"bad echo at {i}", file=sys.stderr)
                    return 1
            except grpc.RpcError as exc:
                print(f"call {i}: {exc.code().name} {exc.details()}", file=sys.stderr)
                return 1
    print("ok", flush=True)
    return 0


def slow(pool: str, name: str, seconds: str) -> int:
    channel = notnets_rpc.insecure_channel(f"notnets:{name}", pool=pool)
    future = channel.unary_unary("/test.T/Sleep").future(f"{seconds}:peer".encode())
    time.sleep(0.2)
    print("started", flush=True)
    try:
        print(future.result())
    except grpc.RpcError as exc:
        print(f"error {exc.code().name}", flush=True)
    return 0


def wait(pool: str, name: str, timeout: str) -> int:
    with notnets_rpc.insecure_channel(f"notnets:{name}", pool=pool) as channel:
        reply = channel.unary_unary("/test.T/Echo")(b"waited", timeout=float(timeout), wait_for_ready=True)
    print(reply.decode(), flush=True)
    return 0


def idle(pool: str, name: str) -> int:
    """One call, "ready", then one more call per line on stdin (its outcome printed)."""
    with notnets_rpc.insecure_channel(f"notnets:{name}", pool=pool) as channel:
        echo = channel.unary_unary("/test.T/Echo")
        echo(b"first", timeout=10)
        print("ready", flush=True)
        for _line in sys.stdin:
            try:
                print("OK", echo(b"again", timeout=5).decode(), flush=True)
            except grpc.RpcError as exc:
                print(exc.code().name, exc.details(), flush=True)
    return 0


def hold(pool: str, name: str, total: str) -> int:
    """Echo ``total`` bytes in 8 KiB calls (every page of a small channel's rings is then
    touched), print "ready", do it again per line on stdin; close the channel at EOF."""
    payload = os.urandom(8192)

    def burst(echo) -> bool:
        return all(echo(payload, timeout=10) == payload for _ in range(-(-int(total) // len(payload))))

    with notnets_rpc.insecure_channel(f"notnets:{name}", pool=pool) as channel:
        echo = channel.unary_unary("/test.T/Echo")
        print("ready" if burst(echo) else "bad echo", flush=True)
        for _line in sys.stdin:
            print("OK" if burst(echo) else "bad echo", flush=True)
    return 0


def main(argv: list) -> int:
    command, *args = argv
    return {"serve": serve, "calls": lambda p, n, k: calls(p, n, int(k)), "unary": unary, "slow": slow, "wait": wait,
            "idle": idle, "hold": hold}[command](*args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
