"""The pool layout: superblock, host table, service directory, channel table, rings.

Pure functions over a ``Memory``: no files, no threads, no clocks. docs/pool-layout.md
describes the same bytes for other implementations; keep the two in step.

    0                      superblock (4 KiB)
    hosts_offset           host table: max_hosts x 64 B (per-host doorbells)
    dir_offset             directory: max_hosts x dir_slots x 256 B
    channels_offset        channel control blocks: max_hosts x channels x 384 B
    lane_ctl_offset        extent lane control blocks: max_hosts x LANES_MAX x 64 B
    rings_offset           ring data: max_hosts x channels x 2 x ring_bytes
    lanes_offset           extent lanes: max_hosts x lanes_per_host x lane_bytes (may be none)

Each region is partitioned by host id, so that every control word has one writer.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass, asdict
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # any object with Memory's methods will do; wire/ imports no I/O
    from ..memory import Memory

from ..errors import LayoutVersionError, NotAPoolError, PoolCorruptError, PoolTooSmallError

MAGIC = b"NNETPOOL"
MAGIC_WORD = int.from_bytes(MAGIC, "little")
LAYOUT_VERSION = 4  # 2: extent lanes (wire/extents.py); 3: a unary response's extent reference in its STATUS frame;
                    # 4: kernel words (DIR_KERNEL, CH_CLIENT_KERNEL): peers on one kernel wake each other
SUPERBLOCK_BYTES = 4096
CACHE_LINE = 64
PAGE = 4096
HOST_ENTRY_BYTES = 64
DIR_ENTRY_BYTES = 256
CHANNEL_CTL_BYTES = 384
MAX_NAME_BYTES = 128
MIN_RING_BYTES = 4096
MAX_RING_BYTES = 1 << 30
DEFAULT_MAX_HOSTS = 8  # host partitions unless the formatter is told more (the count is in the superblock)
MAX_HOSTS = 256
DEFAULT_DIR_SLOTS = 16
DEFAULT_CHANNELS = 16
DEFAULT_RING_CAP = 4 << 20
LANE_CTL_BYTES = 64
LANES_MAX = 4           # lanes per host partition at most (the control table always has room for these)
DEFAULT_LANE_BYTES = 4 << 20  # one lane carries messages up to this size (less a frame header) in one piece

# superblock: magic(8) version(4) sb_bytes(4) pool_bytes(8) uuid(16) created_ms(8)
# max_hosts dir_slots channels ring_bytes (4 each) hosts_off dir_off chan_off rings_off
# (8 each) dir_entry_bytes chan_ctl_bytes (4 each) flags(4) lane_ctl_off lanes_off (8 each)
# lanes_per_host lane_bytes (4 each) crc32(4)
_SB = struct.Struct("<8sIIQ16sQIIIIQQQQIIIQQIII")
_CRC_START, _CRC_END = 8, _SB.size - 4  # crc covers everything after the magic

# host table entry (words)
HOST_CHANNEL_BELL = 0   # bumped by this host's clients when they claim or close a channel
HOST_DIR_BELL = 8       # bumped by this host's servers when they publish or close an endpoint

# directory entry (written only by the server that owns the slot)
DIR_STATE = 0           # generation << 8 | state
DIR_PID = 8
DIR_HEARTBEAT = 16      # wall-clock ms, bumped every ~100 ms
DIR_STARTED = 24
DIR_CALLS = 32
DIR_ERRORS = 40
DIR_BYTES_IN = 48
DIR_BYTES_OUT = 56
DIR_NAME_LEN = 64
DIR_NAME = 72
DIR_SLEEP = 200         # 1 while the server's poller sleeps in the kernel, else 0
DIR_WAKE = 208          # directory index of the entry whose DIR_SLEEP / DIR_KICK the poller uses
DIR_KICK = 216          # the poller sleeps on this word; same-host clients bump it, then wake it (a
                        # hint with several writers: only "it changed" matters, never its value)
DIR_CROWD = 224         # how many of the server's channels called in its monitor's last look (~2 ms):
                        # same-host clients that, with the server, outnumber the CPUs sleep at once
DIR_PASS = 232          # bumped by the server after a pass that answered a client asleep on it: crowded
                        # clients sleep on this one word, and one FUTEX_WAKE per pass wakes them all
DIR_KERNEL = 240        # the server's kernel word (``kernel_word``; 0: it never sleeps on nor wakes a futex)
DIR_FREE, DIR_LIVE, DIR_DRAINING, DIR_CLOSED = 0, 1, 2, 3
DIR_STATE_NAMES = {DIR_FREE: "free", DIR_LIVE: "live", DIR_DRAINING: "draining", DIR_CLOSED: "closed"}

# channel control block: line 0 written by the client, line 1 by the server,
# lines 2..5 one ring counter each.
CH_CLAIM = 0            # generation << 8 | state
CH_TARGET = 8           # dir index (16 bits) | dir generation << 16
CH_CLIENT_PID = 16
CH_CLIENT_HEARTBEAT = 24
CH_CALLS_STARTED = 32
CH_OPENED = 40
CH_CLIENT_SLEEP = 48    # while a client thread sleeps in the kernel: 1 on the response ring head,
                        # 2 on its server's DIR_PASS word; else 0
SLEEP_ON_HEAD, SLEEP_ON_PASS = 1, 2
CH_CLIENT_KERNEL = 56   # the client's kernel word (``kernel_word``; 0: it never sleeps on nor wakes a futex)
CH_ACCEPT = 64          # generation << 8 | verdict (server)
CH_SERVER_PID = 72
CH_CALLS_DONE = 80
CH_ERRORS = 88
CH_BYTES_IN = 96
CH_BYTES_OUT = 104
CH_REQ_HEAD = 128       # client: bytes ever written to the request ring
CH_REQ_TAIL = 192       # server: bytes ever consumed from it
CH_RESP_HEAD = 256      # server: bytes ever written to the response ring
CH_RESP_TAIL = 320      # client: bytes ever consumed from it
CH_REQ_LANE_TAIL = 200  # server: bytes ever consumed from the client's request lane (wire/extents.py)
CH_RESP_LANE_TAIL = 328  # client: bytes ever consumed from the server's response lane
CH_FREE, CH_OPEN, CH_CLOSED = 0, 1, 2
CH_STATE_NAMES = {CH_FREE: "free", CH_OPEN: "open", CH_CLOSED: "closed"}
ACC_NONE, ACC_ACCEPTED, ACC_REJECTED, ACC_RECLAIMED, ACC_RELEASED = 0, 1, 2, 3, 4
# extent lane control block (written only by the process that holds the lane; its reader
# publishes what it consumed in its own word of the channel block, CH_*_LANE_TAIL)
LANE_CLAIM = 0          # generation << 8 | state
LANE_PID = 8            # the holder's pid (same host: a dead holder's lane is taken over)
LANE_CHANNEL = 16       # host << 16 | slot of the channel it serves, channel generation << 32
LANE_DIRECTION = 24     # 0: requests (the client holds it), 1: responses (the server)
LANE_HEAD = 32          # bytes ever written to the lane
LANE_FREE, LANE_HELD = 0, 1
LANE_STATE_NAMES = {LANE_FREE: "free", LANE_HELD: "held"}
ACC_NAMES = {ACC_NONE: "none", ACC_ACCEPTED: "accepted", ACC_REJECTED: "rejected",
             ACC_RECLAIMED: "reclaimed", ACC_RELEASED: "released"}

# superblock flags (pool format options; every process on the pool follows them)
FLAG_SOFTWARE_COHERENCE = 0x1  # every user keeps the write-back rule (docs/pool-layout.md)
FLAG_FRAME_CRC = 0x2  # every frame carries a CRC-32 of its header and body (ring.py)
KNOWN_FLAGS = FLAG_SOFTWARE_COHERENCE | FLAG_FRAME_CRC
COHERENCE = ("coherent", "software")  # what create_pool(coherence=...) takes

GEN_MASK = (1 << 56) - 1
DIR_GEN_MASK = (1 << 48) - 1


def pack_state(generation: int, state: int) -> int:
    return ((generation & GEN_MASK) << 8) | (state & 0xFF)


def unpack_state(word: int) -> tuple[int, int]:
    """(generation, state) of a state/claim/accept word."""
    return word >> 8, word & 0xFF


def pack_target(dir_index: int, dir_generation: int) -> int:
    return (dir_index & 0xFFFF) | ((dir_generation & DIR_GEN_MASK) << 16)


def unpack_target(word: int) -> tuple[int, int]:
    return word & 0xFFFF, word >> 16


def kernel_word(boot_id: bytes, device: int, inode: int) -> int:
    """The word a process publishes so that peers can tell whether a futex reaches it:
    a hash of its kernel's boot id (/proc/sys/kernel/random/boot_id) and the device and
    inode of the file it maps the pool from, never 0 (0 says "no futex").

    Shared futexes are keyed by the kernel on the mapped file's page, so two processes
    wake each other exactly when they run on one kernel and map one file: processes in
    different mount or PID namespaces (sim hosts) do, two VMs never (each boots its own
    kernel with its own boot id), nor two hosts' views of a non-coherent model (two files).
    A peer's word is untrusted: a wrong one costs only waits on that peer, which all end
    by their time limit (docs/pool-layout.md, "Waking")."""
    digest = hashlib.blake2b(b"%s/%d/%d" % (boot_id.strip(), device, inode), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


@dataclass(frozen=True)
class Layout:
    """Where everything is in a pool; derived from four parameters and the size."""

    pool_bytes: int
    max_hosts: int
    dir_slots: int
    channels: int
    ring_bytes: int
    hosts_offset: int
    dir_offset: int
    channels_offset: int
    rings_offset: int
    uuid: bytes = b"\0" * 16
    created_ms: int = 0
    flags: int = 0
    lane_ctl_offset: int = 0
    lanes_offset: int = 0
    lanes_per_host: int = 0
    lane_bytes: int = 0

    @property
    def frame_crc(self) -> bool:
        return bool(self.flags & FLAG_FRAME_CRC)

    @property
    def coherence(self) -> str:
        """'software' when every user must write back and invalidate (docs/pool-layout.md)."""
        return "software" if self.flags & FLAG_SOFTWARE_COHERENCE else "coherent"

    # -- addresses -------------------------------------------------------------------
    def host_entry(self, host: int) -> int:
        return self.hosts_offset + host * HOST_ENTRY_BYTES

    def dir_entry(self, host: int, slot: int) -> int:
        return self.dir_offset + (host * self.dir_slots + slot) * DIR_ENTRY_BYTES

    def dir_index(self, host: int, slot: int) -> int:
        return host * self.dir_slots + slot

    def dir_entry_at(self, index: int) -> int:
        return self.dir_offset + index * DIR_ENTRY_BYTES

    def channel(self, host: int, slot: int) -> int:
        return self.channels_offset + (host * self.channels + slot) * CHANNEL_CTL_BYTES

    def request_ring(self, host: int, slot: int) -> int:
        return self.rings_offset + ((host * self.channels + slot) * 2) * self.ring_bytes

    def response_ring(self, host: int, slot: int) -> int:
        return self.rings_offset + ((host * self.channels + slot) * 2 + 1) * self.ring_bytes

    def lane_ctl(self, host: int, lane: int) -> int:
        return self.lane_ctl_offset + (host * LANES_MAX + lane) * LANE_CTL_BYTES

    def lane_data(self, host: int, lane: int) -> int:
        return self.lanes_offset + (host * self.lanes_per_host + lane) * self.lane_bytes

    @property
    def lanes(self) -> bool:
        """True when the pool has extent lanes and may use them (frame checksums: never)."""
        return self.lanes_per_host > 0 and not self.frame_crc

    @property
    def chunk_bytes(self) -> int:
        """Largest frame body a sender writes in one piece: half a ring (minus the frame
        header), so that a message up to that size travels as one frame, read with one
        copy, while two such frames can still be in a ring at once. Larger messages are
        chunked. Not part of the wire format: a reader accepts any frame that fits."""
        return self.ring_bytes // 2 - 16

    @property
    def dir_entries(self) -> int:
        return self.max_hosts * self.dir_slots

    def as_dict(self) -> dict:
        d = asdict(self)
        d["uuid"] = format_uuid(self.uuid)
        d["coherence"] = self.coherence
        return d


def format_uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _regions(max_hosts: int, dir_slots: int, channels: int) -> tuple[int, int, int, int, int]:
    hosts_offset = SUPERBLOCK_BYTES
    dir_offset = _align(hosts_offset + max_hosts * HOST_ENTRY_BYTES, PAGE)
    channels_offset = _align(dir_offset + max_hosts * dir_slots * DIR_ENTRY_BYTES, PAGE)
    lane_ctl_offset = _align(channels_offset + max_hosts * channels * CHANNEL_CTL_BYTES, PAGE)
    rings_offset = _align(lane_ctl_offset + max_hosts * LANES_MAX * LANE_CTL_BYTES, PAGE)
    return hosts_offset, dir_offset, channels_offset, lane_ctl_offset, rings_offset


def _check_params(max_hosts: int, dir_slots: int, channels: int) -> None:
    if not 1 <= max_hosts <= MAX_HOSTS:
        raise ValueError(f"max_hosts must be 1..{MAX_HOSTS}, got {max_hosts}")
    if not 1 <= dir_slots <= 1024:
        raise ValueError(f"dir_slots must be 1..1024, got {dir_slots}")
    if not 1 <= channels <= 4096:
        raise ValueError(f"channels must be 1..4096, got {channels}")
    if max_hosts * dir_slots > 0xFFFF:
        raise ValueError("max_hosts x dir_slots must stay below 65536")


def plan_layout(size: int, max_hosts: int = DEFAULT_MAX_HOSTS, dir_slots: int = DEFAULT_DIR_SLOTS,
                channels: int = DEFAULT_CHANNELS, ring_bytes: Optional[int] = None,
                lanes_per_host: Optional[int] = None) -> Layout:
    """The layout for a pool of ``size`` bytes; ring size fills the space (capped at 4 MiB).

    Extent lanes (wire/extents.py) take up to half the space, ``LANES_MAX`` per host at
    most, and only whole 4 MiB lanes: a small pool gets none and its rings fill it as
    before. With ``ring_bytes`` given, lanes take what the rings leave.

    Raises ``PoolTooSmallError`` when even the smallest rings do not fit.
    """
    _check_params(max_hosts, dir_slots, channels)
    hosts_offset, dir_offset, channels_offset, lane_ctl_offset, rings_offset = _regions(max_hosts, dir_slots, channels)
    n_rings = max_hosts * channels * 2
    space = max(0, size - rings_offset)
    per_lane_row = max_hosts * DEFAULT_LANE_BYTES
    if ring_bytes is not None and (ring_bytes % PAGE or not MIN_RING_BYTES <= ring_bytes <= MAX_RING_BYTES):
        raise ValueError(f"ring_bytes must be a multiple of 4096 in [4096, 1 GiB], got {ring_bytes}")
    if lanes_per_host is None:
        share = space // 2 if ring_bytes is None else max(0, space - n_rings * ring_bytes)
        lanes_per_host = min(LANES_MAX, share // per_lane_row)
    elif not 0 <= lanes_per_host <= LANES_MAX:
        raise ValueError(f"lanes_per_host must be 0..{LANES_MAX}, got {lanes_per_host}")
    lane_space = lanes_per_host * per_lane_row
    if ring_bytes is None:
        fit = (space - lane_space) // n_rings if space > lane_space else 0
        ring_bytes = min(DEFAULT_RING_CAP, fit // PAGE * PAGE)
    needed = rings_offset + n_rings * max(ring_bytes, MIN_RING_BYTES) + lane_space
    if ring_bytes < MIN_RING_BYTES or needed > size:
        raise PoolTooSmallError(
            f"pool too small: {size} bytes, the layout ({max_hosts} hosts x {channels} channels, "
            f"{max(ring_bytes, MIN_RING_BYTES)}-byte rings) needs {needed}")
    lanes_offset = rings_offset + n_rings * ring_bytes
    return Layout(pool_bytes=lanes_offset + lane_space, max_hosts=max_hosts, dir_slots=dir_slots,
                  channels=channels, ring_bytes=ring_bytes, hosts_offset=hosts_offset, dir_offset=dir_offset,
                  channels_offset=channels_offset, rings_offset=rings_offset, lane_ctl_offset=lane_ctl_offset,
                  lanes_offset=lanes_offset, lanes_per_host=lanes_per_host,
                  lane_bytes=DEFAULT_LANE_BYTES if lanes_per_host else 0)


def encode_superblock(layout: Layout, with_magic: bool = True) -> bytes:
    """The superblock bytes; formatters write them with the magic zeroed, then the magic."""
    raw = bytearray(_SB.pack(
        MAGIC if with_magic else b"\0" * 8, LAYOUT_VERSION, SUPERBLOCK_BYTES, layout.pool_bytes, layout.uuid,
        layout.created_ms, layout.max_hosts, layout.dir_slots, layout.channels, layout.ring_bytes,
        layout.hosts_offset, layout.dir_offset, layout.channels_offset, layout.rings_offset,
        DIR_ENTRY_BYTES, CHANNEL_CTL_BYTES, layout.flags, layout.lane_ctl_offset, layout.lanes_offset,
        layout.lanes_per_host, layout.lane_bytes, 0))
    crc = zlib.crc32(bytes(raw[_CRC_START:_CRC_END]))
    struct.pack_into("<I", raw, _CRC_END, crc)
    return bytes(raw)


def write_superblock(mem: Memory, layout: Layout) -> None:
    """Publish a layout: every byte but the magic first, then the magic in one store."""
    raw = encode_superblock(layout)
    mem.store(0, 0)
    mem.write(8, raw[8:])
    mem.store(0, MAGIC_WORD)


def is_formatted(mem: Memory) -> bool:
    """True once the magic is in place (the format is complete)."""
    return mem.size >= 8 and mem.load(0) == MAGIC_WORD


def looks_empty(mem: Memory) -> bool:
    """True if the superblock area is all zero: nobody has formatted this pool yet."""
    n = min(SUPERBLOCK_BYTES, mem.size)
    return mem.read(0, n) == bytes(n)


def parse_superblock(mem: Memory) -> Layout:
    """Validate the superblock against the buffer; every offset is checked before use."""
    if mem.size < _SB.size:
        raise NotAPoolError(f"not a NotNets pool: only {mem.size} bytes")
    fields = mem.unpack(_SB, 0)
    (magic, version, sb_bytes, pool_bytes, uuid, created_ms, max_hosts, dir_slots, channels, ring_bytes,
     hosts_off, dir_off, chan_off, rings_off, dir_entry_bytes, chan_ctl_bytes, flags, lane_ctl_off, lanes_off,
     lanes_per_host, lane_bytes, crc) = fields
    if magic != MAGIC:
        raise NotAPoolError("not a NotNets pool (no NNETPOOL magic in the first 8 bytes)")
    if version != LAYOUT_VERSION:
        raise LayoutVersionError(f"pool layout version {version}, this code speaks version {LAYOUT_VERSION}")
    raw = mem.read(_CRC_START, _CRC_END - _CRC_START)
    if zlib.crc32(raw) != crc:
        raise PoolCorruptError("pool superblock checksum mismatch (corrupted or half-written superblock)")
    if sb_bytes != SUPERBLOCK_BYTES or dir_entry_bytes != DIR_ENTRY_BYTES or chan_ctl_bytes != CHANNEL_CTL_BYTES:
        raise PoolCorruptError("pool superblock: unexpected record sizes")
    if flags & ~KNOWN_FLAGS:
        raise LayoutVersionError(f"pool superblock: flags {flags:#x} ask for features this code does not know")
    try:
        _check_params(max_hosts, dir_slots, channels)
    except ValueError as exc:
        raise PoolCorruptError(f"pool superblock: {exc}") from None
    if ring_bytes % PAGE or not MIN_RING_BYTES <= ring_bytes <= MAX_RING_BYTES:
        raise PoolCorruptError(f"pool superblock: bad ring size {ring_bytes}")
    expected = _regions(max_hosts, dir_slots, channels)
    if (hosts_off, dir_off, chan_off, lane_ctl_off, rings_off) != expected:
        raise PoolCorruptError("pool superblock: region offsets do not match the layout parameters")
    if not 0 <= lanes_per_host <= LANES_MAX or lane_bytes != (DEFAULT_LANE_BYTES if lanes_per_host else 0):
        raise PoolCorruptError(f"pool superblock: bad extent lanes ({lanes_per_host} x {lane_bytes} bytes)")
    end = rings_off + max_hosts * channels * 2 * ring_bytes
    if lanes_off != end:
        raise PoolCorruptError("pool superblock: the extent lanes do not follow the rings")
    end += max_hosts * lanes_per_host * lane_bytes
    if pool_bytes != end:
        raise PoolCorruptError(f"pool superblock: size field {pool_bytes} does not match the layout ({end})")
    if pool_bytes > mem.size:
        raise PoolTooSmallError(f"pool formatted for {pool_bytes} bytes but only {mem.size} are mapped")
    return Layout(pool_bytes=pool_bytes, max_hosts=max_hosts, dir_slots=dir_slots, channels=channels,
                  ring_bytes=ring_bytes, hosts_offset=hosts_off, dir_offset=dir_off, channels_offset=chan_off,
                  rings_offset=rings_off, uuid=uuid, created_ms=created_ms, flags=flags, lane_ctl_offset=lane_ctl_off,
                  lanes_offset=lanes_off, lanes_per_host=lanes_per_host, lane_bytes=lane_bytes)


# -- directory entries -------------------------------------------------------------------
def read_name(mem: Memory, entry: int) -> Optional[str]:
    """The endpoint name of a directory entry, or None if the stored name is invalid."""
    n = mem.load(entry + DIR_NAME_LEN)
    if not 0 < n <= MAX_NAME_BYTES:
        return None
    try:
        return mem.read(entry + DIR_NAME, n).decode("utf-8")
    except UnicodeDecodeError:
        return None


def encode_name(name: str) -> bytes:
    raw = name.encode("utf-8")
    if not raw or len(raw) > MAX_NAME_BYTES:
        raise ValueError(f"endpoint name must be 1..{MAX_NAME_BYTES} UTF-8 bytes, got {name!r}")
    return raw


def write_name(mem: Memory, entry: int, name: str) -> None:
    raw = encode_name(name)
    mem.fill(entry + DIR_NAME, MAX_NAME_BYTES, 0)
    mem.write(entry + DIR_NAME, raw)
    mem.store(entry + DIR_NAME_LEN, len(raw))
