"""The server's malloc policy (serving/malloc_policy.py): one arena unless told otherwise."""

from __future__ import annotations

import subprocess
import sys

from .conftest import python_env

PROBE = """
import sys
from notnets_rpc.serving import malloc_policy as m
print(m.limit_arenas(int(sys.argv[1])))
"""


def _limit(arenas: int, **env: str) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE, str(arenas)], env=python_env(**env), capture_output=True,
                         text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_arenas_are_limited_unless_the_environment_or_the_option_says_otherwise():
    assert _limit(1) == "True"
    assert _limit(0) == "False"  # the option's "leave malloc alone"
    assert _limit(1, MALLOC_ARENA_MAX="4") == "False"  # the user's setting wins
