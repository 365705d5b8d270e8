"""A client that writes the wire format by hand, for tests of broken and malicious peers.

It claims a channel slot like a real client (pool.py), then writes whatever frames a
test asks for and reads responses only when told to.
"""

from __future__ import annotations

import os
import threading
import time
from typing import List, Optional

from notnets_rpc.pool import Pool, now_ms
from notnets_rpc.wire import frames as F
from notnets_rpc.wire import layout as L


class RawChannel:
    def __init__(self, pool_path: str, name: str, host_id: int = 0, timeout: float = 5.0) -> None:
        self.pool = Pool.acquire(pool_path, host_id)
        self.mem = self.pool.mem
        endpoint = self.pool.resolve(name)
        assert endpoint is not None, f"no live server publishes {name!r}"
        self.slot, self.generation = self.pool.claim_channel(endpoint, os.getpid())
        self.ctl = self.pool.layout.channel(host_id, self.slot)
        self.tx, self.rx = self.pool.client_rings(self.slot)
        want = L.pack_state(self.generation, L.ACC_ACCEPTED)
        end = time.monotonic() + timeout
        while self.mem.load(self.ctl + L.CH_ACCEPT) != want:
            assert time.monotonic() < end, "the server did not accept the raw channel"
            time.sleep(0.005)

    def beat(self) -> None:
        """Keep the server from reclaiming the channel (it watches this word change)."""
        self.mem.store(self.ctl + L.CH_CLIENT_HEARTBEAT, self.mem.load(self.ctl + L.CH_CLIENT_HEARTBEAT) + 1)

    def write(self, kind: int, flags: int, cid: int, aux: int, body: bytes) -> bool:
        return self.tx.try_write(kind, flags, cid, aux, (body,), len(body))

    def unary(self, cid: int, method: str, payload: bytes, timeout_us: int = 0, metadata: bytes = b"") -> bool:
        """One CALL frame carrying a whole unary request; False if the ring is full."""
        m = method.encode()
        body = b"".join(F.call_parts(m, timeout_us, metadata, payload))
        return self.write(F.CALL, F.F_HAS_MESSAGE | F.F_END_STREAM, cid, 0, body)

    def read_all(self) -> List[tuple]:
        frames = []
        while True:
            frame = self.rx.read()
            if frame is None:
                return frames
            frames.append(frame)

    def wait_status(self, cid: int, timeout: float = 5.0) -> Optional[tuple]:
        """Read until the STATUS frame of ``cid``; None on timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for frame in self.read_all():
                if frame[0] == F.STATUS and frame[2] == cid:
                    return frame
            self.beat()
            time.sleep(0.002)
        return None

    def close(self) -> None:
        self.pool.close_channel(self.slot, self.generation)
        self.pool.release()


class RawServer:
    """A server that writes the wire format by hand: it publishes ``name``, beats, accepts
    the first channel that claims it, then writes whatever frames a test asks for."""

    def __init__(self, pool_path: str, name: str, host_id: int = 0, beat: bool = True) -> None:
        """``beat=False``: the heartbeat word stands still (a stalled server, for up to
        NOTNETS_STALE_MS before clients give up on it)."""
        self.pool = Pool.acquire(pool_path, host_id)
        self.mem = self.pool.mem
        self.endpoint = self.pool.publish(name, os.getpid())
        self._entry = self.pool.layout.dir_entry(self.endpoint.host, self.endpoint.slot)
        self._stop = threading.Event()
        self._beater = threading.Thread(target=self._beat, name="raw-server-beat", daemon=True)
        if beat:
            self._beater.start()
        self.rx = self.tx = None

    def _beat(self) -> None:
        while not self._stop.wait(0.05):
            self.mem.store(self._entry + L.DIR_HEARTBEAT, now_ms())

    def accept(self, timeout: float = 10.0) -> None:
        """Wait for a client to claim a channel to us, and accept it."""
        lay = self.pool.layout
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for host in range(lay.max_hosts):
                for k in range(lay.channels):
                    off = lay.channel(host, k)
                    gen, state = L.unpack_state(self.mem.load(off + L.CH_CLAIM))
                    index, _ = L.unpack_target(self.mem.load(off + L.CH_TARGET))
                    if state == L.CH_OPEN and index == self.endpoint.index:
                        for field in (L.CH_REQ_TAIL, L.CH_RESP_HEAD):
                            self.mem.store(off + field, 0)
                        self.mem.store(off + L.CH_SERVER_PID, os.getpid())
                        self.rx, self.tx = self.pool.server_rings(host, k)
                        self.mem.store(off + L.CH_ACCEPT, L.pack_state(gen, L.ACC_ACCEPTED))
                        return
            time.sleep(0.005)
        raise AssertionError("no client claimed a channel to the raw server")

    def write(self, kind: int, flags: int, cid: int, aux: int, body: bytes) -> bool:
        return self.tx.try_write(kind, flags, cid, aux, (body,), len(body))

    def calls(self, n: int, timeout: float = 10.0) -> List[int]:
        """The ids of the next ``n`` CALL frames (other frames are skipped)."""
        ids: List[int] = []
        end = time.monotonic() + timeout
        while len(ids) < n:
            assert time.monotonic() < end, f"only {len(ids)} of {n} calls arrived"
            frame = self.rx.read()
            if frame is None:
                time.sleep(0.002)
            elif frame[0] == F.CALL:
                ids.append(frame[2])
        return ids

    def close(self) -> None:
        self._stop.set()
        if self._beater.is_alive():
            self._beater.join(5)
        self.pool.set_endpoint_state(self.endpoint, L.DIR_CLOSED)
        self.pool.release()


def forge_entry(pool_path: str, host: int, slot: int, name: str, heartbeat_ms: int, pid: int = 4_000_000,
                generation: int = 1) -> None:
    """Write a directory entry nobody serves (a forgery, or a dead server's leftover)."""
    pool = Pool.acquire(pool_path, host)
    try:
        mem, off = pool.mem, pool.layout.dir_entry(host, slot)
        L.write_name(mem, off, name)
        for field, value in ((L.DIR_PID, pid), (L.DIR_HEARTBEAT, heartbeat_ms), (L.DIR_STARTED, heartbeat_ms)):
            mem.store(off + field, value)
        mem.store(off + L.DIR_STATE, L.pack_state(generation, L.DIR_LIVE))
    finally:
        pool.release()
