#!/usr/bin/env bash
# User-Mode Linux harness: a real Linux 6.1 kernel as a host process, for testing the guest side
# of virtio-cuda (the vcuda.ko module and the shim's virtio transport) without KVM.
#
#   scripts/uml.sh setup                 # install/verify the UML kernel and its build tree (cached),
#                                        # then smoke-boot it (see `smoke`)
#   scripts/uml.sh smoke                 # boot UML with a one-line init (~2 s); on failure say why
#   scripts/uml.sh env                   # print `export` lines (VCUDA_UML_LINUX, VCUDA_UML_KSRC, …)
#   scripts/uml.sh module [OUTDIR]       # build guest/module/vcuda.ko for UML; prints its path
#   scripts/uml.sh run --socket SOCK [--module KO] [--mem 256M] [--timeout 60] -- PROG [ARGS…]
#                                        # boot UML with a hostfs root and the vhost-user device at
#                                        # SOCK (id 0xC0DA), insmod KO, run PROG; exit with its status
#
# Everything is cached under $VCUDA_CACHE/uml (default ~/.cache/vcuda/uml); setup is idempotent
# (seconds when cached, ~1–2 min on a fresh machine). Packages: user-mode-linux (the kernel,
# Debian's config), linux-source-6.1 at the same version (headers for modules), busybox-static
# (the guest's insmod/mount/poweroff), flex and bison (apt-get install; the kernel's build needs
# them). See docs/VIRTIO.md.
#
# Exit status of `setup`: 0 ready; 2 UML cannot be installed on this host (no apt-get, no root:
# the UML tests skip, naming this); 3 UML is installed but does not boot here (a test failure,
# never a skip: the reason is printed).
set -euo pipefail

CACHE="${VCUDA_CACHE:-$HOME/.cache/vcuda}/uml"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STAMP_VERSION=v1
# The virtio device id of virtio-cuda (0xC0DA).
DEVICE_ID=49370

log() { printf '[uml] %s\n' "$*" >&2; }
die() {
  printf '[uml] error: %s\n' "$*" >&2
  exit 1
}
# UML cannot be had on this host at all (exit 2: the tests skip and say so).
unavailable() {
  printf '[uml] unavailable: %s\n' "$*" >&2
  exit 2
}

uml_linux() { echo "$CACHE/root/usr/bin/linux.uml"; }
busybox() { echo "$CACHE/root/bin/busybox"; }
ksrc() { echo "$CACHE/src"; }

# The kernel version the UML package was built from (e.g. 6.1.176).
uml_kernel_version() {
  ls "$CACHE/root/usr/lib/uml/modules" 2>/dev/null | grep -E '^6\.1\.[0-9]+$' | head -1
}

# `apt-get download`, refreshing the package lists once if they are stale (a fresh machine's
# lists may name versions the mirror no longer has: 404).
apt_download() {
  apt-get download "$@" >&2 && return 0
  if [[ -z "${APT_REFRESHED:-}" ]]; then
    log "apt-get download $* failed; refreshing the package lists (apt-get update) and retrying"
    APT_REFRESHED=1
    apt-get update -qq >&2 || true
    apt-get download "$@" >&2 && return 0
  fi
  return 1
}

fetch_debs() {
  mkdir -p "$CACHE/debs" "$CACHE/root"
  cd "$CACHE/debs"
  if ! ls user-mode-linux_*.deb >/dev/null 2>&1; then
    log "downloading user-mode-linux"
    apt_download user-mode-linux || unavailable "apt-get download user-mode-linux failed (no Debian apt sources?)"
  fi
  if ! ls busybox-static_*.deb >/dev/null 2>&1; then
    log "downloading busybox-static"
    apt_download busybox-static || unavailable "apt-get download busybox-static failed"
  fi
  if [[ ! -x "$(uml_linux)" ]]; then
    dpkg-deb -x user-mode-linux_*.deb "$CACHE/root"
  fi
  if [[ ! -x "$(busybox)" ]]; then
    dpkg-deb -x busybox-static_*.deb "$CACHE/root"
  fi
  local ver
  ver=$(uml_kernel_version)
  [[ -n "$ver" ]] || die "cannot tell the UML kernel version from its changelog"
  echo "$ver" >"$CACHE/kernel-version"
  if ! ls linux-source-6.1_*.deb >/dev/null 2>&1; then
    log "downloading linux-source-6.1=$ver-1 (the UML kernel's version)"
    apt_download "linux-source-6.1=$ver-1" ||
      apt_download linux-source-6.1 ||
      unavailable "apt-get download linux-source-6.1 failed"
  fi
}

install_build_tools() {
  local missing=()
  for t in flex bison make gcc bc; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]} (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 ||
      unavailable "cannot install ${missing[*]}: run as root with apt sources, or install them yourself"
  fi
}

