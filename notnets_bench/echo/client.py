"""Echo client: N calls at one payload size, then one line of JSON statistics.

    python -m notnets_bench.echo.client --target notnets:echo --size 64 --calls 10000
    python -m notnets_bench.echo.client --target 127.0.0.1:50051 --size 1048576 --calls 200

Prints {"p50_us", "p99_us", "mean_us", "rps", "mbps", "calls", "size", "mode", "target"}.
Modes: unary (one call per sample), raw (unary on raw bytes, no protobuf), view (raw, but
both sides take messages as views: notnets_rpc.as_view / as_bytes), stream (bidi stream, one message round trip per
sample), server-stream (one call of N replies; rps counts replies), idle (each sample is
the first call after 2 s of silence, so the server has backed off to sleeping).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

import notnets_rpc
from notnets_bench.echo.loops import Budget, run_idle, run_server_stream, run_stream, run_unary
from notnets_bench.echo.server import RAW_METHOD, UNLIMITED, VIEW_METHOD, load_protos
from notnets_bench.stats import summarize

echo_pb2, echo_pb2_grpc = load_protos()


def _modes(channel: Any) -> dict:
    """mode -> a function of (payload, budget, warmup) running the loop on ``channel``."""
    stub = echo_pb2_grpc.EchoStub(channel)
    raw = channel.unary_unary(RAW_METHOD)
    view = channel.unary_unary(VIEW_METHOD, request_serializer=notnets_rpc.as_bytes,
                               response_deserializer=notnets_rpc.as_view)

    def message(payload: bytes) -> Any:
        return echo_pb2.EchoRequest(payload=payload)

    return {
        "unary": lambda payload, budget, warmup: run_unary(stub.Unary, message(payload), budget, warmup),
        "raw": lambda payload, budget, warmup: run_unary(raw, payload, budget, warmup),
        "view": lambda payload, budget, warmup: run_unary(view, payload, budget, warmup),
        "stream": lambda payload, budget, warmup: run_stream(stub.Bidi, message(payload), budget, warmup),
        "server-stream": lambda payload, budget, warmup: run_server_stream(
            lambda count: stub.ServerStream(echo_pb2.EchoRequest(payload=payload, count=count)), budget, warmup),
        "idle": lambda payload, budget, warmup: run_idle(stub.Unary, message(payload), budget, warmup),
    }


MODES = ("idle", "raw", "server-stream", "stream", "unary", "view")


def measure(target, pool, size, calls, warmup, mode, seconds=math.inf, start_at=None):
    """Run the benchmark and return the statistics dict (also used by scripts/bench_rpc.py).

    ``seconds``: stop after that long (or ``calls``); ``start_at``: a wall-clock time
    (time.time()) to start measuring at, so that several clients measure the same window."""
    payload = os.urandom(size)
    with notnets_rpc.insecure_channel(target, options=UNLIMITED, pool=pool) as channel:
        echo_pb2_grpc.EchoStub(channel).Unary(echo_pb2.EchoRequest(payload=b""), timeout=60, wait_for_ready=True)
        run = _modes(channel)[mode]
        if start_at is not None:
            run(payload, Budget(warmup), 0)  # warm up before the common start, not inside the window
            warmup = 0
            time.sleep(max(0.0, start_at - time.time()))
        cpu = time.process_time()
        samples, elapsed = run(payload, Budget(calls, seconds, min_calls=1), warmup)
        cpu = time.process_time() - cpu  # this process's CPU (every thread) while it measured
    return {"target": target, "mode": mode, "size": size, **summarize(samples, elapsed, size),
            "cpu_us_per_call": round(cpu / max(1, len(samples)) * 1e6, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Echo client: latency and throughput as JSON")
    parser.add_argument("--target", default="notnets:echo", help="notnets:NAME or host:port")
    parser.add_argument("--pool", default=os.environ.get("NOTNETS_POOL"), help="pool file or DAX device")
    parser.add_argument("--size", type=int, default=64, help="payload bytes")
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--mode", choices=MODES, default="unary")
    parser.add_argument("--seconds", type=float, default=math.inf, help="stop after this long (or --calls)")
    parser.add_argument("--start-at", type=float, help="wall-clock time (time.time()) to start measuring at")
    args = parser.parse_args(argv)
    if args.target.startswith(notnets_rpc.SCHEME) and not args.pool:
        parser.error("a notnets: target needs --pool or NOTNETS_POOL")
    try:
        stats = measure(args.target, args.pool, args.size, args.calls, args.warmup, args.mode, args.seconds,
                        args.start_at)
    except notnets_rpc.PoolError as exc:
        print(f"echo client: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # grpc.RpcError and friends: one line, no traceback
        code = getattr(exc, "code", None)
        print(f"echo client: {code().name + ': ' + exc.details() if callable(code) else exc}", file=sys.stderr)
        return 1
    print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
