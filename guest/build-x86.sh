#!/usr/bin/env bash
# Builds guest/module/vcuda.ko for a Debian x86-64 guest kernel (by default the one the VMM's
# guest image uses, linux-image-amd64), against that kernel's headers:
#
#   guest/build-x86.sh [OUTDIR]        # prints the path of the built vcuda.ko
#
# The headers (linux-headers-<abi>, its -common package and linux-kbuild) are fetched with
# apt-get download and unpacked under $VCUDA_CACHE/x86-headers (default ~/.cache/vcuda); nothing
# is installed on the host. $VCUDA_KERNEL_PACKAGE picks another kernel package.
# For User-Mode Linux use scripts/uml.sh module instead.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${VCUDA_CACHE:-$HOME/.cache/vcuda}/x86-headers"
KPKG="${VCUDA_KERNEL_PACKAGE:-linux-image-amd64}"

log() { printf '[x86-module] %s\n' "$*" >&2; }
die() {
  printf '[x86-module] error: %s\n' "$*" >&2
  exit 1
}

command -v apt-get >/dev/null || die "apt-get not found: needs a Debian/Ubuntu host"
# A metapackage (linux-image-amd64) names the real kernel package in its dependencies.
kernel=$(apt-cache depends "$KPKG" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
kernel=${kernel:-$KPKG}
abi=${kernel#linux-image-}
root="$CACHE/$abi"
headers="$root/usr/src/linux-headers-$abi"

if [[ ! -f "$root/.ready" ]]; then
  log "fetching headers for $abi"
  mkdir -p "$CACHE/debs" "$root"
  pkgs=("linux-headers-$abi")
  while read -r p; do pkgs+=("$p"); done < <(apt-cache depends "linux-headers-$abi" |
    awk '/Depends: linux-(headers|kbuild)-/{print $2}')
  for p in "${pkgs[@]}"; do
    (cd "$CACHE/debs" && { ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download "$p" >&2; }) ||
      die "apt-get download $p failed"
    dpkg-deb -x "$(ls "$CACHE"/debs/"${p}"_*.deb | head -1)" "$root"
  done
  # The arch headers include the common ones by absolute path: point them at our copy.
  sed -i "s|include /usr/src/|include $root/usr/src/|" "$headers/Makefile"
  touch "$root/.ready"
fi

out="${1:-$CACHE/module-$abi}"
mkdir -p "$out"
out=$(cd "$out" && pwd)
cp -p "$REPO"/guest/module/vcuda.c "$REPO"/guest/module/vcuda_uapi.h "$REPO"/guest/module/Kbuild "$out/"
make -s -C "$headers" M="$out" modules >&2 || die "building $out/vcuda.ko failed"
echo "$out/vcuda.ko"
