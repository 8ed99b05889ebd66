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

CACHE="${VCUDA_CACHE:-$HOME/.cache/vcuda}/qemu-gpu"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STAMP_VERSION=v1
# The driver and what it needs, as module names; their dependencies are added from the modules'
# own `depends=` fields (Debian's package ships no modules.dep).
MODULES=(virtio_pci virtio_gpu)

log() { printf '[qemu-gpu] %s\n' "$*" >&2; }
die() {
  printf '[qemu-gpu] error: %s\n' "$*" >&2
  exit 1
}

apt_refreshed=""
apt_download() {
  apt-get download "$@" >&2 2>/dev/null && return 0
  if [[ -z "$apt_refreshed" ]]; then
    log "apt-get download $* failed; refreshing the package lists and retrying"
    apt_refreshed=1
    apt-get update -qq >&2 || true
    apt-get download "$@" >&2 && return 0
  fi
  return 1
}

BACKPORTS="deb http://deb.debian.org/debian bookworm-backports main"
QEMU_ROOT="$CACHE/qemu"

# The QEMU to run: the system's if it is 8.1 or newer, else the one unpacked in the cache.
qemu_bin() {
  local sys
  sys=$(command -v qemu-system-x86_64 || true)
  if [[ -n "$sys" ]] && qemu_new_enough "$sys"; then
    echo "$sys"
  elif [[ -x "$QEMU_ROOT/usr/bin/qemu-system-x86_64" ]]; then
    echo "$QEMU_ROOT/usr/bin/qemu-system-x86_64"
  fi
}

