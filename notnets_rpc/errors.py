"""Exceptions of the RPC layer that are not gRPC statuses.

Pool problems (not a pool, too small, other layout version, corrupted) are raised to
the caller as ``PoolError`` subclasses with a one-line message, so that the CLI can show
them as a ``UserError`` and library users can catch one type. Inside a call, a
``ProtocolError`` (a frame or ring that fails a bounds check) turns into a gRPC status
for that call and never escapes as a crash.
"""

from __future__ import annotations


class PoolError(Exception):
    """The pool file or device cannot be used as a NotNets pool."""


class NotAPoolError(PoolError):
    """The file holds something other than a formatted pool (or nothing yet)."""


class PoolNotReadyError(NotAPoolError):
    """No pool there yet: the file does not exist or is all zero (a server may still
    create or format it, so a channel waits instead of failing)."""


class PoolTooSmallError(PoolError):
    """The file or device is too small for the requested layout."""


class LayoutVersionError(PoolError):
    """The pool was formatted with a layout version this code does not speak."""


class PoolCorruptError(PoolError):
    """A field read from the pool fails validation (bad checksum, offset or length)."""


class PoolExistsError(PoolError):
    """``create_pool`` found a pool and was not told to overwrite it."""


class PoolFullError(PoolError):
    """No free directory slot or channel slot in this host's partition."""


class EndpointInUseError(PoolError):
    """Another live server already publishes this endpoint name."""


class ProtocolError(Exception):
    """A frame or ring in shared memory failed a bounds or sanity check."""


class ChecksumError(ProtocolError):
    """A frame's CRC does not match (pools formatted with frame checksums): the frame was
    consumed, the ring is intact, and only the call it names is affected (DATA_LOSS)."""

    def __init__(self, kind: int, flags: int, call_id: int, message: str) -> None:
        super().__init__(message)
        self.kind, self.flags, self.call_id = kind, flags, call_id
