#!/usr/bin/env python3
"""A/B of waiting rules on QEMU hosts: the bench's shop chain, variants alternating on one boot.

    flock /tmp/notnets-vm.lock .venv/bin/python scripts/qemu_chain_ab.py --rounds 3 \\
        --variant main:NOTNETS_GUEST_NAP_US=0 --variant nap:NOTNETS_GUEST_NAP_US=50

Brings `bench`'s topology up once on QEMU (its --quick chain budget), then per round runs
the chain over gRPC (the baseline, unless --no-grpc) and over NotNets once per variant,
each variant's environment (NAME:ENV=VALUE,...) given to every guest process of the
chain (servers and client), as `bench` forwards NOTNETS_* from its own environment.
Servers are restarted for every variant. While a chain runs, each host's vCPU thread is
sampled from the machine's /proc (schedstat: time on a CPU and time waiting in the run
queue), which says whether the guests' vCPUs wait for the machine's CPUs. Prints each
round's rows, then per variant the median over rounds of p50 by depth and the ratio to
the gRPC baseline's median. Always brings the run down.
"""

from __future__ import annotations

import argparse
import os
import threading
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emulator.backends.by_name import get_backend  # noqa: E402
from emulator.errors import UserError  # noqa: E402
from emulator.progress import Progress  # noqa: E402
from emulator.runs.lifecycle import bring_up, tear_down  # noqa: E402
from notnets_bench.hosts import HostRunner  # noqa: E402
from notnets_bench.options import parse_bench_args  # noqa: E402
from notnets_bench.run import bench_topology  # noqa: E402
from notnets_bench.workloads import Workload, run_chain, run_echo  # noqa: E402


