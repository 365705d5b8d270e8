"""Process bookkeeping that `down` relies on: alive means "still the process we started"."""

from __future__ import annotations

import subprocess
import sys
import time

from emulator.backends.qemu import process as qemu_process
from emulator.backends.qemu.backend import _console_reason


def test_alive_checks_the_marker_and_dead_after_kill(tmp_path):
    marker = str(tmp_path / "qmp.sock")
    proc = qemu_process.start_detached([sys.executable, "-c", "import time; time.sleep(60)", marker],
                                       tmp_path / "log")
    try:
        # Popen returns when the exec closes its error pipe, before the kernel has set up
        # the new command line: for a moment /proc/PID/cmdline is empty (4 of 20 runs
        # failed here under load)
        deadline = time.monotonic() + 30
        while not qemu_process.is_alive(proc.pid, marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert qemu_process.is_alive(proc.pid, marker)
        assert not qemu_process.is_alive(proc.pid, str(tmp_path / "other.sock")), "pid reuse guard"
        qemu_process.kill(proc.pid, marker)
        assert qemu_process.wait_dead(proc.pid, marker, 60.0)  # generous: the machine is shared
    finally:
        proc.kill()
        proc.wait()
    assert not qemu_process.is_alive(proc.pid, marker)
    assert not qemu_process.is_alive(None) and not qemu_process.is_alive(0)


def test_detached_process_has_its_own_session(tmp_path):
    proc = qemu_process.start_detached([sys.executable, "-c", "import os; print(os.getsid(0) == os.getpid())"],
                                       tmp_path / "log")
    proc.wait(10)
    assert (tmp_path / "log").read_text().strip() == "True"
    assert (tmp_path / "log").stat().st_mode & 0o777 == 0o600


def test_zombie_counts_as_dead(tmp_path):
    import os

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    assert not qemu_process.is_alive(proc.pid)
    proc.wait()


def test_console_reason_picks_the_guest_last_words(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("ACPI BIOS Error (bug): noise\nnotnets-init: FATAL: cannot mount /proc\nreboot: Power down\n")
    assert _console_reason(log) == "notnets-init: FATAL: cannot mount /proc"
    assert _console_reason(tmp_path / "missing") == ""


def test_boot_watch_reports_new_milestones_once(tmp_path):
    from emulator.backends.qemu.boot_watch import BootWatch

    log = tmp_path / "console.log"
    watch = BootWatch(str(log))
    assert watch.poll() == []
    log.write_bytes(b"[ 1.0] ACPI noise\nnotnets-init: loading mod")
    assert watch.poll() == ["kernel running"]
    with open(log, "ab") as f:
        f.write(b"ules\nnotnets-init: FATAL: x\n")
    assert watch.poll() == ["loading modules", "FATAL: x"]
    assert watch.poll() == []


def test_boot_watch_of_a_restart_skips_the_earlier_boots(tmp_path):
    """`fault HOST restart`: the console log is appended to; the old boot's FATAL or
    milestones must not be replayed as this boot's."""
    from emulator.backends.qemu.boot_watch import BootWatch

    log = tmp_path / "console.log"
    log.write_bytes(b"notnets-init: old boot\nnotnets-init: FATAL: old\n")
    watch = BootWatch(str(log), offset=log.stat().st_size)
    assert watch.poll() == []
    with open(log, "ab") as f:
        f.write(b"notnets-init: new boot\n")
    assert watch.poll() == ["kernel running", "new boot"]


def test_cpu_seconds_counts_what_the_process_used(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time\nend = time.process_time() + 0.3\n"
                             "while time.process_time() < end: pass\nprint('spun', flush=True)\ninput()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "spun"
        used = qemu_process.cpu_seconds(proc.pid)
        assert used is not None and 0.3 <= used < 30
    finally:
        proc.communicate("", timeout=30)
    assert qemu_process.cpu_seconds(proc.pid) is None  # gone
