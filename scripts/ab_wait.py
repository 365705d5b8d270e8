"""A/B of waiting rules: the shop chain and many clients, variants alternating round by round.

    python scripts/ab_wait.py --case chain --hosts cross --variant base: --variant nospin:NOTNETS_SPIN=0
    python scripts/ab_wait.py --case clients --variant base: --variant ...

Each variant is NAME:ENV=VALUE,ENV=VALUE (the environment of every process of the case).
``--hosts cross`` gives every chain tier a host id of its own (client and inventory on 0,
frontend on 1, catalog on 2, as `notnets-emu bench` places them on sim hosts) and a boot id
of its own (NOTNETS_BOOT_ID), so that nobody sleeps on a futex, as between QEMU hosts;
``sim`` gives them the host ids only, so that they wake each other as sim hosts do (one
kernel, docs/pool-layout.md "Waking"); ``same`` keeps them on one host.
Per variant it prints the median over rounds of p50, calls/s and CPU per call (every
process of the case, user + system, from /proc and wait4), for each depth or client count;
for clients also the server's context switches per call (every thread, /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
from bench_rpc import PY, run_clients, stop_servers  # noqa: E402

from emulator.backends.qemu.process import cpu_seconds  # noqa: E402
TIER_HOSTS = {"inventory": "0", "catalog": "2", "frontend": "1"}
CLIENT_HOST = "0"


def start(cmd: list, env: dict, ready: str) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if ready not in line:
        proc.kill()
        raise SystemExit(f"ab_wait: {cmd[2]} did not start: {proc.stderr.read().strip()}")
    return proc


def on_host(env: dict, host: str, hosts: str) -> dict:
    """``env`` for a process of host id ``host`` under ``--hosts``."""
    if hosts == "same":
        return env
    return dict(env, NOTNETS_HOST_ID=host, **({"NOTNETS_BOOT_ID": f"ab-host{host}"} if hosts == "cross" else {}))


def chain_round(env: dict, pool: str, cross: str, seconds: float, depths: list) -> dict:
    tiers = []
    down = None
    try:
        for role in ("inventory", "catalog", "frontend"):
            e = on_host(env, TIER_HOSTS[role], cross)
            cmd = [PY, "-m", "examples.chain.server", "--role", role, "--listen", f"notnets:ab-{role}", "--pool", pool]
            if down:
                cmd += ["--downstream", down]
            tiers.append(start(cmd, e, " serving on "))
            down = f"notnets:ab-{role}"
        e = on_host(env, CLIENT_HOST, cross)
        rows = {}
        for d in depths:
            before = [cpu_seconds(t.pid) for t in tiers]
            out = subprocess.run([PY, "-m", "examples.chain.client", "--target", down, "--pool", pool, "--depths",
                                  str(d), "--calls", "100000000", "--seconds", str(seconds), "--min-calls", "50"],
                                 cwd=ROOT, env=e, capture_output=True, text=True, timeout=120 + seconds)
            if out.returncode != 0:
                raise SystemExit(f"ab_wait: chain client failed: {out.stderr.strip()}")
            tier_cpu = sum(cpu_seconds(t.pid) - b for t, b in zip(tiers, before))
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows[d] = {"p50_us": r["p50_us"], "p99_us": r["p99_us"], "rps": r["rps"],
                       "cpu_us": 1e6 * tier_cpu / max(1, r["calls"]) + r.get("cpu_us_per_call", 0.0)}
        return rows
    finally:
        stop_servers(tiers)


def switches(pid: int) -> int:
    """Context switches (voluntary and not) of every thread of a live process so far."""
    n = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    n += int(line.split()[1])
        except OSError:  # a thread that ended meanwhile
            pass
    return n


def clients_round(env: dict, pool: str, cross: str, seconds: float, counts: list) -> dict:
    e = on_host(env, "1", cross)
    server = start([PY, "-m", "notnets_bench.echo.server", "--target", "notnets:ab-echo", "--pool", pool], e,
                   "serving")
    rows = {}
    try:
        for n in counts:
            at_start: list = []

            def started(start_at: float) -> None:
                time.sleep(max(0.0, start_at - time.time()))
                at_start.append((cpu_seconds(server.pid), switches(server.pid)))

            outs = run_clients("notnets:ab-echo", pool, n, seconds, on_host(env, "0", cross),
                               cwd=ROOT, started=started)
            server_cpu = cpu_seconds(server.pid) - at_start[0][0]
            server_cs = switches(server.pid) - at_start[0][1]  # (includes the clients' exit, a few)
            calls = sum(o["calls"] for o in outs)
            rows[n] = {"rps": sum(o["rps"] for o in outs), "p50_us": statistics.median(o["p50_us"] for o in outs),
                       "server_cpu_us": 1e6 * server_cpu / max(1, calls),
                       "server_cs": server_cs / max(1, calls),
                       "client_cpu_us": sum(o["cpu_us_per_call"] * o["calls"] for o in outs) / max(1, calls)}
        return rows
    finally:
        stop_servers([server])


def parse_variant(text: str) -> "tuple[str, dict]":
    name, _, assigns = text.partition(":")
    env = {}
    for a in filter(None, assigns.split(",")):
        k, _, v = a.partition("=")
        env[k] = v
    return name, env


def main(argv=None) -> int:
    global ROOT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=("chain", "clients"), required=True)
    ap.add_argument("--hosts", choices=("same", "cross", "sim"), default="same")
    ap.add_argument("--variant", action="append", required=True, help="NAME:ENV=VALUE,... (repeatable)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--depths", default="1,2,3")
    ap.add_argument("--clients", default="1,8")
    args = ap.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant]
    pool = f"/dev/shm/notnets-abwait-{uuid.uuid4().hex[:8]}"
    base = dict(os.environ, PYTHONPATH=str(ROOT))
    base.pop("NOTNETS_HOST_ID", None)
    results: dict = {name: [] for name, _ in variants}
    try:
        for r in range(args.rounds):
            for name, env in variants:
                # an empty pool each round: the variant's first server formats it with its own
                # code (another checkout may speak another layout version)
                with open(pool, "wb") as f:
                    f.truncate(64 << 20)
                tree = env.get("TREE")  # another checkout of the project (an older commit, say)
                ROOT = Path(tree) if tree else Path(__file__).resolve().parent.parent
                e = dict(base, **{k: v for k, v in env.items() if k != "TREE"}, PYTHONPATH=str(ROOT))
                if args.case == "chain":
                    rows = chain_round(e, pool, args.hosts, args.seconds,
                                       [int(d) for d in args.depths.split(",")])
                else:
                    rows = clients_round(e, pool, args.hosts, args.seconds,
                                         [int(n) for n in args.clients.split(",")])
                results[name].append(rows)
                print(f"round {r + 1} {name:<12} " + "  ".join(
                    f"{k}: " + " ".join(f"{m} {v:.1f}" for m, v in row.items()) for k, row in rows.items()),
                    flush=True)
    finally:
        Path(pool).unlink(missing_ok=True)
    print(f"medians over {args.rounds} rounds, load {os.getloadavg()[0]:.1f}:")
    for name, rounds in results.items():
        keys = rounds[0].keys()
        line = []
        for k in keys:
            metrics = rounds[0][k].keys()
            line.append(f"{k}: " + " ".join(f"{m} {statistics.median(rr[k][m] for rr in rounds):.1f}" for m in metrics))
        print(f"  {name:<12} " + "  |  ".join(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
