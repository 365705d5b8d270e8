"""The far-memory hook in notnets_rpc: a pool with a model charges every access; without one
the accessor is the plain one (no cost at all)."""

from __future__ import annotations

import uuid
from concurrent import futures
from pathlib import Path

import grpc
import pytest

import notnets_rpc
from notnets_rpc import farmem
from notnets_rpc.memory import Memory

pytestmark = pytest.mark.timeout(60)


def _echo_handlers() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler("t.T", {
        "Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request),
    })


@pytest.fixture
def pool():
    path = Path("/dev/shm") / f"notnets-farmem-{uuid.uuid4().hex[:10]}"
    notnets_rpc.create_pool(str(path), 8 << 20)
    try:
        yield str(path)
    finally:
        path.unlink(missing_ok=True)


def _calls(pool: str, n: int, payload: bytes) -> None:
    server = notnets_rpc.server(futures.ThreadPoolExecutor(max_workers=2), pool=pool, host_id=0)
    server.add_generic_rpc_handlers((_echo_handlers(),))
    server.add_endpoint("farmem")
    server.start()
    try:
        with notnets_rpc.insecure_channel("notnets:farmem", pool=pool) as channel:
            echo = channel.unary_unary("/t.T/Echo")
            for _ in range(n):
                assert echo(payload, timeout=20) == payload
    finally:
        server.stop(None).wait(10)


def test_model_charges_words_and_bytes_and_waits_them_off(pool, monkeypatch):
    monkeypatch.setenv(farmem.ENV, '{"%s": {"latency_ns": 400, "bandwidth_gbps": 10}}' % pool)
    _calls(pool, 20, b"x" * 1000)
    charged = farmem.accounts()[pool]
    assert charged["latency_ns"] == 400 and charged["bandwidth_gbps"] == 10
    assert charged["words"] > 20 * 2, "each call touches control words (ring heads, tails, bells)"
    assert charged["bytes"] >= 20 * 2 * 1000, "request and response payloads cross the pool"
    expected = charged["words"] * 400 + charged["copies"] * 400 + charged["bytes"] / 10
    assert charged["modelled_ns"] == pytest.approx(expected, abs=1)  # snapshot rounds to whole ns
    assert charged["waited_ns"] >= charged["modelled_ns"] - farmem.QUANTUM_NS, "the delay was applied"


def test_without_model_the_accessor_is_plain(pool, monkeypatch):
    monkeypatch.delenv(farmem.ENV, raising=False)
    from notnets_rpc.pool import pool_memory

    buf = bytearray(64)
    assert type(pool_memory(buf, pool)) is Memory
    monkeypatch.setenv(farmem.ENV, "latency_ns=100")
    assert isinstance(pool_memory(buf, pool), farmem.FarMemory)
