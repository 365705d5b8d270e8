"""A channel's stage (client/channel.py ``Stage``): IDLE -> READY -> TRANSIENT_FAILURE ->
READY -> SHUTDOWN, and nothing leaves SHUTDOWN."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

import notnets_rpc
from notnets_rpc.client.channel import Stage

pytestmark = pytest.mark.timeout(60)


def _wait_for(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_stage_follows_the_server_and_ends_at_shutdown(serve, pool_path):
    ch = notnets_rpc.insecure_channel("notnets:t", pool=pool_path)
    seen = []
    ch.subscribe(seen.append)
    echo = ch.unary_unary("/test.T/Echo")
    assert ch.stage is Stage.IDLE
    server = serve()
    assert echo(b"a", timeout=10) == b"a" and ch.stage is Stage.READY
    first = ch._conn
    server.stop(None).wait(5)
    with pytest.raises(grpc.RpcError) as err:
        echo(b"b", timeout=10)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert ch.stage is Stage.TRANSIENT_FAILURE
    with pytest.raises(grpc.RpcError) as err:  # no server: connecting fails, the stage stays
        echo(b"c", timeout=10)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE and ch.stage is Stage.TRANSIENT_FAILURE
    serve()
    assert echo(b"d", timeout=10) == b"d" and ch.stage is Stage.READY
    ch._on_broken(first)  # a late word from the old connection is no news
    assert ch.stage is Stage.READY
    _wait_for(lambda: grpc.ChannelConnectivity.READY in seen)  # (the watcher polls: it may miss a short failure)
    ch.close()
    assert ch.stage is Stage.SHUTDOWN
    with pytest.raises(ValueError):
        echo(b"e", timeout=10)
    ch.close()
    ch._move(Stage.READY)
    assert ch.stage is Stage.SHUTDOWN


def test_close_ends_a_call_waiting_for_a_server(pool_path):
    ch = notnets_rpc.insecure_channel("notnets:absent", pool=pool_path)
    outcome = []

    def call():
        try:
            ch.unary_unary("/test.T/Echo")(b"x", timeout=30, wait_for_ready=True)
        except grpc.RpcError as exc:
            outcome.append(exc.code())

    waiter = threading.Thread(target=call)
    waiter.start()
    _wait_for(lambda: ch.stage is Stage.TRANSIENT_FAILURE)
    began = time.monotonic()
    ch.close()
    waiter.join(5)
    assert not waiter.is_alive() and time.monotonic() - began < 5
    assert outcome == [grpc.StatusCode.CANCELLED]
