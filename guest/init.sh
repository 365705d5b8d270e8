#!/bin/sh
# NotNets guest init: PID 1 of the initramfs (busybox sh).
#
# 1. load the boot-stage kernel modules (/etc/notnets/modules.boot, resolved at build time);
#    a boot template then waits for its identity (see below);
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
# Sleep without a process: busybox forks for `usleep`, ten times a second in the waits
# below, and a fork is costly under TCG with 16 guests on two cores. A read with a
# timeout on a FIFO that nobody writes (opened read-write, so it never ends) waits.
TICK=/tmp/notnets-tick
pause() {
    read -r -t "$1" _ <>"$TICK"
}

P9_OPTS=trans=virtio,version=9p2000.L,msize=262144
NEWROOT=/newroot

mount -t proc proc /proc || fail "cannot mount /proc"
mount -t sysfs sysfs /sys || fail "cannot mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "cannot mount /dev"
mkfifo "$TICK" || fail "cannot make $TICK"

HOST=
IDENTITY=cmdline
for word in $(cat /proc/cmdline); do
    case "$word" in
        notnets.host=*) HOST=${word#notnets.host=} ;;
        notnets.id=*) HOST_ID=${word#notnets.id=} ;;
        notnets.identity=port) IDENTITY=port ;;
    esac
done
[ -n "$HOST" ] || [ "$IDENTITY" = port ] || fail "no notnets.host= on the kernel command line"
log "init started"

load_modules() {
    while read -r module; do
        insmod "/lib/modules/$module" || fail "insmod $module failed"
    done <"/etc/notnets/modules.$1"
}
load_modules boot
log "boot modules loaded"

# A boot template (notnets.identity=port) stops here, before any 9p mount (QEMU refuses
# to save a guest with a 9p share mounted): the host saves it once, and restores it as
# each host, then writes "NAME ID EPOCH_SECONDS" on the notnets.identity port. Until a
# host connects, a read there ends at once with nothing.
identity_port() {
    for entry in /sys/class/virtio-ports/vport*; do
        [ "$(cat "$entry/name" 2>/dev/null)" = notnets.identity ] && echo "/dev/${entry##*/}" && return 0
    done
    return 1
}
# QEMU 7.2 does not migrate the CXL devices (cxl-type3, cxl-rp, pxb-cxl have no
# vmstate): a restored guest finds them as they were reset, without the bus numbers,
# windows and BARs its kernel assigned at boot. Every device off the root bus (bus 00
# holds the migrated ones) is behind a CXL host bridge, so the template keeps their
# config headers and writes them back after the restore, bridges (lower bus numbers)
# first. The CXL drivers load only after this, onto devices as the kernel knows them.
PCI_SAVED=/tmp/notnets-pci
save_pci_config() {
    mkdir -p "$PCI_SAVED"
    for dev in /sys/bus/pci/devices/*; do
        case "${dev##*/}" in *:00:*) continue ;; esac
        dd if="$dev/config" of="$PCI_SAVED/${dev##*/}" bs=256 count=1 2>/dev/null || fail "cannot read $dev/config"
    done
}
restore_pci_config() {
    for saved in "$PCI_SAVED"/*; do
        [ -e "$saved" ] || continue
        dd if="$saved" of="/sys/bus/pci/devices/${saved##*/}/config" bs=256 count=1 2>/dev/null \
            || fail "cannot restore the PCI config of ${saved##*/}"
    done
}
if [ "$IDENTITY" = port ]; then
    save_pci_config
    i=0
    until PORT=$(identity_port); do
        [ $i -lt 300 ] || fail "no notnets.identity virtio-serial port"
        pause 0.1; i=$((i + 1))
    done
    # Held open throughout: the kernel drops what arrives for a port no one has open,
    # and the host may write at any moment after the restore.
    exec 3<"$PORT" || fail "cannot open $PORT"
    log "waiting for identity"
    LINE=
    until [ -n "$LINE" ]; do
        read -r LINE <&3 || [ -n "$LINE" ] || pause 0.02
    done
    exec 3<&-
    set -- $LINE
    HOST=$1 HOST_ID=$2
    [ -n "$HOST" ] && [ -n "$HOST_ID" ] && [ -n "$3" ] || fail "bad identity line: $LINE"
    date -u -s "@$3" >/dev/null || fail "cannot set the clock to $3"
    restore_pci_config
    log "restored as $HOST (id $HOST_ID)"
fi
hostname "$HOST"

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
# The agent runs from a zip of it and the modules it imports (built by the host, in this
# initramfs): its imports then cost no 9p round trips.
mkdir -p "$NEWROOT/run/notnets"
cp /lib/notnets/agent.zip "$NEWROOT/run/notnets/agent.zip" || fail "cannot copy the agent into the new root"
(
    env -i PATH="$NOTNETS_PATH" HOME=/root LANG=C.UTF-8 \
        chroot "$NEWROOT" "$NOTNETS_PYTHON" -S -I -B /run/notnets/agent.zip "$HOST_DIR/guest.json" \
        </dev/null >>"$NEWROOT$HOST_DIR/agent.log" 2>&1
    fail "the agent exited with code $? (see $HOST_DIR/agent.log)"
) &

load_modules late
log "late modules loaded"
if [ -n "$NOTNETS_NET_ADDR" ]; then
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do pause 0.1; i=$((i + 1)); done
    # A host restored from a boot template has the template's MAC (QEMU migrates it): its own.
    [ -z "$NOTNETS_NET_MAC" ] || ip link set eth0 address "$NOTNETS_NET_MAC" \
        || fail "cannot give eth0 the MAC $NOTNETS_NET_MAC"
    ip addr add "$NOTNETS_NET_ADDR" dev eth0 || fail "cannot give eth0 the address $NOTNETS_NET_ADDR"
    ip link set eth0 up || fail "cannot bring eth0 up"
fi

# The console: an interactive shell inside the new root, again whenever it exits. Its
# $ENV script (guest/console.sh) picks up the environment the agent gives commands, so
# the first shell waits until the agent has written it (ready or failed; at most
# CONSOLE_ENV_WAIT tenths of a second). As PID 1, this shell also reaps orphans.
CONSOLE_ENV_WAIT=1800
i=0
while [ ! -e "$NEWROOT/run/notnets/env.sh" ] && [ $i -lt $CONSOLE_ENV_WAIT ]; do pause 0.1; i=$((i + 1)); done
while true; do
    setsid cttyhack env -i PATH="$NOTNETS_PATH" HOME=/root TERM=linux LANG=C.UTF-8 \
        ENV="$NOTNETS_PROJECT/guest/console.sh" chroot "$NEWROOT" /bin/sh -i
    sleep 1
done
