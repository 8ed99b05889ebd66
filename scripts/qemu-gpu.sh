#!/usr/bin/env bash
# QEMU harness for the virtio-gpu device: Debian's x86-64 kernel, under QEMU's software emulation
# (TCG, no KVM needed), with the stock virtio-gpu DRM driver bound to our device model through
# QEMU's vhost-user-gpu-pci frontend and `vcuda vhost-user --device gpu`. See docs/GPU.md.
#
#   scripts/qemu-gpu.sh setup            # install/verify QEMU, the kernel, busybox, the guest
#                                        # program (cached; idempotent)
#   scripts/qemu-gpu.sh env              # print `export` lines (VCUDA_QEMU_GPU_*)
#   scripts/qemu-gpu.sh run --socket SOCK [--timeout 60] [--log FILE]
#                                        # boot the guest against the vhost-user backend at SOCK;
#                                        # its init loads the DRM driver, runs drm_draw and powers
#                                        # off; exits with drm_draw's status (console on stdout,
#                                        # or in FILE)
#
# Cached under $VCUDA_CACHE/qemu-gpu (default ~/.cache/vcuda/qemu-gpu). QEMU must be 8.1 or newer:
# before that, vhost-user-gpu refuses to start without KVM ("vhost initialization failed: requires
# kvm"), and this host's KVM cannot boot Linux. Debian 12's QEMU is 7.2, so setup installs it
# (apt-get install qemu-system-x86, for its shared libraries) and runs QEMU 10 from
# bookworm-backports, fetched with `apt-get download` through a private package list (the
# system's apt sources are not touched) and unpacked into the cache. Also downloaded:
# linux-image-<abi>-amd64 (the kernel and its modules: the virtio-gpu driver and its dependencies
# are modules in Debian's config) and busybox-static. gcc with a static libc builds
# guest/drm-draw/drm_draw.c.
set -euo pipefail

LOG_TAG=qemu-gpu
# shellcheck source=scripts/qemu-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/qemu-common.sh"
CACHE="$SHARED"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STAMP_VERSION=v1
# The driver and what it needs, as module names; their dependencies are added from the modules'
# own `depends=` fields (Debian's package ships no modules.dep).
MODULES=(virtio_pci virtio_gpu)

build_guest_program() {
  local out="$CACHE/initramfs-base/bin/drm_draw"
  command -v gcc >/dev/null || die "gcc is missing (apt-get install gcc libc6-dev)"
  gcc -static -O2 -Wall -Wextra -Werror -o "$out" "$REPO/guest/drm-draw/drm_draw.c" ||
    die "cannot build drm_draw (needs a static libc: libc6-dev)"
}

