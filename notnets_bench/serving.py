"""Serve an example server until it is told to stop, the same way for every example.

The readiness line is what `wait_for: serving` in topologies and the benchmark wait
for, so it is printed (and flushed) only after the server has started.
"""

from __future__ import annotations

import signal
from typing import Any


def serve_until_stopped(server: Any, banner: str) -> None:
    """Print ``banner``, then serve until SIGTERM or Ctrl-C, stopping with a short grace."""
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0.5))
    print(banner, flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(0.5).wait(2)
