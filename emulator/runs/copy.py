"""`cp`: files between this machine and a host, both ways, through the run's state dir.

A guest sees this machine's files read-only (its own writes stay in the guest) and the
run's state dir read-write at the same path, so a copy goes through a private staging
directory under hosts/HOST/transfer/: this machine puts a file there and the host's
`cp -a` takes it to its place, or the other way round. Same code for a sim host (whose
files are this machine's). Like `docker cp`: a destination that is an existing
directory receives the source inside it; otherwise the copy gets the destination's name.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import uuid
from pathlib import Path

from emulator.backends.base import Backend
from emulator.errors import UserError
from emulator.runs.guest_env import guest_cwd
from emulator.runs.state import HostState, RunState, make_private_dir

COPY_TIMEOUT = 600.0


def split_spec(spec: str, run: RunState) -> tuple[HostState | None, str]:
    """``HOST:PATH`` -> (host, PATH); anything else is a path on this machine."""
    host, sep, path = spec.partition(":")
    if sep and host and "/" not in host:
        return run.host(host), path or "."
    return None, spec


def _guest(backend: Backend, run: RunState, host: HostState, command: str, cwd: str) -> None:
    out, err = io.BytesIO(), io.BytesIO()
    code = backend.exec(run, host, command, cwd=guest_cwd(cwd), env={}, timeout=COPY_TIMEOUT, stdout=out, stderr=err)
    if code != 0:
        why = err.getvalue().decode(errors="replace").strip().splitlines() or [f"exit code {code}"]
        raise UserError(f"cp on {host.name}: {why[-1]}")


def _place(staged: Path, dest: Path) -> Path:
    """Move ``staged`` to ``dest`` (into it when it is a directory); the final path."""
    target = dest / staged.name if dest.is_dir() else dest
    if not target.parent.is_dir():
        raise UserError(f"cp: {target.parent} is not a directory on this machine")
    if target.is_dir() and staged.is_dir():
        shutil.copytree(staged, target, dirs_exist_ok=True, symlinks=True)
    else:
        shutil.move(str(staged), str(target))
    return target


def copy(backend: Backend, run: RunState, source: str, dest: str, cwd: str) -> str:
    """Copy ``source`` to ``dest`` (exactly one of them ``HOST:PATH``); what was copied."""
    src_host, src = split_spec(source, run)
    dst_host, dst = split_spec(dest, run)
    if (src_host is None) == (dst_host is None):
        raise UserError("cp: exactly one of SRC and DEST must be HOST:PATH (a host of the run)", exit_code=2)
    host = src_host or dst_host
    assert host is not None
    stage = make_private_dir(Path(host.dir) / "transfer" / uuid.uuid4().hex)
    try:
        if src_host is not None:
            name = os.path.basename(os.path.normpath(src)) or "root"
            _guest(backend, run, host, f"cp -a -- {shlex.quote(src)} {shlex.quote(str(stage / name))}", cwd)
            target = _place(stage / name, Path(cwd, dst))
            return f"{_size(target)} to {target}"
        local = Path(cwd, src)
        if not local.exists():
            raise UserError(f"cp: {local}: no such file or directory on this machine")
        staged = stage / local.name
        if local.is_dir():
            shutil.copytree(local, staged, symlinks=True)
        else:
            shutil.copy2(local, staged)
        q_staged, q_dst = shlex.quote(str(staged)), shlex.quote(dst)
        _guest(backend, run, host,
               f"if [ -d {q_dst} ]; then cp -a -- {q_staged} {q_dst}/; else cp -a -- {q_staged} {q_dst}; fi", cwd)
        return _size(staged)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _size(path: Path) -> str:
    if path.is_dir():
        count = sum(1 for p in path.rglob("*") if p.is_file())
        return f"{count} file(s)"
    return f"{path.stat().st_size} bytes"
