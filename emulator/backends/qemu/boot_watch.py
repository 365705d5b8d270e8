"""Boot milestones read from a host's console log, for the per-host progress lines.

TCG boots take long enough that a silent wait looks like a hang; the console log (which
QEMU writes itself) shows how far each guest got: the kernel's first output, then each
line the guest's init prints with its ``notnets-init:`` prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

INIT_PREFIX = b"notnets-init: "


class BootWatch:
    """Reads only the new bytes of one console log at each :meth:`poll`."""

    def __init__(self, console_log: str, offset: int = 0) -> None:
        """``offset``: where this boot's output starts (a restarted host's log holds the
        earlier boots' lines before it)."""
        self.path = Path(console_log)
        self.offset = offset
        self.partial = b""
        self.kernel_seen = False

    def poll(self) -> list[str]:
        """Milestones that appeared since the last call."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(1 << 20)
        except OSError:
            return []
        if not data:
            return []
        self.offset += len(data)
        events: list[str] = []
        if not self.kernel_seen:
            self.kernel_seen = True
            events.append("kernel running")
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()[-4096:]
        for line in lines:
            event = _milestone(line)
            if event:
                events.append(event)
        return events


def _milestone(line: bytes) -> Optional[str]:
    at = line.find(INIT_PREFIX)
    if at < 0:
        return None
    text = line[at + len(INIT_PREFIX):].decode(errors="replace").strip()
    return text[:160] or None
