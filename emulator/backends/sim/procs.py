"""Finding and signalling every process of a simulated host, from another process.

A sim host is a process tree that outlives `up`, and the later verbs (status, fault,
down) only have what run.json recorded. Two layouts:

- isolated (root): ``unshare --pid ... -- python -m guest.sim_host`` records the
  unshare pid; the host is everything in the PID namespace that unshare made for its
  child. Killing that namespace's init makes the kernel kill the rest, detached
  commands and their daemons included.
- plain (no unshare): the host is its init process, everything below it, and every
  process whose environment names the host (the agent gives each command
  NOTNETS_STATE_DIR and NOTNETS_HOST); detached commands start sessions of their own,
  so the process tree alone would miss them.

A pid can be reused, so a recorded pid counts only while its command line still names
the host's config file (the marker), and a zombie counts as dead.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Iterable, Optional

PROC = Path("/proc")


def proc_state(pid: int) -> Optional[str]:
    """The one-letter state from /proc/PID/stat (R, S, T, Z, ...), or None if gone."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0]


def _ppid(pid: int) -> Optional[int]:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[-1].split()[1])


def is_ours(pid: Optional[int], marker: str) -> bool:
    """``pid`` runs (not a zombie) and its command line mentions ``marker``."""
    if not pid or pid <= 0:
        return False
    state = proc_state(pid)
    if state is None or state in ("Z", "X"):
        return False
    try:
        return marker.encode() in (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False


def _all_pids() -> list[int]:
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/PID/task/*/children)."""
    found: list[int] = []
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(x) for x in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def pid_namespace(pid: int, for_children: bool = False) -> Optional[str]:
    """The PID namespace of ``pid`` (or the one its children get), e.g. 'pid:[4026532]'."""
    try:
        return os.readlink(PROC / str(pid) / "ns" / ("pid_for_children" if for_children else "pid"))
    except OSError:
        return None


def _environ_has(pid: int, pairs: tuple[bytes, ...]) -> bool:
    try:
        env = (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return all(pair in env for pair in pairs)


def descendants(root: int) -> list[int]:
    """Every process below ``root`` in the process tree (one pass over /proc)."""
    parent: dict[int, int] = {}
    for pid in _all_pids():
        ppid = _ppid(pid)
        if ppid is not None:
            parent[pid] = ppid
    below: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        below.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for child in below.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def host_pids(root: int, namespace: Optional[str], state_dir: str, host: str) -> list[int]:
    """Every live process of the host: the namespace's members, else tree + environment."""
    pids: set[int] = set()
    if namespace:
        for pid in _all_pids():
            if pid_namespace(pid) == namespace:
                pids.add(pid)
    else:
        pids.add(root)
        pids.update(descendants(root))
        pairs = (f"NOTNETS_STATE_DIR={state_dir}".encode(), f"NOTNETS_HOST={host}".encode())
        for pid in _all_pids():
            if pid != os.getpid() and _environ_has(pid, pairs):
                pids.add(pid)
    return sorted(p for p in pids if proc_state(p) not in (None, "Z", "X"))


def send(pids: Iterable[int], sig: int) -> int:
    """Signal each pid; returns how many were still there."""
    sent = 0
    for pid in pids:
        try:
            os.kill(pid, sig)
            sent += 1
        except (ProcessLookupError, PermissionError):
            continue
    return sent


def signal_until_stable(list_pids, sig: int, rounds: int = 5) -> list[int]:
    """Signal the host's processes until a scan finds none that was not signalled yet.

    A process may fork between the scan and the signal (e.g. a freeze racing a shell
    that starts a command), so the scan repeats until it finds nothing new.
    """
    done: set[int] = set()
    for _ in range(rounds):
        fresh = [p for p in list_pids() if p not in done]
        if not fresh:
            break
        send(fresh, sig)
        done.update(fresh)
    return sorted(done)


def wait_gone(pids: Iterable[int], timeout: float) -> bool:
    """True once every pid is gone or a zombie (polling; ``timeout`` in seconds)."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        if all(proc_state(p) in (None, "Z", "X") for p in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


SIGNALS = {"kill": signal.SIGKILL, "freeze": signal.SIGSTOP, "thaw": signal.SIGCONT}
