"""``notnets_rpc.aio``: grpc.aio's API (asyncio stubs and servicers) over a NotNets pool.

    server = notnets_rpc.aio.server(pool=path)          # pool defaults to $NOTNETS_POOL
    add_GreeterServicer_to_server(Greeter(), server)    # async servicer, generated code
    server.add_endpoint("greeter"); await server.start()
    async with notnets_rpc.aio.insecure_channel("notnets:greeter", pool=path) as channel:
        reply = await GreeterStub(channel).SayHello(HelloRequest(name="x"))
    notnets_rpc.aio.insecure_channel("10.1.2.3:50051")  # plain grpc.aio

The event loop never waits on the pool: it reads the rings itself without waiting,
between its other callbacks, and threads of the sync layer take over the waiting when
answers are slow (docs/aio.md, "How the event loop is kept free").
"""

from __future__ import annotations

from concurrent import futures
from typing import Any, Optional, Sequence, Tuple

import grpc
from grpc.aio import EOF, AbortError, AioRpcError, Metadata, UsageError

from .. import SCHEME, grpc_native
from .. import Channel as _SyncChannel
from .channel import Channel
from .server import Server

__all__ = ["server", "insecure_channel", "Channel", "Server", "AioRpcError", "AbortError", "UsageError", "EOF",
           "Metadata"]


def server(migration_thread_pool: Optional[futures.Executor] = None,
           handlers: Optional[Sequence[grpc.GenericRpcHandler]] = None, interceptors: Optional[Sequence[Any]] = None,
           options: Optional[Sequence[Tuple[str, Any]]] = None, maximum_concurrent_rpcs: Optional[int] = None,
           compression: Any = None, *, pool: Optional[str] = None, host_id: Optional[int] = None) -> Server:
    """Like ``grpc.aio.server``; ``pool`` (default $NOTNETS_POOL) is used once an endpoint is added."""
    return Server(migration_thread_pool, handlers, interceptors, options, maximum_concurrent_rpcs, compression,
                  pool=pool, host_id=host_id)


def insecure_channel(target: str, options: Optional[Sequence[Tuple[str, Any]]] = None, compression: Any = None,
                     interceptors: Optional[Sequence[Any]] = None, *, pool: Optional[str] = None) -> grpc.aio.Channel:
    """``notnets:NAME`` -> a channel over the pool; anything else -> ``grpc.aio.insecure_channel``."""
    if target.startswith(SCHEME):
        return Channel(_SyncChannel(target, pool=pool, options=options), interceptors)
    return grpc_native.aio_insecure_channel(target, options=options, compression=compression,
                                            interceptors=interceptors)
