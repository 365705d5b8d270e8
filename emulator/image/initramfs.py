"""The guest's initramfs: busybox, the init script and exactly the modules the guest loads.

Cached under ``cache_dir()/initramfs/`` by a hash of everything that goes in, so that a
change to init.sh, the module list, busybox or the kernel gives a new file, and an
unchanged one is never rebuilt. Nothing is downloaded: the inputs are the cached guest
kernel's modules and the machine's busybox-static.
"""

from __future__ import annotations

import compileall
import gzip
import hashlib
import io
import lzma
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from emulator.errors import UserError
from emulator.paths import REPO_ROOT, Kernel, cache_dir, find_kernel

from emulator.image import cpio, modules

GUEST_DIR = REPO_ROOT / "guest"  # the payload: what runs inside a host
INIT_SCRIPT = GUEST_DIR / "init.sh"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
# Bump when the archive's layout changes in a way the inputs do not show.
FORMAT = b"notnets-initramfs-1"
DIRS = ("bin", "dev", "etc", "etc/notnets", "lib", "lib/modules", "lib/notnets", "mnt", "newroot", "proc", "root",
        "sys", "tmp")
AGENT_ZIP = "lib/notnets/agent.zip"  # guest/init.sh copies it into the guest's root and runs it
BUNDLE_BUILDER = Path(__file__).resolve().parent / "bundle_build.py"


def find_busybox() -> Path:
    """The static busybox to put in the image ($NOTNETS_BUSYBOX overrides)."""
    env = os.environ.get("NOTNETS_BUSYBOX")
    candidates = (env,) if env else BUSYBOX_CANDIDATES
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            path = Path(candidate)
            if not is_static_elf(path.read_bytes()):
                raise UserError(f"{path} is dynamically linked; the guest needs busybox-static (apt-get install busybox-static)")
            return path
    raise UserError("no busybox found; install busybox-static (apt-get install busybox-static) or set NOTNETS_BUSYBOX")


def is_static_elf(data: bytes) -> bool:
    """True for a 64-bit little-endian ELF without a PT_INTERP (dynamic loader) header."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return False
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        p_type, = struct.unpack_from("<I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def _module_bytes(path: Path) -> bytes:
    """The module as insmod needs it: busybox insmod cannot decompress, so do it here."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        data = lzma.decompress(data)
    elif path.name.endswith(".ko.gz"):
        data = gzip.decompress(data)
    elif path.name.endswith(".ko.zst"):
        raise UserError(f"{path}: zstd-compressed modules are not supported; use a kernel with .ko or .ko.xz modules")
    return without_signature(data)


SIG_MAGIC = b"~Module signature appended~\n"
_SIG_INFO = struct.Struct(">BBBBB3xI")  # struct module_signature: algo hash id_type signer_len key_id_len pad sig_len


def without_signature(data: bytes) -> bytes:
    """The module without its appended signature.

    The guest kernel checks a signed module's PKCS#7 signature at every insmod (RSA
    and SHA-512 under TCG); an unsigned one only taints the kernel (Debian's kernel does
    not enforce signatures without Secure Boot). Measured under TCG with -icount
    (guest time counts instructions): the seven boot-stage insmods took 0.28 s signed,
    0.06 s unsigned.
    """
    if not data.endswith(SIG_MAGIC) or len(data) < len(SIG_MAGIC) + _SIG_INFO.size:
        return data
    info_at = len(data) - len(SIG_MAGIC) - _SIG_INFO.size
    _, _, _, signer_len, key_id_len, sig_len = _SIG_INFO.unpack_from(data, info_at)
    end = info_at - sig_len - signer_len - key_id_len
    return data[:end] if end > 0 else data


def _stored_name(relpath: str) -> str:
    for suffix in (".xz", ".gz"):
        if relpath.endswith(".ko" + suffix):
            return relpath[: -len(suffix)]
    return relpath


