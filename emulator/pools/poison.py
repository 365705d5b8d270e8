"""`pool poison`: overwrite bytes of a live pool, as a failing device or a rogue writer would.

The write goes through a shared mapping, like every other access to the pool, because
that is what the processes using the pool see at once, and because a DAX device cannot
be written with write(2) at all (device-dax only maps). A file is mapped only around the
range; a DAX device whole (2 MiB multiples), the way notnets_rpc maps it. No msync: the
other mappers share the pages already. Offset and length
are checked against the pool's size first: a bad range is a one-line error, never a
partial write.
"""

from __future__ import annotations

import mmap
import os
import stat
from pathlib import Path

from emulator.errors import UserError

DAX_ALIGN = 2 << 20


def pool_size(path: Path) -> tuple[int, bool]:
    """(size in bytes, is a character device) of a pool file or DAX device."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such pool file or device") from None
    except OSError as err:
        raise UserError(f"{path}: {err.strerror}") from None
    if stat.S_ISREG(st.st_mode):
        return st.st_size, False
    if stat.S_ISCHR(st.st_mode):
        sysfs = Path(f"/sys/dev/char/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}/size")
        try:
            return int(sysfs.read_text().strip()), True
        except (OSError, ValueError):
            raise UserError(f"{path}: a character device whose size is not in sysfs (not a DAX device?)") from None
    raise UserError(f"{path}: neither a regular file nor a DAX device")


def poison(path: Path, offset: int, length: int, value: int) -> int:
    """Write ``length`` copies of byte ``value`` at ``offset``; returns the bytes written."""
    if not 0 <= value <= 0xFF:
        raise UserError(f"--value {value}: a byte is 0..255")
    if offset < 0 or length <= 0:
        raise UserError(f"--offset {offset} --length {length}: need offset >= 0 and length >= 1")
    size, is_device = pool_size(path)
    if offset + length > size:
        raise UserError(f"{path}: range [{offset}, {offset + length}) is past the end of the pool ({size} bytes)")
    if is_device:  # device-dax maps whole multiples of its alignment; map it all, as notnets_rpc does
        start, end = 0, size - size % DAX_ALIGN
        if offset + length > end:
            raise UserError(f"{path}: range [{offset}, {offset + length}) is past the mappable end ({end} bytes)")
    else:
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        end = min(-(-(offset + length) // mmap.ALLOCATIONGRANULARITY) * mmap.ALLOCATIONGRANULARITY, size)
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as err:
        raise UserError(f"{path}: cannot open for writing: {err.strerror}") from None
    try:
        with mmap.mmap(fd, end - start, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE,
                       offset=start) as mm:
            mm[offset - start:offset - start + length] = bytes([value]) * length  # seen at once by every mapper
    except OSError as err:
        raise UserError(f"{path}: cannot map [{start}, {end}): {err.strerror}") from None
    finally:
        os.close(fd)
    return length
