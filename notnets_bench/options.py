"""What `notnets-emu bench` is asked to do, and the per-backend defaults behind --quick.

cli.py hands `bench` its raw arguments, so they are parsed here, with click like every
other verb. The defaults are sized for this project's machines (2 shared cores, TCG):
a gRPC call between TCG guests takes ~8.5 ms, one between sim hosts ~0.5 ms, so a
point is bounded by time as well as by a call count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import click

from emulator.errors import UserError
from emulator.paths import REPO_ROOT
from emulator.sizes import format_size, parse_size

TRANSPORTS = ("grpc-tcp", "notnets")
SHAPES = ("unary", "stream")
WORKLOADS = ("echo", "chain", "mesh")
DEFAULT_WORKLOADS = ("echo", "chain")  # mesh wants a topology of its own (examples/mesh.yaml)
DEFAULT_TOPOLOGY = REPO_ROOT / "examples" / "bench.yaml"
MAX_SIZE = 64 << 20  # the echo messages must fit comfortably in a guest's 1 GiB


@dataclass(frozen=True)
class Budget:
    """How much to measure at each point: at most ``calls``, or ``seconds`` once ``min_calls`` are in."""

    sizes: tuple[int, ...]
    calls: int
    seconds: float
    min_calls: int
    chain_calls: int
    chain_seconds: float
    chain_depths: tuple[int, ...] = (1, 2, 3)
    mesh_seconds: float = 5.0


BUDGETS: dict[tuple[str, bool], Budget] = {
    ("sim", False): Budget((64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20),
                           calls=20000, seconds=6.0, min_calls=50, chain_calls=5000, chain_seconds=6.0,
                           mesh_seconds=5.0),
    ("sim", True): Budget((64, 4 << 10, 64 << 10, 1 << 20), calls=2000, seconds=1.0, min_calls=10,
                          chain_calls=1000, chain_seconds=1.0, mesh_seconds=1.0),
    ("qemu", False): Budget((64, 1 << 10, 16 << 10, 256 << 10, 1 << 20), calls=5000, seconds=10.0, min_calls=20,
                            chain_calls=2000, chain_seconds=10.0, mesh_seconds=10.0),
    ("qemu", True): Budget((64, 16 << 10), calls=500, seconds=3.0, min_calls=5,
                           chain_calls=300, chain_seconds=3.0, mesh_seconds=3.0),
}


# gRPC between TCG guests drifted from 14.7 to 22.1 ms p50 within minutes on one boot while
# NotNets stayed within 10% (docs/results.md): on QEMU the transports take turns.
DEFAULT_ROUNDS = {"sim": 1, "qemu": 3}


@dataclass(frozen=True)
class BenchOptions:
    backend: str
    quick: bool
    out: Path
    topology: Path
    accel: str
    transports: tuple[str, ...]
    shapes: tuple[str, ...]
    workloads: tuple[str, ...]
    budget: Budget
    argv: tuple[str, ...] = field(default=())
    rounds: int = 1


def parse_sizes(text: str) -> tuple[int, ...]:
    """"64,1K,1M" -> (64, 1024, 1048576), sorted and without duplicates."""
    sizes = set()
    for part in text.replace(" ", ",").split(","):
        if not part:
            continue
        try:
            size = parse_size(part)
        except ValueError as err:
            raise UserError(f"--sizes: {err}") from None
        if size > MAX_SIZE:
            raise UserError(f"--sizes: {format_size(size)} is larger than the {format_size(MAX_SIZE)} a point may use")
        sizes.add(size)
    if not sizes:
        raise UserError("--sizes: give at least one size, like 64,4K,1M")
    return tuple(sorted(sizes))


def _choices(text: str, allowed: tuple[str, ...], option: str) -> tuple[str, ...]:
    picked = [part for part in text.replace(" ", ",").split(",") if part]
    unknown = [p for p in picked if p not in allowed]
    if unknown or not picked:
        raise UserError(f"{option}: expected a comma-separated list of {', '.join(allowed)}, got {text!r}")
    return tuple(p for p in allowed if p in picked)  # canonical order


def _positive(value: Optional[float], option: str) -> None:
    if value is not None and value <= 0:
        raise UserError(f"{option}: must be positive, got {value:g}")


@click.command(name="bench", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--backend", type=click.Choice(["sim", "qemu"]), default="sim", show_default=True,
              help="Hosts as simulated process trees, or QEMU VMs sharing a CXL device.")
@click.option("--quick", is_flag=True, help="Fewer sizes and calls (under 2 minutes on sim).")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-out"),
              show_default=True, help="Where results.json and the PNG plots go.")
@click.option("--sizes", help="Echo payload sizes, comma-separated (64,4K,1M). Default: 64 B .. 1 MiB.")
@click.option("--shapes", default=",".join(SHAPES), show_default=True, help="Call shapes: unary, stream.")
@click.option("--transports", default=",".join(TRANSPORTS), show_default=True, help="grpc-tcp, notnets.")
@click.option("--workloads", default=",".join(DEFAULT_WORKLOADS), show_default=True,
              help="echo (payload sizes), chain (microservice call depth), mesh (every host calls every "
                   "other at once; 64 B, or the smallest of --sizes; try --topology examples/mesh.yaml).")
@click.option("--calls", type=int, help="Most calls per point (default depends on backend and --quick).")
@click.option("--seconds", type=float, help="Time budget per point, once a minimum of calls is in.")
@click.option("--rounds", type=int,
              help="Echo: measure the transports in turn this many times and pool the samples, so that "
                   "a baseline drifting over minutes weighs on both alike (default: 3 on qemu, 1 on sim).")
@click.option("--topology", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_TOPOLOGY,
              help="Three hosts sharing one pool, with network: true.  [default: examples/bench.yaml]")
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto", show_default=True,
              help="QEMU accelerator.")
def bench_command(**kwargs: object) -> BenchOptions:
    """Echo over gRPC (TCP between the hosts) and over NotNets (the shared pool), from 64 B
    to 1 MiB, unary and streaming, plus a microservice chain over three hosts.

    Writes OUT/results.json and PNG plots, prints a table of ratios on stdout and
    progress on stderr.
    """
    return options_from(**kwargs)  # type: ignore[arg-type]


def options_from(backend: str, quick: bool, out: Path, sizes: Optional[str], shapes: str, transports: str,
                 workloads: str, calls: Optional[int], seconds: Optional[float], topology: Path,
                 accel: str, argv: tuple[str, ...] = (), rounds: Optional[int] = None) -> BenchOptions:
    """Checked options; every bad value is one UserError line."""
    _positive(calls, "--calls")
    _positive(rounds, "--rounds")
    _positive(seconds, "--seconds")
    budget = BUDGETS[(backend, quick)]
    overrides: dict = {}
    if sizes is not None:
        overrides["sizes"] = parse_sizes(sizes)
    if calls is not None:
        overrides.update(calls=calls, chain_calls=calls, min_calls=min(budget.min_calls, calls))
    if seconds is not None:
        overrides.update(seconds=seconds, chain_seconds=seconds, mesh_seconds=seconds)
    if overrides:
        budget = Budget(**{**budget.__dict__, **overrides})
    if not topology.is_file():
        raise UserError(f"--topology: {topology}: no such file")
    return BenchOptions(
        backend=backend, quick=quick, out=out, topology=topology, accel=accel,
        transports=_choices(transports, TRANSPORTS, "--transports"),
        shapes=_choices(shapes, SHAPES, "--shapes"),
        workloads=_choices(workloads, WORKLOADS, "--workloads"),
        budget=budget, argv=argv, rounds=rounds or DEFAULT_ROUNDS[backend],
    )


def parse_bench_args(args: list[str]) -> Optional[BenchOptions]:
    """The options, or None when --help was printed."""
    try:
        options = bench_command.main(args=list(args), prog_name="notnets-emu bench", standalone_mode=False)
    except click.exceptions.Exit:
        return None
    if isinstance(options, int):  # --help returns 0 in non-standalone mode
        return None
    return BenchOptions(**{**options.__dict__, "argv": tuple(args)})
