"""The run state file: round trip, atomic private files, --name resolution, forgetting."""

from __future__ import annotations

import json
import stat

import pytest

from emulator.errors import UserError
from emulator.runs.state import (HostState, PoolState, RunState, forget_run, list_runs, load_run,
                                make_private_dir, resolve_run)


def _run(root, name="r1"):
    d = make_private_dir(root / name)
    run = RunState(name=name, backend="qemu", state_dir=str(d))
    run.hosts.append(HostState(name="host0", index=0, pid=123, pools={"pool0": "/dev/dax0.0"}))
    run.pools.append(PoolState(name="pool0", size=256 << 20, kind="shm", backing="/dev/shm/x"))
    run.save()
    return run


def test_round_trip_and_modes(tmp_path):
    run = _run(tmp_path)
    again = load_run(tmp_path / "r1")
    assert again == run
    assert stat.S_IMODE((tmp_path / "r1").stat().st_mode) == 0o700
    assert stat.S_IMODE(run.path.stat().st_mode) == 0o600
    data = json.loads(run.path.read_text())
    assert data["hosts"][0]["pools"] == {"pool0": "/dev/dax0.0"}
    assert data["pools"][0]["backing"] == "/dev/shm/x"


def test_unknown_fields_are_ignored_for_forward_compatibility(tmp_path):
    run = _run(tmp_path)
    data = json.loads(run.path.read_text())
    data["future_field"] = 1
    run.path.write_text(json.dumps(data))
    assert load_run(tmp_path / "r1").name == "r1"


def test_damaged_state_is_a_clear_error(tmp_path):
    _run(tmp_path).path.write_text("{not json")
    with pytest.raises(UserError, match="damaged run state"):
        load_run(tmp_path / "r1")


def test_resolve_defaults_to_the_only_run(tmp_path):
    _run(tmp_path, "only")
    assert resolve_run(None, tmp_path).name == "only"


def test_resolve_with_several_runs_lists_them(tmp_path):
    _run(tmp_path, "a")
    _run(tmp_path, "b")
    with pytest.raises(UserError, match="several runs are up: a, b; pick one with --name"):
        resolve_run(None, tmp_path)
    assert resolve_run("b", tmp_path).name == "b"


def test_resolve_with_no_run_or_unknown_name(tmp_path):
    with pytest.raises(UserError, match="no run is up"):
        resolve_run(None, tmp_path)
    _run(tmp_path, "a")
    with pytest.raises(UserError, match=r"no run named 'zz'.*\(runs: a\)"):
        resolve_run("zz", tmp_path)


def test_dir_without_state_file_is_not_a_run(tmp_path):
    (tmp_path / "half").mkdir()
    assert list_runs(tmp_path) == []


def test_unknown_host_lists_the_hosts(tmp_path):
    with pytest.raises(UserError, match=r"no host 'hostX' \(hosts: host0\)"):
        _run(tmp_path).host("hostX")


def test_forget_keeps_logs_only(tmp_path):
    run = _run(tmp_path)
    hdir = make_private_dir(tmp_path / "r1" / "hosts" / "host0")
    (hdir / "console.log").write_text("boot")
    (hdir / "pool0.lsa").write_text("")
    (hdir / "qmp.sock").write_text("")
    forget_run(run)
    assert (hdir / "console.log").read_text() == "boot"
    assert not (hdir / "pool0.lsa").exists() and not (hdir / "qmp.sock").exists()
    assert list_runs(tmp_path) == []