prepare_source() {
  local stamp="$CACHE/.src-prepared-$STAMP_VERSION"
  [[ -f "$stamp" && -f "$(ksrc)/Makefile" ]] && return
  local ver
  ver=$(cat "$CACHE/kernel-version")
  log "unpacking linux-source-6.1 and preparing it for ARCH=um (~1 min)"
  rm -rf "$(ksrc)" "$CACHE/srcdeb"
  mkdir -p "$CACHE/srcdeb" "$(ksrc)"
  dpkg-deb -x "$(ls "$CACHE"/debs/linux-source-6.1_*.deb | head -1)" "$CACHE/srcdeb"
  # Only what a module build needs (Documentation/Kconfig is sourced by the config step).
  tar -xf "$CACHE"/srcdeb/usr/src/linux-source-6.1.tar.xz -C "$(ksrc)" --strip-components=1 \
    --exclude='linux-source-6.1/Documentation/[!K]*' --exclude='linux-source-6.1/tools/testing'
  rm -rf "$CACHE/srcdeb"
  # Match the UML kernel's vermagic exactly (the source package may be a newer point release).
  sed -i "s/^SUBLEVEL = .*/SUBLEVEL = ${ver##*.}/" "$(ksrc)/Makefile"
  zcat "$CACHE/root/usr/share/doc/user-mode-linux/config.gz" >"$(ksrc)/.config"
  make -s -C "$(ksrc)" ARCH=um olddefconfig >&2
  make -s -C "$(ksrc)" ARCH=um modules_prepare >&2
  touch "$stamp"
}

# The LD_PRELOAD helper that completes UML's short NT_X86_XSTATE writes to the host's XSAVE size
# (guest/uml/xstate_pad.c explains the bug). Rebuilt when its source changes; prints its path.
xstate_pad() {
  local src="$REPO/guest/uml/xstate_pad.c" sum so
  sum=$(sha256sum "$src" | cut -c1-16)
  so="$CACHE/xstate_pad-$sum.so"
  if [[ ! -f "$so" ]]; then
    command -v cc >/dev/null || install_build_tools
    mkdir -p "$CACHE"
    cc -shared -fPIC -O2 -Wall -Wextra -Werror -o "$so.tmp" "$src" -ldl >&2 ||
      die "building $src failed"
    mv "$so.tmp" "$so"
  fi
  echo "$so"
}

# The host's XSAVE image size for the enabled features (CPUID leaf 0xD, EBX), for messages.
host_xstate_size() {
  local probe
  probe="$(xstate_pad).probe"
  [[ -x "$probe" ]] || cc -O2 -DXSTATE_PAD_PROBE -o "$probe" "$REPO/guest/uml/xstate_pad.c" -ldl >&2 || true
  echo "XSAVE area $("$probe" 2>/dev/null || echo '?') bytes"
}

# Boots UML with INIT as its init; the console goes to stdout. Guest RAM is a file in $TMPDIR:
# tmpfs when it has room (containers often give /dev/shm only 64 MiB; touching guest pages
# beyond a full tmpfs would kill UML with SIGBUS).
boot() {
  local init="$1" mem="$2" timeout="$3" dev="$4" work="$5"
  local memdir="$work" need_kb shm_kb pad
  need_kb=$(numfmt --from=iec "${mem}" 2>/dev/null || echo 0)
  need_kb=$((need_kb / 1024))
  shm_kb=$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2{print $4}')
  if [[ -w /dev/shm && -n "$shm_kb" && "$need_kb" -gt 0 && "$shm_kb" -gt $((need_kb + 65536)) ]]; then
    memdir=/dev/shm
  fi
  pad=$(xstate_pad)
  # VCUDA_UML_NO_XSTATE_PAD=1 runs UML without the helper (to see the host bug it works around).
  [[ -n "${VCUDA_UML_NO_XSTATE_PAD:-}" ]] && pad=""
  # con0 on stdin/stdout carries the guest console (kernel messages and the program's output).
  TMPDIR="$memdir" timeout --foreground -k 5 "$timeout" env LD_PRELOAD="$pad" "$(uml_linux)" \
    mem="$mem" root=/dev/root rootfstype=hostfs rootflags=/ rw quiet \
    init="$init" con=null con0=null,fd:1 $dev </dev/null || true
}

SMOKE_MARKER="vcuda-uml-smoke: init ran"

