"""``notnets-emu doctor``: every prerequisite, checked, with the fix for each miss.

Each check is a small function returning a :class:`Check`; the table is printed in the
order below so that the first miss is usually the cause of the later ones.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import click

from emulator.errors import UserError
from emulator.paths import REPO_ROOT, Kernel, find_kernel
from emulator.sizes import MiB

OK, WARN, FAIL = "ok", "warn", "FAIL"
MIN_QEMU = (7, 2)

# Modules the guest loads (the guest image builder resolves their dependencies).
GUEST_MODULES = (
    "cxl_acpi", "cxl_pci", "cxl_mem", "cxl_pmem", "cxl_port", "libnvdimm", "nd_pmem",
    "dax_pmem", "device_dax", "9p", "9pnet_virtio", "virtio_console", "overlay",
    "virtio_net", "net_failover", "failover",
)
HOST_TOOLS = {
    "busybox": "busybox-static",
    "cxl": "ndctl",
    "ndctl": "ndctl",
    "daxctl": "daxctl",
    "cpio": "cpio",
    "depmod": "kmod",
    "vde_switch": "vde2",
    "ip": "iproute2",  # sim hosts' network (network: true): namespaces, bridge, veths
    "nsenter": "util-linux",
    "unshare": "util-linux",  # sim hosts' namespaces
}


def setup_hint() -> str:
    """`make setup`, spelled so that it works from the current directory."""
    return "make setup" if Path.cwd().resolve() == REPO_ROOT else f"make -C {REPO_ROOT} setup"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def check_qemu() -> Check:
    binary = shutil.which("qemu-system-x86_64")
    if not binary:
        return Check("qemu", FAIL, "qemu-system-x86_64 not found", "apt-get install qemu-system-x86 (or make setup)")
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired) as err:
        return Check("qemu", FAIL, f"{binary} --version failed: {err}", "reinstall qemu-system-x86")
    match = re.search(r"version (\d+)\.(\d+)", out)
    version = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if version < MIN_QEMU:
        return Check("qemu", FAIL, f"QEMU {version[0]}.{version[1]} is older than 7.2", "use Debian 12's qemu-system-x86")
    try:
        devices = subprocess.run([binary, "-device", "help"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        devices = ""
    missing = [d for d in ("cxl-type3", "pxb-cxl", "cxl-rp") if f'"{d}"' not in devices]
    if missing:
        return Check("qemu", FAIL, f"QEMU {version[0]}.{version[1]} lacks {', '.join(missing)}", "use Debian 12's qemu-system-x86 (7.2)")
    return Check("qemu", OK, f"QEMU {version[0]}.{version[1]} with cxl-type3, pxb-cxl, cxl-rp")


def check_kernel() -> tuple[Check, Optional[Kernel]]:
    try:
        kernel = find_kernel()
    except UserError as err:
        if os.environ.get("NOTNETS_KERNEL"):
            fix = "fix NOTNETS_KERNEL and NOTNETS_KERNEL_MODULES, or unset them to use the kernel `make setup` fetches"
        else:
            fix = f"{setup_hint()} (fetches Debian's linux-image-amd64)"
        return Check("guest kernel", FAIL, str(err), fix), None
    return Check("guest kernel", OK, f"{kernel.version} ({kernel.vmlinuz})"), kernel


def check_modules(kernel: Optional[Kernel]) -> Check:
    if kernel is None:
        return Check("guest modules", FAIL, "no guest kernel", "see the guest kernel line")
    dep = kernel.modules_dir / "modules.dep"
    try:
        text = dep.read_text()
    except OSError:
        return Check("guest modules", FAIL, f"{dep} missing", f"depmod -b {kernel.modules_root} {kernel.version}")
    builtin = kernel.modules_dir / "modules.builtin"
    if builtin.exists():
        text += "\n" + builtin.read_text()
    present = {Path(line.split(":", 1)[0]).name.split(".ko")[0].replace("-", "_") for line in text.splitlines() if line}
    missing = [m for m in GUEST_MODULES if m not in present]
    if missing:
        return Check("guest modules", FAIL, f"missing: {', '.join(missing)}", f"use Debian's 6.1 kernel ({setup_hint()}) or one built with them")
    return Check("guest modules", OK, f"{len(GUEST_MODULES)} modules present (CXL, nvdimm, dax, 9p, virtio)")


def check_tools() -> Check:
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if not shutil.which(tool)})
    if missing:
        return Check("host tools", FAIL, "missing packages: " + ", ".join(missing), f"apt-get install {' '.join(missing)}")
    return Check("host tools", OK, ", ".join(HOST_TOOLS))


def check_python_packages() -> Check:
    wanted = ("grpc", "google.protobuf", "qemu.qmp", "pexpect", "yaml", "click")
    missing = [name for name in wanted if importlib.util.find_spec(name) is None]
    if missing:
        return Check("python packages", FAIL, "missing: " + ", ".join(missing), f"{setup_hint()} (installs .venv)")
    return Check("python packages", OK, ", ".join(wanted))


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return values


def check_hugepages() -> Check:
    info = _meminfo()
    mounted = _is_hugetlbfs(Path("/dev/hugepages"))
    free_mb = info.get("HugePages_Free", 0) * info.get("Hugepagesize", 2048) // 1024
    if mounted and free_mb >= 256:
        return Check("huge pages", OK, f"hugetlbfs at /dev/hugepages, {free_mb} MiB free")
    reason = "hugetlbfs not mounted at /dev/hugepages" if not mounted else f"only {free_mb} MiB of huge pages free"
    return Check("huge pages", WARN, f"{reason}; pools will live on /dev/shm", "sudo bash scripts/hugepages.sh")


def _is_hugetlbfs(path: Path) -> bool:
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            return any(line.split()[1] == str(path) and line.split()[2] == "hugetlbfs" for line in f)
    except (OSError, IndexError):
        return False


def check_accel(kernel: Optional[Kernel], probe: bool) -> Check:
    if not os.path.exists("/dev/kvm"):
        return Check("accelerator", WARN, "no /dev/kvm: guests run under TCG (slower, correct)", "enable KVM in the BIOS/hypervisor for speed")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Check("accelerator", WARN, "/dev/kvm not accessible: TCG will be used", "add yourself to group kvm")
    if not probe or kernel is None:
        return Check("accelerator", WARN, "/dev/kvm present, not probed (--no-probe): `up --accel auto` will probe")
    from emulator.backends.qemu.accel import probe_kvm

    works, detail = probe_kvm(kernel)
    if works:
        return Check("accelerator", OK, f"KVM works ({detail})")
    return Check("accelerator", WARN, f"/dev/kvm present but KVM does not boot a guest ({detail}): TCG will be used")


def check_memory(topology_file: Optional[Path]) -> Check:
    available = _meminfo().get("MemAvailable", 0) * 1024
    if topology_file is None:
        return Check("memory", OK, f"{available // MiB} MiB available (give a topology file to check it)")
    from emulator.topology.model import load_topology, memory_needed

    try:
        topology = load_topology(topology_file, memory_probe=lambda: None)
    except UserError as err:  # the file's own problem, not the machine's memory
        return Check("topology", FAIL, str(err), "fix the topology file")
    needed = memory_needed(topology)
    if needed > available:
        return Check("memory", FAIL, f"{topology_file} needs {needed // MiB} MiB, {available // MiB} MiB available", "fewer or smaller hosts/pools")
    return Check("memory", OK, f"{topology_file} needs {needed // MiB} MiB of {available // MiB} MiB available")


def run_doctor(topology_file: Optional[Path] = None, probe_kvm: bool = True, echo: Callable[[str], None] = click.echo) -> int:
    """Print the table; return 1 when a required check failed, else 0."""
    kernel_check, kernel = check_kernel()
    checks = [
        check_qemu(),
        kernel_check,
        check_modules(kernel),
        check_tools(),
        check_python_packages(),
        check_hugepages(),
        check_accel(kernel, probe_kvm),
        check_memory(topology_file),
    ]
    width = max(len(c.name) for c in checks)
    for c in checks:
        echo(f"{c.status:<4}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.status != OK:
            echo(f"{'':<4}  {'':<{width}}  fix: {c.fix}")
    failed = [c for c in checks if c.status == FAIL]
    echo("")
    echo(f"{len(failed)} problem(s) to fix" if failed else "ready: every required prerequisite is present")
    return 1 if failed else 0
