"""Markdown tables from bench results, for docs/results.md (so the doc quotes the JSON,
not numbers copied by hand).

    python -m notnets_bench.report bench-out/results.json [more results.json ...]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from notnets_bench.results import human_size, pairs, ratio, read_results


def _ms(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.1f} us"


def _x(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}x"


def markdown_table(rows: list[dict]) -> str:
    """One table: a line per point measured over both transports."""
    out = ["| point | gRPC p50 | NotNets p50 | p50 ratio | gRPC p99 | NotNets p99 | p99 ratio | "
           "gRPC rps | NotNets rps | calls (gRPC/NotNets) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for base, nn in pairs(rows):
        if base.get("workload") == "chain":
            point = f"chain, {base['depth']} hop{'s' if base['depth'] > 1 else ''}"
        else:
            point = f"{base['shape']} {human_size(base['size'])}"
        out.append(f"| {point} | {_ms(base['p50_us'])} | {_ms(nn['p50_us'])} | "
                   f"**{_x(ratio(base['p50_us'], nn['p50_us']))}** | {_ms(base['p99_us'])} | {_ms(nn['p99_us'])} | "
                   f"{_x(ratio(base['p99_us'], nn['p99_us']))} | {base['rps']:.0f} | {nn['rps']:.0f} | "
                   f"{base['calls']}/{nn['calls']} |")
    return "\n".join(out)


def meta_lines(meta: dict) -> str:
    """The run's circumstances, as a short list."""
    versions = meta.get("versions", {})
    pools = ", ".join(f"{p['name']} {p['kind']}" + (f" ({p['note']})" if p.get("note") else "")
                      for p in meta.get("pools", []))
    return "\n".join([
        f"- date (UTC): {meta.get('date_utc')}, commit {meta.get('commit')}, {meta.get('seconds')} s",
        f"- machine: {meta.get('cpus')} x {meta.get('cpu')}, {meta.get('memory_gib')} GiB; "
        f"load average before {meta.get('load_before')}, after {meta.get('load_after')}",
        f"- backend {meta.get('backend')} ({meta.get('accel_note') or meta.get('accel')}); pool: {pools}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v),
        f"- budget per point: {meta.get('budget')}",
        f"- command: `notnets-emu bench {' '.join(meta.get('argv', []))}`",
    ])


def main(argv: Optional[list[str]] = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    usage = "usage: python -m notnets_bench.report RESULTS.json [...]"
    if args and args[0] in ("-h", "--help"):
        print(usage)
        return 0
    if not args:
        print(usage, file=sys.stderr)
        return 2
    for path in map(Path, args):
        try:
            rows, meta = read_results(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"bench_report: {path}: not a readable results.json ({type(exc).__name__}: {exc})", file=sys.stderr)
            return 1
        print(f"### {meta.get('backend', '?')}: {path}\n\n{meta_lines(meta)}\n\n{markdown_table(rows)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