# A two-second boot whose init prints a marker and powers off: proves that this host can run
# UML userspace at all, and names the reason when it cannot.
cmd_smoke() {
  [[ -x "$(uml_linux)" ]] || die "UML is not set up: run scripts/uml.sh setup"
  local work console
  work=$(mktemp -d "${TMPDIR:-/tmp}/vcuda-uml-smoke.XXXXXX")
  {
    echo "#!$(busybox) sh"
    echo "echo '$SMOKE_MARKER'"
    echo "$(busybox) poweroff -f"
  } >"$work/init"
  chmod +x "$work/init"
  console="$work/console"
  boot "$work/init" 64M 30 "" "$work" >"$console" 2>&1
  if grep -qF "$SMOKE_MARKER" "$console"; then
    rm -rf "$work"
    return 0
  fi
  printf '[uml] error: UML (%s) is installed but does not boot on this host (%s, kernel %s).\n' \
    "$(uml_linux)" "$(host_xstate_size)" "$(uname -r)" >&2
  if grep -q 'ptrace set fp regs failed' "$console"; then
    printf '[uml]   cause: the host kernel rejects UML'"'"'s short NT_X86_XSTATE write (its XSAVE area is\n' >&2
    if [[ -n "${VCUDA_UML_NO_XSTATE_PAD:-}" ]]; then
      printf '[uml]   larger than UML was built for); the xstate_pad.so preload is off (VCUDA_UML_NO_XSTATE_PAD).\n' >&2
    else
      printf '[uml]   larger than UML was built for) and the xstate_pad.so preload did not fix it.\n' >&2
    fi
  fi
  printf '[uml]   the console said (last lines):\n' >&2
  grep -v -E '^ (\[<|[0-9a-f]{8} )' "$console" | tail -n 12 | sed 's/^/[uml]   | /' >&2
  rm -rf "$work"
  exit 3
}

cmd_setup() {
  command -v apt-get >/dev/null || unavailable "apt-get not found: UML setup needs a Debian/Ubuntu host"
  fetch_debs
  install_build_tools
  prepare_source
  xstate_pad >/dev/null
  cmd_smoke
  log "ready: $(uml_linux) (kernel $(cat "$CACHE/kernel-version")), build tree $(ksrc)"
}

cmd_env() {
  echo "export VCUDA_UML_LINUX='$(uml_linux)'"
  echo "export VCUDA_UML_KSRC='$(ksrc)'"
  echo "export VCUDA_UML_BUSYBOX='$(busybox)'"
}

# Builds the module out of tree (the source directory stays clean); prints the .ko path.
cmd_module() {
  local out="${1:-$CACHE/module}"
  [[ -f "$CACHE/.src-prepared-$STAMP_VERSION" ]] || cmd_setup
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  cp -p "$REPO"/guest/module/vcuda.c "$REPO"/guest/module/vcuda_uapi.h "$REPO"/guest/module/Kbuild "$out/"
  # No Module.symvers for the UML kernel: modpost's unresolved-symbol warnings are expected.
  if ! make -s -C "$(ksrc)" ARCH=um M="$out" modules 2>&1 |
    { grep -v -E 'Module.symvers is missing|modpost: .*undefined!|unresolved symbol warnings|Modules may not have dependencies|You may get many unresolved' >&2 || true; }; then
    die "building $out/vcuda.ko failed"
  fi
  echo "$out/vcuda.ko"
}

cmd_run() {
  local sock="" module="" mem=256M timeout=60
  while (($#)); do
    case "$1" in
      --socket) sock="$2"; shift 2 ;;
      --module) module="$2"; shift 2 ;;
      --mem) mem="$2"; shift 2 ;;
      --timeout) timeout="$2"; shift 2 ;;
      --) shift; break ;;
      *) die "unknown option $1" ;;
    esac
  done
  (($#)) || die "usage: uml.sh run --socket SOCK [--module KO] -- PROG [ARGS...]"
  [[ -x "$(uml_linux)" ]] || die "UML is not set up: run scripts/uml.sh setup"
  local work
  work=$(mktemp -d "${TMPDIR:-/tmp}/vcuda-uml.XXXXXX")
  # The guest's /init: mount what a program needs, load the module, run the program, record its
  # exit status on the host (hostfs), power off.
  {
    echo "#!$(busybox) sh"
    echo "bb=$(busybox)"
    echo '$bb mount -t proc proc /proc 2>/dev/null'
    echo '$bb mount -t sysfs sysfs /sys 2>/dev/null'
    echo '$bb mount -t devtmpfs devtmpfs /dev 2>/dev/null'
    echo "cd '$PWD'"
    if [[ -n "$module" ]]; then
      echo "if ! \$bb insmod '$module'; then echo 'insmod failed' >&2; echo 125 >'$work/status'; \$bb poweroff -f; fi"
    fi
    printf 'export VCUDA_IN_UML=1 PATH=/usr/bin:/bin\n'
    printf '%q ' "$@"
    echo
    echo "echo \$? >'$work/status'"
    echo '$bb sync'
    echo '$bb poweroff -f'
  } >"$work/init"
  chmod +x "$work/init"
  local dev=""
  [[ -n "$sock" ]] && dev="virtio_uml.device=$sock:$DEVICE_ID"
  boot "$work/init" "$mem" "$timeout" "$dev" "$work"
  local status=124
  [[ -f "$work/status" ]] && status=$(cat "$work/status")
  rm -rf "$work"
  exit "$status"
}

case "${1:-}" in
  setup) shift; cmd_setup "$@" ;;
  smoke) shift; cmd_smoke ;;
  env) shift; cmd_env ;;
  module) shift; cmd_module "$@" ;;
  run) shift; cmd_run "$@" ;;
  *) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
