"""Property tests for frame bodies: round trips, and garbage is a ProtocolError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from notnets_rpc import frames
from notnets_rpc.errors import ProtocolError

keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=20)
text_items = st.tuples(keys.filter(lambda k: not k.endswith("-bin")), st.text(max_size=40))
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
