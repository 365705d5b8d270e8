"""The echo benchmark's client, run inside a host: every (shape, size) point of one transport.

    python -m notnets_bench.client --target notnets:echo --shapes unary,stream \
        --sizes 64,1048576 --calls 5000 --seconds 5

One process measures all the points of a transport, because starting Python and
importing grpc costs seconds in a TCG guest. Each point prints one JSON line on stdout
as soon as it is done (`exec` streams it back to the host, which shows progress and
keeps the rows; a guest's own files would stay in its tmpfs overlay). A line on stderr
announces each point before it starts, so a slow point is visible while it runs.

A point stops after ``--calls`` calls, or after ``--seconds`` once it has at least
``--min-calls``: a 1 MiB call over gRPC in a TCG guest takes tens of milliseconds, a
64 B call over the pool tens of microseconds, and both must finish in bounded time.
Calls are sequential (one outstanding), so rps is the closed-loop rate of one client.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Optional

from notnets_bench.echo.loops import Budget, run_stream, run_unary
from notnets_bench.stats import summarize

WAIT_FOR_SERVER = 120.0  # seconds: a server in a TCG guest may still be importing grpc


def load_echo() -> tuple[Any, Any]:
    """The bench's echo service's generated modules (generated on the spot if missing)."""
    from notnets_bench.echo.server import load_protos

    return load_protos()


SHAPES: dict[str, Callable[[Any, Any, Budget, int], tuple[list[int], float]]] = {
    "unary": lambda stub, request, budget, warmup: run_unary(stub.Unary, request, budget, warmup),
    "stream": lambda stub, request, budget, warmup: run_stream(stub.Bidi, request, budget, warmup),
}


def warmup_calls(size: int, calls: int) -> int:
    """A few calls at large sizes, more at small ones (the first calls pay for connection setup)."""
    return max(2, min(calls // 10, 200, (2 << 20) // max(size, 1)))


def measure_all(target: str, pool: Optional[str], shapes: list[str], sizes: list[int], calls: int,
                seconds: float, min_calls: int, emit: Callable[[dict], None],
                announce: Callable[[str], None], with_samples: bool = False) -> None:
    import notnets_rpc

    echo_pb2, echo_pb2_grpc = load_echo()
    unlimited = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    with notnets_rpc.insecure_channel(target, options=unlimited, pool=pool) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        stub.Unary(echo_pb2.EchoRequest(payload=b""), timeout=WAIT_FOR_SERVER, wait_for_ready=True)
        for shape in shapes:
            for size in sizes:
                announce(f"{shape} {size} B")
                request = echo_pb2.EchoRequest(payload=os.urandom(size))
                samples, elapsed = SHAPES[shape](stub, request, Budget(calls, seconds, min_calls),
                                                 warmup_calls(size, calls))
                row = {"shape": shape, "size": size, **summarize(samples, elapsed, size)}
                if with_samples:
                    row.update(samples_ns=samples, elapsed_s=round(elapsed, 6))
                emit(row)


def one_line(exc: BaseException) -> str:
    """An error as the host shows it: a grpc status and its details, else the exception."""
    code = getattr(exc, "code", None)
    return f"{code().name}: {exc.details()}" if callable(code) else f"{type(exc).__name__}: {exc}"  # type: ignore[attr-defined]


def parse_list(text: str) -> list[str]:
    return [part for part in text.replace(" ", ",").split(",") if part]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Echo benchmark client: one JSON line per point")
    parser.add_argument("--target", required=True, help="notnets:NAME or host:port")
    parser.add_argument("--pool", default=os.environ.get("NOTNETS_POOL"))
    parser.add_argument("--shapes", default="unary,stream")
    parser.add_argument("--sizes", default="64")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--min-calls", type=int, default=20)
    parser.add_argument("--samples", action="store_true", help="also print every sample (for pooling rounds)")
    args = parser.parse_args(argv)
    shapes = parse_list(args.shapes)
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        parser.error(f"unknown shape(s) {unknown}; expected {sorted(SHAPES)}")

    def emit(row: dict) -> None:
        print(json.dumps(row), flush=True)

    def announce(text: str) -> None:
        print(f"bench-client: starting {text}", file=sys.stderr, flush=True)

    try:
        measure_all(args.target, args.pool, shapes, [int(s) for s in parse_list(args.sizes)], args.calls,
                    args.seconds, args.min_calls, emit, announce, args.samples)
    except Exception as exc:  # grpc.RpcError, PoolError: one line for the host to show
        print(f"bench-client: {one_line(exc)}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
