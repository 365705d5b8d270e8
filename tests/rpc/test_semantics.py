"""grpcio semantics over a pool, server and client in one process."""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
import pytest

import notnets_rpc

from . import service

pytestmark = pytest.mark.timeout(60)


def uu(channel, name):
    return channel.unary_unary(f"/test.T/{name}")


def test_unary_call_with_call_and_future(channel):
    echo = uu(channel, "Echo")
    assert echo(b"hello") == b"hello"
    response, call = echo.with_call(b"x", metadata=(("k", "v"),))
    assert response == b"x" and call.code() is grpc.StatusCode.OK and call.details() == ""
    future = echo.future(b"f")
    assert future.result(timeout=10) == b"f"
    assert future.done() and not future.cancelled() and future.exception() is None
    done = threading.Event()
    future = echo.future(b"g")
    future.add_done_callback(lambda f: done.set())
    assert done.wait(10) and future.result() == b"g"


def test_empty_and_odd_sizes(channel):
    echo = uu(channel, "Echo")
    for n in (0, 1, 7, 8, 9, 4095, 4096, 65537):
        payload = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
        assert echo(payload) == payload


@pytest.mark.timeout(120)
def test_64_mib_message_both_ways(channel):
    payload = bytes(range(256)) * (64 << 12)  # 64 MiB
    assert len(payload) == 64 << 20
    assert uu(channel, "Echo")(payload, timeout=100) == payload


def test_message_cap_is_resource_exhausted(serve, pool_path):
    serve(name="capped", options=[("grpc.max_receive_message_length", 1000)])
    with notnets_rpc.insecure_channel("notnets:capped", pool=pool_path) as ch:
        with pytest.raises(grpc.RpcError) as err:
            ch.unary_unary("/test.T/Echo")(b"x" * 100_000)
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    with notnets_rpc.insecure_channel("notnets:t", pool=pool_path,
                                      options=[("grpc.max_send_message_length", 10)]) as ch:
        with pytest.raises(grpc.RpcError) as err:
            ch.unary_unary("/test.T/Echo")(b"x" * 11)
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("method,code,details", [
    ("Abort", grpc.StatusCode.PERMISSION_DENIED, "denied: é ✓"),
    ("SetCode", grpc.StatusCode.NOT_FOUND, "nothing here: ü"),
    ("Raise", grpc.StatusCode.UNKNOWN, "Exception calling application: boom"),
    ("BadResponse", grpc.StatusCode.INTERNAL, "Failed to serialize response!"),
    ("Nope", grpc.StatusCode.UNIMPLEMENTED, "Method not found!"),
])
def test_status_codes_and_details(channel, method, code, details):
    with pytest.raises(grpc.RpcError) as err:
        uu(channel, method)(b"")
    assert err.value.code() is code
    assert err.value.details() == details
    future = uu(channel, method).future(b"")
    assert future.exception(timeout=10).code() is code
    with pytest.raises(grpc.RpcError):
        future.result()


def test_unknown_service_is_unimplemented(channel):
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary("/no.Such/Service")(b"")
    assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as err:
        list(channel.unary_stream("/no.Such/Stream")(b""))
    assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_metadata_all_ways(channel):
    _, call = uu(channel, "Metadata").with_call(b"", metadata=(("text", "hello world"), ("blob-bin", b"\xff\x00")))
    assert dict(call.initial_metadata()) == {"initial-key": "initial", "initial-bin": b"\x00\x01"}
    assert dict(call.trailing_metadata()) == {"echo-text": "hello world", "echo-bin": b"\xff\x00"}
    assert call.trailing_metadata()[0].key == "echo-text"


def test_abort_with_trailing_metadata(serve, pool_path):
    def handler(request, context):
        context.abort_with_status(_Status(grpc.StatusCode.ABORTED, "stop", (("why-bin", b"\x01"),)))

    server = notnets_rpc.server(futures.ThreadPoolExecutor(2), pool=pool_path)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "s.S", {"M": grpc.unary_unary_rpc_method_handler(handler)}),))
    server.add_endpoint("aborter")
    server.start()
    try:
        with notnets_rpc.insecure_channel("notnets:aborter", pool=pool_path) as ch:
            with pytest.raises(grpc.RpcError) as err:
                ch.unary_unary("/s.S/M")(b"")
            assert err.value.code() is grpc.StatusCode.ABORTED
            assert dict(err.value.trailing_metadata()) == {"why-bin": b"\x01"}
    finally:
        server.stop(None).wait(5)


