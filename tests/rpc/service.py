"""A test service with bytes in and out (no protobuf), one method per behaviour."""

from __future__ import annotations

import threading
import time

import grpc

EVENTS: list = []
ANNOUNCE = None  # a peer process sets this to print each event where its test can wait for it
_lock = threading.Lock()


def record(event: str) -> None:
    with _lock:
        EVENTS.append(event)
    if ANNOUNCE is not None:
        ANNOUNCE(event)


def _echo(request, context):
    return request


def _abort(request, context):
    code = grpc.StatusCode[request.decode()] if request else grpc.StatusCode.PERMISSION_DENIED
    context.abort(code, "denied: é ✓")


def _set_code(request, context):
    context.set_code(grpc.StatusCode.NOT_FOUND)
    context.set_details("nothing here: ü")
    return None


def _raise(request, context):
    raise ValueError("boom")


def _bad_response(request, context):
    return 42  # not bytes: serialization fails


def _sleep(request, context):
    tag = f"sleep-{request.decode()}"
    context.add_callback(lambda: record(f"{tag}:callback"))
    record(f"{tag}:started")
    end = time.monotonic() + float(request.decode().split(":")[0])
    while time.monotonic() < end:
        if not context.is_active():
            record(f"{tag}:inactive")
            return b"late"
        time.sleep(0.005)
    record(f"{tag}:done")
    return b"slept"


def _metadata(request, context):
    md = dict(context.invocation_metadata())
    context.send_initial_metadata((("initial-key", "initial"), ("initial-bin", b"\x00\x01")))
    context.set_trailing_metadata((("echo-text", md.get("text", "")), ("echo-bin", md.get("blob-bin", b""))))
    return b"ok"


def _remaining(request, context):
    remaining = context.time_remaining()
    return b"none" if remaining is None else f"{remaining:.3f}".encode()


def _count(request, context):
    n = int(request.decode() or "3")
    for i in range(n):
        yield str(i).encode()


def _count_slow(request, context):
    context.add_callback(lambda: record("count_slow:callback"))
    for i in range(1000):
        if not context.is_active():
            record("count_slow:inactive")
            return
        yield str(i).encode()
        time.sleep(0.01)


def _stream_abort(request, context):
    yield b"first"
    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "no more")


def _sum(request_iterator, context):
    return b"".join(request_iterator)


HOLD = threading.Event()  # HeldSum's handler takes no request until a test sets it


def _held_sum(request_iterator, context):
    HOLD.wait(30)
    return b"".join(request_iterator)


def _count_requests(request_iterator, context):
    return str(sum(1 for _ in request_iterator)).encode()


def _bidi(request_iterator, context):
    for request in request_iterator:
        yield request + b"!"


def _big_trailer(request, context):
    context.set_trailing_metadata((("big", "x" * int(request)),))
    return b"ok"


def _big_details(request, context):
    context.abort(grpc.StatusCode.FAILED_PRECONDITION, "d" * int(request))


def _big_headers(request, context):
    context.send_initial_metadata((("big", "x" * int(request)),))
    yield b"never"


def _peer(request, context):
    return context.peer().encode()


def test_handlers() -> grpc.GenericRpcHandler:
    uu = grpc.unary_unary_rpc_method_handler
    return grpc.method_handlers_generic_handler("test.T", {
        "Echo": uu(_echo), "Abort": uu(_abort), "SetCode": uu(_set_code), "Raise": uu(_raise),
        "BadResponse": uu(_bad_response), "Sleep": uu(_sleep), "Metadata": uu(_metadata),
        "Remaining": uu(_remaining), "Peer": uu(_peer), "BigTrailer": uu(_big_trailer),
        "BigDetails": uu(_big_details), "BigHeaders": grpc.unary_stream_rpc_method_handler(_big_headers),
        "Count": grpc.unary_stream_rpc_method_handler(_count),
        "CountSlow": grpc.unary_stream_rpc_method_handler(_count_slow),
        "StreamAbort": grpc.unary_stream_rpc_method_handler(_stream_abort),
        "Sum": grpc.stream_unary_rpc_method_handler(_sum),
        "HeldSum": grpc.stream_unary_rpc_method_handler(_held_sum),
        "CountRequests": grpc.stream_unary_rpc_method_handler(_count_requests),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
    })


test_handlers.__test__ = False  # not a pytest test
