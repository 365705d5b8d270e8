"""Runs inside a host for the coherence tests: every call shape against a server of
tests/rpc/service.py (started with ``python -m rpc.peer serve``) on another host.

    python coherence_peer.py NAME      # one line per check, "ok NAME" or "fail NAME: why"; exit 0 if all ok
The pool is $NOTNETS_POOL; run with tests/ on PYTHONPATH.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

import grpc

import notnets_rpc


def checks(channel: grpc.Channel) -> dict[str, Callable[[], None]]:
    uu = channel.unary_unary
    us = channel.unary_stream

    def unary() -> None:
        echo = uu("/test.T/Echo")
        for size in (0, 1, 63, 64, 65, 1000, 70_000, 600_000):
            payload = os.urandom(size)
            assert echo(payload, timeout=30) == payload, f"echo of {size} bytes"
        assert echo.future(b"future", timeout=30).result() == b"future"

    def server_stream() -> None:
        assert list(us("/test.T/Count")(b"5", timeout=30)) == [str(i).encode() for i in range(5)]

    def client_stream() -> None:
        assert channel.stream_unary("/test.T/Sum")(iter([b"a", b"bc", b"d" * 5000]), timeout=30) == b"abc" + b"d" * 5000

    def bidi() -> None:
        got = list(channel.stream_stream("/test.T/Bidi")(iter([b"x", b"y", b"z"]), timeout=30))
        assert got == [b"x!", b"y!", b"z!"], got

    def metadata() -> None:
        reply, call = uu("/test.T/Metadata").with_call(
            b"", metadata=(("text", "hello world"), ("blob-bin", b"\x00\xff")), timeout=30)
        assert reply == b"ok"
        assert dict(call.initial_metadata()) == {"initial-key": "initial", "initial-bin": b"\x00\x01"}
        assert dict(call.trailing_metadata()) == {"echo-text": "hello world", "echo-bin": b"\x00\xff"}

    def status() -> None:
        try:
            uu("/test.T/Abort")(b"NOT_FOUND", timeout=30)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND and err.details() == "denied: é ✓", err
        else:
            raise AssertionError("Abort returned")

    def deadline() -> None:
        started = time.monotonic()
        try:
            uu("/test.T/Sleep")(b"5:deadline", timeout=0.5)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err
        else:
            raise AssertionError("Sleep returned before its deadline")
        assert time.monotonic() - started < 4, "the deadline was not kept"
        remaining = float(uu("/test.T/Remaining")(b"", timeout=20))
        assert 0 < remaining <= 20, remaining

    def cancel() -> None:
        call = us("/test.T/CountSlow")(b"", timeout=30)
        assert next(call) == b"0"
        call.cancel()
        try:
            for _ in call:
                pass
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.CANCELLED, err
        else:
            raise AssertionError("a cancelled stream ended normally")
        assert uu("/test.T/Echo")(b"after", timeout=30) == b"after", "the channel serves on after a cancel"

    return {"unary": unary, "server_stream": server_stream, "client_stream": client_stream, "bidi": bidi,
            "metadata": metadata, "status": status, "deadline": deadline, "cancel": cancel}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    failed = 0
    with notnets_rpc.insecure_channel(f"notnets:{argv[1]}") as channel:
        for name, check in checks(channel).items():
            try:
                check()
            except (AssertionError, grpc.RpcError) as err:
                failed += 1
                print(f"fail {name}: {err!r}", flush=True)
            else:
                print(f"ok {name}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
