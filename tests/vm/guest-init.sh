#!/bin/busybox sh
# PID 1 of the VM acceptance test's guest (packed into its initramfs by tests/helpers/vm-guest.ts).
#
# It mounts the Holdfast volume (/dev/vda, ext4) and loops over writes that are fsynced and reads
# that miss the page cache, until the host sends STOP on the console; then it reports what the
# filesystem looks like, remounts it and re-reads everything it wrote. Every line meant for the
# host starts with "@@hf ": kernel messages share the console and may come in between.

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "@@hf $*"; }

# The host's KVM probe only needs to see a guest reach its init.
if grep -q hf.probe /proc/cmdline; then
  say ALIVE
  poweroff -f
fi

# The host waits for WORKLOAD DONE; saying why the guest gave up beats letting it time out.
give_up() {
  say "FATAL $*"
  poweroff -f
}

for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m" || give_up "insmod $m"
done
n=0
while [ ! -b /dev/vda ]; do
  n=$((n + 1))
  [ $n -gt 200 ] && give_up "no /dev/vda after 20 s"
  sleep 0.1
done
mkdir -p /mnt
mount -t ext4 /dev/vda /mnt || give_up "mount /dev/vda"
mkdir -p /mnt/data || give_up "mkdir /mnt/data"

errors=0
err() {
  errors=$((errors + 1))
  say "ERROR $*"
}

# /tmp/ref: "SHA256  PATH" of every file whose content the guest knows, the list re-read at the end.
: > /tmp/ref
check() {
  want=$(grep "  $1\$" /tmp/ref)
  want=${want%% *}
  if ! got=$(sha256sum "$1" 2> /tmp/sum.err); then
    err "read $1: $(cat /tmp/sum.err)"
    return
  fi
  got=${got%% *}
  [ "$got" = "$want" ] || err "read $1: sha256 $got, expected $want"
}

# The host made the seed files before the guest ran; what is read now is the reference for the
# cold re-reads below, and the host checks it against what it wrote.
for f in /mnt/seed/*; do
  sha256sum "$f" >> /tmp/ref || give_up "read $f"
done
nseed=$(ls /mnt/seed | wc -l)

# The host asks the workload to end once it has seen it run on after the outage.
(while read -r line; do [ "$line" = STOP ] && : > /tmp/stop; done) < /dev/console &

say "WORKLOAD START"
i=0
while [ ! -e /tmp/stop ]; do
  i=$((i + 1))
  dd if=/dev/urandom of=/tmp/block bs=64k count=16 2> /dev/null
  sum=$(sha256sum /tmp/block)
  sum=${sum%% *}
  # conv=fsync: the write counts as done only once the disk acknowledged it, and a failure shows.
  if dd if=/tmp/block of=/mnt/data/w$i bs=64k conv=fsync 2> /tmp/dd.err; then
    echo "$sum  /mnt/data/w$i" >> /tmp/ref
    say "WROTE /mnt/data/w$i $sum"
  else
    err "write /mnt/data/w$i: $(cat /tmp/dd.err)"
  fi
  sync -f /mnt/data || err "syncfs /mnt"
  # Dropped caches make the next reads go to the disk, and the gateway's small cache sends them on
  # to the store: these are the reads a storage outage holds.
  echo 3 > /proc/sys/vm/drop_caches
  check /mnt/seed/$(printf 's%02d' $((i * 2 % nseed)))
  check /mnt/seed/$(printf 's%02d' $(((i * 2 + 1) % nseed)))
  [ -e /mnt/data/w$((i / 2 + 1)) ] && check /mnt/data/w$((i / 2 + 1))
  say "ITER $i errors=$errors"
done
say "WORKLOAD END iterations=$i"

# From here on the console carries only the report, so that no kernel line splits one of its lines.
dmesg -n 1
say "MOUNT $(awk '$2 == "/mnt" { split($4, o, ","); print o[1] }' /proc/mounts)"
# /proc/mounts alone is not enough: newer kernels shut an erroring ext4 down without flagging it ro.
if touch /mnt/data/probe 2> /tmp/probe.err && rm /mnt/data/probe; then
  say "WRITABLE yes"
else
  say "WRITABLE no: $(cat /tmp/probe.err)"
fi
say "KERNEL io_errors=$(dmesg | grep -c 'I/O error') remount_ro=$(dmesg | grep -c 'Remounting filesystem read-only') ext4_errors=$(dmesg | grep -c 'EXT4-fs error')"

# A remount proves the data is on the disk, not just in this kernel's memory.
umount /mnt || err "umount /mnt"
mount -t ext4 /dev/vda /mnt || err "remount /dev/vda"
echo 3 > /proc/sys/vm/drop_caches
for f in /mnt/seed/* /mnt/data/*; do
  [ -f "$f" ] || continue
  if got=$(sha256sum "$f" 2> /dev/null); then
    say "SUM $f ${got%% *}"
  else
    say "SUM $f unreadable"
  fi
done
say "WORKLOAD DONE errors=$errors"
umount /mnt
poweroff -f
