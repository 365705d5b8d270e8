#!/bin/sh
# What the guest's 9p cache mode costs: `import grpc` timed in a QEMU host on fresh 9p
# mounts of this machine's root in each cache mode (a mount per mode, so no mode sees
# another's cache), cold (first import after the mount) and warm (the next ones), and
# on the guest's own root after dropping its caches (what `loose` + invalidation per
# command would cost). Run it in a host of a QEMU run:
#     notnets-emu exec host0 -- sh scripts/measure-hostroot-cache.sh [ROUNDS]
# Prints one line per measurement: mode, round, seconds.
set -eu
ROUNDS=${1:-3}
PY=${VIRTUAL_ENV:-$(dirname "$(dirname "$(command -v python)")")}/bin/python
P9=trans=virtio,version=9p2000.L,msize=262144,ro
now() { date +%s.%N; }
timed() {  # timed LABEL ROUND COMMAND...
    label=$1; round=$2; shift 2
    start=$(now)
    "$@" >/dev/null
    end=$(now)
    echo "$label $round $(echo "$end - $start" | bc)"
}
for mode in loose mmap none; do
    dir=/tmp/hostroot-$mode
    mkdir -p "$dir"
    mount -t 9p -o "$P9,cache=$mode" hostroot "$dir"
    mount -t proc proc "$dir/proc" 2>/dev/null || true
    for round in $(seq 1 "$ROUNDS"); do
        timed "cache=$mode" "$round" chroot "$dir" "$PY" -c "import grpc"
    done
    umount "$dir/proc" 2>/dev/null || true
    umount "$dir"
done
for round in $(seq 1 "$ROUNDS"); do
    sync
    echo 3 >/proc/sys/vm/drop_caches
    timed "root+drop_caches" "$round" "$PY" -c "import grpc"
done
for round in $(seq 1 "$ROUNDS"); do
    timed "root(current)" "$round" "$PY" -c "import grpc"
done
