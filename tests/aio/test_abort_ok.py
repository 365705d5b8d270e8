"""``context.abort(StatusCode.OK, ...)``: grpcio documents that the code "must not be
StatusCode.OK", and its sync server ends such a call UNKNOWN with no details (logging an
error). grpc.aio 1.85 over TCP leaves the client waiting instead, so the pool follows
the documented rule: checked against grpcio's own sync server over TCP."""

from __future__ import annotations

import asyncio
from concurrent import futures

import grpc
import grpc.aio
import pytest

from .service import Req, echo_pb2_grpc, over_pool

DETAILS = "all is well"


def _grpcio_sync_abort_ok():
    def abort_ok(request, context):
        context.abort(grpc.StatusCode.OK, DETAILS)

    server = grpc.server(futures.ThreadPoolExecutor(1))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "t", {"AbortOk": grpc.unary_unary_rpc_method_handler(abort_ok)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary("/t/AbortOk")(b"", timeout=10)
        return info.value.code(), info.value.details()
    finally:
        server.stop(None)


async def _pool_aio_abort_ok(server, channel):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await echo_pb2_grpc.EchoStub(channel).Unary(Req(payload=b"abort:OK"), timeout=10)
    return info.value.code(), info.value.details(), tuple(info.value.trailing_metadata())


def test_abort_with_ok_ends_the_call_unknown_as_grpcio_documents(pool_path):
    expected = _grpcio_sync_abort_ok()
    assert expected == (grpc.StatusCode.UNKNOWN, "")
    code, details, trailing = asyncio.run(asyncio.wait_for(over_pool(pool_path, _pool_aio_abort_ok), 30))
    assert (code, details) == expected
    assert trailing == (("why", "policy"),)  # the trailing metadata abort() was given still arrives
