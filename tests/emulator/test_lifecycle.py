"""up/down around any backend: pools made and released, failures leave nothing, stale runs."""

from __future__ import annotations

import pytest

from emulator.errors import UserError
from emulator.progress import Progress
from emulator.runs import lifecycle
from emulator.runs.state import list_runs, load_run
from emulator.topology.model import parse_topology
from harness.fakes import FakeBackend

TOPO = """
name: life
pools:
  - {name: pool0, size: 256M, backing: shm}
  - {name: pool1, size: 256M, backing: shm}
hosts:
  - {name: host0, pools: [pool0]}
  - {name: host1, pools: [pool0, pool1]}
"""


class Lines:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass


@pytest.fixture
def env(tmp_path, monkeypatch):
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setenv("NOTNETS_STATE", str(tmp_path / "runs"))
    # runs these tests leave "up" (their state stays in tmp_path) must not be listed by
    # later tests' `ls` and run lookups: a registry of their own
    registry = tmp_path / "xdg-runtime"
    registry.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(registry))
    monkeypatch.setattr("emulator.pools.files.SHM_DIR", shm)
    monkeypatch.setattr("emulator.pools.backing.SHM_DIR", shm)
    original = lifecycle.PoolAllocator

    def allocator(name, say):
        return original(name, say, hugetlbfs=tmp_path / "nohuge", shm=shm, may_raise_hugepages=False)

    monkeypatch.setattr(lifecycle, "PoolAllocator", allocator)
    backend = FakeBackend()
    monkeypatch.setattr(lifecycle, "get_backend", lambda name: backend)
    return tmp_path, shm, backend


def topology():
    return parse_topology(TOPO, memory_probe=lambda: None)


def test_up_records_hosts_and_pools_then_down_releases(env):
    tmp, shm, backend = env
    run = lifecycle.bring_up(topology(), "tcg", Progress(quiet=True))
    saved = load_run(tmp / "runs" / "life")
    assert saved.state == "up"
    assert [h.state for h in saved.hosts] == ["ready", "ready"]
    assert saved.host("host1").pools == {"pool0": "/dev/dax0.0", "pool1": "/dev/dax1.0"}
    assert sorted(p.name for p in shm.iterdir()) == ["notnets-life-pool0", "notnets-life-pool1"]
    lifecycle.tear_down(run, keep_pools=False, progress=Progress(quiet=True))
    assert list(shm.iterdir()) == []
    assert list_runs(tmp / "runs") == []


def test_a_host_that_fails_tears_everything_down_and_names_host_and_log(env):
    tmp, shm, backend = env
    backend.fail_host = "host1"
    out = Lines()
    with pytest.raises(UserError) as err:
        lifecycle.bring_up(topology(), "tcg", Progress(stream=out))
    message = str(err.value)
    assert "host host1 did not become ready: kernel panic" in message
    assert "hosts/host1/console.log" in message
    assert backend.calls == [("stop", ("host0", "host1"))]
    assert list(shm.iterdir()) == []
    assert list_runs(tmp / "runs") == []
    assert "host1: failed: kernel panic" in out.text


def test_second_up_of_a_live_run_is_refused(env):
    lifecycle.bring_up(topology(), "tcg", Progress(quiet=True))
    with pytest.raises(UserError, match="already up.*down --name life"):
        lifecycle.bring_up(topology(), "tcg", Progress(quiet=True))


def test_stale_run_whose_hosts_died_is_cleaned_by_the_next_up(env):
    tmp, shm, backend = env
    lifecycle.bring_up(topology(), "tcg", Progress(quiet=True))
    backend.running.clear()  # every QEMU died behind our back
    out = Lines()
    lifecycle.bring_up(topology(), "tcg", Progress(stream=out))
    assert "cleaning up an earlier run whose hosts are all dead" in out.text
    assert load_run(tmp / "runs" / "life").state == "up"


def test_half_written_state_dir_does_not_block_up(env):
    tmp, shm, backend = env
    (tmp / "runs" / "life" / "hosts").mkdir(parents=True)
    lifecycle.bring_up(topology(), "tcg", Progress(quiet=True))
    assert load_run(tmp / "runs" / "life").state == "up"


def test_unwritable_state_dir_is_one_clear_error(env, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("NOTNETS_STATE", str(blocker / "runs"))
    with pytest.raises(UserError, match="cannot create the run's state dir .*NOTNETS_STATE"):
        lifecycle.bring_up(topology(), "tcg", Progress(quiet=True))
