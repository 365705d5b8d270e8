"""`run` steps on a fake backend: order, stop at first failure, wait_for, prefixes, JUnit."""

from __future__ import annotations

import io
import threading
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


def _three_hosts(tmp_path, steps_yaml, backend):
    topo = parse_topology(
        "name: s\nbackend: sim\npools:\n  - {name: p, size: 16M}\nhosts:\n  - {name: h0, pools: [p]}\n"
        "  - {name: h1, pools: [p]}\n  - {name: h2, pools: [p]}\nrun:\n" + steps_yaml, memory_probe=lambda: None)
    run = RunState(name="s", backend="fake", state_dir=str(make_private_dir(tmp_path / "s")))
    run.hosts = [HostState(name=f"h{i}", index=i, state="ready") for i in range(3)]
    said = []
    runner = StepRunner(run, backend, said.append, out=io.BytesIO(), err=io.BytesIO(), base_dir="/topo/dir")
    return topo, runner, said


class MeetingBackend(FakeBackend):
    """'meet' on each host returns only once every host got there: passes only in parallel."""

    def __init__(self, hosts: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.barrier = threading.Barrier(hosts, timeout=10)

    def exec(self, run, host, command, **kwargs):
        if command == "meet":
            try:
                self.barrier.wait()
            except threading.BrokenBarrierError:
                return 9
        return super().exec(run, host, command, **kwargs)


def test_on_all_runs_on_every_host_at_once(tmp_path):
    topo, runner, said = _three_hosts(tmp_path, "  - {on: all, cmd: meet, timeout: 20}\n", MeetingBackend(3))
    results = runner.run_all(topo.run)
    assert [(r.step.on, r.status) for r in results] == [("h0", "passed"), ("h1", "passed"), ("h2", "passed")]
    assert sum("step 1 on h" in line and "passed" in line for line in said) == 3


def test_parallel_group_runs_its_steps_together(tmp_path):
    topo, runner, _ = _three_hosts(
        tmp_path, "  - parallel:\n      - {on: h0, cmd: meet}\n      - {on: [h1, h2], cmd: meet}\n",
        MeetingBackend(3))
    assert [r.status for r in runner.run_all(topo.run)] == ["passed"] * 3


def test_a_failure_skips_the_rest_and_every_skipped_step_says_why(tmp_path):
    topo, runner, said = _three_hosts(
        tmp_path, "  - {on: h1, cmd: bad}\n  - {on: h2, cmd: pytest}\n  - {on: [h0, h2], cmd: more}\n",
        FakeBackend(script={"bad": (2, b"")}))
    results = runner.run_all(topo.run)
    assert [r.status for r in results] == ["failed", "skipped", "skipped", "skipped"]
    assert all(r.message == "step 1 on h1 failed" for r in results[1:])
    assert "step 2 on h2: skipped (step 1 on h1 failed)" in said
    assert "step 3 on h0: skipped (step 1 on h1 failed)" in said and "step 3 on h2: skipped (step 1 on h1 failed)" in said


def test_continue_on_error_goes_on_and_still_fails_the_run(tmp_path):
    topo, runner, said = _three_hosts(
        tmp_path, "  - {on: h1, cmd: bad, continue_on_error: true}\n  - {on: h2, cmd: good}\n",
        FakeBackend(script={"bad": (2, b"")}))
    results = runner.run_all(topo.run)
    assert [r.status for r in results] == ["failed", "passed"]
    assert any("continue_on_error" in line for line in said)
    assert summary(results)[0] == 1


def test_step_env_and_workdir(tmp_path):
    backend = FakeBackend()
    topo, runner, _ = _three_hosts(
        tmp_path, "  - {on: h0, cmd: a, env: {MODE: fast, N: 3}, workdir: sub}\n"
        "  - {on: h1, cmd: b, workdir: /abs}\n  - {on: h2, cmd: c}\n", backend)
    runner.run_all(topo.run)
    cwd, env = backend.where[("h0", "a")]
    assert cwd == "/topo/dir/sub" and env["MODE"] == "fast" and env["N"] == "3" and env["NOTNETS_RUN"] == "s"
    assert backend.where[("h1", "b")][0] == "/abs"
    assert backend.where[("h2", "c")][0] == runner.cwd and "MODE" not in backend.where[("h2", "c")][1]


def test_junit_merges_the_tests_of_the_steps_reports(tmp_path):
    from emulator.runs.junit import merge_reports

    artifacts = tmp_path / "artifacts"
    (artifacts / "h2" / "reports").mkdir(parents=True)
    (artifacts / "h2" / "reports" / "pytest.xml").write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="3" failures="1" errors="0" skipped="1">'
        '<testcase classname="t" name="test_a"/><testcase classname="t" name="test_b"><failure message="x"/>'
        '</testcase><testcase classname="t" name="test_c"><skipped/></testcase></testsuite></testsuites>')
    (artifacts / "h0").mkdir()
    (artifacts / "h0" / "broken.xml").write_text("<testsuite")
    topo, runner, _ = _three_hosts(tmp_path, "  - {on: h2, cmd: pytest}\n", FakeBackend())
    report = build_report("s", runner.run_all(topo.run))
    merged = merge_reports(report, artifacts)
    assert len(merged) == 2
    root = report.getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("5", "1", "1", "1")
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert [c.get("name") for c in suites["h2: pytest"].findall("testcase")] == ["test_a", "test_b", "test_c"]
    assert suites["h0: broken.xml"].find("testcase/error") is not None
