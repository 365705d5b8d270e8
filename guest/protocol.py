"""The agent protocol: JSON objects, one per line, binary payloads in base64.

Both ends (guest/agent.py in the guest, emulator/backends/agent_client.py on the host) use this
module, so it stays stdlib-only and cheap to import. Every frame is a whole JSON line and
command output travels base64-encoded inside it, so nothing a command prints (a fake
prompt, a stray newline, a JSON-looking line) can be mistaken for protocol. Replies
carry the id of their request; a reader drops frames whose id it is not waiting for
(leftovers of an earlier client of the same port) and lines that are not frames.

Requests (host -> guest), each with an integer "id":
  {"op": "status"}                                   -> status
  {"op": "exec", "cmd", "cwd", "env", "timeout", "stdin"} -> started, output*, exit
  {"op": "stdin", "ref", "data" | "eof"}              -> nothing (feeds exec "ref"'s stdin)
  {"op": "spawn", "cmd", "cwd", "env", "log"}         -> spawned
  {"op": "signal", "pid", "sig"}                      -> ok
  {"op": "poll", "pid"}                               -> process
  {"op": "ps"}                                        -> processes
An exec with "stdin": true reads the "stdin" frames that name it, in order, until one
says "eof"; without it the command's stdin is /dev/null (like `docker exec` without -i).
Replies (guest -> host): {"id", "type", ...}; any request may get {"type": "error",
"message"} instead.
"""

from __future__ import annotations

import binascii
import json

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a noticeable import time under TCG; the agent skips it
    from typing import Any, Iterator, Optional

VERSION = 1
MAX_FRAME = 1 << 20  # a longer line is garbage: dropped up to the next newline
CHUNK = 32 * 1024  # command output per "output" frame, before base64

OPS = ("status", "exec", "stdin", "spawn", "signal", "poll", "ps")
TIMEOUT_EXIT_CODE = 124  # like coreutils timeout(1)


class ProtocolError(Exception):
    """A frame that is JSON but not a valid message."""


def encode(message: dict[str, Any]) -> bytes:
    """One frame: compact JSON, newline-terminated (JSON escapes any newline inside)."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def unb64(text: str) -> bytes:
    """Raises ValueError on a payload that is not base64."""
    try:
        return binascii.a2b_base64(text.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError) as err:
        raise ValueError(f"bad base64 payload: {err}") from None


def decode(line: bytes) -> Optional[dict[str, Any]]:
    """The message in ``line``, or None for anything that is not a JSON object with an id."""
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(message, dict) or not isinstance(message.get("id"), int) or isinstance(message.get("id"), bool):
        return None
    return message


class LineBuffer:
    """Turns a byte stream into frames, resynchronising after garbage or overlong lines."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        """Every complete valid frame in the stream so far."""
        self._buf += data
        while True:
            newline = self._buf.find(b"\n")
            if newline < 0:
                if len(self._buf) > self.max_frame:
                    self._buf.clear()
                    self._skipping = True
                return
            line = bytes(self._buf[:newline])
            del self._buf[: newline + 1]
            if self._skipping:
                self._skipping = False
                continue
            message = decode(line)
            if message is not None:
                yield message


def request_error(message: dict[str, Any]) -> Optional[str]:
    """Why a request is malformed, or None; checked by the agent before acting on it."""
    op = message.get("op")
    if op not in OPS:
        return f"unknown op {op!r}"
    if op in ("exec", "spawn"):
        if not isinstance(message.get("cmd"), str):
            return f"{op}: 'cmd' must be a string"
        cwd = message.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            return f"{op}: 'cwd' must be a string or null"
        env = message.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            return f"{op}: 'env' must map strings to strings"
    if op == "exec":
        timeout = message.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            return "exec: 'timeout' must be a positive number or null"
        if not isinstance(message.get("stdin", False), bool):
            return "exec: 'stdin' must be true or false"
    if op == "stdin":
        ref = message.get("ref")
        if isinstance(ref, bool) or not isinstance(ref, int):
            return "stdin: 'ref' must be the id of an exec"
        if not isinstance(message.get("data", ""), str) or not isinstance(message.get("eof", False), bool):
            return "stdin: 'data' must be base64 text and 'eof' true or false"
    if op == "spawn" and not isinstance(message.get("log"), str):
        return "spawn: 'log' must be a path"
    if op in ("signal", "poll"):
        pid = message.get("pid")
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 1:
            return f"{op}: 'pid' must be a process id"
    if op == "signal":
        sig = message.get("sig")
        if isinstance(sig, bool) or not isinstance(sig, int) or not 0 <= sig < 65:
            return "signal: 'sig' must be a signal number"
    return None
