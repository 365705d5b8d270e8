"""gRPC status codes and metadata as grpcio presents them."""

from __future__ import annotations

import collections
from typing import Optional

import grpc

from .wire.frames import Metadata

CODE_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}
OK = grpc.StatusCode.OK


class Metadatum(collections.namedtuple("Metadatum", ("key", "value"))):
    """One metadata pair; compares equal to a plain (key, value) tuple, like grpcio's."""


def as_metadata(pairs: Optional[Metadata]) -> tuple:
    if not pairs:
        return ()
    return tuple(Metadatum(k, v) for k, v in pairs)


def code_from_wire(value: int) -> grpc.StatusCode:
    return CODE_BY_VALUE.get(value, grpc.StatusCode.UNKNOWN)


def code_to_wire(code: grpc.StatusCode) -> int:
    return code.value[0]


def format_status(code: grpc.StatusCode, details: Optional[str]) -> str:
    return f"<NotNets RPC that terminated with:\n\tstatus = {code}\n\tdetails = \"{details}\"\n>"
