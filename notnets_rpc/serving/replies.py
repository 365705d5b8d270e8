"""How the server answers: frames to the response ring, statuses, cancellation.

A mixin of ``server.Server``. Every call ends exactly once: whoever pops it from its
channel's table (the reply, a cancel, the deadline, shutdown) sends or drops its status.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import grpc

from ..wire import frames as F
from ..backoff import Backoff
from ..errors import ProtocolError
from .call import CANCELLED, ServerCall
from .channels import ServerChannel
from ..status import OK, code_to_wire

_log = logging.getLogger("notnets_rpc.server")


class Replies:
    """Response frames, final statuses and cancellation for ``server.Server``."""

    def _write(self, ch: ServerChannel, kind: int, flags: int, cid: int, aux: int, parts: Sequence[Any], n: int,
               call: Optional[ServerCall]) -> bool:
        """One frame to the response ring; waits for room; False if the channel went away."""
        with ch.tx_lock:
            try:
                if ch.dropped:
                    return False
                if ch.tx.try_write(kind, flags, cid, aux, parts, n):
                    ch.bytes_out += n
                    if ch.same_host and ch.tx.mem.load(ch.client_sleep):
                        ch.tx.mem.wake_word(ch.tx.head_off)
                    return True
                if ch.same_host:
                    ch.tx.mem.wake_word(ch.tx.head_off)  # it may be asleep with a full ring to drain
                backoff = Backoff(spin=0) if ch.same_process else Backoff()
                while True:
                    if ch.dropped or self._stopped.is_set():
                        return False
                    if call is not None and not call.active and kind != F.STATUS:
                        return False
                    backoff.pause()
                    if ch.tx.try_write(kind, flags, cid, aux, parts, n):
                        ch.bytes_out += n
                        if ch.same_host:
                            ch.tx.mem.wake_word(ch.tx.head_off)
                        return True
            except ProtocolError as exc:
                _log.warning("dropping channel host%d/%d: %s", ch.host, ch.slot, exc)
                ch.dropped = True
                return False

    def _send_headers(self, call: ServerCall) -> None:
        if call.headers_sent or not call.active:
            return
        call.headers_sent = True
        raw = F.encode_metadata(call.initial)
        self._write(call.channel, F.HEADERS, 0, call.call_id, 0, (raw,), len(raw), call)

    def _send_message(self, call: ServerCall, payload: bytes) -> None:
        n = len(payload)
        if n > self._max_send:
            self._fail(call, grpc.StatusCode.RESOURCE_EXHAUSTED, f"Sent message larger than max ({n} vs. {self._max_send})")
            return
        if not call.headers_sent:
            self._send_headers(call)
        ch = call.channel
        chunk = self._pool.layout.chunk_bytes
        if n <= chunk:
            self._write(ch, F.MESSAGE, 0, call.call_id, n, (payload,), n, call)
            return
        view = memoryview(payload)
        for start in range(0, n, chunk):
            piece = view[start : start + chunk]
            more = F.F_MORE if start + chunk < n else 0
            if not self._write(ch, F.MESSAGE, more, call.call_id, n, (piece,), len(piece), call):
                return

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

    def _end(self, call: ServerCall, code: grpc.StatusCode, details: str, message: Optional[bytes]) -> None:
        with self._state_lock:
            if call.finished or call.channel.calls.pop(call.call_id, None) is None:
                return
            call.finished = True
            send = call.active
            call.active = False
            self._forget(call)
        ch = call.channel
        if send and code is OK and message is not None and not details and call.initial is None \
                and not call.trailing and not call.headers_sent and len(message) <= self._bare_limit:
            self._write(ch, F.STATUS, F.F_BARE, call.call_id, 0, (message,), len(message), None)
        elif send:
            trailing = F.encode_metadata(call.trailing)
            detail_raw = details.encode("utf-8") if details else b""
            initial = None
            flags = 0
            if not call.headers_sent:
                initial = F.encode_metadata(call.initial)
                call.headers_sent = True
                flags |= F.F_HAS_HEADERS
            chunk = self._pool.layout.chunk_bytes if self._pool else 0
            inline = message is not None and (len(message) + len(trailing) + len(detail_raw)
                                              + (len(initial) if initial else 0) + F.STATUS_HEAD.size) <= chunk
            if message is not None and not inline:
                if initial is not None:
                    self._write(ch, F.HEADERS, 0, call.call_id, 0, (initial,), len(initial), None)
                    initial, flags = None, flags & ~F.F_HAS_HEADERS
                self._send_large(call, message)
            if inline:
                flags |= F.F_HAS_MESSAGE
            parts = F.status_parts(detail_raw, trailing, initial, message if inline else None)
            n = sum(len(p) for p in parts)
            self._write(ch, F.STATUS, flags, call.call_id, code_to_wire(code), parts, n, None)
        ch.calls_done += 1
        if code is not OK:
            ch.errors += 1
        if call.callbacks is not None:
            self._run_callbacks(call)

    def _send_large(self, call: ServerCall, message: bytes) -> None:
        ch = call.channel
        chunk = self._pool.layout.chunk_bytes
        n = len(message)
        view = memoryview(message)
        for start in range(0, n, chunk):
            piece = view[start : start + chunk]
            more = F.F_MORE if start + chunk < n else 0
            if not self._write(ch, F.MESSAGE, more, call.call_id, n, (piece,), len(piece), None):
                return

    def _reject(self, ch: ServerChannel, cid: int, code: grpc.StatusCode, details: str) -> None:
        parts = F.status_parts(details.encode("utf-8"), b"", b"", None)
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
        with self._state_lock:
            if call.finished or call.channel.calls.pop(call.call_id, None) is None:
                return
            call.finished = True
            call.cancelled = True
            call.active = False
            self._forget(call)
        if call.requests is not None:
            call.requests.put(CANCELLED)
        if notify_client and not call.channel.dropped:
            parts = F.status_parts(details.encode("utf-8"), b"", b"" if not call.headers_sent else None, None)
            flags = 0 if call.headers_sent else F.F_HAS_HEADERS
            n = sum(len(p) for p in parts)
            self._write(call.channel, F.STATUS, flags, call.call_id, code_to_wire(code), parts, n, None)
        call.channel.calls_done += 1
        call.channel.errors += 1
        self._run_callbacks(call)

    def _run_callbacks(self, call: ServerCall) -> None:
        with self._state_lock:
            callbacks, call.callbacks = call.callbacks, None
        for callback in callbacks or ():
            try:
                callback()
            except Exception:
                _log.exception("RPC termination callback raised")

