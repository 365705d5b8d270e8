"""PNG plots of benchmark rows: latency and throughput against payload size, latency
against call depth. matplotlib with the Agg backend (no display on these machines),
imported only here so that the rest of `bench` does not pay for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from notnets_bench.results import BASELINE, NOTNETS, human_size

COLORS = {BASELINE: "#d62728", NOTNETS: "#1f77b4"}
LABELS = {BASELINE: "gRPC over the network", NOTNETS: "NotNets (shared CXL pool)"}
BACKEND_NAMES = {"sim": "sim hosts (gRPC over loopback)", "qemu": "QEMU TCG hosts (gRPC over a virtual L2)"}


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
                    ax.plot(xs, ys, style, color=COLORS[transport], label=f"{LABELS[transport]} {tag}",
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
    for ax, field, label in ((axes[0], "rps", "calls (messages) per second, one client"),
                             (axes[1], "mbps", "payload MB/s, one client")):
        for transport in (BASELINE, NOTNETS):
            for shape, style in (("unary", "-o"), ("stream", "--s")):
                xs, ys = _series(echo, transport, shape, field)
                if xs:
                    ax.plot(xs, ys, style, color=COLORS[transport], label=f"{LABELS[transport]}, {shape}",
                            markersize=4)
        ax.set_yscale("log")
        ax.set_ylabel(label)
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
                    label=f"{LABELS[transport]} p50")
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
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Shop chain over 3 hosts: {BACKEND_NAMES.get(backend, backend)}", fontsize=10)
    fig.tight_layout()
    path = _save(fig, out_dir / f"{backend}-chain.png")
    plt.close("all")
    return [path]


def plot_all(rows: list[dict], out_dir: Path) -> list[Path]:
    written = []
    for backend in sorted({r["backend"] for r in rows}):
        written += plot_echo(rows, backend, out_dir)
        written += plot_chain(rows, backend, out_dir)
    return written


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
