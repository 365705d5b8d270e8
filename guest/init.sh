#!/bin/sh
# NotNets guest init: PID 1 of the initramfs (busybox sh).
#
# 1. load the boot-stage kernel modules (/etc/notnets/modules.boot, resolved at build time);
# 2. mount the host's / read-only over 9p (cache mode $NOTNETS_HOSTROOT_CACHE from
#    guest.env: mmap reads every file afresh, so commands run the host's current code;
#    loose is faster but never revalidates) and lay an overlayfs with a tmpfs upper
#    layer over it, so the guest sees every host path and its own writes stay in it;
# 3. mount the run's state dir (writable 9p) at the same absolute path as on the host;
# 4. start the guest agent (guest/agent.py, the host's Python) inside that root, and
#    load the late-stage modules (CXL, network) while its Python starts;
# 5. keep a shell on the serial console for `notnets-emu console`.
# Any failure prints one "notnets-init: FATAL:" line on the console and powers off, so
# the host sees QEMU exit (and can point at the console log) instead of waiting.

/bin/busybox --install -s /bin
export PATH=/bin
export HOME=/root

fail() {
    echo "notnets-init: FATAL: $*" >/dev/console
    sync
    poweroff -f
    exit 1
}
log() {
    read -r up _ </proc/uptime
    echo "notnets-init: [$up] $*" >/dev/console
}

P9_OPTS=trans=virtio,version=9p2000.L,msize=262144
NEWROOT=/newroot

mount -t proc proc /proc || fail "cannot mount /proc"
mount -t sysfs sysfs /sys || fail "cannot mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "cannot mount /dev"

HOST=
for word in $(cat /proc/cmdline); do
    case "$word" in
        notnets.host=*) HOST=${word#notnets.host=} ;;
        notnets.id=*) HOST_ID=${word#notnets.id=} ;;
    esac
done
[ -n "$HOST" ] || fail "no notnets.host= on the kernel command line"
log "init started"
hostname "$HOST"

load_modules() {
    while read -r module; do
        insmod "/lib/modules/$module" || fail "insmod $module failed"
    done <"/etc/notnets/modules.$1"
}
load_modules boot
log "boot modules loaded"

mkdir -p /mnt/host /mnt/state /mnt/rw "$NEWROOT"
mount -t 9p -o "$P9_OPTS" notnets-state /mnt/state || fail "cannot mount the state dir (9p tag notnets-state)"
GUEST_ENV=/mnt/state/hosts/$HOST/guest.env
[ -r "$GUEST_ENV" ] || fail "$GUEST_ENV is missing (the host writes it before boot)"
. "$GUEST_ENV"
umount /mnt/state
[ -n "$NOTNETS_STATE_DIR" ] || fail "$GUEST_ENV sets no NOTNETS_STATE_DIR"
mount -t 9p -o "$P9_OPTS,ro,cache=${NOTNETS_HOSTROOT_CACHE:-mmap}" hostroot /mnt/host \
    || fail "cannot mount the host's root (9p tag hostroot, cache=${NOTNETS_HOSTROOT_CACHE:-mmap})"

log "9p shares mounted"
mount -t tmpfs -o mode=0755 rw /mnt/rw || fail "cannot mount the tmpfs upper layer"
mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay -o lowerdir=/mnt/host,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work overlay "$NEWROOT" \
    || fail "cannot mount the overlay root"
mount -t proc proc "$NEWROOT/proc" || fail "cannot mount proc in the new root"
mount -t sysfs sysfs "$NEWROOT/sys" || fail "cannot mount sysfs in the new root"
mount -t devtmpfs devtmpfs "$NEWROOT/dev" || fail "cannot mount devtmpfs in the new root"
mkdir -p "$NEWROOT/dev/pts" "$NEWROOT/dev/shm"
mount -t devpts devpts "$NEWROOT/dev/pts"
mount -t tmpfs -o mode=1777 shm "$NEWROOT/dev/shm"
mount -t tmpfs -o mode=0755 run "$NEWROOT/run"
mkdir -p "$NEWROOT$NOTNETS_STATE_DIR" || fail "cannot create $NOTNETS_STATE_DIR in the new root"
mount -t 9p -o "$P9_OPTS" notnets-state "$NEWROOT$NOTNETS_STATE_DIR" || fail "cannot mount the state dir at $NOTNETS_STATE_DIR"

ip link set lo up

HOST_DIR=$NOTNETS_STATE_DIR/hosts/$HOST
log "starting the agent (log: $HOST_DIR/agent.log)"
# The agent never exits on its own: if it does (a bug, a crash, no Python at
# $NOTNETS_PYTHON), say so and power off, so that the host sees it at once rather than
# at its wait_ready timeout.
(
    env -i PATH="$NOTNETS_PATH" HOME=/root LANG=C.UTF-8 PYTHONPATH="$NOTNETS_PROJECT" \
        PYTHONDONTWRITEBYTECODE=1 \
        chroot "$NEWROOT" "$NOTNETS_PYTHON" -S -m guest.agent "$HOST_DIR/guest.json" \
        </dev/null >>"$NEWROOT$HOST_DIR/agent.log" 2>&1
    fail "the agent exited with code $? (see $HOST_DIR/agent.log)"
) &

load_modules late
log "late modules loaded"
if [ -n "$NOTNETS_NET_ADDR" ]; then
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do usleep 100000; i=$((i + 1)); done
    ip addr add "$NOTNETS_NET_ADDR" dev eth0 || fail "cannot give eth0 the address $NOTNETS_NET_ADDR"
    ip link set eth0 up || fail "cannot bring eth0 up"
fi

# The console: an interactive shell inside the new root, again whenever it exits. Its
# $ENV script (guest/console.sh) picks up the environment the agent gives commands, so
# the first shell waits until the agent has written it (ready or failed; at most
# CONSOLE_ENV_WAIT tenths of a second). As PID 1, this shell also reaps orphans.
CONSOLE_ENV_WAIT=1800
i=0
while [ ! -e "$NEWROOT/run/notnets/env.sh" ] && [ $i -lt $CONSOLE_ENV_WAIT ]; do usleep 100000; i=$((i + 1)); done
while true; do
    setsid cttyhack env -i PATH="$NOTNETS_PATH" HOME=/root TERM=linux LANG=C.UTF-8 \
        ENV="$NOTNETS_PROJECT/guest/console.sh" chroot "$NEWROOT" /bin/sh -i
    sleep 1
done
