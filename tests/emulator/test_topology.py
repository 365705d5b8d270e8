"""The topology schema: what is accepted, and that every error says where."""

from __future__ import annotations

import textwrap

import pytest

from emulator.errors import TopologyError
from emulator.sizes import GiB, MiB, format_size, parse_size
from emulator.topology.model import load_topology, parse_topology

NO_LIMIT = lambda: None  # noqa: E731 - memory probe that never objects

GOOD = """\
name: two-hosts
backend: qemu
pools:
  - name: pool0
    size: 256M
    backing: hugetlbfs
hosts:
  - name: host0
    cpus: 1
    memory: 1G
    pools: [pool0]
  - name: host1
    pools: [pool0]
network: true
run:
  - {on: host0, cmd: "python -m examples.greeter.server", background: true, wait_for: "serving"}
  - {on: host1, cmd: "python -m examples.greeter.client", timeout: 60}
"""


def parse(text: str, probe=NO_LIMIT):
    return parse_topology(textwrap.dedent(text), "topo.yaml", memory_probe=probe)


def error_of(text: str, probe=NO_LIMIT) -> str:
    with pytest.raises(TopologyError) as info:
        parse(text, probe)
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    return message


def test_example_from_the_issue_parses():
    topo = parse(GOOD)
    assert topo.name == "two-hosts"
    assert [h.name for h in topo.hosts] == ["host0", "host1"]
    assert [h.index for h in topo.hosts] == [0, 1]
    assert topo.hosts[1].cpus == 1 and topo.hosts[1].memory == GiB
    assert topo.pools[0].size == 256 * MiB and topo.pools[0].backing == "hugetlbfs"
    assert topo.network is True
    assert topo.run[0].on == "host0" and topo.run[0].background and topo.run[0].wait_for == "serving"
    assert topo.run[1].timeout == 60


def test_pool_identity_is_stable_and_distinct():
    topo = parse(GOOD)
    again = parse(GOOD)
    assert topo.pools[0].uuid == again.pools[0].uuid
    assert 0 < topo.pools[0].serial < 2**48


def test_yaml_syntax_error_names_file_and_line():
    msg = error_of("name: x\nhosts: [\n  - a\n")
    assert msg.startswith("topo.yaml:") and "YAML syntax error" in msg


def test_unknown_key_suggests_the_right_one():
    msg = error_of(GOOD.replace("    cpus: 1", "    cpu: 1"))
    assert msg.startswith("topo.yaml:9: hosts[0].cpu: unknown key 'cpu'")
    assert "did you mean 'cpus'" in msg


def test_unknown_top_level_key():
    msg = error_of(GOOD + "netwrok: false\n")
    assert "unknown key 'netwrok'" in msg and "did you mean 'network'" in msg


def test_unknown_pool_is_named_with_line():
    msg = error_of(GOOD.replace("  - name: host1\n    pools: [pool0]", "  - name: host1\n    pools: [pool1]"))
    assert msg.startswith("topo.yaml:13: hosts[1].pools[0]: unknown pool 'pool1'")
    assert "pool0" in msg


def test_duplicate_host_names():
    msg = error_of(GOOD.replace("name: host1", "name: host0"))
    assert "duplicate host name 'host0'" in msg and "line 8" in msg


def test_duplicate_pool_names():
    text = GOOD.replace("pools:\n  - name: pool0\n", "pools:\n  - name: pool0\n    size: 256M\n  - name: pool0\n", 1)
    assert "duplicate pool name 'pool0'" in error_of(text)


@pytest.mark.parametrize("size,fragment", [
    ("12X", "expected a size"),
    ("-5M", "expected a size"),
    ("100M", "not a multiple of 256M"),
    ("0", "must be positive"),
])
def test_bad_pool_sizes(size, fragment):
    msg = error_of(GOOD.replace("size: 256M", f"size: {size}"))
    assert "pools[0].size" in msg and fragment in msg


def test_sim_backend_accepts_small_pools():
    topo = parse(GOOD.replace("backend: qemu", "backend: sim").replace("size: 256M", "size: 16M"))
    assert topo.pools[0].size == 16 * MiB
    with pytest.raises(TopologyError, match="multiple of 256M"):
        topo.with_backend("qemu")


def test_pool_no_host_uses():
    text = GOOD.replace("    backing: hugetlbfs\n", "    backing: hugetlbfs\n  - name: spare\n    size: 256M\n")
    assert "pool 'spare' is attached to no host" in error_of(text)


