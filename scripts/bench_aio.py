#!/usr/bin/env python3
"""asyncio and interposition costs: 64 B unary echo, client and server in separate processes.

    .venv/bin/python scripts/bench_aio.py [--calls 3000] [--rounds 3] [--out DIR]

Cases, measured in turns (round-robin, ``--rounds`` times) so that the machine's drift
lands on all of them alike:
  sync-pool     notnets_rpc.server / notnets_rpc.insecure_channel (the sync API)
  aio-pool      notnets_rpc.aio on both sides
  aio-tcp       grpc.aio on both sides over loopback (the baseline of aio-pool)
  interposed    an unmodified grpc program (grpc.server / grpc.insecure_channel) with
                NOTNETS_INTERPOSE=1 (the baseline: sync-pool)
  aio-client    notnets_rpc.aio client, sync server (the client's share of aio-pool)
  aio-server    sync client, notnets_rpc.aio server (the server's share of aio-pool)
Prints a table and writes DIR/bench_aio.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import time
import uuid
from concurrent import futures
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from notnets_bench.malloc_env import MALLOC_ENV  # noqa: E402  (the malloc settings bench_rpc gives both transports)

CASES = ("sync-pool", "aio-pool", "aio-tcp", "interposed", "aio-client", "aio-server")
SYNC_SERVER = ("sync-pool", "interposed", "aio-client")
SYNC_CLIENT = ("sync-pool", "interposed", "aio-server")
ENDPOINT = "bench-echo"
START_TIMEOUT_S = 60  # a server that has not said "serving PORT" by then is reported and killed


def _protos():
    from notnets_bench.protos import load_generated
    return load_generated(ROOT / "notnets_bench" / "echo", "echo")


# -- the two sides, run in their own processes ----------------------------------------------------------
def serve(case: str, pool: str) -> None:
    import grpc
    import notnets_rpc
    import notnets_rpc.aio
    echo_pb2, echo_pb2_grpc = _protos()

    class SyncEcho(echo_pb2_grpc.EchoServicer):
        def Unary(self, request, context):
            return echo_pb2.EchoReply(payload=request.payload)

    class AsyncEcho(echo_pb2_grpc.EchoServicer):
        async def Unary(self, request, context):
            return echo_pb2.EchoReply(payload=request.payload)

    if case in SYNC_SERVER:
        if case != "interposed":
            server = notnets_rpc.server(futures.ThreadPoolExecutor(8), pool=pool)
            server.add_endpoint(ENDPOINT)
            port = 0
        else:
            server = grpc.server(futures.ThreadPoolExecutor(8))
        echo_pb2_grpc.add_EchoServicer_to_server(SyncEcho(), server)
        if case == "interposed":
            port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
        print(f"serving {port}", flush=True)
        server.wait_for_termination()
        return

    async def main() -> None:
        if case != "aio-tcp":
            server = notnets_rpc.aio.server(pool=pool)
            server.add_endpoint(ENDPOINT)
            port = 0
        else:
            server = grpc.aio.server()
        echo_pb2_grpc.add_EchoServicer_to_server(AsyncEcho(), server)
        if case == "aio-tcp":
            port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print(f"serving {port}", flush=True)
        await stop.wait()
        await server.stop(0)

    asyncio.run(main())


def client(case: str, pool: str, port: int, calls: int, warmup: int) -> None:
    import grpc
    import notnets_rpc
    import notnets_rpc.aio
    echo_pb2, echo_pb2_grpc = _protos()
    request = echo_pb2.EchoRequest(payload=b"x" * 64)
    samples = []
    clock = time.perf_counter_ns
    if case in SYNC_CLIENT:
        channel = (notnets_rpc.insecure_channel(f"notnets:{ENDPOINT}", pool=pool) if case != "interposed"
                   else grpc.insecure_channel(f"localhost:{port}"))
        stub = echo_pb2_grpc.EchoStub(channel)
        for i in range(warmup + calls):
            t0 = clock()
            stub.Unary(request)
            if i >= warmup:
                samples.append(clock() - t0)
        channel.close()
    else:
        async def main() -> None:
            channel = (notnets_rpc.aio.insecure_channel(f"notnets:{ENDPOINT}", pool=pool) if case != "aio-tcp"
                       else grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
            stub = echo_pb2_grpc.EchoStub(channel)
            for i in range(warmup + calls):
                t0 = clock()
                await stub.Unary(request)
                if i >= warmup:
                    samples.append(clock() - t0)
            await channel.close()
        asyncio.run(main())
    samples.sort()
    print(json.dumps({"p50_us": samples[len(samples) // 2] / 1000, "p99_us": samples[int(len(samples) * 0.99)] / 1000,
                      "calls": len(samples)}))


# -- driver -------------------------------------------------------------------------------------------------
def _env(case: str, pool: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTNETS_")}
    env.update(MALLOC_ENV)
    if case == "interposed":
        env.update({"NOTNETS_INTERPOSE": "1", "NOTNETS_POOL": pool})
    return env


def measure(case: str, pool: str, calls: int, warmup: int) -> dict:
    env = _env(case, pool)
    server = subprocess.Popen([sys.executable, __file__, "serve", case, pool], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([server.stdout], [], [], START_TIMEOUT_S)
        line = server.stdout.readline() if ready else ""
        if not line.startswith("serving"):
            server.kill()  # before reading its stderr, which ends only when it exits
            server.wait()
            raise SystemExit(f"bench_aio: {case} server did not start within {START_TIMEOUT_S} s: "
                             f"{line.strip() or server.stderr.read().strip()}")
        port = line.split()[1]
        out = subprocess.run([sys.executable, __file__, "client", case, pool, port, str(calls), str(warmup)],
                             env=env, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise SystemExit(f"bench_aio: {case} client failed: {out.stderr}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import notnets_rpc

    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    pool = f"/dev/shm/notnets-bench-aio-{uuid.uuid4().hex[:8]}"
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # `timeout`: still remove the pool
    rows = {case: [] for case in cases}
    try:
        notnets_rpc.create_pool(pool, 64 << 20)
        for _ in range(args.rounds):
            for case in cases:
                rows[case].append(measure(case, pool, args.calls, args.warmup))
    finally:
        if os.path.exists(pool):
            os.unlink(pool)
    summary = {case: {"p50_us": statistics.median(r["p50_us"] for r in rs),
                      "p99_us": statistics.median(r["p99_us"] for r in rs), "rounds": rs}
               for case, rs in rows.items()}
    p50 = {case: s["p50_us"] for case, s in summary.items()}
    ratios = (("aio-tcp", "aio-pool", "target >= 20"), ("aio-pool", "sync-pool", "target <= 3"),
              ("interposed", "sync-pool", "target <= 1.10"))
    summary["ratios"] = {f"{a} / {b} ({target})": p50[a] / p50[b] for a, b, target in ratios if a in p50 and b in p50}
    for case in cases:
        rounds = ", ".join(f"{r['p50_us']:.1f}" for r in rows[case])
        print(f"{case:<11} p50 {p50[case]:8.1f} us   p99 {summary[case]['p99_us']:8.1f} us   (per round p50: {rounds})")
    for name, value in summary["ratios"].items():
        print(f"{name}: {value:.2f}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_aio.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