class _Status(grpc.Status):
    def __init__(self, code, details, trailing_metadata):
        self.code, self.details, self.trailing_metadata = code, details, trailing_metadata


def test_streaming_variants(channel):
    assert list(channel.unary_stream("/test.T/Count")(b"5")) == [b"0", b"1", b"2", b"3", b"4"]
    assert list(channel.unary_stream("/test.T/Count")(b"0")) == []
    assert channel.stream_unary("/test.T/Sum")(iter([b"a", b"bc", b""])) == b"abc"
    assert channel.stream_unary("/test.T/CountRequests")(iter([])) == b"0"
    response, call = channel.stream_unary("/test.T/Sum").with_call(iter([b"x"]))
    assert response == b"x" and call.code() is grpc.StatusCode.OK
    assert channel.stream_unary("/test.T/Sum").future(iter([b"y", b"z"])).result(10) == b"yz"
    replies = channel.stream_stream("/test.T/Bidi")(iter([b"1", b"2", b"3"]))
    assert [next(replies), next(replies), next(replies)] == [b"1!", b"2!", b"3!"]
    with pytest.raises(StopIteration):
        next(replies)
    assert replies.code() is grpc.StatusCode.OK


def test_big_streamed_messages(channel):
    chunks = [bytes([i]) * (3 << 20) for i in range(3)]
    assert channel.stream_unary("/test.T/Sum")(iter(chunks), timeout=60) == b"".join(chunks)
    assert list(channel.stream_stream("/test.T/Bidi")(iter(chunks), timeout=60)) == [c + b"!" for c in chunks]


def test_stream_error_after_messages(channel):
    replies = channel.unary_stream("/test.T/StreamAbort")(b"")
    assert next(replies) == b"first"
    with pytest.raises(grpc.RpcError) as err:
        next(replies)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and err.value.details() == "no more"


def test_request_iterator_error_is_unknown(channel):
    def requests():
        yield b"a"
        raise RuntimeError("client side bug")

    with pytest.raises(grpc.RpcError) as err:
        channel.stream_unary("/test.T/Sum")(requests(), timeout=10)
    assert err.value.code() is grpc.StatusCode.UNKNOWN


def test_deadline_client_and_server_side(channel):
    service.EVENTS.clear()
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        uu(channel, "Sleep")(b"5:dl", timeout=0.3)
    assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert err.value.details() == "Deadline Exceeded"
    assert time.monotonic() - start < 2.0
    _wait_for(lambda: "sleep-5:dl:inactive" in service.EVENTS and "sleep-5:dl:callback" in service.EVENTS)
    remaining = float(uu(channel, "Remaining")(b"", timeout=30))
    assert 25 < remaining <= 30
    assert uu(channel, "Remaining")(b"") == b"none"
    future = uu(channel, "Sleep")(b"0.01:ok", timeout=10)
    assert future == b"slept"


def test_each_call_carries_its_own_timeout(channel):
    """One multicallable keeps its last timeout's CALL prefix: a call with another
    timeout (or none) must still tell the server its own."""
    remaining = uu(channel, "Remaining")
    for timeout, low, high in ((30, 25, 30), (30, 25, 30), (8, 4, 8), (30, 25, 30), (None, None, None), (8, 4, 8)):
        answer = remaining(b"", timeout=timeout)
        if timeout is None:
            assert answer == b"none"
        else:
            assert low < float(answer) <= high, (timeout, answer)


def test_deadline_on_future_and_stream(channel):
    future = uu(channel, "Sleep")(b"0", timeout=5)  # warm
    future = uu(channel, "Sleep").future(b"5:fut", timeout=0.2)
    assert future.exception(timeout=5).code() is grpc.StatusCode.DEADLINE_EXCEEDED
    replies = channel.unary_stream("/test.T/CountSlow")(b"", timeout=0.3)
    with pytest.raises(grpc.RpcError) as err:
        for _ in replies:
            pass
    assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


