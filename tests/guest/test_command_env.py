"""The environment a host's commands start from: pools without hardware coherence."""

from __future__ import annotations

import json

from guest.agent import command_env
from guest.pools import PoolDevice

CONFIG = {"path": "/venv/bin:/bin", "venv": "/venv", "host": "h1", "host_id": 1, "state_dir": "/state"}


def test_pools_without_hardware_coherence_are_named_for_notnets_rpc():
    config = {**CONFIG, "pools": [{"name": "a", "coherence": "software"}, {"name": "b"},
                                  {"name": "c", "coherence": "none"}, {"name": "d", "coherence": "coherent"}]}
    devices = [PoolDevice("a", "/dev/dax0.0", 1, 0, "region0"), PoolDevice("b", "/dev/dax1.0", 1, 0, "region1"),
               PoolDevice("c", "/dev/shm/x.coherence/host-1.view", 1, 0, "file"),
               PoolDevice("d", "/dev/dax2.0", 1, 0, "region2")]
    env = command_env(config, devices)
    assert json.loads(env["NOTNETS_COHERENCE"]) == {"/dev/dax0.0": "software",
                                                    "/dev/shm/x.coherence/host-1.view": "software"}
    assert env["NOTNETS_POOL_C"] == "/dev/shm/x.coherence/host-1.view"
    assert "NOTNETS_COHERENCE" not in command_env({**CONFIG, "pools": [{"name": "b"}]}, devices[1:2])
