"""The mesh benchmark's client, run inside each host: call every other host, in turn.

    python -m notnets_bench.mesh_client --me host3 --targets host0=notnets:echo-host0,... \
        --size 64 --seconds 5 --go-file STATE/bench/mesh-go-notnets

Every host runs one of these at once, and one echo server, so that all pairs of hosts
talk over the same pool (or network) together. The client first connects to every
target and warms up, says "mesh-client: ready" on stderr, then waits for the go file,
which the benchmark creates once every client is ready: the measured windows overlap,
and the sum of the clients' rates is the mesh's aggregate rate. Calls are sequential
and go round robin over the targets (one outstanding call per client). Prints one JSON
line per target on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import ExitStack
from typing import Any, Callable, Optional

from notnets_bench.client import WAIT_FOR_SERVER, load_echo, one_line
from notnets_bench.stats import summarize

CLOCK = time.perf_counter_ns
GO_POLL = 0.01  # seconds between looks for the go file
WARMUP_CALLS = 20


def parse_targets(text: str) -> dict[str, str]:
    """"host0=notnets:echo-host0,host1=127.0.0.1:5000" -> {host: target}, in order."""
    targets: dict[str, str] = {}
    for part in text.split(","):
        name, sep, target = part.partition("=")
        if not sep or not name or not target:
            raise ValueError(f"expected HOST=TARGET, got {part!r}")
        targets[name] = target
    return targets


def wait_for_file(path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no go signal ({path}) within {timeout:g} s")
        time.sleep(GO_POLL)


def round_robin(calls: list[Callable[[], Any]], seconds: float) -> tuple[list[list[int]], float]:
    """Call each of ``calls`` in turn for ``seconds``; samples per call, and the elapsed time."""
    samples: list[list[int]] = [[] for _ in calls]
    start = now = CLOCK()
    end = start + int(seconds * 1e9)  # from the same reading as start: elapsed >= seconds
    while now < end:
        for i, call in enumerate(calls):
            t = CLOCK()
            call()
            now = CLOCK()
            samples[i].append(now - t)
    return samples, (CLOCK() - start) / 1e9


def measure(me: str, targets: dict[str, str], pool: Optional[str], size: int, seconds: float, go_file: str,
            go_timeout: float, emit: Callable[[dict], None], say: Callable[[str], None]) -> None:
    import notnets_rpc

    echo_pb2, echo_pb2_grpc = load_echo()
    request = echo_pb2.EchoRequest(payload=os.urandom(size))
    with ExitStack() as stack:
        calls = []
        for target in targets.values():
            channel = stack.enter_context(notnets_rpc.insecure_channel(target, pool=pool))
            unary = echo_pb2_grpc.EchoStub(channel).Unary
            unary(request, timeout=WAIT_FOR_SERVER, wait_for_ready=True)
            for _ in range(WARMUP_CALLS):
                unary(request)
            calls.append(lambda unary=unary: unary(request))
        say("ready")
        wait_for_file(go_file, go_timeout)
        samples, elapsed = round_robin(calls, seconds)
    for server, pair in zip(targets, samples):
        emit({"client": me, "server": server, "size": size, "elapsed_s": round(elapsed, 6),
              **summarize(pair, elapsed, size)})


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Mesh benchmark client: one JSON line per target host")
    parser.add_argument("--me", required=True, help="this host's name (for the rows)")
    parser.add_argument("--targets", required=True, help="HOST=TARGET,... (notnets:NAME or ADDRESS:PORT)")
    parser.add_argument("--pool", default=os.environ.get("NOTNETS_POOL"))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--go-file", required=True, help="start measuring once this file exists")
    parser.add_argument("--go-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    try:
        targets = parse_targets(args.targets)
    except ValueError as err:
        parser.error(f"--targets: {err}")

    def emit(row: dict) -> None:
        print(json.dumps(row), flush=True)

    def say(text: str) -> None:
        print(f"mesh-client: {text}", file=sys.stderr, flush=True)

    try:
        measure(args.me, targets, args.pool, args.size, args.seconds, args.go_file, args.go_timeout, emit, say)
    except Exception as exc:  # grpc.RpcError, PoolError, TimeoutError: one line for the host to show
        say(one_line(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
