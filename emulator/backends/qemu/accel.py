"""Choosing the QEMU accelerator: KVM only when a short boot proves it works.

/dev/kvm can exist and still hang every guest (nested virtualisation without support),
so its presence proves nothing. The probe boots the guest kernel with no root file
system: a working KVM reaches "Kernel panic ... VFS: Unable to mount root fs" within a
few seconds. The verdict is cached per machine boot (boot_id), since KVM does not start
or stop working while the machine runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

from emulator.paths import Kernel, cache_dir

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
PROBE_TIMEOUT = 10.0
# Lines that show the kernel ran far enough under KVM (it has no root fs to go further).
SUCCESS_MARKERS = ("Kernel panic", "VFS: Unable to mount root fs", "Run /init as init process",
                   "No working init found")


def _boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return "unknown"


def _cache_file() -> Path:
    return cache_dir() / "accel" / f"kvm-{_boot_id()}.json"


def _probe_argv(kernel: Kernel) -> list[str]:
    return [
        "qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-smp", "1", "-m", "256M",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", "stdio", "-kernel", str(kernel.vmlinuz),
        "-append", "console=ttyS0 panic=-1 root=/dev/notnets-none",
    ]


def _boot_probe(kernel: Kernel, timeout: float) -> tuple[bool, str]:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
    except OSError as err:
        return False, f"/dev/kvm cannot be opened ({err.strerror})"
    start = time.monotonic()
    try:
        proc = subprocess.Popen(_probe_argv(kernel), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
    except FileNotFoundError:
        return False, "qemu-system-x86_64 not found"
    output = b""
    try:
        output, _ = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        timed_out = True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = output.decode(errors="replace")
    elapsed = time.monotonic() - start
    if any(marker in text for marker in SUCCESS_MARKERS):
        return True, f"KVM works (guest kernel ran to its end in {elapsed:.1f} s)"
    if timed_out:
        return False, f"a KVM guest did not get through boot in {timeout:.0f} s (nested virtualisation?)"
    last = next((line for line in reversed(text.strip().splitlines()) if line.strip()), "no output")
    return False, f"a KVM guest failed to boot: {last.strip()[:160]}"


def probe_kvm(kernel: Kernel, timeout: float = PROBE_TIMEOUT, use_cache: bool = True,
              boot: Optional[Callable[[Kernel, float], tuple[bool, str]]] = None) -> tuple[bool, str]:
    """(works, reason): whether QEMU can boot this kernel under KVM here, and why (not)."""
    cache = _cache_file()
    if use_cache:
        try:
            data = json.loads(cache.read_text())
            return bool(data["ok"]), str(data["reason"]) + " (cached for this boot)"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    ok, reason = (boot or _boot_probe)(kernel, timeout)
    if not os.path.exists("/dev/kvm"):
        return ok, reason  # nothing worth caching: the cheap check decides every time
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"ok": ok, "reason": reason, "at": time.time()}))
    except OSError:
        pass
    return ok, reason


def choose_accel(requested: str, kernel: Kernel,
                 probe: Callable[[Kernel], tuple[bool, str]] = probe_kvm) -> tuple[str, str]:
    """(accel, sentence for the user) for ``--accel auto|kvm|tcg``."""
    if requested == "tcg":
        return "tcg", "accel: tcg (as asked)"
    if requested == "kvm":
        return "kvm", "accel: kvm (as asked, not probed)"
    ok, reason = probe(kernel)
    if ok:
        return "kvm", f"accel: kvm ({reason})"
    return "tcg", f"accel: tcg, KVM not usable: {reason}"
