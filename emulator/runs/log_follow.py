"""`logs`: print hosts' logs (console and detached commands), prefixed, tailed, followed.

Each host has several logs: its console log (a sim host's is its agent's stderr), one
per `exec -d` command (hosts/HOST/exec/) and one per background `run` step
(steps/NN-HOST.log). With more than one log to show, each line gets the prefix
``HOST | `` or ``HOST[PID] | `` (as `docker compose logs` prefixes services); ``-f`` keeps
printing whole lines from every log, new ones included, while a host runs.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Optional

from emulator.runs.detached import detached_logs


@dataclass
class LogSource:
    """One log file and the prefix its lines get."""

    label: str
    path: Path
    offset: int = 0
    partial: bytes = field(default=b"", repr=False)


def host_sources(state_dir: Path, host: str, console_log: Path) -> list[LogSource]:
    """HOST's logs: its console, then its detached commands and background steps."""
    sources = [LogSource(host, console_log)]
    sources += [LogSource(f"{host}[{pid}]", path) for pid, path in detached_logs(state_dir / "hosts" / host)]
    sources += [LogSource(f"{host}[step {path.name.split('-')[0].lstrip('0') or '0'}]", path)
                for path in sorted((state_dir / "steps").glob(f"*-{host}.log"))]
    return sources


def _last_lines(data: bytes, count: Optional[int]) -> bytes:
    if count is None:
        return data
    if count <= 0:
        return b""
    lines = deque(data.splitlines(keepends=True), maxlen=count)
    return b"".join(lines)


class LogPrinter:
    """Writes sources to ``out``, whole lines with their prefix (or raw, without)."""

    def __init__(self, out: BinaryIO, prefix: bool) -> None:
        self.out = out
        self.prefix = prefix
        self.width = 0

    def emit(self, source: LogSource, data: bytes, final: bool = False) -> None:
        if not self.prefix:
            if data:
                self.out.write(data)
                self.out.flush()
            return
        lines = (source.partial + data).split(b"\n")
        source.partial = lines.pop()
        if final and source.partial:
            lines.append(source.partial)
            source.partial = b""
        if lines:
            tag = source.label.ljust(self.width).encode() + b" | "
            self.out.write(b"".join(tag + line + b"\n" for line in lines))
            self.out.flush()


def print_logs(discover: Callable[[], list[LogSource]], *, follow: bool, alive: Callable[[], bool],
               tail: Optional[int] = None, prefix: Optional[bool] = None, out: Optional[BinaryIO] = None,
               poll: float = 0.2) -> int:
    """Print every source ``discover()`` returns (last ``tail`` lines of each); with
    ``follow``, keep printing new lines, and new sources, while ``alive()``. Returns how
    many sources were printed."""
    printer = LogPrinter(out or sys.stdout.buffer, False)
    sources: dict[Path, LogSource] = {}

    def scan() -> None:
        for source in discover():
            if source.path not in sources and source.path.is_file():
                sources[source.path] = source
        printer.prefix = prefix if prefix is not None else len(sources) > 1
        printer.width = max((len(s.label) for s in sources.values()), default=0)

    def drain(source: LogSource, first: bool) -> None:
        try:
            with open(source.path, "rb") as f:
                f.seek(source.offset)
                data = f.read()
        except OSError:
            return
        source.offset += len(data)
        printer.emit(source, _last_lines(data, tail) if first else data)

    scan()
    for source in list(sources.values()):
        drain(source, first=True)
    while follow and alive():
        time.sleep(poll)
        scan()  # a command started meanwhile: its log from the start
        for source in list(sources.values()):
            drain(source, first=False)
    for source in sources.values():
        printer.emit(source, b"", final=True)
    return len(sources)