write_init() {
  cat >"$CACHE/initramfs-base/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /dev /proc /sys
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
echo "qemu-gpu-init: loading $(wc -l </lib/modules/order) modules"
for m in $(cat /lib/modules/order); do
  args=""
  # No fbdev console on the GPU: the only frames are drm_draw's.
  [ "$m" = drm_kms_helper ] && args="fbdev_emulation=0"
  insmod /lib/modules/$m.ko $args || echo "qemu-gpu-init: insmod $m failed"
done
i=0
while [ ! -e /dev/dri/card0 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
if [ -e /dev/dri/card0 ]; then
  /bin/drm_draw /dev/dri/card0
  echo "qemu-gpu-init: drm_draw exit $?"
  # `vcuda.hold=N` on the kernel command line keeps the picture up N seconds (to look at it).
  hold=$(sed -n 's/.*vcuda\.hold=\([0-9]*\).*/\1/p' /proc/cmdline)
  [ -n "$hold" ] && sleep "$hold"
else
  echo "qemu-gpu-init: no /dev/dri/card0"
  echo "qemu-gpu-init: drm_draw exit 99"
fi
poweroff -f
EOF
  chmod +x "$CACHE/initramfs-base/init"
  cp "$CACHE/root/bin/busybox" "$CACHE/initramfs-base/bin/busybox"
}

build_initramfs() {
  (cd "$CACHE/initramfs-base" && find . | cpio -o -H newc --quiet | gzip -1) >"$CACHE/initramfs.cpio.gz"
}

vmlinuz() { ls "$CACHE"/root/boot/vmlinuz-* 2>/dev/null | head -1 || true; }

# A hash of everything the cached guest is built from.
inputs_hash() {
  {
    echo "$STAMP_VERSION ${MODULES[*]}"
    cat "$REPO/guest/drm-draw/drm_draw.c" "${BASH_SOURCE[0]}" "$(dirname "${BASH_SOURCE[0]}")/qemu-common.sh"
  } | sha256sum | cut -c1-16
}

setup() {
  install_qemu vhost-user-gpu-pci
  need cpio cpio
  local want
  want=$(inputs_hash)
  if [[ -f "$CACHE/stamp" && "$(cat "$CACHE/stamp")" == "$want" && -f "$CACHE/initramfs.cpio.gz" && -n "$(vmlinuz)" ]]; then
    log "cached in $CACHE"
    return
  fi
  fetch_debs
  collect_modules "$CACHE/initramfs-base" "${MODULES[@]}"
  build_guest_program
  write_init
  build_initramfs
  [[ -n "$(vmlinuz)" ]] || die "no vmlinuz in the kernel package"
  echo "$want" >"$CACHE/stamp"
  log "ready: $(vmlinuz), $CACHE/initramfs.cpio.gz"
}

print_env() {
  echo "export VCUDA_QEMU_GPU_QEMU='$(qemu_bin)'"
  echo "export VCUDA_QEMU_GPU_KERNEL='$(vmlinuz)'"
  echo "export VCUDA_QEMU_GPU_INITRD='$CACHE/initramfs.cpio.gz'"
}

run() {
  local sock="" timeout=60 logf=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --socket) sock=$2; shift 2 ;;
      --timeout) timeout=$2; shift 2 ;;
      --log) logf=$2; shift 2 ;;
      *) die "unknown argument $1" ;;
    esac
  done
  [[ -n "$sock" ]] || die "run needs --socket SOCK"
  [[ -S "$sock" ]] || die "$sock is not a socket (start: vcuda vhost-user --device gpu --socket $sock)"
  local q kernel initrd
  q=$(qemu_bin)
  kernel=$(vmlinuz)
  initrd="$CACHE/initramfs.cpio.gz"
  [[ -n "$q" && -n "$kernel" && -f "$initrd" ]] || die "not set up: run scripts/qemu-gpu.sh setup"
  local console
  console=$(mktemp)
  # shellcheck disable=SC2064
  trap "rm -f '$console'" EXIT
  local rc=0
  # shellcheck disable=SC2046
  QEMU_MODULE_DIR=$(qemu_module_dir "$q") timeout "$timeout" "$q" $(qemu_args "$q") -nodefaults -no-user-config -accel tcg -smp 1 -m 256M \
    -object memory-backend-memfd,id=mem,size=256M,share=on -machine q35,memory-backend=mem \
    -kernel "$kernel" -initrd "$initrd" \
    -append "console=ttyS0 panic=-1 rdinit=/init ${VCUDA_QEMU_GPU_APPEND:-}" \
    -chardev socket,id=gpu,path="$sock" -device vhost-user-gpu-pci,chardev=gpu \
    -display none -serial "file:$console" -monitor none -no-reboot </dev/null || rc=$?
  if [[ -n "$logf" ]]; then cp "$console" "$logf"; else cat "$console"; fi
  if [[ $rc == 124 ]]; then
    log "QEMU timed out after ${timeout}s"
    return 124
  fi
  [[ $rc == 0 ]] || { log "QEMU exited with $rc"; return "$rc"; }
  local status
  status=$(sed -n 's/^qemu-gpu-init: drm_draw exit \([0-9]*\).*/\1/p' "$console" | tail -1)
  [[ -n "$status" ]] || { log "the guest did not report drm_draw's status"; return 98; }
  return "$status"
}

case "${1:-}" in
  setup) setup ;;
  env) print_env ;;
  run)
    shift
    run "$@"
    ;;
  *)
    sed -n '2,20p' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac
