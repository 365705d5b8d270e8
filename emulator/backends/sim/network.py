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
import re
import shutil
import subprocess
from typing import Callable, Iterable, Sequence

from emulator.image.guest_config import NETWORK_BITS, guest_ip

NETNS_DIR = "/run/netns"  # where `ip netns add` binds the namespaces it names
BRIDGE = "br0"
HOST_LINK = "eth0"  # as in a QEMU guest
IP_TIMEOUT = 10.0  # seconds for one `ip` command (they take milliseconds)
FAILED_LINE = re.compile(r"Command failed -:(\d+)")  # how `ip -batch -` names the line that failed


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


def _ip(*args: str, batch: Sequence[Sequence[str]] = ()) -> None:
    """``ip ARGS``; with ``batch``, ``ip ARGS -batch -`` running those commands in one
    process (first failure ends it), which is what makes a run's network cheap: one
    process per namespace, not one per step."""
    argv = ["ip", *args] + (["-batch", "-"] if batch else [])
    script = "".join(" ".join(command) + "\n" for command in batch) if batch else None
    try:
        done = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=IP_TIMEOUT,
                              stdin=None if batch else subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise NetworkError(f"`{' '.join(argv)}`: {err}") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        failed = FAILED_LINE.search(lines[-1]) if batch and lines else None
        if failed and 0 < int(failed.group(1)) <= len(batch):  # name the command, not the batch
            argv, lines = ["ip", *args, *batch[int(failed.group(1)) - 1]], lines[:-1]
        why = (lines or [f"exit code {done.returncode}"])[-1]
        raise NetworkError(f"`{' '.join(argv)}`: {why}")


def create(bridge_ns: str, hosts: Sequence[tuple[int, str]], record: Callable[[str], None]) -> None:
    """Make the bridge namespace and, for each (host id, namespace), the host's namespace
    on it. ``record(name)`` is called for every namespace before any is made, so that
    whoever cleans up after a failure knows every name to remove. One ``ip -batch`` for
    the namespaces, one in the bridge's, one in each host's."""
    names = [bridge_ns] + [ns for _, ns in hosts]
    for name in names:
        record(name)
    _ip(batch=[("netns", "add", name) for name in names])
    bridge = [("link", "add", BRIDGE, "type", "bridge"), ("link", "set", BRIDGE, "up")]
    for index, ns in hosts:
        port = veth_name(index)
        bridge += [("link", "add", port, "type", "veth", "peer", "name", HOST_LINK, "netns", ns),
                   ("link", "set", port, "master", BRIDGE, "up")]
    _ip("-n", bridge_ns, batch=bridge)
    for index, ns in hosts:
        _ip("-n", ns, batch=[("addr", "add", f"{guest_ip(index)}/{NETWORK_BITS}", "dev", HOST_LINK),
                             ("link", "set", HOST_LINK, "up"), ("link", "set", "lo", "up")])


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
