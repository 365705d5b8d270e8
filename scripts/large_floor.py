#!/usr/bin/env python3
"""The floor of a 1 MiB unary echo in Python, against grpcio and NotNets in the same run.

What the least a 1 MiB echo can cost here, whatever the transport: only the passes over
the message that the echo itself needs, in one thread, no waiting, no RPC API. Per round
trip (``--case protobuf``, the bench's ``unary 1 MiB``): the client serializes the
EchoRequest (upb: two passes), writes it into a shared mapping (one), the server parses
it from the mapping (one), its handler builds the reply from ``request.payload`` (two),
serializes it (two) and compares it with the request (one: what lets NotNets hand the
request back instead of writing the reply), the client parses the reply from its own
request bytes (one): ten passes. ``--case raw``: the write, the server's copy out, the
comparison (three). ``--case view``: the write (one).

Each round runs the floor loop in this process, then NotNets and grpcio as
scripts/bench_rpc.py runs them (the echo server and client of notnets_bench, the same
malloc settings), and prints p50 and calls/s of each, the ratio grpcio/floor (the most
any transport in Python could reach against grpcio in that round) and NotNets' share of
it:

    .venv/bin/python scripts/large_floor.py --case protobuf --rounds 3 [--mapping /dev/hugepages]
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_rpc import free_port, load_average, run_client, start_server, stop_servers  # noqa: E402
from notnets_bench.malloc_env import MALLOC_ENV  # noqa: E402

SIZE = 1 << 20
MODES = {"protobuf": "unary", "raw": "raw", "view": "view"}  # case -> the echo client's mode


def shared_mapping(directory: str, size: int) -> mmap.mmap:
    """A shared file mapping of ``size`` bytes in ``directory`` (a hugetlbfs mount or
    /dev/shm), its file already gone; every page touched once."""
    path = os.path.join(directory, f"notnets-large-floor-{uuid.uuid4().hex[:8]}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
        mapping = mmap.mmap(fd, size, mmap.MAP_SHARED)
    finally:
        os.close(fd)
        os.unlink(path)
    mapping[:] = bytes(size)
    return mapping


def floor_loop(case: str, mapping: mmap.mmap, calls: int) -> "list[int]":
    """ns per round trip of the case's passes alone (the message goes to a new quarter of
    the mapping each time, as messages go through a lane)."""
    from notnets_bench.echo.server import echo_pb2

    payload = os.urandom(SIZE)
    request = echo_pb2.EchoRequest(payload=payload)
    room = len(mapping) // 4
    lane = memoryview(mapping)
    clock = time.perf_counter_ns
    samples = []
    for i in range(calls):
        at = (i % 4) * room
        t = clock()
        if case == "protobuf":
            sent = request.SerializeToString()           # client: 2 passes
            lane[at : at + len(sent)] = sent              # 1: into the shared mapping
            view = lane[at : at + len(sent)]
            got = echo_pb2.EchoRequest.FromString(view)   # server: 1
            out = echo_pb2.EchoReply(payload=got.payload).SerializeToString()  # 2 + 2
            if not out.startswith(view):                  # 1: the reply is the request
                raise SystemExit("floor: the echo changed the message")
            del got
            echo_pb2.EchoReply.FromString(sent)           # client: 1, from its own bytes
            del view
        elif case == "raw":
            lane[at : at + SIZE] = payload                # 1
            view = lane[at : at + SIZE]
            copy = view.tobytes()                         # 1: the server's copy out
            if copy != payload:                           # 1
                raise SystemExit("floor: the echo changed the message")
            del view
        else:
            lane[at : at + SIZE] = payload                # 1: the server hands the view back
        samples.append(clock() - t)
    lane.release()
    return samples


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(MODES), default="protobuf")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=500, help="floor and NotNets calls per round (grpcio: 200)")
    parser.add_argument("--mapping", default="/dev/shm", help="where the shared mapping lives (/dev/hugepages: 2 MiB pages)")
    parser.add_argument("--pool-size", type=int, default=256 << 20, help="bytes of NotNets' /dev/shm pool")
    args = parser.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **MALLOC_ENV)
    env.pop("NOTNETS_HOST_ID", None)
    missing = [k for k, v in MALLOC_ENV.items() if os.environ.get(k) != v]
    if missing:  # the floor runs in this process: the same malloc settings as the echo processes
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    import notnets_rpc

    try:
        mapping = shared_mapping(args.mapping, 4 * (SIZE + (2 << 20)))  # (whole 2 MiB pages, room for the protobuf header)
    except OSError as exc:
        raise SystemExit(f"large_floor: no mapping in {args.mapping}: {exc.strerror}") from None
    pool = f"/dev/shm/notnets-large-floor-pool-{uuid.uuid4().hex[:8]}"
    notnets_rpc.create_pool(pool, args.pool_size)
    targets = {"notnets": "notnets:echo", "grpcio": f"127.0.0.1:{free_port()}"}
    servers = {}
    rows = []
    load0 = load_average()
    try:
        for name, target in targets.items():
            servers[name] = start_server(target, pool, env)
        floor_loop(args.case, mapping, 20)
        for _ in range(args.rounds):
            samples = floor_loop(args.case, mapping, args.calls)
            floor = {"p50_us": statistics.median(samples) / 1e3, "rps": 1e9 / statistics.mean(samples)}
            got = {"floor": floor}
            for name in ("notnets", "grpcio"):
                calls = args.calls if name == "notnets" else 200
                got[name] = run_client(targets[name], pool, SIZE, calls, MODES[args.case], env, warmup=max(10, calls // 20))
            rows.append(got)
            print("  ".join(f"{k} p50 {v['p50_us']:8.1f} us {v['rps']:7.0f}/s" for k, v in got.items())
                  + f"  | floor {got['floor']['rps'] / got['grpcio']['rps']:.1f}x grpcio calls/s, "
                  f"notnets {got['notnets']['rps'] / got['grpcio']['rps']:.1f}x", flush=True)
    finally:
        stop_servers(servers.values())
        Path(pool).unlink(missing_ok=True)  # (the mapping's file is gone already: it ends with us)
    med = {k: {m: statistics.median(r[k][m] for r in rows) for m in ("p50_us", "rps")} for k in rows[0]}
    print(f"{args.case} 1 MiB, mapping {args.mapping}, {args.rounds} rounds, load {load0:.1f} -> {load_average():.1f}:"
          f" floor p50 {med['floor']['p50_us']:.1f} us, NotNets {med['notnets']['p50_us']:.1f} us,"
          f" grpcio {med['grpcio']['p50_us']:.1f} us; calls/s against grpcio: floor"
          f" {med['floor']['rps'] / med['grpcio']['rps']:.1f}x, NotNets {med['notnets']['rps'] / med['grpcio']['rps']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
