#!/usr/bin/env bash
# make setup: everything a fresh Debian 12 machine needs to run NotNets. Idempotent:
# each step checks first and does nothing when it is already done.
#   1. Debian packages (QEMU 7.2, busybox, ndctl/cxl, daxctl, kmod, cpio, vde2, gcc, python3-dev)
#   2. the virtualenv .venv with the project installed editable (+ dev extras), and the
#      cache-line extension notnets_rpc/_native built in place (scripts/build_native.sh)
#   3. the guest kernel (Debian's linux-image-amd64, unpacked into .cache/, not installed)
#   4. huge pages and a hugetlbfs mount, when the machine allows (else pools use /dev/shm)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

say() { printf '==> %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# --- 1. Debian packages -------------------------------------------------------------
PACKAGES=(qemu-system-x86 busybox-static ndctl daxctl kmod cpio vde2 iproute2 util-linux gcc python3-dev)
# The virtualenv is built on Debian's own Python: it is compiled with PGO and LTO, and an
# RPC round trip (pure Python on both ends) is about a third faster than on a plain source
# build such as pyenv's, which may come first on PATH. NOTNETS_PYTHON picks another one.
PYTHON=${NOTNETS_PYTHON:-/usr/bin/python3}
if [ -z "${NOTNETS_PYTHON:-}" ]; then PACKAGES+=(python3 python3-venv);
elif ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then die "NOTNETS_PYTHON=$PYTHON cannot create a virtualenv (no venv/ensurepip)"; fi
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then SUDO=(); elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=(sudo -n);
  else die "missing Debian packages: ${missing[*]}; run as root or with passwordless sudo, or install them: apt-get install ${missing[*]}"; fi
  say "installing Debian packages: ${missing[*]}"
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages: all present"
fi

# --- 2. virtualenv --------------------------------------------------------------------
stamp=.venv/.notnets-installed
base=$(readlink -f "$PYTHON")
want="$(sha256sum pyproject.toml | cut -c1-16) $base"
if [ -x .venv/bin/python ] && [ "$(readlink -f .venv/bin/python)" != "$base" ]; then
  say "virtualenv .venv was built on $(readlink -f .venv/bin/python); rebuilding it on $base"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "creating virtualenv .venv on $base and installing the project (editable, dev extras)"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
else
  say "virtualenv .venv: up to date"
fi

bash scripts/build_native.sh .venv/bin/python
.venv/bin/python scripts/gen_protos.py  # example gRPC code (examples/*/*_pb2*.py, not committed)
# interposition's import hook: a .pth line that does nothing unless NOTNETS_INTERPOSE is set
.venv/bin/python -m notnets_rpc.interpose --install-hook >/dev/null

# --- 3. guest kernel ------------------------------------------------------------------
bash scripts/fetch-kernel.sh

# --- 4. huge pages -----------------------------------------------------------------------
bash scripts/hugepages.sh || true
say "setup done; try: .venv/bin/notnets-emu doctor"
