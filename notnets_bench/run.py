"""`notnets-emu bench`: bring the benchmark topology up, run the workloads over both
transports, bring it down, and leave OUT/results.json, PNG plots and a ratio table.

The run is always brought down (also on Ctrl-C or SIGTERM), and results are written
after every block, so an interrupted or partly failed run still leaves what it measured.
A workload that fails does not stop the others; `bench` then exits non-zero naming it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import time
from pathlib import Path
from typing import Any

import click

from emulator.errors import UserError
from emulator.progress import Progress
from emulator.runs.kernel_faults import describe, run_kernel_faults
from emulator.topology.model import Topology, load_topology
from notnets_bench.hosts import HostRunner
from notnets_bench.meta import load_average, machine_meta
from notnets_bench.options import BenchOptions
from notnets_bench.results import ratio_table, summary_line, write_results
from notnets_bench.stats import pool_rounds
from notnets_bench.workloads import CHAIN_PLACEMENT, ECHO_CLIENT, ECHO_SERVER, WORKLOADS, Workload, mesh_hosts

RUN_NAME_ENV = "NOTNETS_BENCH_RUN"  # another run name (tests, two benches at once)


def bench_topology(options: BenchOptions) -> Topology:
    """The topology file on the asked backend, checked for what the workloads need."""
    topology = load_topology(options.topology).with_backend(options.backend)
    if os.environ.get(RUN_NAME_ENV):
        topology = dataclasses.replace(topology, name=os.environ[RUN_NAME_ENV])
    hosts = {h.name for h in topology.hosts}
    needed = ({ECHO_SERVER, ECHO_CLIENT} if "echo" in options.workloads else set()) | (
        set(CHAIN_PLACEMENT.values()) if "chain" in options.workloads else set())
    missing = sorted(needed - hosts)
    if missing:
        raise UserError(f"{options.topology}: bench needs hosts {', '.join(sorted(needed))}; missing {', '.join(missing)}")
    if "mesh" in options.workloads:
        if len(hosts) < 2:
            raise UserError(f"{options.topology}: the mesh needs at least two hosts")
        needed |= set(mesh_hosts(topology))
    if "grpc-tcp" in options.transports and not topology.network:
        raise UserError(f"{options.topology}: the gRPC baseline needs `network: true` (the hosts' network)")
    shared = set.intersection(*(set(topology.host(h).pools) for h in needed))
    if "notnets" in options.transports and not shared:
        raise UserError(f"{options.topology}: hosts {', '.join(sorted(needed))} share no pool")
    return topology


def run_meta(options: BenchOptions, run: Any) -> dict[str, Any]:
    b = options.budget
    return {
        "backend": options.backend, "quick": options.quick, "argv": list(options.argv),
        "topology": str(options.topology), "accel": run.accel, "accel_note": run.accel_note,
        "pools": [{"name": p.name, "kind": p.kind, "size": p.size, "note": p.note} for p in run.pools],
        "rounds": options.rounds,
        "budget": {"sizes": list(b.sizes), "calls": b.calls, "seconds": b.seconds, "min_calls": b.min_calls,
                   "chain_calls": b.chain_calls, "chain_seconds": b.chain_seconds,
                   "chain_depths": list(b.chain_depths), "mesh_seconds": b.mesh_seconds},
        "placement": {"echo": {"server": ECHO_SERVER, "client": ECHO_CLIENT},
                      "chain": {**CHAIN_PLACEMENT, "client": "host0"},
                      "mesh": [h.name for h in run.hosts]},
    }


def run_bench(options: BenchOptions) -> int:
    """The whole benchmark; returns 0 when every workload ran."""
    from emulator.backends.by_name import get_backend
    from emulator.runs.lifecycle import bring_up, tear_down

    progress = Progress()
    topology = bench_topology(options)
    started = time.monotonic()
    meta = machine_meta(options.backend)
    progress.say(f"bench on {options.backend}{' (quick)' if options.quick else ''}: load average "
                 f"{' '.join(map(str, meta['load_before']))} on {meta['cpus']} cpus; results in {options.out}/")
    rows: list[dict] = []
    failures: list[str] = []
    results = options.out / "results.json"

    def save() -> None:
        meta["load_after"] = load_average()
        meta["seconds"] = round(time.monotonic() - started, 1)
        write_results(results, rows, meta)

    run = bring_up(topology, accel=options.accel, progress=progress)
    try:
        meta.update(run_meta(options, run))
        runner = HostRunner(run, get_backend(run.backend))
        workload = Workload(topology, runner, options, progress, rows.append)
        try:
            for name in options.workloads:
                rounds = options.rounds if name == "echo" else 1
                measured: list[dict] = []
                workload.on_row = rows.append if rounds == 1 else measured.append
                for r in range(rounds):
                    for transport in options.transports:
                        if rounds > 1:
                            progress.say(f"{name} round {r + 1}/{rounds}: {transport}")
                        try:
                            WORKLOADS[name](workload, transport)
                        except UserError as err:
                            failures.append(f"{name} over {transport}: {err}")
                            progress.say(f"FAILED: {name} over {transport}: {err}")
                        save()
                rows.extend(pool_rounds(measured))
                save()
        finally:
            runner.stop_all()
            faults = run_kernel_faults(run, runner.backend)
            if faults:
                meta["kernel_faults"] = faults
                for line in describe(run, runner.backend, faults):
                    failures.append(line)
                    progress.say(f"FAILED: {line}")
    finally:
        progress.say(f"run {run.name}: bringing it down")
        tear_down(run, keep_pools=False, progress=Progress(quiet=True))
    save()
    finish(rows, options.out, progress)
    progress.say(f"bench done in {time.monotonic() - started:.0f} s; {results}")
    if failures:
        raise UserError(f"bench: {len(failures)} workload(s) failed: " + "; ".join(failures))
    return 0


def finish(rows: list[dict], out: Path, progress: Progress) -> None:
    """Plots, then the ratio table and the headline on stdout."""
    if rows:
        if importlib.util.find_spec("matplotlib") is None:  # a dev extra, not a dependency
            progress.say("no plots: matplotlib is not installed; `pip install matplotlib` (make setup does)")
        else:
            from notnets_bench.plots import plot_all

            for path in plot_all(rows, out):
                progress.say(f"plot: {path}")
    click.echo(ratio_table(rows))
    line = summary_line(rows)
    if line:
        click.echo(line)
