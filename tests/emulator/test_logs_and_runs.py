"""`logs` (several logs, prefixes, --tail, -f), `exec -e` parsing, and the run registry
that lets every verb find a run from any directory."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest

from emulator.errors import UserError
from emulator.runs.guest_env import parse_env_options, resolve_workdir
from emulator.runs.log_follow import host_sources, print_logs
from emulator.runs.registry import register, registered, registry_dir, unregister
from emulator.runs.state import RunState, all_runs, make_private_dir, resolve_run, visible_runs


def _host_logs(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    (state / "hosts" / "h0" / "exec").mkdir(parents=True)
    (state / "hosts" / "h1").mkdir(parents=True)
    (state / "steps").mkdir()
    (state / "hosts" / "h0" / "console.log").write_bytes(b"boot 1\nboot 2\nready\n")
    (state / "hosts" / "h0" / "exec" / "20261204-190000-77.log").write_bytes(b"detached out\nno newline")
    (state / "hosts" / "h1" / "console.log").write_bytes(b"h1 ready\n")
    (state / "steps" / "02-h1.log").write_bytes(b"serving\n")
    return state


def _sources(state: Path, *hosts: str):
    return lambda: [s for h in hosts for s in host_sources(state, h, state / "hosts" / h / "console.log")]


def test_several_logs_get_host_prefixes_detached_and_steps_included(tmp_path):
    state = _host_logs(tmp_path)
    out = io.BytesIO()
    assert print_logs(_sources(state, "h0", "h1"), follow=False, alive=lambda: False, out=out) == 4
    lines = out.getvalue().decode().splitlines()
    assert lines[:4] == ["h0         | boot 1", "h0         | boot 2", "h0         | ready",
                         "h0[77]     | detached out"]
    assert "h1         | h1 ready" in lines and "h1[step 2] | serving" in lines
    assert "h0[77]     | no newline" in lines  # a last line without newline is still printed


def test_one_log_is_printed_raw_and_tail_keeps_the_last_lines(tmp_path):
    state = tmp_path / "s"
    (state / "hosts" / "h0").mkdir(parents=True)
    (state / "hosts" / "h0" / "console.log").write_bytes(b"a\nb\nc\n")
    out = io.BytesIO()
    print_logs(_sources(state, "h0"), follow=False, alive=lambda: False, tail=2, out=out)
    assert out.getvalue() == b"b\nc\n"
    out = io.BytesIO()
    print_logs(_sources(_host_logs(tmp_path), "h0"), follow=False, alive=lambda: False, tail=1, out=out)
    assert out.getvalue().decode().splitlines() == ["h0     | ready", "h0[77] | no newline"]


def test_follow_prints_new_lines_and_new_logs_until_the_hosts_end(tmp_path):
    state = _host_logs(tmp_path)
    out = io.BytesIO()
    done = threading.Event()
    thread = threading.Thread(target=lambda: print_logs(_sources(state, "h1"), follow=True, alive=lambda: not done.is_set(),
                                                        out=out, poll=0.02))
    thread.start()
    try:
        with open(state / "hosts" / "h1" / "console.log", "ab") as f:
            f.write(b"later line\n")
        (state / "hosts" / "h1" / "exec").mkdir()
        (state / "hosts" / "h1" / "exec" / "20261204-190001-88.log").write_bytes(b"new command\n")
        deadline = time.monotonic() + 10
        while b"new command" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        done.set()
        thread.join(10)
    text = out.getvalue().decode()
    assert "later line" in text and "h1[88]" in text and "new command" in text


def test_exec_env_options():
    assert parse_env_options(["A=1", "B=", "C=x=y", "HOME"], environ={"HOME": "/h"}) == {
        "A": "1", "B": "", "C": "x=y", "HOME": "/h"}
    assert parse_env_options(["UNSET"], environ={}) == {}
    with pytest.raises(UserError, match="not a variable name") as info:
        parse_env_options(["1A=2"])
    assert info.value.exit_code == 2
    with pytest.raises(UserError, match="set by the host itself"):
        parse_env_options(["NOTNETS_POOL=x"])
    assert resolve_workdir("sub", "/a/b") == "/a/b/sub" and resolve_workdir("/x", "/a") == "/x"
    assert resolve_workdir(None, "/proc/1") is None


def _state(directory: Path, name: str) -> RunState:
    run = RunState(name=name, backend="sim", state_dir=str(make_private_dir(directory / name)))
    run.save()
    return run


def test_a_registered_run_is_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    monkeypatch.delenv("NOTNETS_STATE", raising=False)
    run = _state(tmp_path / "checkout" / ".notnets" / "runs", "far")
    register(run.name, run.state_dir)
    assert registry_dir() == tmp_path / "xdg" / "notnets" / "runs"
    monkeypatch.chdir(tmp_path)
    assert resolve_run(None).state_dir == run.state_dir
    assert resolve_run("far").name == "far"
    assert list(visible_runs()) == ["far"] and list(all_runs()) == ["far"]
    Path(run.state_dir, "run.json").unlink()  # the run is gone (down, a crash): its link goes too
    assert registered() == {}
    with pytest.raises(UserError, match="no run is up"):
        resolve_run(None)


def test_notnets_state_isolates_the_default_but_name_still_finds_a_registered_run(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    elsewhere = _state(tmp_path / "other", "elsewhere")
    register(elsewhere.name, elsewhere.state_dir)
    monkeypatch.setenv("NOTNETS_STATE", str(tmp_path / "mine"))
    with pytest.raises(UserError, match="no run is up"):
        resolve_run(None)
    assert resolve_run("elsewhere").state_dir == elsewhere.state_dir
    unregister("elsewhere", elsewhere.state_dir)
    with pytest.raises(UserError, match="no run named 'elsewhere'"):
        resolve_run("elsewhere")


def test_a_registry_another_user_could_write_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    run = _state(tmp_path / "runs", "r")
    register(run.name, run.state_dir)
    os.chmod(registry_dir(), 0o777)
    assert registered() == {}
