#!/usr/bin/env bash
# Fetch Debian's guest kernel (linux-image-amd64 -> linux-image-<ver>-amd64) with
# `apt-get download` and unpack it with `dpkg -x` into .cache/kernel/<ver>/ (nothing is
# installed on the host). Leaves .cache/kernel/current -> <ver>. Skipped when
# NOTNETS_KERNEL points at another kernel (its modules: NOTNETS_KERNEL_MODULES).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${NOTNETS_CACHE:-$PWD/.cache}
say() { printf '==> %s\n' "$*"; }
die() { printf 'fetch-kernel: error: %s\n' "$*" >&2; exit 1; }

if [ -n "${NOTNETS_KERNEL:-}" ]; then
  [ -f "$NOTNETS_KERNEL" ] || die "NOTNETS_KERNEL=$NOTNETS_KERNEL: no such file"
  say "guest kernel: $NOTNETS_KERNEL (from NOTNETS_KERNEL)"; exit 0
fi
if [ -e "$CACHE/kernel/current/vmlinuz" ]; then
  say "guest kernel: $(readlink "$CACHE/kernel/current") (cached)"; exit 0
fi
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq; else sudo -n apt-get update -qq || true; fi
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[ -n "$pkg" ] || die "cannot resolve linux-image-amd64 (is apt configured for Debian 12?)"
ver=${pkg#linux-image-}
say "fetching guest kernel $pkg"
tmp=$(mktemp -d); chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q "$pkg" >/dev/null) || die "apt-get download $pkg failed"
mkdir -p "$tmp/root"
dpkg -x "$tmp"/*.deb "$tmp/root"
mkdir -p "$CACHE/kernel/$ver.partial"
cp "$tmp/root/boot/vmlinuz-$ver" "$CACHE/kernel/$ver.partial/vmlinuz"
mkdir -p "$CACHE/kernel/$ver.partial/lib/modules"
cp -a "$tmp/root/lib/modules/$ver" "$CACHE/kernel/$ver.partial/lib/modules/"
depmod -b "$CACHE/kernel/$ver.partial" "$ver"
echo "$ver" > "$CACHE/kernel/$ver.partial/version"
rm -rf "${CACHE:?}/kernel/$ver"
mv "$CACHE/kernel/$ver.partial" "$CACHE/kernel/$ver"
ln -sfn "$ver" "$CACHE/kernel/current"
say "guest kernel: $ver in $CACHE/kernel/$ver"