def vcpu_threads(pid: int) -> list[Path]:
    """The TCG vCPU threads of one QEMU process (named "CPU n/TCG" with debug-threads=on)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().startswith("CPU "):
                out.append(task)
        except OSError:
            pass
    return out


def sched(tasks: dict[str, list[Path]]) -> dict[str, tuple[float, float]]:
    """Per host: seconds on a CPU and seconds waiting in the run queue so far (vCPU threads)."""
    out = {}
    for host, threads in tasks.items():
        run = wait = 0.0
        for t in threads:
            try:
                a, b, _ = (t / "schedstat").read_text().split()
            except (OSError, ValueError):
                continue
            run += int(a) / 1e9
            wait += int(b) / 1e9
        out[host] = (run, wait)
    return out


class SampledWorkload(Workload):
    """A Workload that samples the vCPUs' schedstat around the chain client only (not the
    servers' start, which imports grpc for seconds)."""

    tasks: dict = {}
    share: str = ""
    top_host: str = ""  # a guest whose processes' CPU to sample while the client runs
    top: str = ""

    def client(self, *args, **kwargs) -> None:
        before, t0 = sched(self.tasks), time.monotonic()
        sampler = None
        if self.top_host:
            sampler = threading.Thread(target=self._sample_top, daemon=True)
            sampler.start()
        try:
            super().client(*args, **kwargs)
        finally:
            if sampler is not None:
                sampler.join(30)
            after, dt = sched(self.tasks), time.monotonic() - t0
            self.share = " ".join(f"{h} run {100 * (after[h][0] - before[h][0]) / dt:.0f}% wait "
                                  f"{100 * (after[h][1] - before[h][1]) / dt:.0f}%" for h in sorted(after))


    def _sample_top(self) -> None:
        """CPU of each process in the guest over 2 s, a few seconds into the client's run
        (/proc/PID/stat twice, from a shell: nothing as heavy as a Python start)."""
        lines: list = []
        time.sleep(4)
        self.runner.exec_lines(self.top_host, "for i in 1 2; do for f in /proc/[0-9]*/stat; do echo \"$i $(cat $f)\"; "
                               "done 2>/dev/null; [ $i = 1 ] && sleep 2; done", 60, lines.append, lambda line: None)
        ticks: dict = {}
        for line in lines:
            rnd, rest = line.split(" ", 1)
            head, _, tail = rest.rpartition(")")
            fields = tail.split()
            ticks.setdefault(head + ")", {})[rnd] = int(fields[11]) + int(fields[12])  # utime + stime
        busy = sorted(((t["2"] - t["1"], name) for name, t in ticks.items() if "1" in t and "2" in t), reverse=True)
        self.top = ", ".join(f"{name.split('(', 1)[1]} {n / 2:.0f}%" for n, name in busy[:5] if n)


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, assigns = text.partition(":")
    env = dict(a.partition("=")[::2] for a in assigns.split(",") if a)
    return name, env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", action="append", required=True, help="NAME:ENV=VALUE,... (repeatable)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="per depth and round")
    ap.add_argument("--no-grpc", action="store_true", help="no gRPC baseline rounds")
    ap.add_argument("--top", default="", help="a host whose processes' CPU to sample (in the guest, over 2 s)")
    ap.add_argument("--workload", choices=("chain", "echo"), default="chain",
                    help="echo: the bench's 64 B unary echo (host1 -> host0) instead of the chain")
    args = ap.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant]
    options = parse_bench_args(["--backend", "qemu", "--quick", "--sizes", "64", "--shapes", "unary",
                                "--workloads", args.workload, "--rounds", "1", "--seconds", str(args.seconds), "--out", "/tmp/qemu-chain-ab"])
    topology = bench_topology(options)
    progress = Progress(quiet=True)
    print(f"load {os.getloadavg()[0]:.2f} at the start", flush=True)
    run = bring_up(topology, accel=options.accel, progress=progress)
    results: dict[str, list[dict]] = {name: [] for name, _ in variants}
    grpc_rows: list[dict] = []
    try:
        backend = get_backend(run.backend)
        tasks = {h.name: vcpu_threads(h.pid) for h in run.hosts if h.pid}
        runner = HostRunner(run, backend)
        base_env = dict(runner.env)
        plan = ([("grpc", {}, "grpc-tcp")] if not args.no_grpc else []) + [(n, e, "notnets") for n, e in variants]
        for r in range(args.rounds):
            for name, env, transport in plan:
                rows: dict[int, dict] = {}
                runner.env = {**base_env, **env}  # (one runner: its log names must not repeat)
                w = SampledWorkload(topology, runner, options, progress,
                                    lambda row: rows.__setitem__(row.get("depth", 1), row))
                w.tasks = tasks
                w.top_host = args.top
                try:
                    (run_chain if args.workload == "chain" else run_echo)(w, transport)
                except UserError as err:  # (a client that timed out under load, say): the round goes on
                    print(f"round {r + 1} {name}: FAILED: {err}", flush=True)
                finally:
                    runner.stop_all()
                share = w.share
                (grpc_rows if transport == "grpc-tcp" else results[name]).append(rows)
                print(f"round {r + 1} {name:<10} " + " ".join(
                    f"d{d} {rows[d]['p50_us'] / 1e3:.2f} ms" for d in sorted(rows)) +
                      f"  (vCPUs: {share}; load {os.getloadavg()[0]:.1f})" + (f"\n    {args.top}: {w.top}" if args.top else ""), flush=True)
    finally:
        tear_down(run, keep_pools=False, progress=progress)

    def med(rounds: list[dict], d: int) -> float:
        return statistics.median([rr[d]["p50_us"] for rr in rounds if d in rr] or [float("nan")])

    print(f"medians of p50 over {args.rounds} rounds (ms), load {os.getloadavg()[0]:.2f} at the end:")
    depths = sorted({d for rounds in results.values() for rr in rounds for d in rr})
    if grpc_rows:
        print("  grpc       " + "  ".join(f"d{d} {med(grpc_rows, d) / 1e3:.2f}" for d in depths))
    for name, rounds in results.items():
        if rounds:
            print(f"  {name:<10} " + "  ".join(
                f"d{d} {med(rounds, d) / 1e3:.2f}" + (f" ({med(grpc_rows, d) / med(rounds, d):.1f}x)" if grpc_rows else "")
                for d in depths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
