# Shared by the QEMU harnesses (scripts/qemu-gpu.sh, scripts/qemu-linux.sh): QEMU 8.1+ (from
# bookworm-backports where Debian's is older), Debian's kernel package and busybox-static,
# downloaded once into $SHARED (both harnesses use the same copies), and module collection.
# Source it after setting LOG_TAG; it sets SHARED and QEMU_ROOT.
# shellcheck shell=bash

SHARED="${VCUDA_CACHE:-$HOME/.cache/vcuda}/qemu-gpu"

log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
die() {
  printf '[%s] error: %s\n' "$LOG_TAG" "$*" >&2
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
QEMU_ROOT="$SHARED/qemu"

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
  local apt="$SHARED/apt" debs="$SHARED/qemu-debs"
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

# install_qemu [DEVICE...]: QEMU 8.1+, checked to have each named -device.
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
  local dev
  for dev in "$@"; do
    # shellcheck disable=SC2046
    QEMU_MODULE_DIR=$(qemu_module_dir "$q") "$q" $(qemu_args "$q") -device "$dev,help" 2>/dev/null |
      grep -q "$dev options" || die "$q has no $dev device"
  done
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
  mkdir -p "$SHARED/debs" "$SHARED/root"
  cd "$SHARED/debs"
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
  if [[ ! -d "$SHARED/root/lib/modules" && ! -d "$SHARED/root/usr/lib/modules" ]]; then
    log "unpacking the kernel"
    dpkg-deb -x linux-image-*-amd64_*.deb "$SHARED/root"
  fi
  if [[ ! -x "$SHARED/root/bin/busybox" ]]; then
    dpkg-deb -x busybox-static_*.deb "$SHARED/root"
  fi
}

moddir() { ls -d "$SHARED"/root/lib/modules/*/ "$SHARED"/root/usr/lib/modules/*/ 2>/dev/null | head -1 || true; }

# collect_modules BASE MODULE...: copies the modules and their dependencies (in load order, also
# written to BASE/lib/modules/order) into BASE/lib/modules, uncompressed.
collect_modules() {
  local md base=$1
  shift
  md=$(moddir)
  [[ -n "$md" ]] || die "no modules in the kernel package"
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
  for m in "$@"; do add "$m"; done
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

