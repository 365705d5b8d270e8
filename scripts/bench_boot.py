"""Boot benchmark: `notnets-emu up` of N QEMU hosts sharing one pool, to READY.

    .venv/bin/python scripts/bench_boot.py [--hosts 1,4,8,16] [--rounds 1] [--boot template,cold] [--out bench-boot]

For each N (in turns when --rounds > 1): a topology of N hosts (1 vCPU, --memory each)
on one 256 MiB pool, `up` timed from start to exit (every host READY), then `down`.
Recorded per host: the wall time to READY and the CPU seconds its QEMU process had
used by then (`status --json`: boot_seconds, boot_cpu_seconds), plus the guest uptime
at each milestone of its console and agent log. ``--boot`` alternates hosts restored
from a boot template (NOTNETS_BOOT_TEMPLATE=1; the template is made before the first
timed `up`, and its cost is recorded apart) with kernel boots (=0) within each round.
CPU seconds per host are the figure
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
CONSOLE = re.compile(r"notnets-init: \[\s*([\d.]+)\] (init started|restored as|9p shares mounted|starting the agent|"
                     r"late modules loaded)")
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
            name = "restored" if name == "restored as" else name
            found.setdefault(name, float(match.group(1)))
    return found


def emu(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(EMU + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


BOOT_MODES = {"template": "1", "cold": "0"}  # NOTNETS_BOOT_TEMPLATE


def measure(hosts: int, args: argparse.Namespace, boot: str = "template") -> dict:
    """One `up` of ``hosts`` hosts, then `down`; every host stopped in the finally."""
    work = Path(tempfile.mkdtemp(prefix=f"notnets-bootbench-{hosts}-"))
    name = f"bootbench{hosts}"
    env = dict(os.environ, NOTNETS_STATE=str(work / "runs"), PYTHONPATH=str(ROOT),
               NOTNETS_BOOT_TEMPLATE=BOOT_MODES[boot])
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
        restored = sum(1 for h in data["hosts"] if h.get("boot_template"))
        if boot == "template" and restored != hosts:
            raise SystemExit(f"bench_boot: only {restored} of {hosts} hosts were restored: {up.stderr.strip()[-2000:]}")
        return {
            "hosts": hosts, "boot": boot, "template_made": "making the boot template" in up.stderr,
            "up_wall_s": round(wall, 2), "all_ready_s": max(h["ready_s"] for h in per_host),
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

    fig, (wall_ax, cpu_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for boot, color in (("template", "tab:blue"), ("cold", "tab:gray")):
        runs = [r for r in results["runs"] if r.get("boot", "cold") == boot and not r.get("template_made")]
        ns = sorted({r["hosts"] for r in runs})
        for ax, key in ((wall_ax, "up_wall_s"), (cpu_ax, "cpu_s_per_host_mean")):
            for n in ns:
                values = [r[key] for r in runs if r["hosts"] == n]
                ax.scatter([n] * len(values), values, color=color)
            if ns:
                ax.plot(ns, [statistics.median(r[key] for r in runs if r["hosts"] == n) for n in ns], color=color,
                        label="restored from a boot template" if boot == "template" else "kernel boot")
    ns = sorted({r["hosts"] for r in results["runs"]})
    for ax, label in ((wall_ax, "`up` to all READY (s, wall)"), (cpu_ax, "QEMU CPU-s per host at READY")):
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
    parser.add_argument("--boot", default="template", help="boot modes in turns: template, cold or both (comma)")
    parser.add_argument("--out", type=Path, default=Path("bench-boot"))
    args = parser.parse_args()
    boots = args.boot.split(",")
    if not boots or set(boots) - set(BOOT_MODES):
        parser.error(f"--boot {args.boot!r}: expected template, cold or template,cold")
    try:
        counts = [int(n) for n in args.hosts.split(",")]
    except ValueError:
        parser.error(f"--hosts {args.hosts!r}: expected numbers separated by commas")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"commit": commit(), "machine": platform.node(), "cpus": os.cpu_count(), "memory": args.memory,
               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": []}
    if "template" in boots:  # the template's one kernel boot, outside the timed runs
        run = measure(1, args, "template")
        run["round"] = -1
        results["runs"].append(run)
        print(f"template: {'made' if run['template_made'] else 'cached'}, up of 1 host {run['up_wall_s']:.1f} s",
              flush=True)
    for rnd in range(args.rounds):
        for n, boot in [(n, boot) for n in counts for boot in boots]:
            run = measure(n, args, boot)
            run["round"] = rnd
            results["runs"].append(run)
            print(f"{n:3d} hosts, {boot:8s}: up {run['up_wall_s']:6.1f} s, all READY {run['all_ready_s']:6.1f} s, "
                  f"{run['cpu_s_per_host_mean']:5.2f} CPU-s per host ({run['cpu_s_total']:.0f} in all), "
                  f"load {run['load_before']}", flush=True)
            (args.out / "boot.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.out / "boot.png")
    print(f"wrote {args.out / 'boot.json'} and {args.out / 'boot.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
