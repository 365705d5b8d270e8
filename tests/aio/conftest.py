"""Fixtures for the notnets_rpc.aio tests: a fresh pool, and ``serve``, which runs the same
program against grpc.aio over TCP and against notnets_rpc.aio over the pool."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict

import grpc.aio
import pytest
from harness.pools import fresh_pool

import notnets_rpc.aio

from .service import add_service


@pytest.fixture
def pool_path():
    with fresh_pool("aio-test") as path:
        yield path


@pytest.fixture
def slow_server(pool_path):
    """An aio server in a process of its own (slow_server.py, endpoint "slow"); the pool."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("slow_server.py")), pool_path, "slow"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "serving"
        yield pool_path
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
