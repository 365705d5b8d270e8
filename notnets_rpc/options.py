"""grpc-style channel and server options that NotNets honours."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

DEFAULT_MAX_MESSAGE = 128 << 20


def message_limits(options: Optional[Sequence[Tuple[str, Any]]]) -> Tuple[int, int]:
    """(max receive, max send) from grpc-style options; -1 means unlimited."""
    receive, send = DEFAULT_MAX_MESSAGE, DEFAULT_MAX_MESSAGE
    for key, value in options or ():
        if key == "grpc.max_receive_message_length":
            receive = int(value)
        elif key == "grpc.max_send_message_length":
            send = int(value)
    unlimited = (1 << 32) - 1
    return (unlimited if receive < 0 else receive), (unlimited if send < 0 else send)
