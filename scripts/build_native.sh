#!/usr/bin/env bash
# Build notnets_rpc/_native (cache-line write-back, invalidate, fences; see
# notnets_rpc/_native.c) in place, for the virtualenv's Python. Idempotent: does nothing
# when the built module is newer than its source. A failed build is not fatal:
# notnets_rpc.cxl then runs its pure-Python fallback and says so once.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
SRC=notnets_rpc/_native.c
read -r INCLUDE SUFFIX < <("$PY" -c 'import sysconfig as s; print(s.get_paths()["include"], s.get_config_var("EXT_SUFFIX"))')
OUT=notnets_rpc/_native$SUFFIX
if [ -f "$OUT" ] && [ "$OUT" -nt "$SRC" ]; then
  printf '==> native extension: up to date (%s)\n' "$OUT"
  exit 0
fi
if [ ! -f "$INCLUDE/Python.h" ]; then
  printf 'setup: warning: %s missing (python3-dev); notnets_rpc uses its pure-Python fallback\n' "$INCLUDE/Python.h" >&2
  exit 0
fi
tmp=$(mktemp "$OUT.XXXXXX")
if gcc -O2 -Wall -Werror -shared -fPIC -I"$INCLUDE" "$SRC" -o "$tmp"; then
  mv -f "$tmp" "$OUT"
  printf '==> native extension: built %s\n' "$OUT"
else
  rm -f "$tmp"
  printf 'setup: warning: building %s failed; notnets_rpc uses its pure-Python fallback\n' "$OUT" >&2
fi
