"""bench's result, table, plot and option code, on made-up rows (no hosts started)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emulator.errors import UserError
from notnets_bench.options import BUDGETS, options_from, parse_bench_args, parse_sizes
from notnets_bench.plots import plot_all
from notnets_bench.results import pairs, ratio_table, read_results, summary_line, write_results
from notnets_bench.stats import percentile, pool_rounds, summarize

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(transport, shape="unary", size=64, p50=100.0, p99=200.0, rps=1000.0, backend="sim", **extra):
    base = {"workload": "echo", "transport": transport, "backend": backend, "shape": shape, "size": size,
            "p50_us": p50, "p99_us": p99, "mean_us": p50, "rps": rps, "mbps": rps * size / 1e6, "calls": 100}
    return {**base, **extra}


def fake_rows():
    rows = []
    for shape in ("unary", "stream"):
        for size in (64, 4096, 1 << 20):
            scale = 1 + size // 4096
            rows.append(row("grpc-tcp", shape, size, p50=600.0 * scale, p99=900.0 * scale, rps=1500 / scale))
            rows.append(row("notnets", shape, size, p50=12.0 * scale, p99=30.0 * scale, rps=60000 / scale))
    for depth in (1, 2, 3):
        rows.append(row("grpc-tcp", "chain", 400, p50=700.0 * depth, p99=1500.0 * depth, rps=1400 / depth,
                        workload="chain", depth=depth, served_by=["frontend@host1"]))
        rows.append(row("notnets", "chain", 396, p50=40.0 * depth, p99=90.0 * depth, rps=20000 / depth,
                        workload="chain", depth=depth, served_by=["frontend@host1"]))
    return rows


def test_pairs_match_each_point_across_transports():
    rows = fake_rows() + [row("notnets", "unary", 128)]  # measured over one transport only
    found = pairs(rows)
    assert len(found) == 9
    assert all(b["transport"] == "grpc-tcp" and n["transport"] == "notnets" for b, n in found)
    assert [b["size"] for b, _ in found[:3]] == [64, 4096, 1 << 20]  # echo unary first, by size
    assert [b["depth"] for b, _ in found[-3:]] == [1, 2, 3]


def test_ratio_table_gives_grpc_over_notnets():
    table = ratio_table(fake_rows())
    first = next(line for line in table.splitlines() if line.startswith("sim unary 64 B"))
    assert first.split()[4:] == ["600.0", "us", "12.0", "us", "50.0x", "900.0", "us", "30.0", "us", "30.0x", "40.0x"]
    assert "sim chain depth 3" in table
    assert "above 1 means NotNets is better" in table


def test_ratio_table_without_pairs_says_so():
    assert "no point" in ratio_table([row("notnets")])


def test_summary_line_picks_the_smallest_unary_point():
    line = summary_line(fake_rows())
    assert line.startswith("sim: unary echo 64 B") and "50.0x lower" in line
    assert summary_line([]) == ""


def test_results_json_round_trip(tmp_path: Path):
    rows = fake_rows()
    path = write_results(tmp_path / "out" / "results.json", rows, {"backend": "sim", "load_before": [0.5]})
    data = json.loads(path.read_text())
    assert data["format"] == 1 and data["meta"]["backend"] == "sim"
    for r in data["rows"]:
        assert {"transport", "backend", "shape", "size", "p50_us", "p99_us", "rps", "calls"} <= set(r)
    assert read_results(path) == (rows, {"backend": "sim", "load_before": [0.5]})
    assert not list(tmp_path.glob("out/*.tmp"))


def test_plots_are_pngs(tmp_path: Path):
    rows = fake_rows() + [dict(r, backend="qemu") for r in fake_rows()]
    written = plot_all(rows, tmp_path)
    names = sorted(p.name for p in written)
    assert names == sorted(f"{b}-{k}.png" for b in ("sim", "qemu") for k in ("latency", "throughput", "chain"))
    for path in written:
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 10_000


def test_plots_of_echo_only_skip_the_chain(tmp_path: Path):
    written = plot_all([r for r in fake_rows() if r["workload"] == "echo"], tmp_path)
    assert sorted(p.name for p in written) == ["sim-latency.png", "sim-throughput.png"]


def test_stats():
    assert percentile([], 0.5) == 0.0
    samples = list(range(1000, 101000, 1000))  # 1..100 us
    stats = summarize(samples, elapsed_s=0.5, size=1000)
    assert stats["calls"] == 100 and stats["p50_us"] == 51.0 and stats["p99_us"] == 100.0
    assert stats["rps"] == 200.0 and stats["mbps"] == 0.2


def test_rounds_are_pooled_over_all_their_samples():
    def row(transport, samples, elapsed):
        return {"workload": "echo", "transport": transport, "backend": "qemu", "shape": "unary", "size": 64,
                **summarize(samples, elapsed, 64), "samples_ns": samples, "elapsed_s": elapsed}

    rows = [row("grpc-tcp", [10_000] * 3, 0.03), row("notnets", [500] * 30, 0.015),
            row("grpc-tcp", [20_000] * 3, 0.06), row("notnets", [400] * 30, 0.012)]
    grpc, notnets = pool_rounds(rows)
    assert grpc["transport"] == "grpc-tcp" and grpc["calls"] == 6 and grpc["rounds"] == 2
    assert grpc["p50_us"] == 20.0 and grpc["p50_rounds_us"] == [10.0, 20.0] and grpc["rps"] == 66.7
    assert notnets["p50_us"] == 0.5 and notnets["calls"] == 60
    assert "samples_ns" not in grpc and "elapsed_s" not in notnets


def test_parse_sizes():
    assert parse_sizes("1M, 64,4K,64") == (64, 4096, 1 << 20)
    for bad in ("", "64,huge", "0", "1G"):
        with pytest.raises(UserError, match="--sizes"):
            parse_sizes(bad)


def test_options_defaults_and_overrides(tmp_path: Path):
    topo = tmp_path / "t.yaml"
    topo.write_text("name: t\n")
    quick = options_from("sim", True, tmp_path, None, "unary,stream", "grpc-tcp,notnets", "echo,chain", None, None,
                         topo, "auto")
    assert quick.budget == BUDGETS[("sim", True)]
    assert quick.budget.sizes[0] == 64 and quick.budget.sizes[-1] == 1 << 20
    tuned = options_from("qemu", False, tmp_path, "64", "stream", "notnets, grpc-tcp", "chain", 7, 0.5, topo, "tcg")
    assert tuned.budget.sizes == (64,) and tuned.budget.calls == 7 and tuned.budget.min_calls == 7
    assert tuned.budget.seconds == 0.5 and tuned.budget.chain_calls == 7
    assert tuned.transports == ("grpc-tcp", "notnets") and tuned.shapes == ("stream",)
    assert quick.rounds == 1 and tuned.rounds == 3  # on QEMU the transports take turns
    assert options_from("qemu", True, tmp_path, None, "unary", "notnets", "echo", None, None, topo, "tcg",
                        rounds=1).rounds == 1
    for kwargs, message in (({"transports": "udp"}, "--transports"), ({"calls": 0}, "--calls"),
                            ({"rounds": 0}, "--rounds"),
                            ({"topology": tmp_path / "missing.yaml"}, "no such file")):
        args = dict(backend="sim", quick=True, out=tmp_path, sizes=None, shapes="unary", transports="notnets",
                    workloads="echo", calls=None, seconds=None, topology=topo, accel="auto")
        with pytest.raises(UserError, match=message):
            options_from(**{**args, **kwargs})


def test_help_returns_no_options(capsys):
    assert parse_bench_args(["--help"]) is None
    assert "--quick" in capsys.readouterr().out


def test_a_silent_agent_is_a_user_error_not_a_traceback(tmp_path: Path):
    """A guest that stops answering (a soft lockup under TCG) fails the workload, one line."""
    from notnets_bench.hosts import HostRunner
    from emulator.runs.state import HostState, RunState

    class SilentBackend:
        name = "qemu"

        def exec(self, *args, **kwargs):
            raise TimeoutError("the guest agent did not answer in time")

        spawn = exec

    run = RunState(name="t", backend="qemu", state_dir=str(tmp_path), hosts=[HostState(name="host0", index=0)])
    runner = HostRunner(run, SilentBackend())  # type: ignore[arg-type]
    assert "GLIBC_TUNABLES" not in runner.env, "the guest agent sets it for every command now"
    assert runner.env["NOTNETS_INTERPOSE"] == "0", "the gRPC baseline stays on the network"
    with pytest.raises(UserError, match="did not answer"):
        runner.exec_lines("host0", "true", 5.0, print, print)
    with pytest.raises(UserError, match="did not start it"):
        runner.start("host0", "sleep 1", "never", 1.0, "server")


def test_plot_legend_names_what_the_baseline_ran_over():
    """The sim plots' title says what sim hosts' network is (a veth bridge between network
    namespaces): the legend says the same."""
    from notnets_bench.plots import BACKEND_NAMES, label
    from notnets_bench.results import BASELINE, NOTNETS

    assert label(BASELINE, "sim") == "gRPC over a veth bridge" and "veth bridge" in BACKEND_NAMES["sim"]
    assert label(BASELINE, "qemu") == "gRPC over the virtual L2"
    assert label(NOTNETS, "sim") == "NotNets (shared CXL pool)"
