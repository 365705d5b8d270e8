"""Registration is checked as grpcio checks it: a generic handler without ``service``
is refused at once by the sync and the aio server alike (one shared check)."""

from __future__ import annotations

import asyncio
from concurrent import futures

import grpc
import pytest

import notnets_rpc
import notnets_rpc.aio


def test_a_handler_without_service_is_refused_like_grpcio(pool_path):
    with pytest.raises(AttributeError):
        grpc.server(futures.ThreadPoolExecutor(1)).add_generic_rpc_handlers([object()])
    with pytest.raises(AttributeError, match="must have a service method"):
        notnets_rpc.server(futures.ThreadPoolExecutor(1), pool=pool_path).add_generic_rpc_handlers([object()])

    async def aio() -> None:
        server = notnets_rpc.aio.server(pool=pool_path)
        with pytest.raises(AttributeError, match="must have a service method"):
            server.add_generic_rpc_handlers([object()])

    asyncio.run(aio())
