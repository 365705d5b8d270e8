"""The private network of a sim run with ``network: true``: what QEMU hosts get from the
run's switch, made of network namespaces.

- A namespace of the run's own (``notnets-RUN-TAG``) holds a bridge, ``br0``, with no
  uplink and no address: nothing a host sends can leave this machine.
- Each host gets a named namespace of its own (``notnets-RUN-TAG-HOST``) with ``lo`` up
  and ``eth0``, a veth whose peer is a port of the bridge, holding 169.254.100.<id+1>/24:
  the address the same host has on QEMU (emulator/image/guest_config.py). Each host has
  its own ports, so two hosts serving :50051 do not collide.
- The host is started inside its namespace (``nsenter --net=/run/netns/NAME``); its
  names resolve through the /etc/hosts that guest/sim_host.py bind-mounts in the host's
  mount namespace.

TAG is a hash of the run's state dir, so runs of one name under two state roots never
share a namespace. The namespaces are named (``ip netns``) so that they outlive the
host's processes: a killed host restarts into the same one, with the same address.
``remove`` deletes them: `down`, a failed `up`, and the clean-up of a stale run call it,
with the names recorded in run.json before each was made.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from typing import Callable, Iterable, Sequence

from emulator.image.guest_config import NETWORK_BITS, guest_ip

NETNS_DIR = "/run/netns"  # where `ip netns add` binds the namespaces it names
BRIDGE = "br0"
HOST_LINK = "eth0"  # as in a QEMU guest
IP_TIMEOUT = 10.0  # seconds for one `ip` command (they take milliseconds)


class NetworkError(Exception):
    """The run's network could not be made; the message says which step and why."""


def namespace_names(run_name: str, state_dir: str, hosts: Iterable[str]) -> tuple[str, dict[str, str]]:
    """(the bridge's namespace, {host: its namespace}) for a run (pure)."""
    tag = hashlib.sha256(state_dir.encode()).hexdigest()[:6]
    base = f"notnets-{run_name}-{tag}"
    return base, {host: f"{base}-{host}" for host in hosts}


def netns_path(name: str) -> str:
    return f"{NETNS_DIR}/{name}"


def veth_name(index: int) -> str:
    """The bridge's port for host ``index`` (in the bridge's namespace, so never on the machine)."""
    return f"h{index}"


def missing_tool() -> str:
    """Why the network cannot be made here ('' when it can be tried)."""
    missing = [tool for tool in ("ip", "nsenter") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found (iproute2, util-linux: `make setup` installs them)"
    return ""


def _ip(*args: str) -> None:
    argv = ["ip", *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise NetworkError(f"`{' '.join(argv)}`: {err}") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise NetworkError(f"`{' '.join(argv)}`: {why}")


def create(bridge_ns: str, hosts: Sequence[tuple[int, str]], record: Callable[[str], None]) -> None:
    """Make the bridge namespace and, for each (host id, namespace), the host's namespace
    on it. ``record(name)`` is called before each namespace is made, so that whoever
    cleans up after a failure knows every name to remove."""
    record(bridge_ns)
    _ip("netns", "add", bridge_ns)
    _ip("-n", bridge_ns, "link", "add", BRIDGE, "type", "bridge")
    _ip("-n", bridge_ns, "link", "set", BRIDGE, "up")
    for index, ns in hosts:
        record(ns)
        _ip("netns", "add", ns)
        port = veth_name(index)
        _ip("-n", bridge_ns, "link", "add", port, "type", "veth", "peer", "name", HOST_LINK, "netns", ns)
        _ip("-n", bridge_ns, "link", "set", port, "master", BRIDGE, "up")
        _ip("-n", ns, "addr", "add", f"{guest_ip(index)}/{NETWORK_BITS}", "dev", HOST_LINK)
        _ip("-n", ns, "link", "set", HOST_LINK, "up")
        _ip("-n", ns, "link", "set", "lo", "up")


def remove(names: Iterable[str]) -> list[str]:
    """Delete the named namespaces (their links go with them); return what could not be
    deleted, with why. A name that is already gone is not an error."""
    problems = []
    for name in names:
        try:
            _ip("netns", "delete", name)
        except NetworkError as err:
            if exists(name):
                problems.append(str(err))
    return problems


def listed() -> set[str]:
    """The machine's named network namespaces (``ip netns list``)."""
    try:
        done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=IP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {line.split()[0] for line in done.stdout.splitlines() if line.strip()}


def exists(name: str) -> bool:
    return name in listed()
