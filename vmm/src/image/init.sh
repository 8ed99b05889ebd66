#!/bin/busybox sh
# /init of the vcuda guest image (busybox-static initramfs). Arguments after `--` on the kernel
# command line (`vcuda run --image NAME -- PROGRAM ARGS`) are run as the guest program; its exit
# status leaves the VM through the debug-exit port (0xf4), then the VM resets.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m args; do
    # shellcheck disable=SC2086
    insmod "/lib/modules/$m.ko" $args || echo "vcuda init: cannot load $m"
done </lib/modules/load-order
devices=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^virtio_mmio\.device=//p' | paste -sd, -)
if [ -n "$devices" ] && [ -e /lib/modules/vcuda_mmio.ko ]; then
    insmod /lib/modules/vcuda_mmio.ko "devices=$devices"
fi
# The CUDA driver (/dev/vcuda0) binds once the virtio-mmio devices exist; the shim is found
# through LD_LIBRARY_PATH, so unmodified CUDA programs run as they are.
if [ -e /lib/modules/vcuda.ko ]; then
    insmod /lib/modules/vcuda.ko || echo "vcuda init: cannot load the vcuda driver"
fi
# The shim's directory, and wherever the added programs' own libraries were placed.
LD_LIBRARY_PATH=$(cat /etc/vcuda/library-path 2>/dev/null || echo /usr/lib/vcuda)
export LD_LIBRARY_PATH
devmem 0xc0000000 8 123
if [ $# -gt 0 ]; then
    "$@"
    rc=$?
else
    echo "vcuda init: no guest program given (vcuda run --image NAME -- PROGRAM)"
    rc=0
fi
printf "\\$(printf %o $((rc & 255)))" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
reboot -f
