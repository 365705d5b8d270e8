"""qmp_control against a real QEMU with no machine (nothing boots; it starts in ~0.1 s)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from qemu.qmp import ExecInterruptedError

from emulator.backends.qemu import qmp_control

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")


def _listening(sock: Path) -> bool:
    """Is some process listening on the unix socket ``sock`` (/proc/net/unix, flag __SO_ACCEPTCON)?"""
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[7] == str(sock) and int(fields[3], 16) & 0x10000:
            return True
    return False


@pytest.fixture
def qemu(tmp_path: Path):
    sock = tmp_path / "qmp.sock"
    proc = subprocess.Popen(["qemu-system-x86_64", "-machine", "none", "-display", "none", "-nodefaults",
                             "-qmp", f"unix:{sock},server=on,wait=off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not _listening(sock):  # the file exists from bind(), before QEMU listens on it
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "QEMU did not listen on its QMP socket"
            time.sleep(0.01)
        yield proc, str(sock)
    finally:
        proc.kill()
        proc.wait(5)


@needs_qemu
def test_quit_is_done_when_qemu_hangs_up_before_replying(qemu):
    proc, sock = qemu
    assert qmp_control.query_status(sock) in ("prelaunch", "running", "paused")
    qmp_control.quit_vm(sock)  # QEMU closes the socket as it exits: success, not QMPUnavailable
    assert proc.wait(5) == 0


@needs_qemu
def test_a_refused_command_is_qmp_unavailable(qemu):
    _, sock = qemu
    with pytest.raises(qmp_control.QMPUnavailable, match="no-such-command"):
        qmp_control.execute(sock, "no-such-command")


def test_no_socket_is_qmp_unavailable(tmp_path: Path):
    with pytest.raises(qmp_control.QMPUnavailable):
        qmp_control.query_status(str(tmp_path / "none.sock"), timeout=0.5)



@pytest.mark.parametrize("command, hung_up_is_success", [("quit", True), ("query-status", False)])
def test_a_hang_up_before_the_reply_is_success_for_quit_only(monkeypatch, command, hung_up_is_success):
    """QEMU may exit on `quit` before its reply is out; qemu.qmp then raises
    ExecInterruptedError (a race: a real QEMU usually replies first)."""
    async def hang_up(*_args):
        raise ExecInterruptedError("Disconnected")

    monkeypatch.setattr(qmp_control, "_execute", hang_up)
    if hung_up_is_success:
        assert qmp_control.execute("qmp.sock", command) == {}
    else:
        with pytest.raises(qmp_control.QMPUnavailable, match="disconnected before replying"):
            qmp_control.execute("qmp.sock", command)