qemu_new_enough() {
  local v major minor
  v=$("$1" --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  read -r major minor <<<"$v"
  [[ -n "$major" ]] && { ((major > 8)) || ((major == 8 && minor >= 1)); }
}

# Arguments that make the cached QEMU find its firmware and modules.
qemu_args() {
  local q=$1
  if [[ $q == "$QEMU_ROOT"/* ]]; then
    echo "-L $QEMU_ROOT/usr/share/qemu -L $QEMU_ROOT/usr/share/seabios"
  fi
}

# QEMU 10 from bookworm-backports, unpacked into $QEMU_ROOT.
fetch_backports_qemu() {
  local apt="$CACHE/apt" debs="$CACHE/qemu-debs"
  mkdir -p "$apt/lists/partial" "$debs"
  echo "$BACKPORTS" >"$apt/sources.list"
  local opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$apt/lists" -o "APT::Get::List-Cleanup=0")
  log "QEMU $("${1:-true}" --version 2>/dev/null | head -1 | sed 's/.*version //') is too old; fetching QEMU from bookworm-backports"
  apt-get "${opts[@]}" update -qq >&2 || die "apt-get update (bookworm-backports list) failed"
  (cd "$debs" && rm -f ./*.deb && apt-get "${opts[@]}" download qemu-system-x86 qemu-system-common \
    qemu-system-data seabios >&2 2>/dev/null) || die "apt-get download of QEMU from bookworm-backports failed"
  rm -rf "$QEMU_ROOT"
  local d
  for d in "$debs"/*.deb; do dpkg-deb -x "$d" "$QEMU_ROOT"; done
}

# apt-get install PKG when COMMAND is missing (root only).
need() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null && return 0
  command -v apt-get >/dev/null && [[ $(id -u) == 0 ]] || die "$cmd is missing; install $pkg"
  log "installing $pkg (apt-get install)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >&2 ||
    { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "$pkg" >&2; } || die "apt-get install $pkg failed"
}

install_qemu() {
  # The system package, for QEMU's shared libraries (and QEMU itself where it is new enough).
  need qemu-system-x86_64 qemu-system-x86
  local q
  q=$(qemu_bin)
  if [[ -z "$q" ]]; then
    fetch_backports_qemu "$(command -v qemu-system-x86_64)"
    q=$(qemu_bin)
    [[ -n "$q" ]] || die "no QEMU 8.1 or newer after unpacking the backport"
  fi
  local missing
  missing=$(ldd "$q" 2>/dev/null | grep 'not found' || true)
  [[ -z "$missing" ]] || die "$q lacks libraries: $missing"
  # shellcheck disable=SC2046
  QEMU_MODULE_DIR=$(qemu_module_dir "$q") "$q" $(qemu_args "$q") -device vhost-user-gpu-pci,help 2>/dev/null |
    grep -q 'vhost-user-gpu-pci options' || die "$q has no vhost-user-gpu-pci device"
  log "QEMU: $q ($("$q" --version | head -1))"
}

qemu_module_dir() {
  if [[ $1 == "$QEMU_ROOT"/* ]]; then echo "$QEMU_ROOT/usr/lib/x86_64-linux-gnu/qemu"; fi
}

# The kernel package linux-image-amd64 currently points at (e.g. linux-image-6.1.0-57-amd64).
kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}

fetch_debs() {
  mkdir -p "$CACHE/debs" "$CACHE/root"
  cd "$CACHE/debs"
  if ! ls linux-image-*-amd64_*.deb >/dev/null 2>&1; then
    local pkg
    pkg=$(kernel_package)
    if [[ -z "$pkg" ]]; then
      apt-get update -qq >&2 || true
      pkg=$(kernel_package)
    fi
    [[ -n "$pkg" ]] || die "cannot tell which linux-image-*-amd64 package to use (apt-cache)"
    log "downloading $pkg"
    apt_download "$pkg" || die "apt-get download $pkg failed"
  fi
  if ! ls busybox-static_*.deb >/dev/null 2>&1; then
    log "downloading busybox-static"
    apt_download busybox-static || die "apt-get download busybox-static failed"
  fi
  if [[ ! -d "$CACHE/root/lib/modules" && ! -d "$CACHE/root/usr/lib/modules" ]]; then
    log "unpacking the kernel"
    dpkg-deb -x linux-image-*-amd64_*.deb "$CACHE/root"
  fi
  if [[ ! -x "$CACHE/root/bin/busybox" ]]; then
    dpkg-deb -x busybox-static_*.deb "$CACHE/root"
  fi
}

moddir() { ls -d "$CACHE"/root/lib/modules/*/ "$CACHE"/root/usr/lib/modules/*/ 2>/dev/null | head -1 || true; }

# Copies MODULES and their dependencies (in load order) into $CACHE/initramfs-base.
collect_modules() {
  local md base
  md=$(moddir)
  [[ -n "$md" ]] || die "no modules in the kernel package"
  base="$CACHE/initramfs-base"
  rm -rf "$base"
  mkdir -p "$base/lib/modules" "$base/bin"
  declare -A path=() seen=()
  local f b
  while read -r f; do
    b=$(basename "$f")
    b=${b%%.ko*}
    path[${b//-/_}]=$f
  done < <(find "$md" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst')
  local order=()
  add() {
    local m=$1 d
    [[ -n "${seen[$m]:-}" ]] && return
    seen[$m]=1
    [[ -n "${path[$m]:-}" ]] || die "module $m not found in $md"
    for d in $(modinfo_depends "${path[$m]}"); do add "$d"; done
    order+=("$m")
  }
  local m
  for m in "${MODULES[@]}"; do add "$m"; done
  for m in "${order[@]}"; do
    case "${path[$m]}" in
      *.ko) cp "${path[$m]}" "$base/lib/modules/$m.ko" ;;
      *.ko.xz) xz -dc "${path[$m]}" >"$base/lib/modules/$m.ko" ;;
      *.ko.zst) zstd -qdc "${path[$m]}" >"$base/lib/modules/$m.ko" ;;
    esac
  done
  printf '%s\n' "${order[@]}" >"$base/lib/modules/order"
  log "modules: ${order[*]}"
}

# The `depends=` field of a module's .modinfo section.
modinfo_depends() {
  local f=$1 cat=cat
  case "$f" in *.xz) cat="xz -dc" ;; *.zst) cat="zstd -qdc" ;; esac
  $cat "$f" | tr '\0' '\n' | sed -n 's/^depends=//p' | head -1 | tr ',' ' '
}

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
    cat "$REPO/guest/drm-draw/drm_draw.c" "${BASH_SOURCE[0]}"
  } | sha256sum | cut -c1-16
}

setup() {
  install_qemu
  need cpio cpio
  local want
  want=$(inputs_hash)
  if [[ -f "$CACHE/stamp" && "$(cat "$CACHE/stamp")" == "$want" && -f "$CACHE/initramfs.cpio.gz" && -n "$(vmlinuz)" ]]; then
    log "cached in $CACHE"
    return
  fi
  fetch_debs
  collect_modules
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
