"""The shop's load generator: product pages at each call depth, one JSON line per depth.

    python -m examples.chain.client --target notnets:frontend --depths 1,2,3 --calls 2000 --seconds 5

Each line: {"depth", "size" (a page's mean bytes), "served_by" (service@host per tier),
"calls", "p50_us", "p99_us", "mean_us", "rps", "mbps"}. Calls are sequential; a depth
stops after --calls, or after --seconds once --min-calls are in.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from services import shop_pb2, shop_pb2_grpc  # noqa: E402

import notnets_rpc  # noqa: E402
from notnets_bench.stats import summarize  # noqa: E402

CLOCK = time.perf_counter_ns
WAIT_FOR_SERVER = 120.0


def measure_depth(stub, depth: int, calls: int, seconds: float, min_calls: int, warmup: int) -> dict:
    requests = [shop_pb2.PageRequest(product_id=i, depth=depth) for i in range(1, 5)]
    for i in range(warmup):
        stub.GetProductPage(requests[i % 4], timeout=60)
    samples = []
    cpu = time.process_time()
    start = CLOCK()
    while len(samples) < calls and (len(samples) < min_calls or (CLOCK() - start) / 1e9 < seconds):
        t = CLOCK()
        stub.GetProductPage(requests[len(samples) % 4], timeout=60)
        samples.append(CLOCK() - t)
    elapsed = (CLOCK() - start) / 1e9
    cpu = time.process_time() - cpu  # this process's CPU while it measured
    pages = [stub.GetProductPage(r, timeout=60) for r in requests]  # every product once: a stable size
    size = round(sum(p.ByteSize() for p in pages) / len(pages))
    page = pages[-1]
    return {"depth": depth, "size": size, "served_by": list(page.served_by),
            **summarize(samples, elapsed, size), "cpu_us_per_call": round(cpu / max(1, len(samples)) * 1e6, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Shop chain load generator")
    parser.add_argument("--target", default="notnets:frontend", help="the frontend: notnets:NAME or host:port")
    parser.add_argument("--pool", default=os.environ.get("NOTNETS_POOL"))
    parser.add_argument("--depths", default="1,2,3")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--min-calls", type=int, default=20)
    args = parser.parse_args(argv)
    depths = [int(d) for d in args.depths.split(",") if d]
    if not depths or min(depths) < 1 or max(depths) > 3:
        parser.error("--depths: 1 (frontend only), 2 (+ catalog), 3 (+ inventory)")
    try:
        with notnets_rpc.insecure_channel(args.target, pool=args.pool) as channel:
            stub = shop_pb2_grpc.FrontendStub(channel)
            stub.GetProductPage(shop_pb2.PageRequest(product_id=1, depth=max(depths)), timeout=WAIT_FOR_SERVER,
                                wait_for_ready=True)
            for depth in depths:
                print(f"shop client: starting depth {depth}", file=sys.stderr, flush=True)
                row = measure_depth(stub, depth, args.calls, args.seconds, min(args.min_calls, args.calls),
                                    warmup=max(2, min(100, args.calls // 10)))
                print(json.dumps(row), flush=True)
    except Exception as exc:  # grpc.RpcError, PoolError: one line
        code = getattr(exc, "code", None)
        what = f"{code().name}: {exc.details()}" if callable(code) else f"{type(exc).__name__}: {exc}"
        print(f"shop client: {what}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
