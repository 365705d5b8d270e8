"""A host that cannot boot: a clear error naming the host and its console log, and
nothing left running or allocated."""

from __future__ import annotations

import os

import pytest

from harness.cli import Emu, pool_files, qemu_available, running_under

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def emu(tmp_path):
    reason = qemu_available()
    if reason:
        pytest.skip(reason)
    e = Emu(tmp_path / "state", tmp_path)
    try:
        yield e
    finally:
        e.cleanup()


def _topology(tmp_path, name):
    topo = tmp_path / "t.yaml"
    topo.write_text(f"name: {name}\npools:\n  - {{name: pool0, size: 256M}}\nhosts:\n"
                    "  - {name: host0, pools: [pool0]}\n  - {name: host1, pools: [pool0]}\n")
    return topo


def test_missing_kernel_is_one_clear_line(emu, tmp_path):
    name = f"nok{os.getpid()}"
    result = emu("up", str(_topology(tmp_path, name)), "--accel", "tcg",
                 env={"NOTNETS_KERNEL": str(tmp_path / "no-such-vmlinuz")})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "no-such-vmlinuz: no such file" in result.stderr.splitlines()[-1]
    assert running_under(str(emu.state)) == [] and pool_files(name) == []


def test_kernel_that_does_not_boot_names_host_and_console_log(emu, tmp_path):
    from emulator.paths import find_kernel

    name = f"bad{os.getpid()}"
    bogus = tmp_path / "vmlinuz"
    bogus.write_bytes(b"this is not a kernel\n" * 1000)
    result = emu("up", str(_topology(tmp_path, name)), "--accel", "tcg", timeout=200,
                 env={"NOTNETS_KERNEL": str(bogus), "NOTNETS_KERNEL_MODULES": str(find_kernel().modules_dir),
                      "NOTNETS_BOOT_TIMEOUT": "60"})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "did not become ready" in last and ("host host0" in last or "host host1" in last)
    assert "console log: " in last and "/hosts/host" in last
    assert running_under(str(emu.state)) == [], "a QEMU outlived the failed up"
    assert pool_files(name) == [], "pool files outlived the failed up"
    assert not (emu.state / name / "run.json").exists()