def test_client_cancel_reaches_server(channel):
    service.EVENTS.clear()
    future = uu(channel, "Sleep").future(b"5:cancel")
    time.sleep(0.2)
    assert future.cancel()
    assert future.cancelled() and future.done()
    with pytest.raises(grpc.FutureCancelledError):
        future.result()
    assert future.code() is grpc.StatusCode.CANCELLED
    _wait_for(lambda: "sleep-5:cancel:inactive" in service.EVENTS and "sleep-5:cancel:callback" in service.EVENTS)
    replies = channel.unary_stream("/test.T/CountSlow")(b"")
    assert next(replies) == b"0"
    replies.cancel()
    with pytest.raises(grpc.RpcError) as err:
        list(replies)
    assert err.value.code() is grpc.StatusCode.CANCELLED
    _wait_for(lambda: "count_slow:inactive" in service.EVENTS and "count_slow:callback" in service.EVENTS)


def test_server_side_cancel(serve, pool_path):
    def handler(request, context):
        context.cancel()
        return b"ignored"

    server = notnets_rpc.server(futures.ThreadPoolExecutor(2), pool=pool_path)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "c.C", {"M": grpc.unary_unary_rpc_method_handler(handler)}),))
    server.add_endpoint("canceller")
    server.start()
    try:
        with notnets_rpc.insecure_channel("notnets:canceller", pool=pool_path) as ch:
            with pytest.raises(grpc.RpcError) as err:
                ch.unary_unary("/c.C/M")(b"")
            assert err.value.code() is grpc.StatusCode.CANCELLED
    finally:
        server.stop(None).wait(5)


def test_client_callbacks(channel):
    fired = threading.Event()
    future = uu(channel, "Sleep").future(b"0.05:cb")
    assert future.add_callback(fired.set)
    assert future.result(10) == b"slept"
    assert fired.wait(5)
    assert not future.add_callback(lambda: None)


def test_many_threads_on_one_channel(channel):
    echo = uu(channel, "Echo")
    errors = []

    def worker(i):
        try:
            for j in range(40):
                payload = f"{i}-{j}".encode() * (1 + j % 5)
                assert echo(payload, timeout=30) == payload
            assert list(channel.unary_stream("/test.T/Count")(b"3", timeout=30)) == [b"0", b"1", b"2"]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a worker did not end"
    assert not errors


def test_close_and_context_manager(serve, pool_path):
    serve()
    with notnets_rpc.insecure_channel("notnets:t", pool=pool_path) as ch:
        future = ch.unary_unary("/test.T/Sleep").future(b"5:closing")
        time.sleep(0.1)
    assert future.code() is grpc.StatusCode.CANCELLED
    with pytest.raises(ValueError):
        ch.unary_unary("/test.T/Echo")(b"")


def test_no_server_is_unavailable_and_wait_for_ready(pool_path):
    with notnets_rpc.insecure_channel("notnets:nobody", pool=pool_path) as ch:
        with pytest.raises(grpc.RpcError) as err:
            ch.unary_unary("/test.T/Echo")(b"")
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as err:
            ch.unary_unary("/test.T/Echo")(b"", timeout=0.3, wait_for_ready=True)
        assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED

        def late_server():
            time.sleep(0.3)
            server = notnets_rpc.server(futures.ThreadPoolExecutor(2), pool=pool_path)
            server.add_generic_rpc_handlers((service.test_handlers(),))
            server.add_endpoint("nobody")
            server.start()
            holder.append(server)

        holder: list = []
        t = threading.Thread(target=late_server)
        t.start()
        try:
            assert ch.unary_unary("/test.T/Echo")(b"hi", timeout=10, wait_for_ready=True) == b"hi"
            assert grpc.channel_ready_future(ch).result(timeout=5) is None
        finally:
            t.join(10)
            assert not t.is_alive()
            for server in holder:
                server.stop(None).wait(5)


def test_server_stop_ends_calls_with_unavailable(serve, pool_path):
    server = serve(name="stopping")
    with notnets_rpc.insecure_channel("notnets:stopping", pool=pool_path) as ch:
        future = ch.unary_unary("/test.T/Sleep").future(b"5:stop")
        time.sleep(0.2)
        assert server.stop(0.1).wait(5)
        assert future.exception(timeout=5).code() is grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as err:
            ch.unary_unary("/test.T/Echo")(b"")
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE


