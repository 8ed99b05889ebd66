#!/usr/bin/env bash
# Makes a directory usable as LD_LIBRARY_PATH for unmodified CUDA programs: links
# libcuda.so.1 and libcuda.so to the built shim.
#
#   guest-libcuda/scripts/link.sh [target/<profile>] [out-dir]
#
# Defaults: target dir $CARGO_TARGET_DIR or ./target, profile debug, out-dir = the profile dir.
set -euo pipefail
profile_dir="${1:-${CARGO_TARGET_DIR:-target}/debug}"
out="${2:-$profile_dir}"
lib="$(cd "$profile_dir" && pwd)/libcuda.so"
[[ -f "$lib" ]] || { echo "no $lib: build with 'cargo build -p guest-libcuda' first" >&2; exit 1; }
mkdir -p "$out"
[[ "$out/libcuda.so" -ef "$lib" ]] || ln -sf "$lib" "$out/libcuda.so"
ln -sf "$lib" "$out/libcuda.so.1"
echo "$out"
