"""Probe: what a host's kernel boot costs, and what restoring a saved guest costs instead.

    .venv/bin/python scripts/probe_boot_snapshot.py [--accel tcg] [--accel tcg,tb-size=64] [--runs 2]

A question for boot time (issue 16: 16 QEMU hosts READY in 45 s), answered with the
real machine template (CXL pool, 9p shares, agent ports), not a toy VM:

1. boot: one guest with ``rdinit=/bin/sh`` (the kernel only, no init.sh, no 9p
   mount), until its shell answers on the serial console; QEMU CPU seconds then.
   Each ``--accel`` value (TCG options, e.g. ``tcg,tb-size=64``) is booted in turn.
2. save: that guest migrated to a file with ``x-ignore-shared`` (the shared pool and
   the label area are memory-backend-file share=on: skipped, never copied or written
   back); QEMU refuses to migrate while a 9p share is mounted, hence before init.
3. restore: a second guest, another host's argv (its own sockets, label file), started
   with ``-incoming defer`` and given the file; CPU seconds until its shell answers.

Prints one JSON line per run. Holds /tmp/notnets-vm.lock (--lock) while VMs run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emulator.backends.qemu import qmp_control as qmp  # noqa: E402
from emulator.backends.qemu.command import HostPaths, build_qemu_argv  # noqa: E402
from emulator.backends.qemu.process import cpu_seconds  # noqa: E402
from emulator.image.initramfs import build_initramfs  # noqa: E402
from emulator.image.kernel_image import boot_image  # noqa: E402
from emulator.paths import find_kernel  # noqa: E402
from emulator.topology.model import Topology, load_topology  # noqa: E402

TOPOLOGY = ROOT / "examples" / "mesh.yaml"  # eight 512 MiB hosts on one 256 MiB pool
IGNORE_SHARED = {"capabilities": [{"capability": "x-ignore-shared", "state": True}]}


class Guest:
    """One QEMU of the probe; killed by ``stop``."""

    def __init__(self, topo: Topology, host: str, work: Path, pool: Path, accel: str, extra: list[str]) -> None:
        kernel = find_kernel()
        state = work / host
        (state / "hosts" / host).mkdir(parents=True, exist_ok=True)
        self.paths = HostPaths.in_state_dir(state, host, str(boot_image(kernel)), str(build_initramfs(kernel)),
                                            {"pool0": str(pool)}, ["pool0"])
        for lsa in self.paths.lsa.values():
            with open(lsa, "wb") as f:
                f.truncate(1 << 20)
        argv = build_qemu_argv(topo, topo.host(host), self.paths)
        i = argv.index("-append")
        argv[i + 1] = argv[i + 1].replace("rdinit=/init", "rdinit=/bin/sh")
        i = argv.index("-accel")
        argv[i + 1] = accel
        log = open(work / f"{host}.log", "wb")
        self.proc = subprocess.Popen(argv + extra, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid) or 0.0

    def wait_socket(self, path: str, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while not os.path.exists(path):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"probe: QEMU did not create {path}")
            time.sleep(0.02)

    def shell_answers(self, expr: str, expect: str, timeout: float = 300) -> None:
        """Send ``echo EXPR`` to the serial console every second until EXPECT comes back."""
        self.wait_socket(self.paths.console_socket)
        end = time.monotonic() + timeout
        with socket.socket(socket.AF_UNIX) as s:
            while s.connect_ex(self.paths.console_socket) != 0:  # the file exists before QEMU listens
                if time.monotonic() > end:
                    raise SystemExit("probe: the console socket does not answer")
                time.sleep(0.02)
            s.settimeout(0.2)
            seen, sent = b"", 0.0
            while expect.encode() not in seen:
                if time.monotonic() > end:
                    raise SystemExit(f"probe: no {expect!r} on the console: {seen[-300:]!r}")
                if time.monotonic() - sent > 1.0:
                    s.sendall(f"echo {expr}\n".encode())
                    sent = time.monotonic()
                try:
                    seen += s.recv(65536)
                except socket.timeout:
                    pass

    def qmp(self, command: str, args: dict | None = None, timeout: float = 60) -> object:
        self.wait_socket(self.paths.qmp_socket)
        end = time.monotonic() + timeout
        while True:
            try:
                return qmp.execute(self.paths.qmp_socket, command, args, timeout=30)
            except qmp.QMPUnavailable:  # the socket file exists before QEMU listens on it
                if self.proc.poll() is not None or time.monotonic() > end:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def probe(topo: Topology, work: Path, pool: Path, accel: str) -> dict:
    result: dict = {"accel": accel}
    state_file = work / "guest.state"
    first = Guest(topo, "host0", work, pool, accel, [])
    try:
        first.shell_answers("BOOT$((1+1))", "BOOT2")
        result["boot_cpu_s"] = round(first.cpu(), 2)
        first.qmp("migrate-set-capabilities", IGNORE_SHARED)
        before = first.cpu()
        first.qmp("migrate", {"uri": f"exec:cat > {state_file}"})
        while (info := first.qmp("query-migrate")).get("status") not in ("completed", "failed", "cancelled"):
            time.sleep(0.05)
        result["save"] = info.get("status")
        result["save_cpu_s"] = round(first.cpu() - before, 2)
        result["state_mb"] = round(state_file.stat().st_size / 2**20, 1) if state_file.exists() else None
    finally:
        first.stop()
    if result["save"] != "completed":
        result["save_error"] = info.get("error-desc")
        return result
    second = Guest(topo, "host1", work, pool, accel, ["-incoming", "defer"])
    try:
        t0 = time.monotonic()
        second.qmp("migrate-set-capabilities", IGNORE_SHARED)
        second.qmp("migrate-incoming", {"uri": f"exec:cat {state_file}"})
        second.shell_answers("AFTER$((2+3))", "AFTER5")
        result["restore_cpu_s"] = round(second.cpu(), 2)
        result["restore_wall_s"] = round(time.monotonic() - t0, 2)
    finally:
        second.stop()
        state_file.unlink(missing_ok=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accel", action="append", help="-accel value, repeatable (default: tcg)")
    parser.add_argument("--runs", type=int, default=1, help="rounds over the --accel values")
    parser.add_argument("--lock", default="/tmp/notnets-vm.lock", help="lock held while VMs run ('' for none)")
    args = parser.parse_args()
    topo = dataclasses.replace(load_topology(TOPOLOGY, backend="qemu"), network=False)  # no switch needed
    work = Path(tempfile.mkdtemp(prefix="notnets-probe-"))
    pool = work / "pool0"
    try:
        with open(pool, "wb") as f:
            f.truncate(256 << 20)
        for _ in range(args.runs):
            for accel in args.accel or ["tcg"]:
                lock = open(args.lock, "a") if args.lock else None
                try:
                    if lock:
                        import fcntl

                        fcntl.flock(lock, fcntl.LOCK_EX)
                    load = os.getloadavg()[0]
                    print(json.dumps({**probe(topo, work, pool, accel), "load_before": round(load, 2)}), flush=True)
                finally:
                    if lock:
                        lock.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