def test_more_memory_than_the_machine_has():
    msg = error_of(GOOD, probe=lambda: 1 * GiB)
    assert "needs" in msg and "available" in msg


def test_unknown_host_in_run_step():
    msg = error_of(GOOD.replace("{on: host1,", "{on: host2,"))
    assert "run[1].on: unknown host 'host2'" in msg


def test_missing_required_keys():
    assert "missing required key 'hosts'" in error_of("name: x\n")
    assert "missing required key 'size'" in error_of(GOOD.replace("    size: 256M\n", ""))


def test_empty_file():
    assert "empty" in error_of("")


def test_backing_path_and_errors():
    topo = parse(GOOD.replace("backing: hugetlbfs", "backing: path:/tmp/pool.bin"))
    assert topo.pools[0].backing == "path" and topo.pools[0].path == "/tmp/pool.bin"
    assert "unknown backing" in error_of(GOOD.replace("backing: hugetlbfs", "backing: nvme"))
    assert "absolute" in error_of(GOOD.replace("backing: hugetlbfs", "backing: path:rel/file"))


def test_wrong_types():
    assert "expected a whole number" in error_of(GOOD.replace("cpus: 1", "cpus: many"))
    assert "expected true or false" in error_of(GOOD.replace("network: true", "network: sure"))
    assert "expected true or false" in error_of(GOOD.replace("network: true", "network: true\ninterpose: 0"))
    assert "expected a list" in error_of(GOOD.replace("pools: [pool0]\n  - name: host1", "pools: pool0\n  - name: host1"))


def test_missing_file(tmp_path):
    with pytest.raises(TopologyError, match="no such file"):
        load_topology(tmp_path / "nope.yaml")


def test_sizes_round_trip():
    for text in ("256M", "1G", "4K", "3T"):
        assert format_size(parse_size(text)) == text
    assert parse_size(4096) == 4096
    assert parse_size("2GiB") == 2 * GiB


def test_one_size_grammar_binary_suffixes_and_mb_refused():
    for text in ("64M", "64Mi", "64MiB", "64mib", "65536K", "64 M"):
        assert parse_size(text) == 64 * MiB, text
    assert parse_size("4096B") == 4096
    for text in ("64MB", "1GB", "64KB"):
        with pytest.raises(ValueError, match="ambiguous"):
            parse_size(text)
    msg = error_of(GOOD.replace("size: 256M", "size: 256MB"))
    assert "pools[0].size" in msg and "write 256M or 256MiB" in msg


def test_a_pool_too_small_for_the_layout_is_refused_at_its_line():
    msg = error_of(GOOD.replace("backend: qemu", "backend: sim").replace("size: 256M", "size: 4K"))
    assert "topo.yaml:5: pools[0].size: 4K is too small for a NotNets pool" in msg


def test_backend_override_is_checked_instead_of_the_files():
    small = textwrap.dedent(GOOD.replace("size: 256M", "size: 128M"))
    topo = parse_topology(small, "topo.yaml", memory_probe=NO_LIMIT, backend="sim")
    assert topo.backend == "sim" and topo.pools[0].size == 128 * MiB
    with pytest.raises(TopologyError, match="pools\\[0\\].size: 128M is not a multiple of 256M"):
        parse_topology(small, "topo.yaml", memory_probe=NO_LIMIT)


def test_name_override_is_validated():
    assert parse_topology(textwrap.dedent(GOOD), memory_probe=NO_LIMIT, name="ci-job-7").name == "ci-job-7"
    with pytest.raises(TopologyError, match="--name 'bad name'"):
        parse_topology(textwrap.dedent(GOOD), memory_probe=NO_LIMIT, name="bad name")


def test_a_pool_bigger_than_the_machine_is_named_at_its_own_line():
    msg = error_of(GOOD.replace("size: 256M", "size: 100G"), probe=lambda: 8 * GiB)
    assert "topo.yaml:5: pools[0].size: pool 'pool0' needs 100G" in msg


STEPS = """\
name: s
backend: sim
pools: [{name: p, size: 16M}]
hosts: [{name: a, pools: [p]}, {name: b, pools: [p]}, {name: c, pools: [p]}]
run:
"""


