#!/bin/sh
# What a 9p cache mode costs a command: `import grpc` timed in a QEMU host, cold (after
# dropping the guest's caches, as the first command after an edit finds them) and warm
# (run again at once). Boot one run per mode and compare within the same session:
#     NOTNETS_HOSTROOT_CACHE=loose notnets-emu up FILE
#     notnets-emu exec host0 -- sh scripts/measure-hostroot-cache.sh loose [ROUNDS]
# (then `down`, and again with mmap). Prints one line per import: mode, kind, seconds.
set -eu
LABEL=${1:?usage: measure-hostroot-cache.sh MODE [ROUNDS]}
ROUNDS=${2:-3}
now() { date +%s.%N; }
timed() {  # timed KIND
    start=$(now)
    python -c "import grpc"
    end=$(now)
    echo "cache=$LABEL $1 $(echo "$end - $start" | bc)"
}
for round in $(seq 1 "$ROUNDS"); do
    sync
    echo 3 >/proc/sys/vm/drop_caches
    timed cold
    timed warm
done
