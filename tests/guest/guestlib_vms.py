"""Boot a topology's hosts as real QEMU VMs for the guest e2e tests, without `notnets-emu up`.

The guest side is tested on its own: the same argv builder and file layout as the host
runtime (emulator.backends.qemu.command), pools backed by /dev/shm files named after this process, a
short state dir under /tmp (unix socket paths are limited to 108 bytes). ``close()``
kills every process it started and removes every file it made.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from emulator.backends.agent_client import AgentClient
from emulator.backends.qemu.command import HostPaths, build_qemu_argv, load_template
from emulator.image.guest_config import write_guest_config
from emulator.image.initramfs import build_initramfs
from emulator.image.kernel_image import boot_image
from emulator.paths import find_kernel
from emulator.sizes import parse_size
from emulator.topology.model import Topology, parse_topology

SCRIPTS = Path(__file__).resolve().parent / "guest_scripts"


class Cluster:
    """The VMs of one topology; use as a context manager."""

    def __init__(self, topology_yaml: str, lsa_size: Optional[str] = None, pvh: bool = True) -> None:
        self.topology: Topology = parse_topology(topology_yaml, memory_probe=lambda: None)
        self.lsa_size = lsa_size  # None: the template's
        self.pvh = pvh  # boot the uncompressed vmlinux (emulator.image.kernel_image) rather than the bzImage
        self.state = Path(tempfile.mkdtemp(prefix="nn-e2e-"))
        self.backing = {p.name: Path(f"/dev/shm/notnets-guest-e2e-{os.getpid()}-{p.name}") for p in self.topology.pools}
        self.procs: dict[str, subprocess.Popen] = {}
        self.paths: dict[str, HostPaths] = {}
        self.vde_pid: Optional[int] = None
        self.started = 0.0

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def host_dir(self, host: str) -> Path:
        return self.state / "hosts" / host

    def prepare(self) -> None:
        """Write every file the VMs need (tests may alter them before start())."""
        kernel = find_kernel()
        initrd = build_initramfs(kernel)
        image = boot_image(kernel) if self.pvh else kernel.vmlinuz
        template = dict(load_template())
        if self.lsa_size:
            template["lsa_size"] = self.lsa_size
        self.template = template
        for pool in self.topology.pools:
            with open(self.backing[pool.name], "wb") as f:
                f.truncate(pool.size)
        if self.topology.network:
            self._start_switch()
        for host in self.topology.hosts:
            hdir = self.host_dir(host.name)
            hdir.mkdir(parents=True)
            paths = HostPaths.in_state_dir(self.state, host.name, str(image), str(initrd),
                                           {k: str(v) for k, v in self.backing.items()}, host.pools,
                                           agent_ports=int(template["agent_ports"]), network=self.topology.network)
            for lsa in paths.lsa.values():
                with open(lsa, "wb") as f:
                    f.truncate(parse_size(template["lsa_size"]))
            write_guest_config(hdir, self.topology, host, self.state)
            self.paths[host.name] = paths

    def _start_switch(self) -> None:
        pidfile = self.state / "vde.pid"
        subprocess.run(["vde_switch", "-d", "-s", str(self.state / "vde"), "-p", str(pidfile)],
                       check=True, stdin=subprocess.DEVNULL, capture_output=True)
        deadline = time.monotonic() + 10  # the daemon writes its pid file after the parent exits
        while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.vde_pid = int(pidfile.read_text())

    def edit_guest_json(self, host: str, **changes: Any) -> None:
        path = self.host_dir(host) / "guest.json"
        data = json.loads(path.read_text())
        data.update(changes)
        path.write_text(json.dumps(data))

    def start(self) -> None:
        if not self.paths:
            self.prepare()
        self.started = time.monotonic()
        for host in self.topology.hosts:
            argv = build_qemu_argv(self.topology, host, self.paths[host.name], template=self.template)
            with open(self.host_dir(host.name) / "qemu.out", "wb") as out:
                self.procs[host.name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                                         stderr=subprocess.STDOUT, start_new_session=True)

    def client(self, host: str, timeout: float = 15.0) -> AgentClient:
        return AgentClient.connect(self.paths[host].agent_sockets, timeout=timeout)

    def wait_ready(self, host: str, timeout: float = 120.0) -> dict[str, Any]:
        with self.client(host) as client:
            status = client.wait_ready(timeout=timeout)
        status["wall_seconds"] = round(time.monotonic() - self.started, 2)
        return status

    def exec(self, host: str, command: str, timeout: float = 60.0, **kwargs: Any) -> tuple[int, str, str]:
        import io

        out, err = io.BytesIO(), io.BytesIO()
        with self.client(host) as client:
            code = client.exec(command, cwd=kwargs.pop("cwd", None), env=kwargs.pop("env", {}), timeout=timeout,
                               stdout=out, stderr=err)
        return code, out.getvalue().decode(errors="replace"), err.getvalue().decode(errors="replace")

    def script(self, name: str) -> str:
        return str(SCRIPTS / name)

    def console(self, host: str) -> str:
        try:
            return Path(self.paths[host].console_log).read_text(errors="replace")
        except OSError:
            return ""

    def qmp(self, host: str, command: str) -> None:
        """One QMP command on the host's monitor (capabilities negotiated first)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(self.paths[host].qmp_socket)
            reader = sock.makefile("rb")
            reader.readline()  # greeting
            for execute in ("qmp_capabilities", command):
                sock.sendall(json.dumps({"execute": execute}).encode() + b"\n")
                while True:
                    reply = json.loads(reader.readline())
                    if "return" in reply or "error" in reply:
                        break

    def wait_exit(self, host: str, timeout: float) -> Optional[int]:
        try:
            return self.procs[host].wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        pidfile = self.state / "vde.pid"
        if not self.vde_pid and pidfile.exists():  # started, but close() came before its pid file
            try:
                self.vde_pid = int(pidfile.read_text())
            except ValueError:
                pass
        if self.vde_pid:
            try:
                os.kill(self.vde_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for path in self.backing.values():
            path.unlink(missing_ok=True)
        shutil.rmtree(self.state, ignore_errors=True)
