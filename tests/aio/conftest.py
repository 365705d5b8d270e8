"""Fixtures for the notnets_rpc.aio tests: a fresh pool, and ``serve``, which runs the same
program against grpc.aio over TCP and against notnets_rpc.aio over the pool."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict

import grpc.aio
import pytest

import notnets_rpc
import notnets_rpc.aio

from .service import add_service


@pytest.fixture
def pool_path():
    path = Path("/dev/shm") / f"notnets-aio-test-{uuid.uuid4().hex[:12]}"
    notnets_rpc.create_pool(str(path), 32 << 20)
    try:
        yield str(path)
    finally:
        path.unlink(missing_ok=True)


Program = Callable[[Any, Any], Awaitable[Any]]  # (server, channel) -> result


async def _over_tcp(program: Program, make_server: Callable, channel_kw: dict) -> Any:
    server = make_server(grpc.aio.server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", **channel_kw) as channel:
            return await program(server, channel)
    finally:
        await server.stop(None)


async def _over_pool(program: Program, make_server: Callable, channel_kw: dict, pool: str) -> Any:
    server = make_server(lambda **kw: notnets_rpc.aio.server(pool=pool, **kw))
    server.add_endpoint("echo")
    await server.start()
    try:
        async with notnets_rpc.aio.insecure_channel("notnets:echo", pool=pool, **channel_kw) as channel:
            return await program(server, channel)
    finally:
        await server.stop(None)


def _default_server(factory: Callable) -> Any:
    server = factory()
    add_service(server)
    return server


@pytest.fixture
def both(pool_path):
    """both(program, make_server=..., timeout=30, **channel kwargs) -> {"tcp": result, "pool": result}"""

    def run(program: Program, make_server: Callable = _default_server, timeout: float = 30,
            **channel_kw: Any) -> Dict[str, Any]:
        return {
            "tcp": asyncio.run(asyncio.wait_for(_over_tcp(program, make_server, channel_kw), timeout)),
            "pool": asyncio.run(asyncio.wait_for(_over_pool(program, make_server, channel_kw, pool_path), timeout)),
        }

    return run
