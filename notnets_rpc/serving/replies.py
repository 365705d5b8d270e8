"""How the server answers: frames to the response ring, statuses, cancellation.

A mixin of ``server.Server``. Every call ends exactly once: whoever pops it from its
channel's table (the reply, a cancel, the deadline, shutdown) sends or drops its status.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import grpc

from ..wire import frames as F
from ..wire.extents import F_EXTENT, REF, RETURNED
from ..backoff import Backoff
from ..errors import ProtocolError
from .call import ACTIVE, ANSWERED, CANCELLED, CANCELLED_STAGE, ServerCall
from .channels import ServerChannel
from ..status import OK, code_to_wire

_log = logging.getLogger("notnets_rpc.server")


def _same_bytes(payload: Any, request: Any, n: int) -> bool:
    """``payload`` (``n`` bytes) holds the same bytes as ``request``: our copy (bytes) or a
    lent view of the lane (the handler may have released it: then no). A whole view of the
    copy matches by identity; bytes and bytearrays are compared by memcmp (``bytes ==
    memoryview`` would compare item by item: 1.7 ms for 1 MiB; ``startswith`` takes the
    view as a buffer)."""
    try:
        if len(request) != n:
            return False
    except ValueError:  # a released view
        return False
    if type(payload) is memoryview:
        return payload.obj is request and payload.nbytes == n and payload.contiguous
    if type(payload) not in (bytes, bytearray):
        return False
    return payload.startswith(request) if type(request) is memoryview else payload == request


class Replies:
    """Response frames, final statuses and cancellation for ``server.Server``."""

    def _write(self, ch: ServerChannel, kind: int, flags: int, cid: int, aux: int, parts: Sequence[Any], n: int,
               call: Optional[ServerCall]) -> bool:
        """One frame to the response ring, or to the channel's outbox when the ring is full
        (never waits: see outbox.py). False if the channel went away."""
        if ch.dropped:
            return False
        if ch.outbox.send(kind, flags, cid, aux, parts, n, call):
            ch.bytes_out += n
            if ch.outbox.frames:
                self._backlog[ch] = True
            return True
        if ch.outbox.broken is not None and not ch.dropped:
            _log.warning("dropping channel host%d/%d: %s", ch.host, ch.slot, ch.outbox.broken)
            ch.dropped = True
        return False

    def _await_window(self, call: ServerCall) -> bool:
        """(a streaming handler's thread, no lock held) Wait until the call's queued bytes
        fit its window again; False if the call ended meanwhile (stop sending)."""
        ch = call.channel
        window = self._call_window
        if call.queued <= window:
            return call.active
        backoff = Backoff(self._tune, spin=0, max_sleep=0.002)
        while call.queued > window:
            if not call.active or ch.dropped or self._stopped.is_set():
                return False
            ch.outbox.flush()
            backoff.pause()
        return call.active

    def _took_request(self, call: ServerCall, n: int) -> None:
        """(the handler's thread) Its iterator took an ``n``-byte request off the queue:
        once half a window is owed, credit the client with a WINDOW frame (through the
        outbox, so it never waits), and the client may send that much more."""
        call.taken += n
        owed = call.taken - call.credited
        if owed >= self._request_window // 2 and call.active:
            call.credited = call.taken
            self._write(call.channel, F.WINDOW, 0, call.call_id, owed, (), 0, None)

    def _flush_backlog(self) -> None:
        """(poller) Write what the outboxes hold, as far as the rings have room."""
        for ch in list(self._backlog):
            if ch.outbox.flush() or ch.dropped:
                self._backlog.pop(ch, None)
            elif ch.outbox.broken is not None and not ch.dropped:
                _log.warning("dropping channel host%d/%d: %s", ch.host, ch.slot, ch.outbox.broken)
                ch.dropped = True

    def _send_headers(self, call: ServerCall) -> None:
        if call.headers_sent or not call.active:
            return
        call.headers_sent = True
        raw = F.encode_metadata(call.initial)
        if len(raw) > self._frame_limit:
            self._fail(call, grpc.StatusCode.RESOURCE_EXHAUSTED,
                       f"initial metadata of {len(raw)} bytes exceeds the limit of {self._frame_limit}")
            return
        self._write(call.channel, F.HEADERS, 0, call.call_id, 0, (raw,), len(raw), call)

    def _send_message(self, call: ServerCall, payload: bytes) -> None:
        n = len(payload)
        if n > self._max_send:
            self._fail(call, grpc.StatusCode.RESOURCE_EXHAUSTED, f"Sent message larger than max ({n} vs. {self._max_send})")
            return
        if not call.headers_sent:
            self._send_headers(call)
        if not self._await_window(call):
            return
        self._write_message(call, payload, call)

    def _write_message(self, call: ServerCall, payload: bytes, owner: Optional[ServerCall]) -> None:
        """A message as one MESSAGE frame, or as chunks when it is larger than a chunk."""
        ch = call.channel
        n = len(payload)
        chunk = self._chunk
        if n <= chunk:
            self._write(ch, F.MESSAGE, 0, call.call_id, n, (payload,), n, owner)
            return
        if ch.lanes is not None and self._write_extent(ch, call.call_id, payload, n, owner):
            return
        view = memoryview(payload)
        for start in range(0, n, chunk):
            piece = view[start : start + chunk]
            more = F.F_MORE if start + chunk < n else 0
            if not self._write(ch, F.MESSAGE, more, call.call_id, n, (piece,), len(piece), owner):
                return

    def _write_extent(self, ch: ServerChannel, cid: int, payload: Any, n: int, owner: Optional[ServerCall],
                      status: Optional[tuple] = None) -> bool:
        """A message too large for half a ring as an extent (wire/extents.py): handed
        back when it is the request of the call being answered inline (the request's
        view itself, or bytes equal to the request's: an echo; the comparison stays in
        our memory and costs less than writing the pool), else copied into our lane;
        only the reference goes through the ring: in a MESSAGE frame, or with ``status``
        ((flags, code, details, trailing, initial) of a unary call's end) as the message
        of its STATUS frame, one frame in place of HEADERS, MESSAGE and STATUS. False: no
        lane room now (chunks)."""
        back = ch.extent_in
        if back is not None and self._is_request(back, cid, payload):
            self._write_ref(ch, cid, REF.pack(back[3], RETURNED, back[4], back[5]), owner, status)
            return True
        lanes = ch.lanes
        with lanes.lock:  # lane frames and their references in the same order
            ref = lanes.put(cid, n, (payload,))
            if ref is None:
                return False
            self._write_ref(ch, cid, ref, owner, status)
        return True

    @staticmethod
    def _is_request(back: tuple, cid: int, payload: Any) -> bool:
        """``payload`` is the request of call ``cid``, the extent ``back`` names
        (``ch.extent_in``: call id, the request view or copy, its reference, lane,
        position, length): that very view, or the same bytes."""
        n = len(payload)
        return back[0] == cid and back[5] == n and (payload is back[1] or _same_bytes(payload, back[1], n))

    def _write_ref(self, ch: ServerChannel, cid: int, ref: bytes, owner: Optional[ServerCall],
                   status: Optional[tuple]) -> None:
        if status is None:
            self._write(ch, F.MESSAGE, F_EXTENT, cid, 0, (ref,), len(ref), owner)
            return
        flags, code, detail_raw, trailing, initial = status
        parts = F.status_parts(detail_raw, trailing, initial, ref)
        self._write(ch, F.STATUS, flags | F.F_HAS_MESSAGE | F_EXTENT, cid, code, parts, sum(len(p) for p in parts), None)

    def _finish(self, call: ServerCall, message: Optional[bytes]) -> None:
        """Send the final status (with the unary response inline when it fits)."""
        code = call.code_ if call.code_ is not None else OK
        details = call.details_ if call.details_ is not None else ""
        if message is not None:
            if len(message) > self._max_send:
                self._fail(call, grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"Sent message larger than max ({len(message)} vs. {self._max_send})")
                return
        self._end(call, code, details, message)

    def _fail(self, call: ServerCall, code: grpc.StatusCode, details: str) -> None:
        """End a call with an error; a code or details the handler set take precedence (grpcio)."""
        if call.code_ is not None:
            code = call.code_
        if call.details_ is not None:
            details = call.details_
        self._end(call, code, details, None)

    def _end(self, call: ServerCall, code: grpc.StatusCode, details: str, message: Optional[bytes],
             cancelled: bool = False, notify: bool = True) -> None:
        """The one way a server call ends: an answer (``_finish``/``_fail``) or a
        cancellation (``_cancel_call``: client, deadline, lost channel, server, shutdown).

        Whoever pops the call from its channel's table moves it out of ACTIVE; everyone
        else returns. Then: the budget charge is returned, a handler waiting for requests
        is woken, a cancelled call's queued frames are dropped, the status is written
        (unless the client is gone or ended it itself), and the callbacks run."""
        with self._state_lock:
            if call.stage is not ACTIVE or call.channel.calls.pop(call.call_id, None) is None:
                return
            call.stage = CANCELLED_STAGE if cancelled else ANSWERED
            self._forget(call)
        if call.reserved:
            self._unreserve(call)
        if call.requests is not None:
            call.requests.put(CANCELLED)  # a handler still iterating requests stops
        ch = call.channel
        if cancelled and call.queued:
            ch.outbox.purge(call.call_id)  # a cancelled call stops sending at once
        if notify and not ch.dropped:
            if cancelled:
                self._write_status(call, code, details, None, ())
            else:
                self._write_status(call, code, details, message, call.trailing)
        ch.calls_done += 1
        if code is not OK:
            ch.errors += 1
        if call.callbacks is not None:
            self._run_callbacks(call)

    def _write_status(self, call: ServerCall, code: grpc.StatusCode, details: str, message: Optional[bytes],
                      trailing_md: Any) -> None:
        ch = call.channel
        if code is OK and message is not None and not details and call.initial is None \
                and not trailing_md and not call.headers_sent and len(message) <= self._bare_limit:
            self._write(ch, F.STATUS, F.F_BARE, call.call_id, 0, (message,), len(message), None)
            return
        try:
            trailing = F.encode_metadata(trailing_md)
            initial = None if call.headers_sent else F.encode_metadata(call.initial)
        except ValueError:  # the handler set metadata grpc would refuse
            code, details, message, trailing = grpc.StatusCode.INTERNAL, "Invalid metadata", None, b""
            initial = None if call.headers_sent else b""
        detail_raw = details.encode("utf-8") if details else b""
        flags = 0
        if initial is not None:
            call.headers_sent = True
            flags |= F.F_HAS_HEADERS
        meta = len(trailing) + len(detail_raw) + (len(initial) if initial else 0) + F.STATUS_HEAD.size
        if meta > self._frame_limit:  # grpcio: RESOURCE_EXHAUSTED for metadata over its limit
            code, message, trailing = grpc.StatusCode.RESOURCE_EXHAUSTED, None, b""
            initial = b"" if initial is not None else None
            detail_raw = f"status details and metadata of {meta} bytes exceed the limit of {self._frame_limit}".encode()
        inline = message is not None and (len(message) + len(trailing) + len(detail_raw)
                                          + (len(initial) if initial else 0) + F.STATUS_HEAD.size) <= self._chunk
        if message is not None and not inline:
            if ch.lanes is not None and len(message) > self._chunk and self._write_extent(
                    ch, call.call_id, message, len(message), None,
                    (flags, code_to_wire(code), detail_raw, trailing, initial)):
                return  # the message's reference in the STATUS frame
            if initial is not None:
                self._write(ch, F.HEADERS, 0, call.call_id, 0, (initial,), len(initial), None)
                initial, flags = None, flags & ~F.F_HAS_HEADERS
            self._write_message(call, message, None)
        if inline:
            flags |= F.F_HAS_MESSAGE
        parts = F.status_parts(detail_raw, trailing, initial, message if inline else None)
        n = sum(len(p) for p in parts)
        self._write(ch, F.STATUS, flags, call.call_id, code_to_wire(code), parts, n, None)

    def _reject(self, ch: ServerChannel, cid: int, code: grpc.StatusCode, details: str) -> None:
        parts = F.status_parts(details.encode("utf-8")[:1024], b"", b"", None)
        n = sum(len(p) for p in parts)
        self._write(ch, F.STATUS, F.F_HAS_HEADERS, cid, code_to_wire(code), parts, n, None)
        ch.calls_done += 1
        ch.errors += 1

    def _forget(self, call: ServerCall) -> None:
        """(state lock held) the call no longer counts as in flight."""
        call.channel.calls.pop(call.call_id, None)
        if call.deadline is not None:
            self._deadlines.pop(id(call), None)

    def _cancel_call(self, call: ServerCall, code: grpc.StatusCode, details: str, notify_client: bool) -> None:
        """Cancellation from the client, the deadline, the server itself or shutdown."""
        self._end(call, code, details, None, cancelled=True, notify=notify_client)

    def _run_callbacks(self, call: ServerCall) -> None:
        with self._state_lock:
            callbacks, call.callbacks = call.callbacks, None
        for callback in callbacks or ():
            try:
                callback()
            except Exception:
                _log.exception("RPC termination callback raised")

