"""Property tests for frame bodies: round trips, and garbage is a ProtocolError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from notnets_rpc.wire import frames
from notnets_rpc.errors import ProtocolError

keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=20)
printable = st.text(alphabet=[chr(c) for c in range(0x20, 0x7F)], max_size=40)
text_items = st.tuples(keys.filter(lambda k: not k.endswith("-bin")), printable)
bin_items = st.tuples(keys.map(lambda k: k + "-bin"), st.binary(max_size=40))
metadata = st.lists(st.one_of(text_items, bin_items), max_size=8).map(tuple)


@settings(max_examples=300, deadline=None)
@given(metadata)
def test_metadata_round_trip(md):
    assert frames.decode_metadata(frames.encode_metadata(md)) == md


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(0, 2**64 - 1), metadata, st.one_of(st.none(), st.binary(max_size=300)))
def test_call_round_trip(method, timeout_us, md, message):
    body = b"".join(frames.call_parts(method, timeout_us, frames.encode_metadata(md), message))
    t, m, raw_md, at = frames.parse_call(body)
    assert (t, m, frames.decode_metadata(raw_md)) == (timeout_us, method, md)
    assert body[at:] == (message or b"")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), metadata, st.one_of(st.none(), metadata), st.one_of(st.none(), st.binary(max_size=300)))
def test_status_round_trip(details, trailing, initial, message):
    initial_raw = frames.encode_metadata(initial) if initial is not None else None
    body = b"".join(frames.status_parts(details.encode(), frames.encode_metadata(trailing), initial_raw, message))
    i, d, t, at = frames.parse_status(body)
    assert d.decode() == details
    assert frames.decode_metadata(t) == trailing
    assert frames.decode_metadata(i) == (initial or ())
    assert body[at:] == (message or b"")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_bodies_raise_protocol_error_only(blob):
    for parse in (frames.parse_call, frames.parse_status, frames.decode_metadata):
        try:
            parse(blob)
        except ProtocolError:
            pass


def test_bad_metadata_is_a_value_error():
    with pytest.raises(ValueError):
        frames.encode_metadata([("k", 5)])
    with pytest.raises(ValueError):
        frames.encode_metadata([("ké", "v")])
    with pytest.raises(ValueError):
        frames.encode_metadata(["nope"])


class _Holder:
    partial = None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=5000), st.lists(st.integers(1, 1500), max_size=20), st.booleans())
def test_chunk_reassembly(message, cuts, via_sink):
    """Any chunking of a message reassembles to it, by copy or through the sink."""
    from notnets_rpc.wire.messages import on_chunk, sink_slot

    holder = _Holder()
    pieces, at = [], 0
    for cut in cuts:
        if at >= len(message):
            break
        pieces.append(message[at : at + cut])
        at += cut
    pieces.append(message[at:])
    whole = None
    for i, piece in enumerate(pieces):
        more = i < len(pieces) - 1
        body = piece
        if via_sink and (more or holder.partial is not None):
            slot = sink_slot(holder, len(message), len(piece), 1 << 20)
            if slot is not None:
                slot[:] = piece
                body = None
        whole = on_chunk(holder, more, len(message), body, as_buffer=False)
        assert (whole is None) == more
    assert whole == message


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 100), st.binary(max_size=120)), max_size=8))
def test_chunk_garbage_is_a_protocol_error(frames_):
    from notnets_rpc.wire.messages import on_chunk

    holder = _Holder()
    for more, aux, body in frames_:
        try:
            on_chunk(holder, more, aux, body, as_buffer=True)
        except ProtocolError:
            holder.partial = None


@pytest.mark.parametrize("item", [("Foo", "x"), ("a b", "x"), ("", "x"), ("k", "a\nb"), ("k", "é"), ("k", b"\x00"),
                                  ("k", 3), ("k-bin", 3)])
def test_metadata_refused_like_grpcio(item):
    """grpcio refuses these keys and values (INTERNAL "Invalid metadata" on a call)."""
    with pytest.raises(ValueError):
        frames.encode_metadata((item,))


@pytest.mark.parametrize("key,value", [(b"Foo", b"x"), (b"a b", b"x"), (b"k", b"a\nb"), (b"k", "é".encode())])
def test_illegal_metadata_from_a_peer_is_a_protocol_error(key, value):
    raw = frames.MD_ITEM.pack(len(key), len(value)) + key + value
    with pytest.raises(ProtocolError):
        frames.decode_metadata(raw)
