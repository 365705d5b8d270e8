"""A minimal writer for the cpio "newc" format, the one the Linux kernel unpacks as initramfs.

Written here rather than shelling out to cpio(1) so that the archive can hold device
nodes (/dev/console) without root, and so that the same inputs always give the same
bytes (fixed owners and times), which is what makes the content-hash cache honest.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import BinaryIO, Iterable

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One archive member; ``path`` is relative ("bin/busybox"), without a leading slash."""

    path: str
    mode: int  # full st_mode, type bits included
    data: bytes = b""
    rdev_major: int = 0
    rdev_minor: int = 0


def directory(path: str, perm: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | perm)


def regular(path: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | perm, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def char_device(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | perm, rdev_major=major, rdev_minor=minor)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, entry: Entry, name_size: int) -> bytes:
    fields = (
        ino, entry.mode, 0, 0,  # ino, mode, uid, gid
        2 if stat.S_ISDIR(entry.mode) else 1,  # nlink
        0, len(entry.data),  # mtime, filesize
        0, 0,  # devmajor, devminor (of the archive's own device)
        entry.rdev_major, entry.rdev_minor,
        name_size, 0,  # namesize (with NUL), check
    )
    return MAGIC + b"".join(b"%08X" % value for value in fields)


def write_archive(out: BinaryIO, entries: Iterable[Entry]) -> None:
    """Write ``entries`` in order, then the trailer; parents must come before children."""
    ino = 1
    for entry in list(entries) + [Entry(TRAILER, 0)]:
        name = entry.path.lstrip("/").encode() + b"\0"
        header = _header(ino if entry.path != TRAILER else 0, entry, len(name))
        out.write(header + name + _pad(len(header) + len(name)))
        out.write(entry.data + _pad(len(entry.data)))
        ino += 1
