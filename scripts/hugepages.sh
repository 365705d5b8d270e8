#!/usr/bin/env bash
# Reserve huge pages and mount hugetlbfs at /dev/hugepages so pools can live there.
# NOTNETS_HUGEPAGES_MB (default 1024) is the reservation. Where this is not possible
# (not root, no hugetlbfs) it says so: pools then live on /dev/shm.
set -uo pipefail
want_mb=${NOTNETS_HUGEPAGES_MB:-1024}
say() { printf '==> %s\n' "$*"; }
if [ "$(id -u)" != 0 ]; then
  say "huge pages: not root, leaving them as they are (pools fall back to /dev/shm)"; exit 0
fi
if ! mountpoint -q /dev/hugepages; then
  mkdir -p /dev/hugepages && mount -t hugetlbfs none /dev/hugepages 2>/dev/null \
    || { say "huge pages: cannot mount hugetlbfs; pools will live on /dev/shm"; exit 0; }
fi
page_kb=$(awk '/^Hugepagesize:/ {print $2}' /proc/meminfo)
want=$(( want_mb * 1024 / page_kb ))
have=$(cat /proc/sys/vm/nr_hugepages)
if [ "$have" -lt "$want" ]; then
  echo "$want" > /proc/sys/vm/nr_hugepages 2>/dev/null
  have=$(cat /proc/sys/vm/nr_hugepages)
fi
if [ "$have" -lt "$want" ]; then
  say "huge pages: only $have of $want reserved; larger pools will live on /dev/shm"
else
  say "huge pages: $have x ${page_kb}k reserved, hugetlbfs at /dev/hugepages"
fi
