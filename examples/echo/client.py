"""Echo client: N calls at one payload size, then one line of JSON statistics.

    python -m examples.echo.client --target notnets:echo --size 64 --calls 10000
    python -m examples.echo.client --target 127.0.0.1:50051 --size 1048576 --calls 200

Prints {"p50_us", "p99_us", "mean_us", "rps", "mbps", "calls", "size", "mode", "target"}.
Modes: unary (one call per sample), raw (unary on raw bytes, no protobuf), stream (bidi stream, one message round trip per
sample), server-stream (one call of N replies; rps counts replies), idle (each sample is
the first call after 2 s of silence, so the server has backed off to sleeping).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from server import RAW_METHOD, UNLIMITED, load_protos  # noqa: E402

echo_pb2, echo_pb2_grpc = load_protos()
import notnets_rpc  # noqa: E402


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run_unary(stub, payload, calls, warmup):
    request = echo_pb2.EchoRequest(payload=payload)
    for _ in range(warmup):
        stub.Unary(request)
    clock = time.perf_counter_ns
    samples = []
    start = clock()
    for _ in range(calls):
        t = clock()
        stub.Unary(request)
        samples.append(clock() - t)
    return samples, (clock() - start) / 1e9


class RawStub:
    """The raw-bytes echo: payload in, payload out, no protobuf on either side."""

    def __init__(self, channel):
        self.Unary = channel.unary_unary(RAW_METHOD)


def run_raw(stub, payload, calls, warmup):
    call = stub.raw.Unary
    for _ in range(warmup):
        call(payload)
    clock = time.perf_counter_ns
    samples = []
    start = clock()
    for _ in range(calls):
        t = clock()
        call(payload)
        samples.append(clock() - t)
    return samples, (clock() - start) / 1e9


def run_stream(stub, payload, calls, warmup):
    requests: "queue.SimpleQueue" = queue.SimpleQueue()
    stop = object()
    replies = stub.Bidi(iter(requests.get, stop))
    request = echo_pb2.EchoRequest(payload=payload)
    for _ in range(warmup):
        requests.put(request)
        next(replies)
    clock = time.perf_counter_ns
    samples = []
    start = clock()
    for _ in range(calls):
        t = clock()
        requests.put(request)
        next(replies)
        samples.append(clock() - t)
    elapsed = (clock() - start) / 1e9
    requests.put(stop)
    for _ in replies:
        pass
    return samples, elapsed


def run_server_stream(stub, payload, calls, warmup):
    list(stub.ServerStream(echo_pb2.EchoRequest(payload=payload, count=max(1, warmup))))
    clock = time.perf_counter_ns
    samples = []
    start = last = clock()
    for _ in stub.ServerStream(echo_pb2.EchoRequest(payload=payload, count=calls)):
        now = clock()
        samples.append(now - last)
        last = now
    return samples, (clock() - start) / 1e9


def run_idle(stub, payload, calls, warmup, idle=2.0):
    """Each sample is the first call after ``idle`` seconds of silence (server backed off)."""
    request = echo_pb2.EchoRequest(payload=payload)
    for _ in range(warmup):
        stub.Unary(request)
    clock = time.perf_counter_ns
    samples = []
    spent = 0
    for _ in range(calls):
        time.sleep(idle)
        t = clock()
        stub.Unary(request)
        samples.append(clock() - t)
        spent += clock() - t
    return samples, spent / 1e9


MODES = {"unary": run_unary, "raw": run_raw, "stream": run_stream, "server-stream": run_server_stream,
         "idle": run_idle}


def measure(target, pool, size, calls, warmup, mode):
    """Run the benchmark and return the statistics dict (also used by scripts/bench_rpc.py)."""
    payload = os.urandom(size)
    with notnets_rpc.insecure_channel(target, options=UNLIMITED, pool=pool) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        stub.raw = RawStub(channel)
        stub.Unary(echo_pb2.EchoRequest(payload=b""), timeout=60, wait_for_ready=True)
        samples, elapsed = MODES[mode](stub, payload, calls, warmup)
    samples.sort()
    return {
        "target": target, "mode": mode, "size": size, "calls": len(samples),
        "p50_us": round(percentile(samples, 0.50) / 1e3, 2),
        "p99_us": round(percentile(samples, 0.99) / 1e3, 2),
        "mean_us": round(sum(samples) / max(1, len(samples)) / 1e3, 2),
        "rps": round(len(samples) / elapsed, 1) if elapsed else 0.0,
        "mbps": round(len(samples) * size / elapsed / 1e6, 2) if elapsed else 0.0,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Echo client: latency and throughput as JSON")
    parser.add_argument("--target", default="notnets:echo", help="notnets:NAME or host:port")
    parser.add_argument("--pool", default=os.environ.get("NOTNETS_POOL"), help="pool file or DAX device")
    parser.add_argument("--size", type=int, default=64, help="payload bytes")
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--mode", choices=sorted(MODES), default="unary")
    args = parser.parse_args(argv)
    if args.target.startswith(notnets_rpc.SCHEME) and not args.pool:
        parser.error("a notnets: target needs --pool or NOTNETS_POOL")
    try:
        stats = measure(args.target, args.pool, args.size, args.calls, args.warmup, args.mode)
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
