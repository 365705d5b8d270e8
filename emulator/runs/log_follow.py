"""`logs`: print a host's console log, and with --follow keep printing until the host ends."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import BinaryIO, Callable, Optional

from emulator.errors import UserError


def print_log(path: Path, follow: bool, alive: Callable[[], bool], out: Optional[BinaryIO] = None,
              poll: float = 0.2) -> None:
    """Copy ``path`` to ``out``; with ``follow``, keep copying new bytes while ``alive()``."""
    stream = out or sys.stdout.buffer
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{path}: no console log (yet)") from None
    with f:
        while True:
            chunk = f.read(65536)
            if chunk:
                stream.write(chunk)
                stream.flush()
                continue
            if not follow or not alive():
                return
            time.sleep(poll)
