"""Guest kernel faults (oops, BUG, soft lockup, panic) found in the hosts' console logs.

Why look: an oops kills only the thread that hit it, so a workload usually goes on and
fails later with a misleading message (a NotNets server whose poller died in the kernel
shows up as "server did not accept the channel in time"). `bench` and `run` read every
host's console log before tearing a run down and report each fault as a failure of
its own, naming the host and the log. The guest prints such lines even under ``quiet``
(they are logged at KERN_ALERT/KERN_EMERG).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# The first line of each kind of report; later lines of the same report are not repeated.
# (A WARN_ON's "WARNING: CPU:" is left out: the kernel goes on, and so does the workload.)
FAULT = re.compile(rb"(BUG: [^\r\n]*|Oops: [^\r\n]*|Kernel panic[^\r\n]*|general protection fault[^\r\n]*)")
TAIL_BYTES = 4 << 20  # a console log can grow long; a fault that matters is near its end


def kernel_faults(console_log: Path) -> list[str]:
    """Fault lines in one console log, oldest first (an absent log has none)."""
    try:
        with open(console_log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - TAIL_BYTES))
            data = f.read()
    except OSError:
        return []
    return [m.group(1).decode("utf-8", "replace").strip() for m in FAULT.finditer(data)]


def run_kernel_faults(run: Any, backend: Any) -> dict[str, list[str]]:
    """Host name -> its fault lines, for the hosts of ``run`` that have any.

    Only QEMU guests have a kernel of their own: a sim host's "console" is its process
    tree's output, where such words would be a program's, not the kernel's."""
    found: dict[str, list[str]] = {}
    if run.backend != "qemu":
        return found
    for host in run.hosts:
        lines = kernel_faults(Path(backend.console_log(run, host)))
        if lines:
            found[host.name] = lines
    return found


def describe(run: Any, backend: Any, faults: dict[str, list[str]]) -> list[str]:
    """One line per faulty host: the first fault, how many, and where the whole log is."""
    out = []
    for name, lines in faults.items():
        more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
        log = backend.console_log(run, run.host(name))
        out.append(f"{name}: guest kernel fault: {lines[0]}{more}; console log {log}")
    return out
