#!/usr/bin/env bash
# Real Linux guests of `vcuda run`, without hardware virtualization: nested KVM under QEMU's
# software emulation. QEMU (TCG, `-cpu max`: an emulated CPU with SVM and nested paging) boots
# Debian's kernel as an L1 "host" whose initramfs loads kvm and kvm-amd; /dev/kvm appears there,
# and the `vcuda` binary of this build boots real guests (L2) on it with its own VMM. See
# docs/VMM.md, "Real Linux guests without hardware virtualization".
#
#   scripts/qemu-linux.sh setup          # QEMU, the kernel and its modules, busybox (shared with
#                                        # qemu-gpu.sh), the L1 initramfs (cached; idempotent)
#   scripts/qemu-linux.sh run --work DIR [--timeout 600] [--mem 6G] [--smp 2]
#                                        # boot L1; its init mounts DIR (9p, read-write) at
#                                        # /work and the guest images at /cache/images
#                                        # ($VCUDA_CACHE/images, read-only), then runs
#                                        # `sh /work/run.sh` and powers off. The console goes to
#                                        # stdout; the exit status is run.sh's.
#
# DIR must hold run.sh and `vcuda` with the libraries it links in DIR/sysroot (the test,
# cli/tests/nested_linux.rs, prepares them); L1's init links DIR/sysroot into /lib64 and
# /lib/x86_64-linux-gnu. The L1 kernel is the same Debian kernel the guest images use.
#
# Exit status of `setup`: 0 ready; 2 a capability is absent (no apt-get/root to install QEMU,
# or the emulated CPU offers no SVM); 1 anything else.
set -euo pipefail

LOG_TAG=qemu-linux
# shellcheck source=scripts/qemu-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/qemu-common.sh"
CACHE="${VCUDA_CACHE:-$HOME/.cache/vcuda}/qemu-linux"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STAMP_VERSION=v1
# KVM on the emulated AMD CPU, and the 9p client over virtio-pci for the two shares; their
# dependencies are added from the modules' own `depends=` fields.
MODULES=(irqbypass ccp kvm kvm_amd virtio_pci 9pnet_virtio 9p)

write_init() {
  cat >"$CACHE/initramfs-base/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /dev /proc /sys /tmp /work /cache/images /lib64 /lib/x86_64-linux-gnu
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp
for m in $(cat /lib/modules/order); do
  insmod /lib/modules/$m.ko 2>/dev/null || echo "qemu-linux-init: insmod $m failed"
done
opts=trans=virtio,version=9p2000.L,msize=524288,cache=loose
mount -t 9p -o $opts work /work || echo "qemu-linux-init: cannot mount the work share"
mount -t 9p -o $opts,ro images /cache/images || echo "qemu-linux-init: cannot mount the images"
for f in /work/sysroot/*; do
  ln -sf "$f" /lib64/
  ln -sf "$f" /lib/x86_64-linux-gnu/
done
[ -e /dev/kvm ] || echo "qemu-linux-init: no /dev/kvm (kvm_amd did not load: no SVM?)"
echo "qemu-linux-init: cpus $(grep -c ^processor /proc/cpuinfo), $(sed -n 's/MemTotal: *//p' /proc/meminfo)"
export VCUDA_CACHE=/cache HOME=/tmp
cd /work
sh /work/run.sh
echo "qemu-linux-init: run.sh exit $?"
sync
poweroff -f
EOF
  chmod +x "$CACHE/initramfs-base/init"
  cp "$SHARED/root/bin/busybox" "$CACHE/initramfs-base/bin/busybox"
}

build_initramfs() {
  (cd "$CACHE/initramfs-base" && find . | cpio -o -H newc --quiet | gzip -1) >"$CACHE/initramfs.cpio.gz"
}

inputs_hash() {
  {
    echo "$STAMP_VERSION ${MODULES[*]}"
    cat "${BASH_SOURCE[0]}" "$(dirname "${BASH_SOURCE[0]}")/qemu-common.sh"
  } | sha256sum | cut -c1-16
}

