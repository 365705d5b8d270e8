"""Boot benchmark: `notnets-emu up` of N QEMU hosts sharing one pool, to READY.

    .venv/bin/python scripts/bench_boot.py [--hosts 1,4,8,16] [--rounds 1] [--out bench-boot]

For each N (in turns when --rounds > 1): a topology of N hosts (1 vCPU, --memory each)
on one 256 MiB pool, `up` timed from start to exit (every host READY), then `down`.
Recorded per host: the wall time to READY and the CPU seconds its QEMU process had
used by then (`status --json`: boot_seconds, boot_cpu_seconds), plus the guest uptime
at each milestone of its console and agent log. CPU seconds per host are the figure
to compare: wall time on this shared 2-core machine moves with everyone's load (the
load average before each run is recorded). Writes OUT/boot.json and OUT/boot.png.

Each `up ... down` holds the machine-wide lock (/tmp/notnets-vm.lock, --lock) for as
long as it runs, not for the whole benchmark, so that other users get their turns.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import yaml

ROOT = Path(__file__).resolve().parents[1]
EMU = [sys.executable, "-m", "emulator.cli"]
TARGET_HOSTS, TARGET_SECONDS = 16, 45.0  # issue 16: 16 QEMU hosts READY in at most 45 s
CONSOLE = re.compile(r"notnets-init: \[\s*([\d.]+)\] (init started|starting the agent|late modules loaded)")
AGENT = re.compile(r"\[\s*([\d.]+)\] agent: (host |ready|pool \S+: )")
AGENT_NAMES = {"host ": "agent running", "pool": "pools made", "ready": "ready"}


@contextlib.contextmanager
def vm_lock(path: str | None) -> Iterator[float]:
    """Hold the machine-wide VM lock for one measurement; yields the seconds waited."""
    if not path:
        yield 0.0
        return
    t0 = time.monotonic()
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield time.monotonic() - t0
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def topology(hosts: int, memory: str, backing: str) -> dict:
    return {
        "name": f"boot{hosts}", "backend": "qemu",
        "pools": [{"name": "pool0", "size": "256M", "backing": backing}],
        "hosts": [{"name": f"host{i}", "memory": memory, "pools": ["pool0"]} for i in range(hosts)],
    }


def milestones(host_dir: Path, console_log: str) -> dict[str, float]:
    """Guest uptime (s) at each milestone of init.sh and the agent, where logged."""
    found: dict[str, float] = {}
    for pattern, path, names in ((CONSOLE, Path(console_log), None), (AGENT, host_dir / "agent.log", AGENT_NAMES)):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for match in pattern.finditer(text):
            key = match.group(2)
            name = names[key.split()[0] if key.startswith("pool") else key] if names else key
            found.setdefault(name, float(match.group(1)))
    return found


def emu(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(EMU + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def measure(hosts: int, args: argparse.Namespace) -> dict:
    """One `up` of ``hosts`` hosts, then `down`; every host stopped in the finally."""
    work = Path(tempfile.mkdtemp(prefix=f"notnets-bootbench-{hosts}-"))
    name = f"bootbench{hosts}"
    env = dict(os.environ, NOTNETS_STATE=str(work / "runs"), PYTHONPATH=str(ROOT))
    topo = work / "topology.yaml"
    topo.write_text(yaml.safe_dump(topology(hosts, args.memory, args.backing), sort_keys=False))
    try:
        with vm_lock(args.lock) as waited:
            load = os.getloadavg()[0]
            t0 = time.monotonic()
            try:
                up = emu(["up", str(topo), "-p", name], env, args.timeout)
                wall = time.monotonic() - t0
                status = emu(["status", "-p", name, "--json"], env, 60)
            finally:
                down = emu(["down", "-p", name], env, 300)
            load_after = os.getloadavg()[0]
        if up.returncode != 0:
            raise SystemExit(f"bench_boot: up of {hosts} hosts failed: {up.stderr.strip()[-2000:]}")
        if down.returncode != 0:
            print(f"bench_boot: down of {name}: {down.stderr.strip()}", file=sys.stderr)
        data = json.loads(status.stdout)
        per_host = []
        for h in data["hosts"]:
            per_host.append({"host": h["name"], "ready_s": h["boot_seconds"], "cpu_s": h["boot_cpu_seconds"],
                             "guest_uptime": milestones(Path(h["console_log"]).parent, h["console_log"])})
        cpu = [h["cpu_s"] for h in per_host if h["cpu_s"] is not None]
        return {
            "hosts": hosts, "up_wall_s": round(wall, 2), "all_ready_s": max(h["ready_s"] for h in per_host),
            "cpu_s_total": round(sum(cpu), 1), "cpu_s_per_host_mean": round(statistics.mean(cpu), 2),
            "cpu_s_per_host_max": max(cpu), "load_before": round(load, 2), "load_after": round(load_after, 2),
            "lock_wait_s": round(waited, 1), "per_host": per_host,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    ns = sorted({r["hosts"] for r in runs})
    fig, (wall_ax, cpu_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((wall_ax, "up_wall_s", "`up` to all READY (s, wall)"),
                           (cpu_ax, "cpu_s_per_host_mean", "QEMU CPU-s per host at READY")):
        for n in ns:
            values = [r[key] for r in runs if r["hosts"] == n]
            ax.scatter([n] * len(values), values, color="tab:blue")
        ax.plot(ns, [statistics.median(r[key] for r in runs if r["hosts"] == n) for n in ns], color="tab:blue")
        ax.set_xlabel("hosts")
        ax.set_ylabel(label)
        ax.set_xticks(ns)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    wall_ax.axhline(TARGET_SECONDS, color="tab:red", linestyle="--", label=f"target: {TARGET_HOSTS} hosts")
    cpu_ax.axhline(TARGET_SECONDS * (os.cpu_count() or 1) / TARGET_HOSTS, color="tab:red", linestyle="--",
                   label=f"{TARGET_HOSTS} hosts in {TARGET_SECONDS:g} s on {os.cpu_count()} cores")
    wall_ax.legend()
    cpu_ax.legend()
    fig.suptitle(f"QEMU (TCG) boot, {results['commit']}, {os.cpu_count()} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,4,8,16", help="host counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="times each host count is measured, in turns")
    parser.add_argument("--memory", default="512M", help="guest RAM per host")
    parser.add_argument("--backing", default="hugetlbfs", choices=("hugetlbfs", "shm"))
    parser.add_argument("--timeout", type=float, default=900, help="seconds `up` may take")
    parser.add_argument("--lock", default="/tmp/notnets-vm.lock", help="lock held per measurement ('' for none)")
    parser.add_argument("--out", type=Path, default=Path("bench-boot"))
    args = parser.parse_args()
    try:
        counts = [int(n) for n in args.hosts.split(",")]
    except ValueError:
        parser.error(f"--hosts {args.hosts!r}: expected numbers separated by commas")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"commit": commit(), "machine": platform.node(), "cpus": os.cpu_count(), "memory": args.memory,
               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": []}
    for rnd in range(args.rounds):
        for n in counts:
            run = measure(n, args)
            run["round"] = rnd
            results["runs"].append(run)
            print(f"{n:3d} hosts: up {run['up_wall_s']:6.1f} s, all READY {run['all_ready_s']:6.1f} s, "
                  f"{run['cpu_s_per_host_mean']:5.2f} CPU-s per host ({run['cpu_s_total']:.0f} in all), "
                  f"load {run['load_before']}", flush=True)
            (args.out / "boot.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.out / "boot.png")
    print(f"wrote {args.out / 'boot.json'} and {args.out / 'boot.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
