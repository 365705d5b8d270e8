"""Reassembly of messages that travel in several MESSAGE frames.

A chunked message is copied straight from the ring into one buffer of its announced
size (the ring reader's sink), so a large message costs one copy on the receiving
side instead of two. Protobuf parsers take the buffer as it is; any other
deserializer gets ``bytes``, as grpcio would give it.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

from ..errors import ProtocolError

try:
    from google.protobuf.message import Message as _ProtobufMessage
except ImportError:  # pragma: no cover - protobuf comes with grpcio-tools
    _ProtobufMessage = None


def as_view(data: Any) -> memoryview:
    """A deserializer that takes a message as it lies: a read-only ``memoryview``.

    Given as ``response_deserializer`` (client) or ``request_deserializer`` (server), a
    large message that came in one frame is a view into the pool's ring, not a copy; it
    stays valid until it is dropped, released (``view.release()``) or, on the server,
    until the call ends (docs/rpc.md, "Zero copy"). Over grpcio it wraps the bytes, so the
    same code runs on both transports."""
    if type(data) is memoryview and data.readonly:
        return data
    return memoryview(data).toreadonly()


def as_bytes(message: Any) -> bytes:
    """A serializer for messages that already are buffers (a view from ``as_view``, a
    bytearray): NotNets writes the buffer into the ring as it is and never calls this;
    grpcio, which sends only ``bytes``, gets a copy."""
    return message if type(message) is bytes else bytes(message)


def takes_buffers(deserializer: Optional[Callable[[Any], Any]]) -> bool:
    """True for ``as_view`` and for generated ``Message.FromString`` parsers, which accept
    any buffer: they may be handed views into the pool instead of ``bytes``."""
    if deserializer is as_view:
        return True
    owner = getattr(deserializer, "__self__", None)
    return (_ProtobufMessage is not None and isinstance(owner, type) and issubclass(owner, _ProtobufMessage)
            and getattr(deserializer, "__name__", "") == "FromString")


class Partial:
    """One message being filled chunk by chunk; every length is checked."""

    __slots__ = ("buf", "view", "filled", "total")

    def __init__(self, total: int) -> None:
        self.buf = bytearray(total)
        self.view = memoryview(self.buf)
        self.filled = 0
        self.total = total

    def slot(self, n: int) -> Optional[memoryview]:
        """Where the next ``n`` bytes go, or None if they would overrun the message."""
        end = self.filled + n
        if end > self.total:
            return None
        view = self.view[self.filled : end]
        self.filled = end
        return view

    def add(self, chunk: bytes) -> None:
        view = self.slot(len(chunk))
        if view is None:
            raise ProtocolError("message chunks exceed the message length")
        view[:] = chunk

    def finish(self, as_buffer: bool) -> Union[bytes, bytearray]:
        if self.filled != self.total:
            raise ProtocolError(f"message ended after {self.filled} of {self.total} bytes")
        self.view.release()
        return self.buf if as_buffer else bytes(self.buf)


def on_chunk(holder: Any, flags_more: bool, aux: int, body: Optional[bytes], as_buffer: bool
             ) -> Optional[Union[bytes, bytearray]]:
    """Feed one MESSAGE frame to ``holder.partial``; returns the whole message when complete.

    ``body`` is None when the ring reader already copied the chunk into the sink slot.
    """
    partial = holder.partial
    if body is not None:
        if partial is None:
            if not flags_more:
                if len(body) != aux:
                    raise ProtocolError("message length does not match its frame")
                return body
            partial = holder.partial = Partial(aux)
        elif partial.total != aux:
            raise ProtocolError("message chunks disagree on the message length")
        partial.add(body)
    elif partial is None:
        raise ProtocolError("chunk without a message")
    if flags_more:
        return None
    holder.partial = None
    return partial.finish(as_buffer)


def sink_slot(holder: Any, aux: int, n: int, limit: int) -> Optional[memoryview]:
    """The ring sink's answer for a chunk of ``holder``'s current message (None: copy as bytes)."""
    if aux > limit or n == aux and holder.partial is None:
        return None
    partial = holder.partial
    if partial is None:
        partial = holder.partial = Partial(aux)
    elif partial.total != aux:
        return None
    return partial.slot(n)
