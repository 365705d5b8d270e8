"""Benchmark rows: the JSON file others compare against, and the ratio table on stdout.

A row is one measured point: ``workload`` (echo, chain or mesh), ``transport`` (grpc-tcp
or notnets), ``backend``, ``shape`` (unary, stream; chain rows: chain; mesh rows: pair,
one per client and server host, or mesh, the whole mesh), ``size`` (payload bytes),
``depth`` (chain rows: RPC hops end to end), and the numbers p50_us, p99_us, mean_us,
rps, mbps, calls. Mesh rows add ``client`` and ``server`` (pair) or ``hosts`` and
``pairs`` (mesh; rps is then the sum over all clients). Ratios are always gRPC over NotNets (for rps: NotNets over
gRPC), so that "12x" reads as "NotNets is 12 times better" in every column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional

BASELINE, NOTNETS = "grpc-tcp", "notnets"
FORMAT_VERSION = 1


def point_key(row: dict) -> tuple:
    """What identifies a point apart from its transport."""
    if row.get("workload") == "chain":  # a page's size is an outcome there, not a parameter
        return ("chain", row["backend"], row["shape"], row.get("depth", 0), 0)
    if row.get("shape") == "pair":
        return ("mesh", row["backend"], f"pair {row['client']}->{row['server']}", 0, row["size"])
    return (row.get("workload", "echo"), row["backend"], row["shape"], row.get("depth", 0), row["size"])


def pairs(rows: Iterable[dict]) -> list[tuple[dict, dict]]:
    """(baseline row, notnets row) for every point measured over both, in a stable order."""
    by_key: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        by_key.setdefault(point_key(row), {})[row["transport"]] = row
    found = [(t[BASELINE], t[NOTNETS]) for t in by_key.values() if BASELINE in t and NOTNETS in t]
    return sorted(found, key=lambda pair: _order(point_key(pair[0])))


def _order(key: tuple) -> tuple:
    workload, backend, shape, depth, size = key
    return ({"echo": 0, "chain": 1}.get(workload, 2), backend, {"unary": 0, "stream": 1}.get(shape, 2), depth, size,
            shape)


def ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    if not numerator or not denominator:
        return None
    return numerator / denominator


def human_size(size: int) -> str:
    for unit, name in ((1 << 20, "MiB"), (1 << 10, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} B"


def _us(value: float) -> str:
    return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.1f} us"


def _x(value: Optional[float]) -> str:
    return "-" if value is None else (f"{value:.1f}x" if value < 100 else f"{value:.0f}x")


def ratio_table(rows: list[dict]) -> str:
    """The table printed at the end: one line per point, with gRPC/NotNets ratios."""
    header = ("point", "grpc p50", "notnets p50", "p50 x", "grpc p99", "notnets p99", "p99 x", "rps x")
    lines = []
    for base, nn in pairs(r for r in rows if r.get("shape") != "pair"):  # a mesh's pairs: in its heat map
        if base.get("workload") == "chain":
            point = f"{base['backend']} chain depth {base['depth']}"
        elif base.get("workload") == "mesh":
            point = f"{base['backend']} mesh {base['hosts']} hosts {human_size(base['size'])}"
        else:
            point = f"{base['backend']} {base['shape']} {human_size(base['size'])}"
        lines.append((point, _us(base["p50_us"]), _us(nn["p50_us"]), _x(ratio(base["p50_us"], nn["p50_us"])),
                      _us(base["p99_us"]), _us(nn["p99_us"]), _x(ratio(base["p99_us"], nn["p99_us"])),
                      _x(ratio(nn["rps"], base["rps"]))))
    if not lines:
        return "(no point was measured over both transports)"
    widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*row) for row in lines]
    out.append("x = gRPC / NotNets (rps: NotNets / gRPC): above 1 means NotNets is better")
    return "\n".join(out)


def summary_line(rows: list[dict]) -> str:
    """One line for the smallest unary echo: the headline number."""
    echo = [p for p in pairs(rows) if p[0].get("workload", "echo") == "echo" and p[0]["shape"] == "unary"]
    if not echo:
        return ""
    base, nn = min(echo, key=lambda p: p[0]["size"])
    x = ratio(base["p50_us"], nn["p50_us"])
    return (f"{base['backend']}: unary echo {human_size(base['size'])} p50 {_us(base['p50_us'])} over gRPC, "
            f"{_us(nn['p50_us'])} over NotNets: {_x(x)} lower")


def write_results(path: Path, rows: list[dict], meta: dict[str, Any]) -> Path:
    """DIR/results.json: {"format", "meta", "rows"}; written whole, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT_VERSION, "meta": meta, "rows": rows}, indent=1) + "\n")
    tmp.replace(path)
    return path


def read_results(path: Path) -> tuple[list[dict], dict[str, Any]]:
    data = json.loads(path.read_text())
    return data["rows"], data.get("meta", {})
