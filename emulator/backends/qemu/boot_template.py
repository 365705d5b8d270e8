"""Hosts restored from a saved guest (a boot template) instead of each booting a kernel.

Under TCG a kernel boot costs 3-5 CPU seconds per host and every host boots the same
kernel and initramfs to the same point. So the kernel is booted once per machine shape
with ``notnets.identity=port``: its init loads the boot modules and waits, before it
mounts any 9p share (QEMU refuses to save a guest with one mounted), for its identity.
That guest is saved to ``cache_dir()/boot-templates/KEY.state`` with QEMU's
``x-ignore-shared`` (the pool and the label area are ``share=on`` files: never copied,
never written back), and each host's own QEMU (its own sockets, label file, state dir)
restores it with ``-incoming`` in a fraction of a CPU second; the host then writes
``NAME ID EPOCH_SECONDS`` on the guest's notnets.identity port. The guest's ``vmgenid``
changes with every QEMU, so each restored guest reseeds its RNG.

KEY covers everything the saved guest depends on: QEMU's version, the kernel image and
the initramfs (path, size, mtime; the initramfs path holds its content hash) and the
host's QEMU command line with every path and name replaced (machine template, RAM,
vCPUs, pools, network). A change to any of them gives a new template; stale ones are
only disk space. $NOTNETS_BOOT_TEMPLATE=0 boots every host cold.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from emulator.backends.qemu import process as qemu_process
from emulator.backends.qemu import qmp_control
from emulator.backends.qemu.command import HostPaths, build_qemu_argv
from emulator.backends.qemu.vde import start_switch, stop_switch
from emulator.errors import UserError
from emulator.paths import cache_dir
from emulator.sizes import parse_size
from emulator.topology.model import Host, Topology

FORMAT = "notnets-boot-template-1"
WAITING_EVENT = b"waiting for identity"  # guest/init.sh at the save point
IGNORE_SHARED = {"capabilities": [{"capability": "x-ignore-shared", "state": True}]}
TEMPLATE_HOST = "template"
KEEP = 12  # saved guests kept in the cache, the most recently used (~72 MiB each)
RESTORE_TIMEOUT = 60.0  # seconds for QEMU to load a saved guest (~0.3 CPU-s alone)
SAVE_TIMEOUT = 60.0


class TemplateError(Exception):
    """A boot template could not be made or restored (the host boots cold instead)."""


def enabled() -> bool:
    """$NOTNETS_BOOT_TEMPLATE: 1 (the default) restores hosts from a template, 0 boots each cold."""
    value = os.environ.get("NOTNETS_BOOT_TEMPLATE", "1").strip().lower()
    if value in ("1", "on", "yes", "true"):
        return True
    if value in ("0", "off", "no", "false"):
        return False
    raise UserError(f"NOTNETS_BOOT_TEMPLATE={value!r}: expected 1 or 0")


def template_dir() -> Path:
    return cache_dir() / "boot-templates"


def _placeholder_paths(host: Host, topology: Topology, kernel: str, initrd: str, agent_ports: int) -> HostPaths:
    """Paths that are the same for every host, so that argvs differ only in the machine."""
    return HostPaths(
        state_dir="@state", kernel=kernel, initrd=initrd, qmp_socket="@qmp", console_socket="@console",
        console_log="@console.log", agent_sockets=tuple(f"@agent{i}" for i in range(agent_ports)),
        pool_backing={name: f"@pool-{name}" for name in host.pools},
        lsa={name: f"@lsa-{name}" for name in host.pools},
        vde_socket="@vde" if topology.network else None, identity_socket="@identity",
    )


def _as_template_host(host: Host) -> Host:
    return dataclasses.replace(host, name=TEMPLATE_HOST, index=0)


def shape_argv(topology: Topology, host: Host, kernel: str, initrd: str, accel: str,
               template: Mapping[str, Any]) -> list[str]:
    """The host's template argv with every path and name made generic: hosts with equal
    shapes can be restored from the same saved guest."""
    paths = _placeholder_paths(host, topology, kernel, initrd, int(template["agent_ports"]))
    return build_qemu_argv(topology, _as_template_host(host), paths, accel=accel, template=template, identity="port")


@lru_cache(maxsize=4)
def _qemu_version(binary: str) -> str:
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise TemplateError(f"{binary} --version: {err}") from None
    return done.stdout.strip()


def _file_id(path: str) -> str:
    st = os.stat(path)
    return f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"


def template_key(shape: list[str]) -> str:
    """A file-name-safe digest of everything a saved guest depends on."""
    kernel = shape[shape.index("-kernel") + 1]
    initrd = shape[shape.index("-initrd") + 1]
    h = hashlib.sha256(FORMAT.encode())
    for part in (_qemu_version(shape[0]), _file_id(kernel), _file_id(initrd), json.dumps(shape)):
        h.update(len(part).to_bytes(8, "little") + part.encode())
    return h.hexdigest()[:24]


def state_path(key: str) -> Path:
    return template_dir() / f"{key}.state"


def _wait_for_console(log: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if WAITING_EVENT in log.read_bytes():
                return
        except OSError:
            pass
        if proc.poll() is not None:
            raise TemplateError(f"the template VM exited (code {proc.returncode}) before it waited for an identity")
        if time.monotonic() > deadline:
            raise TemplateError(f"the template VM did not reach its save point within {timeout:g} s")
        time.sleep(0.1)


def _qmp(sock: str, command: str, args: Optional[dict] = None, proc: Optional[subprocess.Popen] = None,
         timeout: float = 30.0) -> Any:
    """A QMP command, retried while QEMU has not yet begun to listen on its socket."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return qmp_control.execute(sock, command, args, timeout=10.0)
        except qmp_control.QMPUnavailable as err:
            if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
                raise TemplateError(f"QMP {command}: {err}") from None
            time.sleep(0.05)