def test_steps_on_all_lists_and_parallel_groups():
    topo = parse(STEPS + "  - {on: all, cmd: x}\n  - {on: [a, c], cmd: y, env: {N: 1, F: false}, workdir: sub,"
                 " continue_on_error: true}\n  - parallel:\n      - {on: b, cmd: s, background: true}\n"
                 "      - {on: a, cmd: t}\n")
    assert [(s.on, s.cmd, s.group, s.label) for s in topo.run] == [
        ("a", "x", 0, "1"), ("b", "x", 0, "1"), ("c", "x", 0, "1"), ("a", "y", 1, "2"), ("c", "y", 1, "2"),
        ("b", "s", 2, "3.1"), ("a", "t", 2, "3.2")]
    assert topo.run[3].env == (("N", "1"), ("F", "false")) and topo.run[3].workdir == "sub"
    assert topo.run[3].continue_on_error and not topo.run[0].continue_on_error


@pytest.mark.parametrize("step,fragment", [
    ("{on: [a, z], cmd: x}", "run[0].on[1]: unknown host 'z'"),
    ("{on: [a, a], cmd: x}", "host 'a' is listed twice"),
    ("{on: [], cmd: x}", "empty list"),
    ("{on: a, cmd: x, env: [A]}", "expected a mapping of variables"),
    ("{on: a, cmd: x, env: {NOTNETS_HOST: b}}", "set by the host itself"),
    ("{on: a, cmd: x, env: {1A: b}}", "is not a variable name"),
    ("{on: a, cmd: x, continue_on_error: 1}", "expected true or false"),
    ("{parallel: []}", "at least one step"),
    ("{parallel: [{on: q, cmd: x}]}", "run[0].parallel[0].on: unknown host 'q'"),
])
def test_bad_steps_are_named(step, fragment):
    assert fragment in error_of(STEPS + f"  - {step}\n")


COHERENCE = """\
name: t
backend: {backend}
pools:
  - {{name: p, size: 256M, {extra}}}
hosts:
  - {{name: h, pools: [p]}}
"""


def test_coherence_defaults_and_values():
    topo = parse_topology(COHERENCE.format(backend="sim", extra="backing: shm"), memory_probe=lambda: None)
    assert (topo.pool("p").coherence, topo.pool("p").seed) == ("coherent", 0)
    topo = parse_topology(COHERENCE.format(backend="sim", extra="coherence: none, evictions_per_s: 0, seed: 3"),
                          memory_probe=lambda: None)
    assert (topo.pool("p").coherence, topo.pool("p").evictions_per_s, topo.pool("p").seed) == ("none", 0.0, 3)
    assert parse_topology(COHERENCE.format(backend="qemu", extra="coherence: software"),
                          memory_probe=lambda: None).pool("p").coherence == "software"


@pytest.mark.parametrize("backend, extra, fragment", [
    ("sim", "coherence: weak", "expected one of coherent, software, none, got 'weak'"),
    ("qemu", "coherence: none", "none is a model that only the sim backend runs"),
    ("sim", "coherence: software, seed: 1", "seed only applies to a pool with coherence: none"),
    ("sim", "coherence: none, evictions_per_s: -1", "evictions_per_s: expected a number >= 0"),
    ("sim", "coherence: none, seed: x", "expected a whole number"),
])
def test_bad_coherence_is_named_with_its_line(backend, extra, fragment):
    with pytest.raises(TopologyError, match=r":4: pools\[0\]\.") as err:
        parse_topology(COHERENCE.format(backend=backend, extra=extra), memory_probe=lambda: None)
    assert fragment in str(err.value)


def _hosts(n: int) -> str:
    return "hosts:\n" + "".join(f"  - {{name: h{i}, memory: 256M, pools: [pool0]}}\n" for i in range(n))


def test_a_pool_must_hold_rings_for_every_host_of_the_topology():
    head = "name: wide\nbackend: sim\npools:\n  - {name: pool0, size: 2M, backing: shm}\n"
    assert parse(head + _hosts(8)).pool_hosts == 8  # 8 partitions fit in 2M...
    msg = error_of(head + _hosts(16))  # ...16 do not
    assert msg.startswith("topo.yaml:4: pools[0].size: 2M is too small for a NotNets pool") and "16 hosts" in msg
    assert parse(head.replace("2M", "256M") + _hosts(16)).pool_hosts == 16
    many = error_of(head.replace("2M", "256M") + _hosts(257))
    assert "hosts: 257 hosts; a pool has host partitions for 256 at most" in many
