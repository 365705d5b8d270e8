#!/usr/bin/env python3
"""Local comparison: NotNets (pool on /dev/shm) vs grpcio over loopback TCP.

Client and server are separate processes (notnets_bench/echo/server.py and client.py), both
transports are measured in the same run, interleaved, and the table reports ratios:

    .venv/bin/python scripts/bench_rpc.py --out bench-out [--quick]

Writes bench-out/bench_rpc.json and bench-out/bench_rpc.png. Also measures what an idle
NotNets server costs: its CPU share while idle, and the latency of the first call after
it has backed off to sleeping. Two more groups of cases (``--cases``): ``clients``, one
echo server serving 1 and then --clients client processes at once (aggregate calls/s over
a common window), and ``chain``, the shop of examples/chain (frontend -> catalog ->
inventory, one process each) at call depths 1, 2 and 3.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
sys.path.insert(0, str(ROOT))
from notnets_bench.malloc_env import MALLOC_ENV  # noqa: E402  (both transports get the same malloc settings)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(target: str, pool: str, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen([PY, "-m", "notnets_bench.echo.server", "--target", target, "--pool", pool],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if "serving" in line:
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"bench: echo server for {target} did not start: {proc.stderr.read()}")


def stop_servers(procs) -> None:
    """SIGTERM every server at once, then wait for each; one that ignores it is killed."""
    procs = list(procs)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run_client(target: str, pool: str, size: int, calls: int, mode: str, env: dict, warmup: int) -> dict:
    out = subprocess.run([PY, "-m", "notnets_bench.echo.client", "--target", target, "--pool", pool, "--size", str(size),
                          "--calls", str(calls), "--mode", mode, "--warmup", str(warmup)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"bench: client {target} {mode} {size} B failed: {out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def load_average() -> float:
    return os.getloadavg()[0]


def plan(quick: bool) -> list:
    """(label, size, mode, notnets calls, grpc calls)"""
    scale = 0.2 if quick else 1.0
    n = lambda x: max(20, int(x * scale))  # noqa: E731
    return [
        ("unary 64 B", 64, "unary", n(20000), n(3000)),
        ("unary 1 KiB", 1024, "unary", n(10000), n(2000)),
        ("unary 1 MiB", 1 << 20, "unary", n(500), n(200)),
        ("raw 1 MiB", 1 << 20, "raw", n(500), n(200)),
        ("view 1 MiB", 1 << 20, "view", n(500), n(200)),
        ("bidi stream 64 B", 64, "stream", n(5000), n(2000)),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out")
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per case (median is reported)")
    parser.add_argument("--only", action="append", metavar="LABEL",
                        help="of the echo group, only cases whose label contains this text (repeatable), e.g. --only '1 MiB'")
    parser.add_argument("--pool-size", default=str(1 << 30),
                        help="bytes of the /dev/shm pool (1 GiB: 4 MiB rings, so a 1 MiB message fits a ring)")
    parser.add_argument("--idle", type=float, default=2.0, help="idle seconds before each first-call sample")
    parser.add_argument("--cases", default="echo,clients,chain",
                        help="comma-separated groups: echo (the size/shape table), clients, chain")
    parser.add_argument("--clients", type=int, default=8, help="client processes of the many-clients case")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring window of the clients and chain cases")
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="leave glibc's malloc alone (by default both transports' processes keep freed "
                             "memory instead of returning it, see MALLOC_ENV)")
    args = parser.parse_args(argv)
    groups = set(args.cases.split(","))
    if groups - {"echo", "clients", "chain"}:
        parser.error(f"--cases: unknown {', '.join(sorted(groups - {'echo', 'clients', 'chain'}))}")
    args.out.mkdir(parents=True, exist_ok=True)
    pool = f"/dev/shm/notnets-bench-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NOTNETS_HOST_ID", None)
    if not args.no_malloc_tuning:
        env.update(MALLOC_ENV)
    sys.path.insert(0, str(ROOT))
    import notnets_rpc
    from emulator.backends.qemu.process import cpu_seconds

    notnets_rpc.create_pool(pool, int(args.pool_size))
    port = free_port()
    targets = {"notnets": "notnets:echo", "grpcio": f"127.0.0.1:{port}"}
    servers = {}
    results: dict = {"cases": [], "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                             "load_before": load_average()},
                     "setup": {"pool": "/dev/shm", "pool_bytes": int(args.pool_size), "rounds": args.rounds,
                               "malloc_env": {} if args.no_malloc_tuning else MALLOC_ENV}}
    try:
        for name, target in targets.items():
            servers[name] = start_server(target, pool, env)
        for label, size, mode, n_notnets, n_grpc in plan(args.quick) if "echo" in groups else ():
            if args.only and not any(text in label for text in args.only):
                continue
            runs = {"notnets": [], "grpcio": []}
            for _ in range(args.rounds):
                for name in ("notnets", "grpcio"):
                    calls = n_notnets if name == "notnets" else n_grpc
                    runs[name].append(run_client(targets[name], pool, size, calls, mode, env,
                                                 warmup=max(10, calls // 20)))
                    print(f"  {label:<18} {name:<8} p50 {runs[name][-1]['p50_us']:>9.1f} us  "
                          f"p99 {runs[name][-1]['p99_us']:>9.1f} us  {runs[name][-1]['rps']:>9.0f}/s", flush=True)
            case = {"label": label, "size": size, "mode": mode}
            for name, rs in runs.items():
                case[name] = {k: statistics.median(r[k] for r in rs) for k in ("p50_us", "p99_us", "mean_us", "rps", "mbps")}
                case[name]["calls"] = sum(r["calls"] for r in rs)
            case["p50_ratio"] = round(case["grpcio"]["p50_us"] / case["notnets"]["p50_us"], 1)
            case["p99_ratio"] = round(case["grpcio"]["p99_us"] / case["notnets"]["p99_us"], 1)
            case["throughput_ratio"] = round(case["notnets"]["rps"] / case["grpcio"]["rps"], 1)
            results["cases"].append(case)
        if "clients" in groups:
            results["clients"] = many_clients(targets, pool, env, args.clients, args.seconds, args.rounds)
        if "chain" in groups:
            results["chain"] = chain_depths(pool, env, args.seconds, args.rounds)
        # idle: CPU share of a backed-off server, then the first call after silence
        pid = servers["notnets"].pid
        time.sleep(1.0)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(5.0)
        idle_cpu = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        first = run_client(targets["notnets"], pool, 64, 5, "idle", env, warmup=5)
        results["idle"] = {"server_cpu_share_idle": round(idle_cpu, 4), "first_call_after_idle_p50_us": first["p50_us"],
                           "first_call_after_idle_max_us": max(first["p50_us"], first["p99_us"]),
                           "idle_seconds": 2.0}
    finally:
        stop_servers(servers.values())
        Path(pool).unlink(missing_ok=True)
    results["machine"]["load_after"] = load_average()
    print_table(results)
    (args.out / "bench_rpc.json").write_text(json.dumps(results, indent=2))
    if results["cases"]:
        plot(results, args.out / "bench_rpc.png")
    print(f"wrote {args.out / 'bench_rpc.json'}" + (f" and {args.out / 'bench_rpc.png'}" if results["cases"] else ""))
    return 0


def run_clients(target: str, pool: str, n: int, seconds: float, env: dict, cwd: Path = ROOT,
                started: Optional[Callable[[float], None]] = None) -> list:
    """``n`` echo client processes of sequential 64 B unary calls that measure one common
    window (they start at a wall-clock time, once imported, connected and warmed up); their
    JSON results. ``started(start_at)`` runs once they are launched (scripts/ab_wait.py
    samples the server's CPU at the window's start)."""
    start_at = time.time() + 2.0 + 0.5 * n
    cmd = [PY, "-m", "notnets_bench.echo.client", "--target", target, "--pool", pool, "--size", "64",
           "--calls", "100000000", "--warmup", "200", "--mode", "unary", "--seconds", str(seconds),
           "--start-at", str(start_at)]
    procs = [subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    if started is not None:
        started(start_at)
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120 + seconds)
        if proc.returncode != 0:
            raise SystemExit(f"bench: client {target} failed: {err.strip()}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def many_clients(targets: dict, pool: str, env: dict, clients: int, seconds: float, rounds: int) -> dict:
    """One server, 1 and then ``clients`` client processes of sequential 64 B unary calls,
    measuring the same window (they start together at a wall-clock time): aggregate calls/s,
    the median client's p50. Transports and client counts alternate, round after round."""
    rows: dict = {name: {1: [], clients: []} for name in targets}
    for _ in range(rounds):
        for name, target in targets.items():
            for n in (1, clients):
                outs = run_clients(target, pool, n, seconds, env)
                rows[name][n].append({"rps": sum(o["rps"] for o in outs),
                                      "p50_us": statistics.median(o["p50_us"] for o in outs),
                                      "p99_us": statistics.median(o["p99_us"] for o in outs)})
                print(f"  {n} client(s)        {name:<8} {rows[name][n][-1]['rps']:>9.0f}/s  "
                      f"median p50 {rows[name][n][-1]['p50_us']:>8.1f} us", flush=True)
    result: dict = {"clients": clients, "seconds": seconds}
    for name, by_n in rows.items():
        result[name] = {str(n): {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_us", "p99_us")}
                        for n, rs in by_n.items()}
        result[name]["scaling"] = round(result[name][str(clients)]["rps"] / result[name]["1"]["rps"], 2)
    result["rps_ratio"] = round(result["notnets"][str(clients)]["rps"] / result["grpcio"][str(clients)]["rps"], 1)
    return result


def start_tier(role: str, listen: str, downstream: Optional[str], pool: str, env: dict) -> "tuple[subprocess.Popen, str]":
    """One shop tier (examples/chain/server.py); returns it and the target it serves."""
    cmd = [PY, "-m", "examples.chain.server", "--role", role, "--listen", listen, "--pool", pool]
    if downstream:
        cmd += ["--downstream", downstream]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if " serving on " not in line:
        proc.kill()
        raise SystemExit(f"bench: shop {role} did not start: {proc.stderr.read().strip()}")
    where = line.strip().rsplit(" serving on ", 1)[1]
    return proc, where[len("tcp "):] if where.startswith("tcp ") else where


def chain_depths(pool: str, env: dict, seconds: float, rounds: int) -> dict:
    """The shop chain over each transport, depths 1-3, transports alternating per round."""
    tiers: dict = {}
    rows: dict = {"notnets": [], "grpcio": []}
    try:
        for name in rows:
            down = None
            tiers[name] = []
            for role in ("inventory", "catalog", "frontend"):
                listen = f"notnets:shop-{role}" if name == "notnets" else "127.0.0.1:0"
                proc, down = start_tier(role, listen, down, pool, env)
                tiers[name].append(proc)
            tiers[name + "-target"] = down
        for _ in range(rounds):
            for name in rows:
                out = subprocess.run([PY, "-m", "examples.chain.client", "--target", tiers[name + "-target"],
                                      "--pool", pool, "--depths", "1,2,3", "--calls", "100000000", "--seconds",
                                      str(seconds), "--min-calls", "50"],
                                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=300 + 3 * seconds)
                if out.returncode != 0:
                    raise SystemExit(f"bench: chain client ({name}) failed: {out.stderr.strip()}")
                rows[name].append({r["depth"]: r for r in map(json.loads, out.stdout.strip().splitlines())})
                print("  chain " + name.ljust(8) + "  ".join(
                    f"depth {d} p50 {rows[name][-1][d]['p50_us']:>7.1f} us" for d in (1, 2, 3)), flush=True)
    finally:
        stop_servers(p for k, v in tiers.items() if not k.endswith("-target") for p in v)
    result: dict = {"seconds": seconds}
    for d in (1, 2, 3):
        row = {name: {k: statistics.median(r[d][k] for r in rs) for k in ("p50_us", "p99_us", "rps")}
               for name, rs in rows.items()}
        row["p50_ratio"] = round(row["grpcio"]["p50_us"] / row["notnets"]["p50_us"], 1)
        result[str(d)] = row
    for name in rows:  # what each hop after the first adds, against the first
        p = [result[str(d)][name]["p50_us"] for d in (1, 2, 3)]
        result[name + "_hop_us"] = [round(p[0], 1), round(p[1] - p[0], 1), round(p[2] - p[1], 1)]
    return result


def print_table(results: dict) -> None:
    print()
    print(f"{'case':<18} {'notnets p50':>12} {'grpcio p50':>11} {'ratio':>6} {'notnets p99':>12} {'grpcio p99':>11} "
          f"{'ratio':>6} {'notnets/s':>10} {'grpcio/s':>9} {'ratio':>6}")
    for c in results["cases"]:
        nn, gr = c["notnets"], c["grpcio"]
        print(f"{c['label']:<18} {nn['p50_us']:>10.1f}us {gr['p50_us']:>9.1f}us {c['p50_ratio']:>5}x "
              f"{nn['p99_us']:>10.1f}us {gr['p99_us']:>9.1f}us {c['p99_ratio']:>5}x "
              f"{nn['rps']:>10.0f} {gr['rps']:>9.0f} {c['throughput_ratio']:>5}x")
    idle = results.get("idle")
    if idle:
        print(f"idle server: {idle['server_cpu_share_idle'] * 100:.2f}% of a core; first call after "
              f"{idle['idle_seconds']:.0f} s idle: p50 {idle['first_call_after_idle_p50_us']:.0f} us")
    many = results.get("clients")
    if many:
        n = str(many["clients"])
        for name in ("notnets", "grpcio"):
            print(f"{name}: 1 client {many[name]['1']['rps']:.0f}/s, {n} clients {many[name][n]['rps']:.0f}/s "
                  f"({many[name]['scaling']}x of one client)")
    chain = results.get("chain")
    if chain:
        for d in ("1", "2", "3"):
            print(f"chain depth {d}: notnets p50 {chain[d]['notnets']['p50_us']:.1f} us, grpcio "
                  f"{chain[d]['grpcio']['p50_us']:.1f} us: {chain[d]['p50_ratio']}x")
        print(f"chain p50 per hop (first, second, third): notnets {chain['notnets_hop_us']} us, "
              f"grpcio {chain['grpcio_hop_us']} us")
    m = results["machine"]
    print(f"machine: {m['cpus']} CPUs, load {m['load_before']:.2f} -> {m.get('load_after', 0):.2f}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = results["cases"]
    labels = [c["label"] for c in cases]
    x = range(len(cases))
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(12, 4.5))
    w = 0.2
    for i, (name, key, color) in enumerate([("notnets p50", ("notnets", "p50_us"), "tab:blue"),
                                            ("notnets p99", ("notnets", "p99_us"), "lightsteelblue"),
                                            ("grpcio p50", ("grpcio", "p50_us"), "tab:orange"),
                                            ("grpcio p99", ("grpcio", "p99_us"), "navajowhite")]):
        lat.bar([xi + (i - 1.5) * w for xi in x], [c[key[0]][key[1]] for c in cases], w, label=name, color=color)
    lat.set_yscale("log")
    lat.set_ylabel("latency per call (us, log)")
    lat.set_xticks(list(x), labels, rotation=15)
    lat.legend()
    lat.set_title("latency: NotNets (/dev/shm) vs grpcio (loopback TCP)")
    for i, name in enumerate(("notnets", "grpcio")):
        thr.bar([xi + (i - 0.5) * 0.35 for xi in x], [c[name]["rps"] for c in cases], 0.35, label=name)
    thr.set_yscale("log")
    thr.set_ylabel("calls (or messages) per second, log")
    thr.set_xticks(list(x), labels, rotation=15)
    thr.legend()
    thr.set_title("throughput, one client")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
