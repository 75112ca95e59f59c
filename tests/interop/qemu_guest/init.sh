#!/bin/sh
# /init of the opt-in QEMU test's initramfs (busybox): report the kernel's view of the NVMe function's DOE
# mailbox, walk DOE Discovery through its registers, then relay the host's attest flow through them.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "TIOSIM-GUEST kernel $(uname -r)"
DEV=""
for d in /sys/bus/pci/devices/*; do
    if [ "$(cat "$d/vendor")" = "0x1b36" ] && [ "$(cat "$d/device")" = "0x0010" ]; then DEV="$d"; fi
done
echo "TIOSIM-DEV ${DEV:-none}"
if [ -d "$DEV/doe_features" ]; then
    for f in "$DEV"/doe_features/*; do echo "TIOSIM-DOE-FEATURE $(basename "$f")"; done
else
    echo "TIOSIM-NO-DOE-FEATURES (this kernel has no sysfs doe_features)"
fi
/doe_requester discover "$DEV" | sed 's/^/TIOSIM-DISCOVERY /'
/doe_requester bridge "$DEV" /dev/ttyS1 | sed 's/^/TIOSIM-BRIDGE /'
echo "TIOSIM-GUEST-DONE"
poweroff -f