def test_generated_stubs_over_notnets_and_tcp(echo_protos, pool_path):
    echo_pb2, echo_pb2_grpc = echo_protos

    class Echo(echo_pb2_grpc.EchoServicer):
        def Unary(self, request, context):
            return echo_pb2.EchoReply(payload=request.payload)

        def Bidi(self, request_iterator, context):
            for r in request_iterator:
                yield echo_pb2.EchoReply(payload=r.payload)

    server = notnets_rpc.server(futures.ThreadPoolExecutor(4), pool=pool_path)
    echo_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
    server.add_endpoint("echo")
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        for target in ("notnets:echo", f"127.0.0.1:{port}"):
            with notnets_rpc.insecure_channel(target, pool=pool_path) as ch:
                assert isinstance(ch, grpc.Channel)
                stub = echo_pb2_grpc.EchoStub(ch)
                assert stub.Unary(echo_pb2.EchoRequest(payload=b"p"), timeout=10).payload == b"p"
                replies = stub.Bidi(iter([echo_pb2.EchoRequest(payload=b"1"), echo_pb2.EchoRequest(payload=b"2")]))
                assert [r.payload for r in replies] == [b"1", b"2"]
                with pytest.raises(grpc.RpcError) as err:
                    stub.ClientStream(iter([]), timeout=10)
                assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop(None).wait(5)


def test_client_interceptor_works_on_a_notnets_channel(channel):
    seen = []

    class Interceptor(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation, client_call_details, request):
            seen.append(client_call_details.method)
            return continuation(client_call_details, request)

    intercepted = grpc.intercept_channel(channel, Interceptor())
    assert intercepted.unary_unary("/test.T/Echo")(b"i") == b"i"
    assert seen == ["/test.T/Echo"]


def test_server_interceptor(pool_path):
    seen = []

    class Interceptor(grpc.ServerInterceptor):
        def intercept_service(self, continuation, handler_call_details):
            seen.append(handler_call_details.method)
            return continuation(handler_call_details)

    server = notnets_rpc.server(futures.ThreadPoolExecutor(2), interceptors=[Interceptor()], pool=pool_path)
    server.add_generic_rpc_handlers((service.test_handlers(),))
    server.add_endpoint("intercepted")
    server.start()
    try:
        with notnets_rpc.insecure_channel("notnets:intercepted", pool=pool_path) as ch:
            assert ch.unary_unary("/test.T/Echo")(b"z") == b"z"
        assert seen == ["/test.T/Echo"]
    finally:
        server.stop(None).wait(5)


def test_endpoint_name_in_use(serve, pool_path):
    serve(name="dup")
    server = notnets_rpc.server(futures.ThreadPoolExecutor(1), pool=pool_path)
    server.add_endpoint("dup")
    with pytest.raises(notnets_rpc.EndpointInUseError):
        server.start()


def test_peer_names_the_client(channel):
    assert uu(channel, "Peer")(b"").decode().startswith("notnets:host0/pid")


def _wait_for(predicate, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout} s: {service.EVENTS}")


def test_slow_unary_handler_does_not_stall_other_calls(channel):
    slow = uu(channel, "Sleep").future(b"1.5:slow")
    time.sleep(0.1)
    start = time.monotonic()
    assert uu(channel, "Echo")(b"quick", timeout=5) == b"quick"
    assert time.monotonic() - start < 1.0
    assert not slow.done()
    results = []
    threads = [threading.Thread(target=lambda: results.append(uu(channel, "Sleep")(b"0.4:par", timeout=10)))
               for _ in range(4)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert results == [b"slept"] * 4
    assert time.monotonic() - start < 1.4  # in parallel, not 4 x 0.4 s one after the other
    assert slow.result(10) == b"slept"


@pytest.mark.parametrize("metadata", [(("Foo", "x"),), (("a b", "x"),), (("k", "a\nb"),), (("k", "é"),)])
def test_invalid_metadata_is_internal_like_grpcio(channel, metadata):
    with pytest.raises(grpc.RpcError) as err:
        uu(channel, "Echo")(b"x", timeout=5, metadata=metadata)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.INTERNAL, "Invalid metadata")
    assert uu(channel, "Echo")(b"still", timeout=5) == b"still"


def test_request_of_the_wrong_type_leaves_the_channel_usable(channel):
    """grpcio: a str on a bytes method is a TypeError, None is INTERNAL (serializing);
    either way the channel serves the next call."""
    echo = uu(channel, "Echo")
    assert echo(b"warm") == b"warm"  # the fast path is set up
    with pytest.raises(TypeError):
        echo("text")
    assert echo(b"after str", timeout=5) == b"after str"
    with pytest.raises(grpc.RpcError) as err:
        echo(None)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.INTERNAL, "Exception serializing request!")
    assert echo(b"after None") == b"after None"
    with pytest.raises(TypeError):
        echo.future("text", timeout=5)
    assert echo(b"last", timeout=5) == b"last"
