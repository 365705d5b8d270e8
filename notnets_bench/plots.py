"""PNG plots of benchmark rows: latency and throughput against payload size, latency
against call depth, and a heat map of each host pair's latency in the mesh. matplotlib with the Agg backend (no display on these machines),
imported only here so that the rest of `bench` does not pay for it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from notnets_bench.results import BASELINE, NOTNETS, human_size

COLORS = {BASELINE: "#d62728", NOTNETS: "#1f77b4"}
LABELS = {BASELINE: "gRPC over the network", NOTNETS: "NotNets (shared CXL pool)"}
BASELINE_LABELS = {"sim": "gRPC over a veth bridge", "qemu": "gRPC over the virtual L2"}  # what the title says
BACKEND_NAMES = {"sim": "sim hosts (gRPC over a veth bridge)", "qemu": "QEMU TCG hosts (gRPC over a virtual L2)"}


def label(transport: str, backend: str) -> str:
    """The legend's name of a transport, saying what the baseline ran over on this backend."""
    if transport == BASELINE:
        return BASELINE_LABELS.get(backend, LABELS[BASELINE])
    return LABELS[transport]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(rows: list[dict], transport: str, shape: str, field: str) -> tuple[list[int], list[float]]:
    points = sorted((r["size"], r[field]) for r in rows if r["transport"] == transport and r["shape"] == shape)
    return [p[0] for p in points], [p[1] for p in points]


