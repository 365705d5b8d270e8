"""Errors the CLI turns into one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad input, missing prerequisite, no such run).

    The CLI prints ``str(error)`` on one line and exits with ``exit_code``; anything
    that is not a ``UserError`` is a bug and keeps its traceback.
    """

    exit_code: int = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class TopologyError(UserError):
    """The topology file is malformed; the message names file, line and field."""

    exit_code = 2
