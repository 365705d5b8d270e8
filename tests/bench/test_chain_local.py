"""The shop chain (examples/chain) on this machine: three servers in one process, over a
pool in /dev/shm and over loopback TCP; the same servicers serve both transports."""

from __future__ import annotations

import uuid
from concurrent import futures
from pathlib import Path

import pytest

import notnets_rpc
from examples.chain.services import servicer, shop_pb2, shop_pb2_grpc


@pytest.fixture
def pool():
    path = Path("/dev/shm") / f"notnets-test-chain-{uuid.uuid4().hex[:12]}"
    notnets_rpc.create_pool(str(path), 32 << 20)
    try:
        yield str(path)
    finally:
        path.unlink(missing_ok=True)


def start_chain(pool: str, transport: str):
    """inventory, catalog, frontend (leaves first); returns (servers, channels, frontend target)."""
    servers, channels, downstream = [], [], None
    for role in ("inventory", "catalog", "frontend"):
        channel = notnets_rpc.insecure_channel(downstream, pool=pool) if downstream else None
        if channel is not None:
            channels.append(channel)
        impl, add = servicer(role, channel)
        server = notnets_rpc.server(futures.ThreadPoolExecutor(max_workers=2), pool=pool)
        add(impl, server)
        if transport == "notnets":
            server.add_endpoint(role)
            downstream = f"notnets:{role}"
        else:
            downstream = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        server.start()
        servers.append(server)
    return servers, channels, downstream


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["notnets", "grpc-tcp"])
def test_depth_decides_how_far_a_request_travels(pool, transport):
    servers, channels, target = start_chain(pool, transport)
    try:
        with notnets_rpc.insecure_channel(target, pool=pool) as channel:
            stub = shop_pb2_grpc.FrontendStub(channel)
            pages = {d: stub.GetProductPage(shop_pb2.PageRequest(product_id=2, depth=d), timeout=30,
                                            wait_for_ready=True) for d in (1, 2, 3)}
    finally:
        for server in servers:
            server.stop(None)
        for ch in channels:
            ch.close()
    assert [len(pages[d].served_by) for d in (1, 2, 3)] == [1, 2, 3]
    assert [s.split("@")[0] for s in pages[3].served_by] == ["frontend", "catalog", "inventory"]
    assert pages[3].product.name == "Pour-over kettle" and pages[3].product.stock.served_by.startswith("inventory@")
    assert not pages[2].product.stock.served_by  # the catalog answered from its own copy
    assert "<h1>Pour-over kettle</h1>" in pages[1].html and "14 in stock" in pages[3].html
