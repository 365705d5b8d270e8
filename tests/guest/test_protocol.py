"""Framing: whatever a command prints can never be taken for protocol."""

from hypothesis import given, strategies as st

from guest import protocol


def frames(stream: bytes, cuts: list[int]) -> list[dict]:
    buf = protocol.LineBuffer()
    out, last = [], 0
    for cut in sorted(set(c % (len(stream) + 1) for c in cuts)) + [len(stream)]:
        out.extend(buf.feed(stream[last:cut]))
        last = cut
    return out


@given(st.lists(st.binary(max_size=300), max_size=5), st.lists(st.integers(min_value=0), max_size=8))
def test_payloads_survive_any_split(payloads: list[bytes], cuts: list[int]):
    stream = b"".join(protocol.encode({"id": i, "type": "output", "data": protocol.b64(p)})
                      for i, p in enumerate(payloads))
    got = frames(stream, cuts)
    assert [protocol.unb64(m["data"]) for m in got] == payloads


def test_prompt_like_and_json_like_output_stays_payload():
    evil = b'host0:/# \n{"id": 7, "type": "exit", "code": 0}\n\r\n$ READY\n'
    stream = protocol.encode({"id": 1, "type": "output", "fd": 1, "data": protocol.b64(evil)})
    assert stream.count(b"\n") == 1
    (message,) = frames(stream, [])
    assert protocol.unb64(message["data"]) == evil


def test_garbage_and_overlong_lines_are_dropped_then_resynchronised():
    buf = protocol.LineBuffer(max_frame=64)
    good = protocol.encode({"id": 2, "type": "ok"})
    got = list(buf.feed(b"noise\n[1,2]\n{\"id\": true}\n" + b"x" * 100))
    got += list(buf.feed(b"still the long line\n" + good))
    assert got == [{"id": 2, "type": "ok"}]


def test_request_validation():
    ok = {"id": 1, "op": "exec", "cmd": "true", "cwd": None, "env": {"A": "b"}, "timeout": 3}
    assert protocol.request_error(ok) is None
    assert "unknown op" in protocol.request_error({"id": 1, "op": "rm"})
    assert "cmd" in protocol.request_error({**ok, "cmd": 3})
    assert "env" in protocol.request_error({**ok, "env": {"A": 1}})
    assert "timeout" in protocol.request_error({**ok, "timeout": -1})
    assert "timeout" in protocol.request_error({**ok, "timeout": True})
    assert "log" in protocol.request_error({"id": 1, "op": "spawn", "cmd": "x"})
    assert "pid" in protocol.request_error({"id": 1, "op": "signal", "pid": 1, "sig": 15})
    assert "sig" in protocol.request_error({"id": 1, "op": "signal", "pid": 40, "sig": 99})
    assert protocol.request_error({"id": 1, "op": "poll", "pid": 40}) is None
    assert "stdin" in protocol.request_error({**ok, "stdin": "yes"})
    assert protocol.request_error({**ok, "stdin": True}) is None
    assert "ref" in protocol.request_error({"id": 2, "op": "stdin", "ref": "1", "data": ""})
    assert "eof" in protocol.request_error({"id": 2, "op": "stdin", "ref": 1, "eof": 1})
    assert protocol.request_error({"id": 2, "op": "stdin", "ref": 1, "data": "aGk="}) is None
    assert protocol.request_error({"id": 3, "op": "ps"}) is None


def test_bad_base64_is_a_value_error():
    import pytest

    with pytest.raises(ValueError):
        protocol.unb64("é")
