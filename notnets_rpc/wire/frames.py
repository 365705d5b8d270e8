"""Frames: what travels through a ring, and the codecs for their bodies.

Pure functions on bytes. A frame is a 16-byte header followed by ``body_len`` bytes,
padded to a multiple of 8 in the ring:

    u32 body_len | u8 kind | u8 flags | u16 magic 0x4E4E | u32 call_id | u32 aux

See docs/pool-layout.md for each kind's body.
"""

from __future__ import annotations

import re
import struct
from typing import Iterable, Optional, Sequence, Tuple, Union

from ..errors import ProtocolError

HEADER = struct.Struct("<IBBHII")
HEADER_BYTES = HEADER.size  # 16
FRAME_MAGIC = 0x4E4E
ALIGN = 8

# kinds
CALL = 1        # client -> server: start a call (method, timeout, metadata, maybe the first message)
MESSAGE = 2     # both ways: one chunk of one message
HALF_CLOSE = 3  # client -> server: no more request messages
CANCEL = 4      # client -> server: the client gave up on the call
HEADERS = 5     # server -> client: initial metadata
STATUS = 6      # server -> client: final status (maybe with initial metadata and the last message)
PAD = 7         # ring filler up to the end of the ring
WINDOW = 8      # server -> client: a request-streaming call's handler took ``aux`` more bytes (send that much more)
MAX_KIND = WINDOW
KIND_NAMES = {CALL: "CALL", MESSAGE: "MESSAGE", HALF_CLOSE: "HALF_CLOSE", CANCEL: "CANCEL",
              HEADERS: "HEADERS", STATUS: "STATUS", PAD: "PAD", WINDOW: "WINDOW"}

# flags
F_HAS_MESSAGE = 0x01  # CALL / STATUS: a whole message is appended to the body
F_END_STREAM = 0x02   # CALL / MESSAGE (client side): half-close after this message
F_MORE = 0x04         # MESSAGE: more chunks of the same message follow
F_HAS_HEADERS = 0x08  # STATUS: initial metadata included (no HEADERS frame was sent)
F_BARE = 0x10         # STATUS: status OK, no metadata, no details; the body is exactly the message

CALL_HEAD = struct.Struct("<QII")      # timeout_us (0 = none), method_len, metadata_len
STATUS_HEAD = struct.Struct("<III")    # initial_md_len, details_len, trailing_md_len
MD_ITEM = struct.Struct("<HI")         # key_len, value_len

MetadataValue = Union[str, bytes]
Metadata = Tuple[Tuple[str, MetadataValue], ...]


def frame_bytes(body_len: int) -> int:
    """Bytes a frame with this body occupies in a ring (header + body, 8-aligned)."""
    return (HEADER_BYTES + body_len + ALIGN - 1) & ~(ALIGN - 1)


# -- metadata ------------------------------------------------------------------------------
_LEGAL_KEY = re.compile(rb"[0-9a-z_.\-]+\Z")      # HTTP/2 header names as grpc allows them
_LEGAL_VALUE = re.compile(rb"[\x20-\x7e]*\Z")      # values of keys without -bin: printable ASCII


def check_key(kb: bytes) -> bool:
    return len(kb) <= 0xFFFF and _LEGAL_KEY.match(kb) is not None


def encode_metadata(metadata: Optional[Iterable[Tuple[str, MetadataValue]]]) -> bytes:
    """Validated like grpc (validate_metadata.cc): keys lower-case ``[0-9a-z_.-]``;
    ``-bin`` keys carry bytes, other keys printable ASCII. ``ValueError`` names the
    first bad entry (a channel turns it into INTERNAL "Invalid metadata", as grpcio)."""
    if not metadata:
        return b""
    out = bytearray()
    for item in metadata:
        try:
            key, value = item
        except (TypeError, ValueError):
            raise ValueError(f"metadata entries must be (key, value) pairs, got {item!r}") from None
        if not isinstance(key, str) or not key.isascii() or not check_key(key.encode("ascii")):
            raise ValueError(f"illegal metadata key {key!r} (lower-case letters, digits, '_', '.', '-')")
        kb = key.encode("ascii")
        if key.endswith("-bin"):
            if isinstance(value, str):
                value = value.encode("utf-8")
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise ValueError(f"metadata value for {key!r} must be bytes")
            vb = bytes(value)
        else:
            if isinstance(value, str):
                vb = value.encode("utf-8")
            elif isinstance(value, (bytes, bytearray)):
                vb = bytes(value)
            else:
                raise ValueError(f"metadata value for {key!r} must be str, got {type(value).__name__}")
            if not _LEGAL_VALUE.match(vb):
                raise ValueError(f"illegal metadata value for {key!r} (printable ASCII only, or use a -bin key)")
        out += MD_ITEM.pack(len(kb), len(vb))
        out += kb
        out += vb
    return bytes(out)


