#!/usr/bin/env python3
"""What the write-back rule costs: NotNets calls on a coherent pool against pools
formatted for software coherence, in the same run, interleaved (docs/coherence.md).

    .venv/bin/python scripts/bench_coherence.py [--rounds 3] [--quick] [--out bench-out]

Three pools on /dev/shm, one echo server each (separate processes, as in bench_rpc.py):
    coherent        formatted coherent: plain memory, the rings index it directly
    software        formatted for software coherence, on a coherent file: every access
                    goes through coherent_memory.SoftwareCoherent (the rule's Python cost)
    software+insn   the same with NOTNETS_CXL_MODE=native: CLWB/CLFLUSHOPT and fences run
                    on every access, as on a DAX device (the instructions' cost on this CPU)
Reports 64 B unary p50 and 1 MiB unary throughput, and each against coherent.
Writes OUT/bench_coherence.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from bench_rpc import MALLOC_ENV, load_average, run_client, start_server, stop_servers  # noqa: E402

CONFIGS = {  # name: (pool coherence, extra environment)
    "coherent": ("coherent", {}),
    "software": ("software", {"NOTNETS_CXL_MODE": "coherent"}),
    "software+insn": ("software", {"NOTNETS_CXL_MODE": "native"}),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    args = parser.parse_args(argv)
    import notnets_rpc

    scale = 0.1 if args.quick else 1.0
    cases = [("unary 64 B", 64, max(200, int(10000 * scale))), ("unary 1 MiB", 1 << 20, max(20, int(300 * scale)))]
    base_env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **MALLOC_ENV)
    base_env.pop("NOTNETS_HOST_ID", None)
    pools, envs, servers = {}, {}, {}
    results: dict = {"machine": {"cpus": os.cpu_count(), "load_before": load_average()}, "rounds": args.rounds,
                     "cases": []}
    try:
        for name, (coherence, extra) in CONFIGS.items():
            pools[name] = f"/dev/shm/notnets-bench-coh-{uuid.uuid4().hex[:8]}"
            notnets_rpc.create_pool(pools[name], 1 << 30, coherence=coherence)  # 4 MiB rings
            envs[name] = {**base_env, **extra}
            servers[name] = start_server("notnets:echo", pools[name], envs[name])
        for label, size, calls in cases:
            runs: dict = {name: [] for name in CONFIGS}
            for _ in range(args.rounds):
                for name in CONFIGS:
                    r = run_client("notnets:echo", pools[name], size, calls, "unary", envs[name],
                                   warmup=max(10, calls // 20))
                    runs[name].append(r)
                    print(f"  {label:<12} {name:<14} p50 {r['p50_us']:>9.1f} us  {r['mbps']:>9.1f} MB/s", flush=True)
            case = {"label": label, "size": size, "calls": calls}
            for name, rs in runs.items():
                case[name] = {k: statistics.median(r[k] for r in rs) for k in ("p50_us", "p99_us", "rps", "mbps")}
            for name in ("software", "software+insn"):
                case[f"{name}_p50_ratio"] = round(case[name]["p50_us"] / case["coherent"]["p50_us"], 2)
                case[f"{name}_throughput_ratio"] = round(case[name]["mbps"] / case["coherent"]["mbps"], 2)
            results["cases"].append(case)
    finally:
        stop_servers(servers.values())
        for path in pools.values():
            Path(path).unlink(missing_ok=True)
    results["machine"]["load_after"] = load_average()
    print(f"\n{'case':<12} " + " ".join(f"{n + ' p50':>20} {n + ' MB/s':>20}" for n in CONFIGS))
    for c in results["cases"]:
        print(f"{c['label']:<12} " + " ".join(f"{c[n]['p50_us']:>18.1f}us {c[n]['mbps']:>20.1f}" for n in CONFIGS))
        print(f"{'':<12} vs coherent: software p50 x{c['software_p50_ratio']}, throughput x"
              f"{c['software_throughput_ratio']}; software+insn p50 x{c['software+insn_p50_ratio']}, "
              f"throughput x{c['software+insn_throughput_ratio']}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_coherence.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'bench_coherence.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