# Does TCG's `-cpu max` offer SVM with nested paging on this QEMU? (It does from QEMU 2.x on;
# checked so that a QEMU built without it is named, not a mystery inside L1.)
check_svm() {
  local q
  q=$(qemu_bin)
  # shellcheck disable=SC2046
  QEMU_MODULE_DIR=$(qemu_module_dir "$q") "$q" $(qemu_args "$q") -accel tcg -cpu help 2>/dev/null |
    grep -qw svm || {
    log "this QEMU's TCG CPU models list no svm feature"
    exit 2
  }
}

setup() {
  install_qemu virtio-9p-pci
  need cpio cpio
  check_svm
  local want
  want=$(inputs_hash)
  if [[ -f "$CACHE/stamp" && "$(cat "$CACHE/stamp")" == "$want" && -f "$CACHE/initramfs.cpio.gz" && -n "$(vmlinuz)" ]]; then
    log "cached in $CACHE"
    return
  fi
  mkdir -p "$CACHE"
  fetch_debs
  collect_modules "$CACHE/initramfs-base" "${MODULES[@]}"
  write_init
  build_initramfs
  [[ -n "$(vmlinuz)" ]] || die "no vmlinuz in the kernel package"
  echo "$want" >"$CACHE/stamp"
  log "ready: $(vmlinuz), $CACHE/initramfs.cpio.gz"
}

vmlinuz() { ls "$SHARED"/root/boot/vmlinuz-* 2>/dev/null | head -1 || true; }

run() {
  local work="" timeout=600 mem=6G smp=2
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --work) work=$2; shift 2 ;;
      --timeout) timeout=$2; shift 2 ;;
      --mem) mem=$2; shift 2 ;;
      --smp) smp=$2; shift 2 ;;
      *) die "unknown argument $1" ;;
    esac
  done
  [[ -n "$work" && -f "$work/run.sh" ]] || die "run needs --work DIR holding run.sh"
  local q kernel initrd images
  q=$(qemu_bin)
  kernel=$(vmlinuz)
  initrd="$CACHE/initramfs.cpio.gz"
  images="${VCUDA_CACHE:-$HOME/.cache/vcuda}/images"
  [[ -n "$q" && -n "$kernel" && -f "$initrd" ]] || die "not set up: run scripts/qemu-linux.sh setup"
  mkdir -p "$images"
  local console="$work/console.log" rc=0
  # shellcheck disable=SC2046
  QEMU_MODULE_DIR=$(qemu_module_dir "$q") timeout "$timeout" "$q" $(qemu_args "$q") \
    -nodefaults -no-user-config -accel tcg,thread=multi -cpu max -smp "$smp" -m "$mem" \
    -machine q35 -kernel "$kernel" -initrd "$initrd" \
    -append "console=ttyS0 panic=-1 rdinit=/init quiet" \
    -fsdev local,id=work,path="$work",security_model=none \
    -device virtio-9p-pci,fsdev=work,mount_tag=work \
    -fsdev local,id=images,path="$images",security_model=none,readonly=on \
    -device virtio-9p-pci,fsdev=images,mount_tag=images \
    -display none -serial "file:$console" -monitor none -no-reboot </dev/null || rc=$?
  cat "$console"
  if [[ $rc == 124 ]]; then
    log "QEMU timed out after ${timeout}s"
    return 124
  fi
  [[ $rc == 0 ]] || { log "QEMU exited with $rc"; return "$rc"; }
  local status
  status=$(sed -n 's/^qemu-linux-init: run.sh exit \([0-9]*\).*/\1/p' "$console" | tail -1)
  [[ -n "$status" ]] || { log "L1 did not report run.sh's status"; return 98; }
  return "$status"
}

case "${1:-}" in
  setup) setup ;;
  run)
    shift
    run "$@"
    ;;
  *)
    sed -n '2,22p' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac
