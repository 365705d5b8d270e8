"""`run FILE --junit`: steps with output, a background step with wait_for, a failing step,
JUnit XML, and down always (nothing left behind)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest

from harness.cli import Emu, pool_files, qemu_available, running_under

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


def test_run_steps_junit_and_down(tmp_path):
    reason = qemu_available()
    if reason:
        pytest.skip(reason)
    name = f"run{os.getpid()}"
    topo = tmp_path / "t.yaml"
    topo.write_text(
        f"name: {name}\npools:\n  - {{name: pool0, size: 256M, backing: shm}}\n"
        "hosts:\n  - {name: host0, pools: [pool0]}\n"
        "run:\n"
        "  - {on: host0, cmd: 'for i in 1 2 3; do echo tick $i; sleep 0.3; done; echo serving now', "
        "background: true, wait_for: serving, timeout: 60}\n"
        "  - {on: host0, cmd: 'echo hello from $NOTNETS_HOST', timeout: 60}\n"
        "  - {on: host0, cmd: 'echo oops >&2; exit 7', timeout: 60}\n"
        "  - {on: host0, cmd: 'echo never', timeout: 60}\n")
    junit = tmp_path / "out" / "junit.xml"
    emu = Emu(tmp_path / "state", tmp_path)
    try:
        result = emu("run", str(topo), "--accel", "tcg", "--junit", str(junit), timeout=300)
        assert result.returncode == 1, result.stderr
        assert "[host0] hello from host0" in result.stdout
        assert "[host0] tick 1" in result.stdout
        assert "never" not in result.stdout
        assert "exit code 7" in result.stderr
        suite = ET.parse(junit).getroot().find("testsuite")
        cases = suite.findall("testcase")
        assert len(cases) == 4
        assert suite.get("failures") == "1" and suite.get("skipped") == "1"
        assert "hello from host0" in cases[1].find("system-out").text
        assert "oops" in cases[2].find("system-err").text
        assert running_under(str(emu.state)) == []
        assert pool_files(name) == []
    finally:
        emu.cleanup()
