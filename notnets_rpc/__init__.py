"""NotNets RPC: gRPC calls carried over a shared (CXL) memory pool instead of a network.

A drop-in for grpcio on both sides: generated stubs and servicers run unmodified.

    notnets_rpc.create_pool(path, size)
    server = notnets_rpc.server(thread_pool, pool=path)       # pool defaults to $NOTNETS_POOL
    add_GreeterServicer_to_server(Greeter(), server)
    server.add_endpoint("greeter"); server.start()
    channel = notnets_rpc.insecure_channel("notnets:greeter", pool=path)
    channel = notnets_rpc.insecure_channel("10.1.2.3:50051")   # plain grpcio
"""

from __future__ import annotations

from concurrent import futures
from typing import Any, Optional, Sequence, Tuple

import grpc

from .client.channel import SCHEME, Channel
from .errors import (EndpointInUseError, LayoutVersionError, NotAPoolError, PoolCorruptError, PoolError,
                     PoolExistsError, PoolFullError, PoolNotReadyError, PoolTooSmallError, ProtocolError)
from .pool import HOST_ID_ENV, POOL_ENV, create_pool
from .serving.server import Server
from .wire.messages import as_bytes, as_view

__all__ = [
    "create_pool", "server", "insecure_channel", "Channel", "Server", "SCHEME", "POOL_ENV", "HOST_ID_ENV",
    "PoolError", "NotAPoolError", "PoolTooSmallError", "LayoutVersionError", "PoolCorruptError", "PoolExistsError",
    "PoolFullError", "EndpointInUseError", "ProtocolError", "PoolNotReadyError", "as_view", "as_bytes",
]


def server(thread_pool: Optional[futures.Executor] = None, handlers: Optional[Sequence[grpc.GenericRpcHandler]] = None,
           interceptors: Optional[Sequence[grpc.ServerInterceptor]] = None,
           options: Optional[Sequence[Tuple[str, Any]]] = None, maximum_concurrent_rpcs: Optional[int] = None,
           compression: Any = None, *, pool: Optional[str] = None, host_id: Optional[int] = None) -> Server:
    """Like ``grpc.server``; ``pool`` (default $NOTNETS_POOL) is used once an endpoint is added."""
    return Server(thread_pool, pool=pool, handlers=handlers, interceptors=interceptors, options=options,
                  maximum_concurrent_rpcs=maximum_concurrent_rpcs, compression=compression, host_id=host_id)


def insecure_channel(target: str, options: Optional[Sequence[Tuple[str, Any]]] = None, compression: Any = None,
                     *, pool: Optional[str] = None) -> grpc.Channel:
    """``notnets:NAME`` -> a channel over the pool; anything else -> ``grpc.insecure_channel``."""
    if target.startswith(SCHEME):
        return Channel(target, pool=pool, options=options)
    return grpc.insecure_channel(target, options=options, compression=compression)