def decode_metadata(raw: Union[bytes, memoryview]) -> Metadata:
    """Inverse of ``encode_metadata``, with the same rules; any breach is a ``ProtocolError``."""
    if not raw:
        return ()
    items = []
    view = memoryview(raw)
    pos, end = 0, len(view)
    while pos < end:
        if pos + MD_ITEM.size > end:
            raise ProtocolError("metadata: truncated entry header")
        klen, vlen = MD_ITEM.unpack_from(view, pos)
        pos += MD_ITEM.size
        if klen == 0 or pos + klen + vlen > end:
            raise ProtocolError("metadata: entry overruns the block")
        kb = bytes(view[pos : pos + klen])
        if not check_key(kb):
            raise ProtocolError(f"metadata: illegal key {kb[:40]!r}")
        key = kb.decode("ascii")
        pos += klen
        value = bytes(view[pos : pos + vlen])
        pos += vlen
        if key.endswith("-bin"):
            items.append((key, value))
        elif _LEGAL_VALUE.match(value):
            items.append((key, value.decode("ascii")))
        else:
            raise ProtocolError(f"metadata: illegal value for {key!r}")
    return tuple(items)


# -- CALL ----------------------------------------------------------------------------------
def call_parts(method: bytes, timeout_us: int, metadata: bytes, message: Optional[bytes]) -> Sequence[bytes]:
    """The body of a CALL frame as parts (written back to back, no concatenation)."""
    head = CALL_HEAD.pack(timeout_us, len(method), len(metadata))
    if message is None:
        return (head, method, metadata)
    return (head, method, metadata, message)


def parse_call(body: bytes) -> Tuple[int, bytes, bytes, int]:
    """(timeout_us, method, metadata_raw, message_offset) of a CALL body."""
    if len(body) < CALL_HEAD.size:
        raise ProtocolError("CALL: body shorter than its header")
    timeout_us, mlen, mdlen = CALL_HEAD.unpack_from(body, 0)
    start = CALL_HEAD.size
    end = start + mlen + mdlen
    if end > len(body) or mlen == 0:
        raise ProtocolError("CALL: method or metadata overruns the body")
    return timeout_us, body[start : start + mlen], body[start + mlen : end], end


# -- STATUS --------------------------------------------------------------------------------
def status_parts(details: bytes, trailing: bytes, initial: Optional[bytes], message: Optional[bytes]) -> Sequence[bytes]:
    head = STATUS_HEAD.pack(len(initial) if initial is not None else 0, len(details), len(trailing))
    parts = [head]
    if initial:
        parts.append(initial)
    parts.append(details)
    parts.append(trailing)
    if message is not None:
        parts.append(message)
    return parts


def parse_status(body: bytes) -> Tuple[bytes, bytes, bytes, int]:
    """(initial_md_raw, details_raw, trailing_md_raw, message_offset) of a STATUS body."""
    if len(body) < STATUS_HEAD.size:
        raise ProtocolError("STATUS: body shorter than its header")
    ilen, dlen, tlen = STATUS_HEAD.unpack_from(body, 0)
    a = STATUS_HEAD.size
    b = a + ilen
    c = b + dlen
    d = c + tlen
    if d > len(body):
        raise ProtocolError("STATUS: fields overrun the body")
    return body[a:b], body[b:c], body[c:d], d
