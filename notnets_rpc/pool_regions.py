"""Name the part of a NotNets pool that a byte offset falls in, for reports.

"channel 1/3 line 2 (request ring head)" tells a reader of a coherence report which
protocol word two hosts fought over; a bare offset does not. The superblock is read
from the buffer and validated like any other pool byte; an unformatted or foreign
buffer gets no name.
"""

from __future__ import annotations

from typing import Any, Optional

from .wire import layout as L
from .errors import PoolError
from .memory import Memory

_DIR_WORDS = {L.DIR_STATE: "state", L.DIR_PID: "pid", L.DIR_HEARTBEAT: "heartbeat", L.DIR_STARTED: "started",
              L.DIR_CALLS: "calls", L.DIR_ERRORS: "errors", L.DIR_BYTES_IN: "bytes in",
              L.DIR_BYTES_OUT: "bytes out", L.DIR_NAME_LEN: "name length", L.DIR_SLEEP: "sleep",
              L.DIR_WAKE: "wake index", L.DIR_KICK: "kick"}
_CH_WORDS = {L.CH_CLAIM: "claim", L.CH_TARGET: "target", L.CH_CLIENT_PID: "client pid",
             L.CH_CLIENT_HEARTBEAT: "client heartbeat", L.CH_CALLS_STARTED: "calls started",
             L.CH_OPENED: "opened", L.CH_CLIENT_SLEEP: "client sleep", L.CH_ACCEPT: "accept",
             L.CH_SERVER_PID: "server pid", L.CH_CALLS_DONE: "calls done", L.CH_ERRORS: "errors",
             L.CH_BYTES_IN: "bytes in", L.CH_BYTES_OUT: "bytes out", L.CH_REQ_HEAD: "request ring head",
             L.CH_REQ_TAIL: "request ring tail", L.CH_RESP_HEAD: "response ring head",
             L.CH_RESP_TAIL: "response ring tail", L.CH_REQ_LANE_TAIL: "request lane tail",
             L.CH_RESP_LANE_TAIL: "response lane tail"}
_LANE_WORDS = {L.LANE_CLAIM: "claim", L.LANE_PID: "pid", L.LANE_CHANNEL: "channel", L.LANE_DIRECTION: "direction",
               L.LANE_HEAD: "head"}


def _words(names: dict, rel: int, line_bytes: int = L.CACHE_LINE) -> str:
    line = rel - rel % line_bytes
    inside = [name for off, name in sorted(names.items()) if line <= off < line + line_bytes]
    return ", ".join(inside) if inside else "no words"


def name_offset(lay: L.Layout, offset: int) -> str:
    """The region of ``offset`` in a pool with layout ``lay``."""
    if offset < L.SUPERBLOCK_BYTES:
        return "superblock"
    if offset < lay.dir_offset:
        host, rel = divmod(offset - lay.hosts_offset, L.HOST_ENTRY_BYTES)
        return f"host table, host {host}" if host < lay.max_hosts else "padding after the host table"
    if offset < lay.channels_offset:
        index, rel = divmod(offset - lay.dir_offset, L.DIR_ENTRY_BYTES)
        if index >= lay.dir_entries:
            return "padding after the directory"
        host, slot = divmod(index, lay.dir_slots)
        name = "name" if L.DIR_NAME <= rel < L.DIR_NAME + L.MAX_NAME_BYTES else None
        return f"directory entry {host}/{slot} ({name or _words(_DIR_WORDS, rel)})"
    if offset < lay.lane_ctl_offset:
        index, rel = divmod(offset - lay.channels_offset, L.CHANNEL_CTL_BYTES)
        if index >= lay.max_hosts * lay.channels:
            return "padding after the channel table"
        host, slot = divmod(index, lay.channels)
        return f"channel {host}/{slot} line {rel // L.CACHE_LINE} ({_words(_CH_WORDS, rel)})"
    if offset < lay.rings_offset:
        index, rel = divmod(offset - lay.lane_ctl_offset, L.LANE_CTL_BYTES)
        host, lane = divmod(index, L.LANES_MAX)
        if host >= lay.max_hosts or lane >= lay.lanes_per_host:
            return "padding in the extent lane table"
        return f"extent lane {host}/{lane} control ({_words(_LANE_WORDS, rel)})"
    if offset < lay.lanes_offset:
        ring, rel = divmod(offset - lay.rings_offset, lay.ring_bytes)
        index, which = divmod(ring, 2)
        host, slot = divmod(index, lay.channels)
        return f"{'response' if which else 'request'} ring of channel {host}/{slot}, byte {rel}"
    if offset < lay.pool_bytes:
        index, rel = divmod(offset - lay.lanes_offset, lay.lane_bytes)
        host, lane = divmod(index, lay.lanes_per_host)
        return f"extent lane {host}/{lane}, byte {rel}"
    return "past the pool layout"


def describe(buf: Any, offset: int) -> Optional[str]:
    """Name ``offset`` from the superblock in ``buf``; None if ``buf`` holds no valid pool."""
    mem = Memory(memoryview(buf), writable=False)
    try:
        lay = L.parse_superblock(mem)
    except PoolError:
        return None
    finally:
        mem.release()
    return name_offset(lay, offset)
