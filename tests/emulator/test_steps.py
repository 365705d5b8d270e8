"""`run` steps on a fake backend: order, stop at first failure, wait_for, prefixes, JUnit."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

from emulator.runs.junit import build_report
from emulator.runs.state import HostState, RunState, make_private_dir
from emulator.runs.steps import PrefixedStream, StepRunner, summary
from emulator.topology.model import parse_topology
from harness.fakes import FakeBackend


def _setup(tmp_path, steps_yaml, script):
    topo = parse_topology(
        "name: s\npools:\n  - {name: p, size: 256M}\nhosts:\n  - {name: host0, pools: [p]}\n"
        "  - {name: host1, pools: [p]}\nrun:\n" + steps_yaml, memory_probe=lambda: None)
    run = RunState(name="s", backend="fake", state_dir=str(make_private_dir(tmp_path / "s")))
    run.hosts = [HostState(name="host0", index=0, state="ready"), HostState(name="host1", index=1, state="ready")]
    backend = FakeBackend(script=script)
    out, err = io.BytesIO(), io.BytesIO()
    said = []
    runner = StepRunner(run, backend, said.append, out=out, err=err)
    return topo, runner, backend, out, said


def test_foreground_steps_pass_and_output_is_prefixed(tmp_path):
    topo, runner, backend, out, _ = _setup(
        tmp_path, "  - {on: host0, cmd: 'echo a', timeout: 5}\n  - {on: host1, cmd: 'echo b'}\n",
        {"echo a": (0, b"a\npartial"), "echo b": (0, b"b\n")})
    results = runner.run_all(topo.run)
    assert [r.status for r in results] == ["passed", "passed"]
    assert out.getvalue() == b"[host0] a\n[host0] partial\n[host1] b\n"
    assert results[0].stdout == b"a\npartial"
    assert ("exec", "host0", "echo a", 5.0) in backend.calls
    assert summary(results) == (0, "2 passed, 0 failed")


def test_first_failure_stops_and_later_steps_are_skipped(tmp_path):
    topo, runner, _, _, _ = _setup(
        tmp_path, "  - {on: host0, cmd: 'false'}\n  - {on: host0, cmd: 'sleep'}\n  - {on: host1, cmd: 'true'}\n",
        {"false": (3, b""), "sleep": (124, b"")})
    results = runner.run_all(topo.run)
    assert [r.status for r in results] == ["failed", "skipped", "skipped"]
    assert results[0].message == "exit code 3"
    assert summary(results)[0] == 1


def test_timeout_exit_code_is_reported_as_a_timeout(tmp_path):
    topo, runner, _, _, _ = _setup(tmp_path, "  - {on: host0, cmd: 'sleep', timeout: 2}\n", {"sleep": (124, b"")})
    assert runner.run_all(topo.run)[0].message == "timed out after 2 s"


def test_background_wait_for_sees_the_line_in_the_log(tmp_path):
    topo, runner, backend, out, _ = _setup(
        tmp_path,
        "  - {on: host0, cmd: server, background: true, wait_for: serving, timeout: 10}\n"
        "  - {on: host1, cmd: client}\n",
        {"server": (0, b"starting\nserving on 1\n"), "client": (0, b"hi\n")})
    results = runner.run_all(topo.run)
    assert [r.status for r in results] == ["passed", "passed"]
    assert backend.spawned[0][1].startswith(str(tmp_path / "s" / "steps"))
    assert b"[host0] serving on 1\n" in out.getvalue()
    assert results[0].stdout == b"starting\nserving on 1\n"


def test_background_wait_for_that_never_comes_fails(tmp_path):
    topo, runner, _, _, _ = _setup(
        tmp_path, "  - {on: host0, cmd: server, background: true, wait_for: serving, timeout: 0.3}\n",
        {"server": (0, b"crashed\n")})
    result = runner.run_all(topo.run)[0]
    assert result.status == "failed" and "'serving' did not appear within 0.3 s" in result.message


def test_prefixed_stream_keeps_partial_lines_until_close():
    out, capture = io.BytesIO(), bytearray()
    import threading
    s = PrefixedStream("[h] ", out, capture, threading.Lock())
    s.write(b"ab")
    s.write(b"c\nd")
    assert out.getvalue() == b"[h] abc\n"
    s.close()
    assert out.getvalue() == b"[h] abc\n[h] d\n"


def test_junit_has_one_testcase_per_step_with_output(tmp_path):
    topo, runner, _, _, _ = _setup(
        tmp_path, "  - {on: host0, cmd: 'echo a'}\n  - {on: host1, cmd: 'false'}\n  - {on: host1, cmd: x}\n",
        {"echo a": (0, b"a\x01<&>\n"), "false": (1, b"")})
    tree = build_report("s", runner.run_all(topo.run))
    suite = tree.getroot().find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "1" and suite.get("skipped") == "1"
    cases = suite.findall("testcase")
    assert cases[0].find("system-out").text == "a<&>\n"
    assert cases[1].find("failure").get("message") == "exit code 1"
    assert cases[2].find("skipped") is not None
    path = tmp_path / "r.xml"
    from emulator.runs.junit import write_report
    write_report(path, tree)
    assert ET.parse(path).getroot().tag == "testsuites"


def test_junit_for_a_failed_up():
    tree = build_report("s", [], up_error="host host0 did not become ready")
    case = tree.getroot().find("testsuite/testcase")
    assert case.get("name") == "up" and case.find("error") is not None


def test_background_step_that_exits_before_its_line_fails_early(tmp_path):
    from harness.fakes import ExitingBackend

    topo, runner, _, _, _ = _setup(
        tmp_path, "  - {on: host0, cmd: server, background: true, wait_for: serving, timeout: 600}\n",
        {"server": (0, b"Traceback: boom\n")})
    runner.backend = ExitingBackend(1, script={"server": (0, b"Traceback: boom\n")})
    result = runner.run_all(topo.run)[0]
    assert result.status == "failed"
    assert result.message == "exited with code 1 before 'serving' appeared"


def test_interrupt_marks_the_running_step_and_keeps_results(tmp_path):
    import pytest

    topo, runner, backend, _, _ = _setup(tmp_path, "  - {on: host0, cmd: a}\n  - {on: host0, cmd: b}\n", {})

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    backend.exec = interrupted
    with pytest.raises(KeyboardInterrupt):
        runner.run_all(topo.run)
    assert [r.status for r in runner.results] == ["error", "skipped"]
    assert "interrupted" in runner.results[0].message