def _wait_migration(sock: str, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise TemplateError(f"QEMU exited (code {proc.returncode}) during the {what}")
        info = _qmp(sock, "query-migrate", proc=proc)
        status = info.get("status") if isinstance(info, dict) else None
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise TemplateError(f"the {what} {status}: {info.get('error-desc', 'no reason given')}")
        if time.monotonic() > deadline:
            raise TemplateError(f"the {what} did not finish within {timeout:g} s (status {status})")
        time.sleep(0.05)


def make_template(topology: Topology, host: Host, kernel: str, initrd: str, accel: str,
                  template: Mapping[str, Any], boot_timeout: float, say: Callable[[str], None]) -> Path:
    """The saved guest for ``host``'s shape: made now (one kernel boot) unless cached.

    Several processes may ask at once: one makes it under a lock file, the others wait
    and reuse it. The file appears only complete (written aside, then renamed)."""
    key = template_key(shape_argv(topology, host, kernel, initrd, accel, template))
    target = state_path(key)
    if _touch(target):
        return target
    template_dir().mkdir(parents=True, exist_ok=True)
    with open(template_dir() / f"{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():
            return target
        say("making the boot template (one kernel boot, reused by every host of this shape)...")
        started = time.monotonic()
        _save_template(topology, host, kernel, initrd, accel, template, boot_timeout, target)
        say(f"boot template saved in {time.monotonic() - started:.1f} s ({target.stat().st_size >> 20} MiB)")
    prune(KEEP)
    return target


def _touch(path: Path) -> bool:
    """Mark a saved guest as used (the cache keeps the most recently used); False if absent."""
    try:
        os.utime(path)
        return True
    except OSError:
        return False


def prune(keep: int) -> list[Path]:
    """Remove all but the ``keep`` most recently used saved guests (each change to the
    kernel, initramfs or a machine makes new ones); returns what it removed."""
    saved = sorted(template_dir().glob("*.state"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in saved[keep:]:
        old.unlink(missing_ok=True)
        old.with_suffix(".lock").unlink(missing_ok=True)
    return saved[keep:]


def _save_template(topology: Topology, host: Host, kernel: str, initrd: str, accel: str,
                   template: Mapping[str, Any], boot_timeout: float, target: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="nn-tpl-"))  # short: unix socket paths are limited to 108 bytes
    proc: Optional[subprocess.Popen] = None
    vde_pid = None
    try:
        shape_host = _as_template_host(host)
        backing = {}
        for pool in topology.host_pools(host):  # never touched: the template stops before the CXL modules
            backing[pool.name] = str(work / f"pool-{pool.name}")
            sparse_file(Path(backing[pool.name]), pool.size)
        (work / "hosts" / TEMPLATE_HOST).mkdir(parents=True)
        paths = HostPaths.in_state_dir(work, TEMPLATE_HOST, kernel, initrd, backing, host.pools,
                                       agent_ports=int(template["agent_ports"]), network=topology.network)
        for lsa in paths.lsa.values():
            sparse_file(Path(lsa), parse_size(template["lsa_size"]))
        if topology.network:
            vde_pid, _ = start_switch(work)
        argv = build_qemu_argv(topology, shape_host, paths, accel=accel, template=template, identity="port")
        proc = qemu_process.start_detached(argv, work / "qemu.log")
        _wait_for_console(Path(paths.console_log), proc, boot_timeout)
        _qmp(paths.qmp_socket, "migrate-set-capabilities", IGNORE_SHARED, proc)
        partial = target.with_name(f".partial-{os.getpid()}-{target.name}")
        _qmp(paths.qmp_socket, "migrate", {"uri": f"exec:cat > {shlex.quote(str(partial))}"}, proc)
        try:
            _wait_migration(paths.qmp_socket, proc, SAVE_TIMEOUT, "save")
            os.chmod(partial, 0o600)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    except UserError as err:
        raise TemplateError(str(err)) from None
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        if vde_pid:
            stop_switch(vde_pid, str(work / "vde"))
        shutil.rmtree(work, ignore_errors=True)


def sparse_file(path: Path, size: int) -> None:
    """A file of ``size`` bytes that takes no disk (a label area, a pool the template never touches)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def restore_argv(argv: list[str]) -> list[str]:
    """The host's argv, made to wait for a saved guest instead of booting its kernel."""
    return list(argv) + ["-incoming", "defer"]


def restore(proc: subprocess.Popen, qmp_socket: str, state: Path, timeout: float = RESTORE_TIMEOUT) -> None:
    """Load ``state`` into a QEMU started with :func:`restore_argv`; it runs once loaded."""
    _qmp(qmp_socket, "migrate-set-capabilities", IGNORE_SHARED, proc)
    _qmp(qmp_socket, "migrate-incoming", {"uri": f"exec:cat {shlex.quote(str(state))}"}, proc)
    _wait_migration(qmp_socket, proc, timeout, "restore")


def send_identity(identity_socket: str, name: str, host_id: int, timeout: float = 10.0) -> socket.socket:
    """Tell a restored guest who it is; the connection stays open (the caller closes it once
    the host is ready), so the guest never sees its port closed before it has read."""
    deadline = time.monotonic() + timeout
    line = f"{name} {host_id} {int(time.time())}\n".encode()
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(identity_socket)
            sock.sendall(line)
            return sock
        except OSError as err:
            sock.close()
            if time.monotonic() > deadline:
                raise TemplateError(f"cannot write the identity to {identity_socket}: {err}") from None
            time.sleep(0.05)
