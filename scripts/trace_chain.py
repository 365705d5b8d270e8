#!/usr/bin/env python3
"""Where a call of the shop chain spends its time: a clock stamp per step in every process.

    .venv/bin/python scripts/trace_chain.py --depth 3 --calls 3000 [--pool /dev/shm/x]

Starts the three tiers of examples/chain (each its own process, as bench_rpc.py's chain
case does) with their handlers and downstream stubs wrapped to take CLOCK_MONOTONIC
stamps (``time.perf_counter_ns``, one clock for every process of the machine) into a
preallocated list, then runs sequential calls at one depth from this process. Calls are
sequential and every tier sees every call of that depth, so the i-th stamp of each
process belongs to the i-th call. Each tier writes its stamps to a JSON file when it is
stopped; this script then prints, per step, the median and p90 over the calls:

- hand-offs: from a caller's send to the callee's handler entry (the callee's poller
  noticed the frame, parsed it and entered the handler) and from a handler's return to
  its caller having the reply (the reply written, noticed, parsed);
- work: each handler's own time before and after its downstream call.

It also counts, per process, how its calls were waited for (the ``Backoff`` phases
reached) and the CPU time per call. Nothing here is in the library: the wrapping is done
on the example's classes from outside.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples" / "chain"))
sys.path.insert(0, str(ROOT / "scripts"))
from bench_rpc import stop_servers  # noqa: E402
CLOCK = time.perf_counter_ns
HANDLERS = {"frontend": ("Frontend", "GetProductPage", "catalog", "GetProduct"),
            "catalog": ("Catalog", "GetProduct", "inventory", "GetStock"),
            "inventory": ("Inventory", "GetStock", None, None)}


def count_waits() -> dict:
    """Wrap Backoff.pause to count spins, yields and sleeps in this process."""
    from notnets_rpc import backoff as bo
    counts = {"pause": 0, "spin": 0, "yield": 0, "sleep": 0}
    pause = bo.Backoff.pause

    # woken waiters go from spinning straight to the kernel sleep: "1" all, "client" callers, "server" pollers
    no_yield = os.environ.get("TRACE_NO_YIELD", "")
    callers = set()  # ids of the callers' Backoffs (one per connection, alive as long as it)
    from notnets_rpc.client import connection
    new = connection.Connection._new_backoff

    def new_backoff(self):
        b = new(self)
        callers.add(id(b))
        return b
    connection.Connection._new_backoff = new_backoff

    def counted(self):
        counts["pause"] += 1
        if (no_yield and self.woken and self.n >= self.spin and not self.sleeping
                and (no_yield == "1" or (id(self) in callers) == (no_yield == "client"))):
            self.sleeping = True
        n = self.n + 1
        if n <= self.spin:
            counts["spin"] += 1
        elif not self.sleeping:
            counts["yield"] += 1
        result = pause(self)
        if self.sleeping:
            counts["sleep"] += 1
        return result
    bo.Backoff.pause = counted
    spin = os.environ.get("TRACE_CLIENT_SPIN")  # a spin budget for callers' waits only (servers keep theirs)
    if spin is not None:
        from notnets_rpc.client import connection
        plain = connection.Connection._new_backoff

        def spin_backoff(self):
            b = plain(self)
            b.spin = b.spin_max = int(spin)
            return b
        connection.Connection._new_backoff = spin_backoff
    return counts


def tier_main(role: str, out: str, argv: list) -> int:
    import services
    cls_name, method, _down_attr, down_method = HANDLERS[role]
    cls = getattr(services, cls_name)
    stamps: dict = {"entry": [], "down_send": [], "down_back": [], "exit": []}
    counts = count_waits()
    handler = getattr(cls, method)

    warm = int(os.environ.get("TRACE_WARMUP", "0"))
    cpu_at = []  # this process's CPU time at the first measured call

    def traced(self, request, context):
        if len(stamps["entry"]) == warm:
            cpu_at.append(time.process_time())
        stamps["entry"].append(CLOCK())
        try:
            return handler(self, request, context)
        finally:
            stamps["exit"].append(CLOCK())
    setattr(cls, method, traced)
    init = cls.__init__

    def traced_init(self, *args):
        init(self, *args)
        stub = getattr(self, _down_attr, None) if _down_attr else None
        if stub is not None and not isinstance(stub, dict):
            call = getattr(stub, down_method)

            class Wrapped:
                def __getattr__(self, name):
                    return getattr(stub, name)

            def traced_call(*a, **k):
                stamps["down_send"].append(CLOCK())
                try:
                    return call(*a, **k)
                finally:
                    stamps["down_back"].append(CLOCK())
            w = Wrapped()
            setattr(w, down_method, traced_call)
            setattr(self, _down_attr, w)
    cls.__init__ = traced_init
    cpu0 = time.process_time()

    def dump():
        with open(out, "w", encoding="utf-8") as f:
            json.dump({"role": role, "stamps": stamps, "waits": counts,
                       "cpu_s": time.process_time() - (cpu_at[0] if cpu_at else cpu0)}, f)
    atexit.register(dump)
    sys.argv = ["server"] + argv
    from examples.chain import server
    return server.main(argv)


def start(role: str, listen: str, down, pool: str, out: str, warmup: int) -> "tuple[subprocess.Popen, str]":
    cmd = [sys.executable, __file__, "--tier", role, "--out", out, "--", "--role", role, "--listen", listen,
           "--pool", pool]
    if down:
        cmd += ["--downstream", down]
    from notnets_bench.malloc_env import MALLOC_ENV  # the settings bench_rpc.py gives its tiers
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **MALLOC_ENV, "TRACE_WARMUP": str(warmup)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if " serving on " not in line:
        proc.kill()
        raise SystemExit(f"trace_chain: {role} did not start: {proc.stderr.read().strip()}")
    return proc, line.strip().rsplit(" serving on ", 1)[1]


def q(xs: list, p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] / 1000 if xs else float("nan")


def driver(args) -> int:
    import notnets_rpc
    from examples.chain.services import shop_pb2, shop_pb2_grpc
    tmp = Path(tempfile.mkdtemp(prefix="trace-chain-"))
    pool = args.pool or f"/dev/shm/notnets-trace-chain-{uuid.uuid4().hex[:8]}"
    own_pool = args.pool is None
    if own_pool:
        notnets_rpc.create_pool(pool, 64 << 20)
    procs = []
    try:
        down = None
        roles = ["inventory", "catalog", "frontend"][3 - args.depth:]
        for role in roles:
            proc, down = start(role, f"notnets:trace-{role}", down, pool, str(tmp / f"{role}.json"), args.warmup)
            procs.append(proc)
        counts = count_waits()
        channel = notnets_rpc.insecure_channel(down, pool=pool)
        stub = shop_pb2_grpc.FrontendStub(channel)
        req = shop_pb2.PageRequest(product_id=1, depth=args.depth)
        for _ in range(args.warmup):
            stub.GetProductPage(req, timeout=60)
        for k in counts:
            counts[k] = 0
        send, back = [], []
        cpu0 = time.process_time()
        for _ in range(args.calls):
            send.append(CLOCK())
            stub.GetProductPage(req, timeout=60)
            back.append(CLOCK())
        cpu = time.process_time() - cpu0
        channel.close()
    finally:
        stop_servers(procs)
        if own_pool:
            try:
                os.unlink(pool)
            except OSError:
                pass
    tiers = {}
    for role in roles:
        with open(tmp / f"{role}.json", encoding="utf-8") as f:
            tiers[role] = json.load(f)
    n = args.calls
    w = args.warmup

    def tail(xs):  # the measured calls of a tier (after the warm-up ones)
        return xs[w:w + n]
    chain = ["client"] + list(reversed(roles))  # client, frontend, catalog, inventory
    rows = []
    total = [b - a for a, b in zip(send, back)]
    rows.append(("end to end", total))
    for i in range(1, len(chain)):
        caller, callee = chain[i - 1], chain[i]
        cs = send if caller == "client" else tail(tiers[caller]["stamps"]["down_send"])
        cb = back if caller == "client" else tail(tiers[caller]["stamps"]["down_back"])
        e = tail(tiers[callee]["stamps"]["entry"])
        x = tail(tiers[callee]["stamps"]["exit"])
        rows.append((f"{caller} -> {callee}: send to handler entry", [b - a for a, b in zip(cs, e)]))
        st = tiers[callee]["stamps"]
        if st["down_send"] and len(chain) > i + 1:
            rows.append((f"  {callee} work before its call", [b - a for a, b in zip(e, tail(st["down_send"]))]))
            rows.append((f"  {callee} work after its call", [b - a for a, b in zip(tail(st["down_back"]), x)]))
        else:
            rows.append((f"  {callee} handler", [b - a for a, b in zip(e, x)]))
        rows.append((f"{callee} -> {caller}: handler exit to reply in hand", [b - a for a, b in zip(x, cb)]))
    print(f"depth {args.depth}, {n} calls, load {os.getloadavg()[0]:.2f}; us: p50 p90 mean")
    for name, xs in rows:
        print(f"  {name:<52} {q(xs, .5):8.1f} {q(xs, .9):8.1f} {statistics.mean(xs) / 1000:8.1f}")
    print("waits (Backoff.pause calls per call: spin / yield / sleep) and CPU us per call:")
    print(f"  client     {counts['spin'] / n:8.1f} {counts['yield'] / n:6.1f} {counts['sleep'] / n:6.2f}  "
          f"cpu {cpu / n * 1e6:6.1f}")
    for role in reversed(roles):
        c = tiers[role]["waits"]
        calls = len(tiers[role]["stamps"]["entry"])
        print(f"  {role:<10} {c['spin'] / calls:8.1f} {c['yield'] / calls:6.1f} {c['sleep'] / calls:6.2f}  "
              f"cpu {tiers[role]['cpu_s'] / n * 1e6:6.1f}")
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--tier":
        role, out = sys.argv[2], sys.argv[4]
        return tier_main(role, out, sys.argv[6:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=3, choices=(1, 2, 3))
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--pool", help="an existing pool file (default: a fresh one in /dev/shm)")
    return driver(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
