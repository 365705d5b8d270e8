"""The runtime's example topologies stay valid as the schema evolves."""

from pathlib import Path

import pytest

from emulator.topology.model import load_topology

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", ["examples/three-hosts-two-pools.yaml", "examples/ci/notnets-topology.yaml",
                                  "examples/unmodified/two-hosts-sim.yaml",
                                  "examples/unmodified/two-hosts-sim-tcp.yaml"])
def test_example_topology_is_valid(path):
    topology = load_topology(REPO / path, memory_probe=lambda: None)
    assert topology.run, "examples show `run` steps"


def test_three_host_example_isolates_pools():
    topology = load_topology(REPO / "examples/three-hosts-two-pools.yaml", memory_probe=lambda: None)
    assert {h.name: h.pools for h in topology.hosts} == {
        "host0": ("pool0",), "host1": ("pool0", "pool1"), "host2": ("pool1",)}
