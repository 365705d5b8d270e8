"""Pool endpoint names for TCP addresses: what an interposed server publishes for
``add_insecure_port(address)`` and what an interposed channel looks up for a target.

A name is ``HOST:PORT`` as a client on another host would dial it (the server host's
name, or one of its addresses), or ``localhost@HOST:PORT`` for a server bound to
loopback, reachable from its own host only. No DNS is asked: the host's name is
$NOTNETS_HOST (set in emulated hosts) or ``socket.gethostname()``, and its addresses
come from the kernel's interface list.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct
from typing import List, Optional, Tuple

HOST_ENV = "NOTNETS_HOST"
MAX_ADDRESSES = 3  # names per port for a wildcard bind, besides the host's name (directory slots are few)
DEFAULT_PORT = 443  # grpc's, for a target without one
_WILDCARDS = {"", "0.0.0.0", "::", "*", "0"}
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
_SIOCGIFADDR = 0x8915


def host_name() -> str:
    return os.environ.get(HOST_ENV) or socket.gethostname()


def host_addresses() -> List[str]:
    """This host's non-loopback, non-link-local addresses (IPv4 first), as names spell them."""
    out: List[str] = []
    try:
        interfaces = [name for _, name in socket.if_nameindex()]
    except OSError:
        interfaces = []
    for name in interfaces:
        if name == "lo":
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                raw = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            out.append(socket.inet_ntoa(raw[20:24]))
        except OSError:
            continue
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 6 or fields[5] == "lo":
                    continue
                addr = ipaddress.IPv6Address(int(fields[0], 16))
                if not addr.is_link_local and not addr.is_loopback:
                    out.append(f"[{addr.compressed}]")
    except (OSError, ValueError):
        pass
    return out


def split_host_port(address: str, default_port: Optional[int] = None) -> Optional[Tuple[str, int]]:
    """``host:port``, ``[v6]:port``, or a bare host (with ``default_port``); None if neither."""
    address = address.strip()
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            return None
        host, rest = address[1:end], address[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    elif address.count(":") == 1:
        host, port_text = address.split(":")
    elif ":" in address:  # a bare IPv6 address
        host, port_text = address, None
    else:
        host, port_text = address, None
    if port_text is None or port_text == "":
        if default_port is None:
            return None
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        return None
    return host, int(port_text)


def _canonical(host: str) -> str:
    """A host as names spell it: IP addresses normalised (v6 in brackets), names lower-case."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host.lower().rstrip(".")
    return f"[{ip.compressed}]" if ip.version == 6 else str(ip)


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def names_for_bind(address: str, port: int, me: Optional[str] = None,
                   addresses: Optional[List[str]] = None) -> List[str]:
    """The names a server bound at ``address`` (the real ``port``: port 0 is resolved)
    publishes; [] for addresses that are not TCP (``unix:...``)."""
    if address.startswith("unix:") or address.startswith("unix-abstract:"):
        return []
    parsed = split_host_port(address[5:] if address.startswith("dns:") else address, default_port=port)
    if parsed is None:
        return []
    host = parsed[0]
    me = (me or host_name()).lower()
    if host in _WILDCARDS:
        mine = host_addresses() if addresses is None else addresses
        return [f"{me}:{port}"] + [f"{_canonical(a.strip('[]'))}:{port}" for a in mine[:MAX_ADDRESSES]]
    if _is_loopback(host):
        return [f"localhost@{me}:{port}"]
    return [f"{_canonical(host)}:{port}"]


def names_for_target(target: str, me: Optional[str] = None) -> List[str]:
    """The names to look up, in order, for a channel target; [] if it cannot be a
    pool endpoint (a unix socket, a target with several addresses, a bad one)."""
    for scheme in ("dns:///", "dns://", "dns:", "ipv4:", "ipv6:"):
        if target.startswith(scheme):
            target = target[len(scheme):]
            if scheme == "dns://":  # dns://AUTHORITY/host:port
                target = target.partition("/")[2]
            break
    else:
        if target.startswith("unix:") or "://" in target or target.startswith("unix-abstract:"):
            return []
    if "," in target:
        return []
    parsed = split_host_port(target, default_port=DEFAULT_PORT)
    if parsed is None or not parsed[0]:
        return []
    host, port = parsed
    me = (me or host_name()).lower()
    if _is_loopback(host):
        return [f"localhost@{me}:{port}", f"{me}:{port}"]
    return [f"{_canonical(host)}:{port}"]
