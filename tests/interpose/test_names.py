"""tcp_names: what a server publishes for an address and what a client looks up."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from notnets_rpc.tcp_names import names_for_bind, names_for_target, split_host_port

ADDRS = ["10.0.0.2", "[fd00::2]"]
hosts = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True).filter(lambda h: "localhost" not in h and "loopback" not in h)
ports = st.integers(min_value=1, max_value=65535)


def test_wildcard_bind_publishes_the_host_name_and_addresses():
    assert names_for_bind("[::]:50051", 50051, me="h0", addresses=ADDRS) == \
        ["h0:50051", "10.0.0.2:50051", "[fd00::2]:50051"]
    assert names_for_bind("0.0.0.0:0", 41234, me="H0", addresses=[]) == ["h0:41234"]  # port 0: the real one


def test_loopback_and_specific_binds():
    for address in ("localhost:7", "127.0.0.1:7", "[::1]:7"):
        assert names_for_bind(address, 7, me="h0") == ["localhost@h0:7"]
    assert names_for_bind("10.0.0.2:7", 7, me="h0") == ["10.0.0.2:7"]
    assert names_for_bind("unix:/tmp/sock", 0, me="h0") == []


def test_targets():
    assert names_for_target("localhost:7", me="h1") == ["localhost@h1:7", "h1:7"]
    assert names_for_target("dns:///H0:7", me="h1") == ["h0:7"]
    assert names_for_target("ipv4:10.0.0.2:7", me="h1") == ["10.0.0.2:7"]
    assert names_for_target("ipv6:[fd00:0::2]:7", me="h1") == ["[fd00::2]:7"]
    assert names_for_target("h0", me="h1") == ["h0:443"]
    for target in ("unix:/tmp/sock", "ipv4:1.2.3.4:1,5.6.7.8:2", "h0:notaport", "xds:///svc"):
        assert names_for_target(target, me="h1") == []


@given(server=hosts, client=hosts, port=ports)
def test_a_wildcard_server_is_found_by_name_from_any_host(server, client, port):
    published = set(names_for_bind("[::]:0", port, me=server, addresses=ADDRS))
    for target in (f"{server}:{port}", f"10.0.0.2:{port}", f"dns:///{server}:{port}"):
        assert published & set(names_for_target(target, me=client))


@given(server=hosts, client=hosts, port=ports)
def test_a_loopback_server_is_found_from_its_own_host_only(server, client, port):
    published = set(names_for_bind("127.0.0.1:0", port, me=server))
    assert published & set(names_for_target(f"localhost:{port}", me=server))
    if client != server:
        assert not published & set(names_for_target(f"localhost:{port}", me=client))
        assert not published & set(names_for_target(f"{server}:{port}", me=client))


@given(st.text(max_size=40))
def test_split_host_port_never_raises(text):
    parsed = split_host_port(text)
    assert parsed is None or 0 <= parsed[1] <= 65535
