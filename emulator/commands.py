"""What each CLI verb does, one function per verb; cli.py only parses arguments.

Verbs whose machinery has not landed yet raise a UserError with exit code 2, so that
scripts can tell "not built" from "failed".
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn, Optional

from .errors import UserError
from .topology import Topology

EXIT_NOT_BUILT = 2


def _not_built(verb: str, issue: int) -> NoReturn:
    raise UserError(f"`notnets-emu {verb}` is not built yet (tracked in issue #{issue})", exit_code=EXIT_NOT_BUILT)


def up(topology: Topology, accel: str) -> None:
    _not_built("up", 3)


def down(name: Optional[str], keep_pools: bool) -> None:
    _not_built("down", 3)


def status(name: Optional[str], as_json: bool) -> None:
    _not_built("status", 3)


def exec_(name: Optional[str], host: str, command: str, detach: bool, timeout: Optional[float]) -> int:
    _not_built("exec", 3)


def console(name: Optional[str], host: str) -> None:
    _not_built("console", 3)


def logs(name: Optional[str], host: str, follow: bool) -> None:
    _not_built("logs", 3)


def run(topology: Topology, accel: str, junit: Optional[Path]) -> int:
    _not_built("run", 3)


def bench(args: list[str]) -> None:
    _not_built("bench", 6)


def pool_create(path: Path, size: str, overwrite: bool) -> None:
    _not_built("pool create", 4)


def pool_inspect(path: Path, as_json: bool) -> None:
    _not_built("pool inspect", 4)


def pool_poison(path: Path, offset: int, length: int, value: int) -> None:
    _not_built("pool poison", 5)


def fault(name: Optional[str], host: str, action: str) -> None:
    _not_built("fault", 5)