class _Inputs:
    """Everything that goes into the archive, read once; ``digest`` names the result."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        resolved = modules.resolve(kernel.modules_dir)
        self.stages = {stage: [_stored_name(rel) for rel in rels] for stage, rels in resolved.items()}
        self.busybox = find_busybox().read_bytes()
        self.init = INIT_SCRIPT.read_bytes()
        self.agent_zip = agent_bundle().read_bytes()
        self.modules = [(_stored_name(rel), _module_bytes(kernel.modules_dir / rel))
                        for rels in resolved.values() for rel in rels]
        h = hashlib.sha256(FORMAT)
        for part in (kernel.version.encode(), self.busybox, self.init, self.agent_zip):
            h.update(len(part).to_bytes(8, "little") + part)
        for stage, names in self.stages.items():
            h.update(f"[{stage}]".encode() + "\0".join(names).encode() + b"\n")
        for name, data in self.modules:
            h.update(name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
        self.digest = h.hexdigest()

    def entries(self) -> list[cpio.Entry]:
        out = [cpio.directory(d) for d in DIRS]
        out.append(cpio.char_device("dev/console", 5, 1))
        out.append(cpio.char_device("dev/null", 1, 3, perm=0o666))
        out.append(cpio.regular("bin/busybox", self.busybox, perm=0o755))
        out.append(cpio.symlink("bin/sh", "busybox"))
        out.append(cpio.regular("init", self.init, perm=0o755))
        out.append(cpio.regular(AGENT_ZIP, self.agent_zip))
        made = {"lib/modules"}
        for name, data in self.modules:
            parts = name.split("/")
            for i in range(1, len(parts)):
                parent = "lib/modules/" + "/".join(parts[:i])
                if parent not in made:
                    made.add(parent)
                    out.append(cpio.directory(parent))
            out.append(cpio.regular("lib/modules/" + name, data))
        for stage, names in self.stages.items():
            listing = "".join(name + "\n" for name in names).encode()
            out.append(cpio.regular(f"etc/notnets/modules.{stage}", listing))
        out.append(cpio.regular("etc/notnets/kernel-version", (self.kernel.version + "\n").encode()))
        return out


def _path_for(kernel: Kernel, digest: str) -> Path:
    return cache_dir() / "initramfs" / f"{kernel.version}-{digest[:16]}.cpio"


def initramfs_path(kernel: Optional[Kernel] = None) -> Path:
    """Where the initramfs for ``kernel`` (default: the guest kernel) is or would be; builds nothing."""
    kernel = kernel or find_kernel()
    return _path_for(kernel, _Inputs(kernel).digest)


def compile_agent() -> None:
    """Byte-compile guest/*.py for the guest's Python, which imports them through 9p.

    Compiling the agent under TCG takes the better part of a second at every boot;
    the guest runs with PYTHONDONTWRITEBYTECODE and its writes vanish anyway, so the
    host writes the .pyc files (guest/__pycache__, ignored by git) beforehand.
    """
    from emulator.image.guest_config import guest_python

    python = guest_python()
    if Path(sys.executable).resolve() == python.resolve():
        compileall.compile_dir(str(GUEST_DIR), maxlevels=0, quiet=2)
        return
    result = subprocess.run([str(python), "-m", "compileall", "-q", "-l", str(GUEST_DIR)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise UserError(f"cannot byte-compile the guest agent with {python}: {result.stderr.strip() or result.stdout.strip()}")


def agent_bundle() -> Path:
    """The guest agent and the pure-Python modules it imports, compiled for the guest's
    Python, in one zip (emulator/image/bundle_build.py); cached by its inputs.

    The agent's Python start was the longest step of a restored host: each module it
    imports costs several 9p round trips (directory scans, stat, open, read) through
    QEMU, 16 guests at once. From the initramfs (RAM, and already in a boot template)
    the imports touch 9p only for the interpreter, encodings and two extension modules.
    """
    from emulator.image.guest_config import guest_python

    python = guest_python()
    h = hashlib.sha256(b"notnets-agent-bundle-1")
    st = python.resolve().stat()
    h.update(f"{python.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    for source in [BUNDLE_BUILDER, *sorted(GUEST_DIR.glob("*.py"))]:
        data = source.read_bytes()
        h.update(source.name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    target = cache_dir() / "agent-bundle" / f"{h.hexdigest()[:16]}.zip"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".partial-", suffix=".zip")
    os.close(fd)
    try:
        result = subprocess.run([str(python), "-S", "-I", "-B", str(BUNDLE_BUILDER), tmp, str(REPO_ROOT)],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise UserError(f"cannot bundle the guest agent with {python}: "
                            f"{(result.stderr.strip() or result.stdout.strip()).splitlines()[-1:]}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def build_initramfs(kernel: Kernel) -> Path:
    """Build the initramfs for ``kernel`` unless the cache already has it; return its path.

    Safe when several processes build at once: each writes a temporary file and renames
    it into place, and identical inputs give identical bytes. Also byte-compiles the
    agent (see compile_agent), since this runs before every boot.
    """
    compile_agent()
    inputs = _Inputs(kernel)
    target = _path_for(kernel, inputs.digest)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    cpio.write_archive(buf, inputs.entries())
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".partial-", suffix=".cpio")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
