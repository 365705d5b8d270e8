"""The kernel image QEMU boots: the uncompressed vmlinux when the kernel can be PVH-booted.

Under TCG a Debian bzImage spends about 3 s decompressing itself (xz) before the kernel
runs, for every VM at every boot. QEMU boots an ELF vmlinux that carries a Xen PVH entry
note directly, so the image is decompressed once here, cached next to the initramfs,
and used instead. Kernels without the note, or compressed in a way the standard library
cannot undo (zstd, lz4), are booted as they are.
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Optional

from emulator.paths import Kernel, cache_dir

XEN_ELFNOTE_PHYS32_ENTRY = 18
PT_NOTE = 4


def _payload(image: bytes) -> Optional[bytes]:
    """The compressed kernel inside a bzImage (boot protocol 2.08+ header fields)."""
    if len(image) < 0x250 or image[0x202:0x206] != b"HdrS":
        return None
    version, = struct.unpack_from("<H", image, 0x206)
    if version < 0x208:
        return None
    setup_sects = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sects + 1) * 512 + offset
    return image[start:start + length]


def decompress(payload: bytes) -> Optional[bytes]:
    """The decompressed payload, or None for a format the standard library lacks."""
    try:
        if payload.startswith(b"\xfd7zXZ\x00"):
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
        if payload.startswith(b"\x1f\x8b"):
            return zlib.decompressobj(wbits=31).decompress(payload)  # stops at the stream's end
        if payload.startswith(b"BZh"):
            return bz2.BZ2Decompressor().decompress(payload)
        if payload.startswith(b"\x5d\x00\x00"):
            return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(payload)
    except (lzma.LZMAError, OSError, EOFError, zlib.error):
        return None
    return None


def has_pvh_entry(elf: bytes) -> bool:
    """True for a 64-bit ELF with a Xen PVH entry note (what QEMU needs to boot it directly)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        base = phoff + i * phentsize
        p_type, = struct.unpack_from("<I", elf, base)
        if p_type != PT_NOTE:
            continue
        p_offset, = struct.unpack_from("<Q", elf, base + 8)
        p_filesz, = struct.unpack_from("<Q", elf, base + 32)
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + (-(-namesz // 4) * 4) + (-(-descsz // 4) * 4)
    return False


def boot_image(kernel: Kernel) -> Path:
    """What to pass to QEMU's -kernel for ``kernel``: a cached PVH vmlinux, else the bzImage."""
    image = kernel.vmlinuz.read_bytes()
    digest = hashlib.sha256(image).hexdigest()[:16]
    target = cache_dir() / "kernel-elf" / f"{kernel.version}-{digest}.vmlinux"
    if target.is_file():
        return target
    payload = _payload(image)
    elf = decompress(payload) if payload else None
    if elf is None or not has_pvh_entry(elf):
        return kernel.vmlinuz
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(elf)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
