"""The one place that touches pool memory.

Every read and write of the shared pool goes through a ``Memory`` object: aligned
8-byte control words (``load``/``store``) and payload copies (``read``/``write``/
``unpack``/``pack``). Two reasons: (1) control words must be written with a single
aligned native store (``memoryview.cast('Q')``), never byte by byte, or a reader on
another host can see a torn value; (2) a far-memory model (latency per control-word
access, bandwidth per byte) can later subclass this class without touching the
protocol code.

All offsets are byte offsets from the start of the buffer. ``load``/``store`` expect
offsets that the caller computed from a validated layout; ``read``/``write``/``unpack``
check their range, because lengths that come out of shared memory are untrusted.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import struct
import time
from typing import Any, Optional, Union

from .errors import ProtocolError

Buffer = Union[bytearray, memoryview, Any]


class _Futex:
    """FUTEX_WAIT / FUTEX_WAKE on a word of a shared mapping (Linux x86-64 only).

    Shared, not private, futexes: the kernel keys them by file and offset, so processes
    that map the same pool file wake each other. Across hosts (separate kernels) a wake
    is lost, which is why every wait has a timeout and callers still poll.
    """

    SYS_FUTEX = 202
    WAIT, WAKE = 0, 1

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self._syscall.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                  ctypes.c_void_p, ctypes.c_int]

    def wait(self, addr: int, expected: int, timeout: float) -> bool:
        """Sleep while the 32-bit word at ``addr`` equals ``expected``; False if unusable."""
        expected &= 0xFFFFFFFF
        if expected >= 0x80000000:
            expected -= 0x100000000
        ts = _Timespec(int(timeout), int((timeout % 1) * 1e9))
        if self._syscall(self.SYS_FUTEX, addr, self.WAIT, expected, ctypes.byref(ts), None, 0) == -1:
            return ctypes.get_errno() in (11, 110, 4)  # EAGAIN (changed), ETIMEDOUT, EINTR
        return True

    def wake(self, addr: int) -> None:
        self._syscall(self.SYS_FUTEX, addr, self.WAKE, 0x7FFFFFFF, None, None, 0)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _NativeFutex:
    """The same two calls from notnets_rpc._native (built by ``make setup``): no ctypes
    on the way, which costs 3.5 us per wake and 6.5 us per wait here -- a wake per answer
    and a sleep per call when many clients share a server."""

    def __init__(self, native: Any) -> None:
        self.wait = native.futex_wait
        self.wake = native.futex_wake


def _make_futex() -> "Optional[Union[_Futex, _NativeFutex]]":
    if os.environ.get("NOTNETS_FUTEX", "1") == "0":
        return None
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    if os.environ.get("NOTNETS_FUTEX", "1") != "ctypes":  # "ctypes": the fallback although the extension is built
        try:
            from . import _native
            if hasattr(_native, "futex_wait"):
                return _NativeFutex(_native)
        except ImportError:
            pass  # not built: the ctypes fallback below
    try:
        return _Futex()
    except (OSError, AttributeError):
        return None


_FUTEX = _make_futex()


class Memory:
    """Word and byte access to a shared buffer (mmap, bytearray, memoryview)."""

    __slots__ = ("_bytes", "_words", "size", "writable", "_base", "can_wait", "raw")
    direct = True  # plain memory: hot paths may use ``views()``; a cost model sets this False

    def __init__(self, buf: Buffer, writable: bool = True) -> None:
        view = memoryview(buf)
        if view.format != "B" or view.itemsize != 1:
            view = view.cast("B")
        self.size = len(view) - len(view) % 8
        self._bytes = view[: self.size]
        self._words = self._bytes.cast("Q")
        # an mmap slices to ``bytes`` (and takes a slice assignment) in one C call: the
        # rings' direct paths copy a body in or out that way (no memoryview slice per copy)
        self.raw: Optional[mmap.mmap] = buf if type(buf) is mmap.mmap else None
        self.writable = writable and not view.readonly
        self._base = 0
        if self.writable and _FUTEX is not None and self.size:
            try:
                anchor = ctypes.c_char.from_buffer(self._bytes)
                self._base = ctypes.addressof(anchor)
                del anchor  # only the address is kept; the views keep the mapping alive
            except (TypeError, ValueError):
                self._base = 0
        self.can_wait = bool(self._base)

    # -- control words -----------------------------------------------------------
    def load(self, off: int) -> int:
        """One aligned 8-byte load at byte offset ``off`` (a multiple of 8)."""
        return self._words[off >> 3]

    def store(self, off: int, value: int) -> None:
        """One aligned 8-byte native store: never torn for a reader on another host."""
        self._words[off >> 3] = value

    # -- payload -------------------------------------------------------------------
    def check(self, off: int, n: int) -> None:
        """Raise ``ProtocolError`` unless ``[off, off+n)`` lies inside the buffer."""
        if off < 0 or n < 0 or off + n > self.size:
            raise ProtocolError(f"range [{off}, {off + n}) outside the pool (size {self.size})")

    def read(self, off: int, n: int) -> bytes:
        if off < 0 or n < 0 or off + n > self.size:
            raise ProtocolError(f"range [{off}, {off + n}) outside the pool (size {self.size})")
        return self._bytes[off : off + n].tobytes()

    def read_into(self, off: int, dest: memoryview) -> None:
        n = len(dest)
        if off < 0 or off + n > self.size:
            raise ProtocolError(f"range [{off}, {off + n}) outside the pool (size {self.size})")
        dest[:] = self._bytes[off : off + n]

    def write(self, off: int, data: Any) -> None:
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        if off < 0 or off + n > self.size:
            raise ProtocolError(f"range [{off}, {off + n}) outside the pool (size {self.size})")
        self._bytes[off : off + n] = data

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass that redefines ``write`` or ``store`` (a far-memory model) gets a
        ``publish`` made of its own ``write`` and ``store``, so no access escapes it."""
        super().__init_subclass__(**kwargs)
        if "publish" not in cls.__dict__ and ("write" in cls.__dict__ or "store" in cls.__dict__):
            cls.publish = Memory._publish_by_parts  # type: ignore[method-assign]
        if any(name in cls.__dict__ for name in ("load", "store", "read", "write", "unpack", "pack")):
            cls.direct = False  # every access must go through the subclass's methods

    def views(self) -> "Optional[tuple[memoryview, memoryview]]":
        """(bytes, u64 words) of the buffer for the ring hot paths, or None when a subclass
        models access costs and every access must go through its methods.

        Why: one Python call per load, store and copy is a large share of a 64-byte round
        trip; rings that checked their region once at construction can index directly."""
        if not self.direct:
            return None
        return self._bytes, self._words

    def _publish_by_parts(self, off: int, data: Any, word_off: int, value: int) -> None:
        self.write(off, data)
        self.store(word_off, value)

    def publish(self, off: int, data: Any, word_off: int, value: int) -> None:
        """Copy ``data`` to ``off``, then store the control word that makes it visible.

        The order is the protocol (payload first, then the counter); one call instead of
        two because this is the hot path of every frame.
        """
        n = len(data)
        if off < 0 or off + n > self.size:
            raise ProtocolError(f"range [{off}, {off + n}) outside the pool (size {self.size})")
        self._bytes[off : off + n] = data
        self._words[word_off >> 3] = value

    def fill(self, off: int, n: int, value: int = 0) -> None:
        """Set a byte range to ``value`` (formatting; not a hot path)."""
        self.check(off, n)
        chunk = bytes([value]) * min(n, 1 << 20)
        end = off + n
        while off < end:
            step = min(len(chunk), end - off)
            self._bytes[off : off + step] = chunk[:step]
            off += step

    def unpack(self, st: struct.Struct, off: int) -> tuple:
        if off < 0 or off + st.size > self.size:
            raise ProtocolError(f"record at {off} (+{st.size}) outside the pool (size {self.size})")
        return st.unpack_from(self._bytes, off)

    def pack(self, st: struct.Struct, off: int, *values: Any) -> None:
        """Byte-wise packing: for payload and headers that a control word publishes later."""
        if off < 0 or off + st.size > self.size:
            raise ProtocolError(f"record at {off} (+{st.size}) outside the pool (size {self.size})")
        st.pack_into(self._bytes, off, *values)

    # -- sleeping on a word (same host only; see _Futex) ----------------------------------
    def wait_word(self, off: int, expected: int, timeout: float) -> None:
        """Block until woken, until the word at ``off`` differs from ``expected`` (its low 32
        bits are compared, atomically with going to sleep), or ``timeout``.

        Wakers must change that word before waking, or a wake sent just before the sleep
        begins is lost (the sleep then lasts ``timeout``)."""
        if self.can_wait:
            if _FUTEX.wait(self._base + off, expected, timeout):
                return
            self.can_wait = False  # the kernel refused (odd mapping): poll from now on
        time.sleep(timeout)

    def wake_word(self, off: int) -> None:
        """Wake whoever sleeps on the word at ``off`` (a no-op across hosts)."""
        if self.can_wait:
            _FUTEX.wake(self._base + off)

    def release(self) -> None:
        """Drop the views so that the underlying mmap can be closed."""
        self.can_wait = False
        self._words.release()
        self._bytes.release()