def _size_axis(ax: Any, sizes: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels([human_size(s).replace(" ", "\n") for s in sizes], fontsize=8)
    ax.set_xlabel("payload (bytes each way)")
    ax.grid(True, which="major", alpha=0.3)


def plot_echo(rows: list[dict], backend: str, out_dir: Path) -> list[Path]:
    """{backend}-latency.png (p50 solid, p99 dashed) and {backend}-throughput.png."""
    echo = [r for r in rows if r.get("workload", "echo") == "echo" and r["backend"] == backend]
    if not echo:
        return []
    plt = _pyplot()
    shapes = [s for s in ("unary", "stream") if any(r["shape"] == s for r in echo)]
    sizes = sorted({r["size"] for r in echo})
    written = []

    fig, axes = plt.subplots(1, len(shapes), figsize=(6 * len(shapes), 4.5), squeeze=False)
    for ax, shape in zip(axes[0], shapes):
        for transport in (BASELINE, NOTNETS):
            for field, style, tag in (("p50_us", "-o", "p50"), ("p99_us", "--", "p99")):
                xs, ys = _series(echo, transport, shape, field)
                if xs:
                    ax.plot(xs, ys, style, color=COLORS[transport], label=f"{label(transport, backend)} {tag}",
                            markersize=4, alpha=1.0 if tag == "p50" else 0.6)
        ax.set_yscale("log")
        ax.set_ylabel("round-trip latency (us, log)")
        ax.set_title(f"echo, {shape}")
        _size_axis(ax, sizes)
        ax.legend(fontsize=7)
    fig.suptitle(f"Echo latency: {BACKEND_NAMES.get(backend, backend)}")
    fig.tight_layout()
    written.append(_save(fig, out_dir / f"{backend}-latency.png"))

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, field, axis_label in ((axes[0], "rps", "calls (messages) per second, one client"),
                                  (axes[1], "mbps", "payload MB/s, one client")):
        for transport in (BASELINE, NOTNETS):
            for shape, style in (("unary", "-o"), ("stream", "--s")):
                xs, ys = _series(echo, transport, shape, field)
                if xs:
                    ax.plot(xs, ys, style, color=COLORS[transport], label=f"{label(transport, backend)}, {shape}",
                            markersize=4)
        ax.set_yscale("log")
        ax.set_ylabel(axis_label)
        _size_axis(ax, sizes)
        ax.legend(fontsize=7)
    fig.suptitle(f"Echo throughput (closed loop, one call at a time): {BACKEND_NAMES.get(backend, backend)}")
    fig.tight_layout()
    written.append(_save(fig, out_dir / f"{backend}-throughput.png"))
    plt.close("all")
    return written


def plot_chain(rows: list[dict], backend: str, out_dir: Path) -> list[Path]:
    """{backend}-chain.png: end-to-end p50 against call depth, with the saving per depth."""
    chain = [r for r in rows if r.get("workload") == "chain" and r["backend"] == backend]
    if not chain:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    by_transport: dict[str, dict[int, dict]] = {}
    for r in chain:
        by_transport.setdefault(r["transport"], {})[r["depth"]] = r
    for transport in (BASELINE, NOTNETS):
        points = by_transport.get(transport, {})
        depths = sorted(points)
        if depths:
            ax.plot(depths, [points[d]["p50_us"] / 1000 for d in depths], "-o", color=COLORS[transport],
                    label=f"{label(transport, backend)} p50")
            ax.fill_between(depths, [points[d]["p50_us"] / 1000 for d in depths],
                            [points[d]["p99_us"] / 1000 for d in depths], color=COLORS[transport], alpha=0.12)
    base, nn = by_transport.get(BASELINE, {}), by_transport.get(NOTNETS, {})
    for depth in sorted(set(base) & set(nn)):
        saved = (base[depth]["p50_us"] - nn[depth]["p50_us"]) / 1000
        ax.annotate(f"saves {saved:.2f} ms" if saved >= 0 else f"costs {-saved:.2f} ms", (depth, base[depth]["p50_us"] / 1000), textcoords="offset points",
                    xytext=(0, 8), ha="center", fontsize=8)
    depths_all = sorted({r["depth"] for r in chain})
    ax.set_xticks(depths_all)
    ax.set_xticklabels([f"{d} hop{'s' if d > 1 else ''}" for d in depths_all])
    ax.set_xlabel("call depth (client -> frontend -> catalog -> inventory)")
    ax.set_ylabel("end-to-end latency (ms; band up to p99)")
    ax.set_ylim(bottom=0)
    ax.margins(y=0.18)  # room above the highest point for its "saves ..." label, below the frame
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Shop chain over 3 hosts: {BACKEND_NAMES.get(backend, backend)}", fontsize=10)
    fig.tight_layout()
    path = _save(fig, out_dir / f"{backend}-chain.png")
    plt.close("all")
    return [path]


def mesh_matrix(pairs: list[dict]) -> tuple[list[str], list[list[float]]]:
    """Host names (clients and servers alike) and p50 in us by [client][server]; nan where none."""
    hosts = sorted({r["client"] for r in pairs} | {r["server"] for r in pairs})
    index = {h: i for i, h in enumerate(hosts)}
    grid = [[float("nan")] * len(hosts) for _ in hosts]
    for r in pairs:
        grid[index[r["client"]]][index[r["server"]]] = r["p50_us"]
    return hosts, grid


def plot_mesh(rows: list[dict], backend: str, out_dir: Path) -> list[Path]:
    """{backend}-mesh.png: one heat map of per-pair p50 per transport, the aggregate in each title."""
    mesh = [r for r in rows if r.get("workload") == "mesh" and r["backend"] == backend]
    transports = [t for t in (BASELINE, NOTNETS) if any(r["transport"] == t and r["shape"] == "pair" for r in mesh)]
    if not transports:
        return []
    plt = _pyplot()
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(1, len(transports), figsize=(5.8 * len(transports), 5), squeeze=False)
    for ax, transport in zip(axes[0], transports):
        hosts, grid = mesh_matrix([r for r in mesh if r["transport"] == transport and r["shape"] == "pair"])
        values = [v for line in grid for v in line if v == v]
        image = ax.imshow(grid, cmap="viridis", norm=LogNorm(vmin=min(values), vmax=max(max(values), min(values) * 1.01)))
        middle = math.sqrt(min(values) * max(values))
        for i, line in enumerate(grid):
            for j, value in enumerate(line):
                if value == value:
                    ax.text(j, i, f"{value:.0f}" if value >= 100 else f"{value:.1f}", ha="center", va="center",
                            fontsize=7 if len(hosts) <= 8 else 5, color="black" if value > middle else "white")
        ax.set_xticks(range(len(hosts)))
        ax.set_xticklabels(hosts, rotation=90, fontsize=7)
        ax.set_yticks(range(len(hosts)))
        ax.set_yticklabels(hosts, fontsize=7)
        ax.set_xlabel("server host")
        ax.set_ylabel("client host")
        total = next((r for r in mesh if r["transport"] == transport and r["shape"] == "mesh"), None)
        headline = f"\n{total['rps']:.0f} calls/s in all, {human_size(total['size'])}" if total else ""
        ax.set_title(f"{LABELS[transport]}: p50 per pair (us){headline}", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"Mesh, every host calls every other at once: {BACKEND_NAMES.get(backend, backend)}", fontsize=10)
    fig.tight_layout()
    path = _save(fig, out_dir / f"{backend}-mesh.png")
    plt.close("all")
    return [path]


def plot_all(rows: list[dict], out_dir: Path) -> list[Path]:
    written = []
    for backend in sorted({r["backend"] for r in rows}):
        written += plot_echo(rows, backend, out_dir)
        written += plot_chain(rows, backend, out_dir)
        written += plot_mesh(rows, backend, out_dir)
    return written


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
