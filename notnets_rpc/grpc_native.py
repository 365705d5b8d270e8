"""grpcio's own constructors, whatever interposition later does to the ``grpc`` module.

``notnets_rpc.interpose`` replaces ``grpc.server``, ``grpc.insecure_channel``,
``grpc.aio.server`` and ``grpc.aio.insecure_channel``; the pieces of notnets_rpc that
need the real TCP transport (the aio server's TCP side, the interposed objects' TCP
halves) call these instead, so that they never call themselves back.
"""

from __future__ import annotations

from typing import Any, Callable

import grpc
import grpc.aio

ORIGINAL_ATTR = "__notnets_original__"


def original(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` itself, or the grpcio function an interposed ``fn`` replaced."""
    return getattr(fn, ORIGINAL_ATTR, fn)


server = original(grpc.server)
insecure_channel = original(grpc.insecure_channel)
aio_server = original(grpc.aio.server)
aio_insecure_channel = original(grpc.aio.insecure_channel)
