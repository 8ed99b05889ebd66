#!/usr/bin/env bash
# Installs everything the test suite needs, idempotently, cached outside the clone.
#
#   scripts/setup.sh            # install/verify; prints the environment to use
#   eval "$(scripts/setup.sh --env)"   # just print `export` lines for the cached toolchain
#
# Cache root: $VCUDA_CACHE (default ~/.cache/vcuda). Nothing here touches the clone.
set -euo pipefail

CACHE="${VCUDA_CACHE:-$HOME/.cache/vcuda}"
# The pinned toolchain every test builds with (nvcc, NVRTC, cudart, cuobjdump, and the headers
# real programs include: CCCL (Thrust/CUB/libcu++, also needed by cooperative_groups),
# cuda_profiler_api.h, NVTX).
CUDA_VER=13.0
VENV="$CACHE/cuda-$CUDA_VER/venv"
STAMP="$CACHE/cuda-$CUDA_VER/.installed-v3"
PIP_PKGS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cuobjdump==13.2.51
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-profiler-api==13.0.85
  nvidia-nvtx==13.0.85
)
# The newest toolkit on pip, for the toolkit matrix (tests/tests/toolkit_matrix.rs): the test
# programs are built with it too, static and shared cudart, and run through the shim.
NEWEST_VER=13.5
NEWEST_VENV="$CACHE/cuda-$NEWEST_VER/venv"
NEWEST_STAMP="$CACHE/cuda-$NEWEST_VER/.installed-v1"
NEWEST_PKGS=(
  nvidia-cuda-nvcc==13.5.37
  nvidia-cuda-crt==13.5.37
  nvidia-nvvm==13.5.37
  nvidia-cuda-runtime==13.5.37
)

log() { printf '[setup] %s\n' "$*" >&2; }

cuda_root() {
  local venv="${1:-$VENV}" sp
  sp=$(ls -d "$venv"/lib/python3*/site-packages 2>/dev/null | head -1)
  echo "$sp/nvidia/cu13"
}

print_env() {
  local root
  root=$(cuda_root)
  echo "export VCUDA_CACHE='$CACHE'"
  echo "export VCUDA_CUDA_ROOT='$root'"
  echo "export VCUDA_NVCC='$root/bin/nvcc'"
  echo "export VCUDA_NVRTC='$root/lib/libnvrtc.so.13'"
  # Every installed toolkit of the matrix, pinned first (`:`-separated CUDA roots).
  local matrix="$root"
  [[ -f "$NEWEST_STAMP" ]] && matrix="$matrix:$(cuda_root "$NEWEST_VENV")"
  echo "export VCUDA_CUDA_MATRIX='$matrix'"
}

# install_toolkit VERSION VENV STAMP PACKAGE...
install_toolkit() {
  local ver="$1" venv="$2" stamp="$3"
  shift 3
  if [[ -f "$stamp" ]]; then
    log "CUDA $ver pip toolchain: cached in $venv"
    return
  fi
  log "CUDA $ver pip toolchain: installing into $venv (~1 min)"
  # Every step is checked: the function may run where `set -e` does not apply (`|| …`).
  mkdir -p "$(dirname "$venv")" || return 1
  python3 -m venv "$venv" || return 1
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$@" || return 1
  local root
  root=$(cuda_root "$venv")
  # `-cudart shared` links against libcudart.so, which the wheel ships only as .so.13.
  ln -sf libcudart.so.13 "$root/lib/libcudart.so" || return 1
  # Smoke test: the toolchain must compile a kernel to PTX without a GPU.
  local tmp ok=0
  tmp=$(mktemp -d)
  printf '__global__ void k(int *p) { p[threadIdx.x] = 1; }\n' >"$tmp/k.cu"
  "$root/bin/nvcc" -ptx "$tmp/k.cu" -o "$tmp/k.ptx" && grep -q '.entry' "$tmp/k.ptx" && ok=1
  rm -rf "$tmp"
  [[ $ok == 1 ]] || { log "CUDA $ver pip toolchain: nvcc cannot compile a kernel"; return 1; }
  touch "$stamp"
  log "CUDA $ver pip toolchain: ok"
}

install_cuda_toolchain() {
  install_toolkit "$CUDA_VER" "$VENV" "$STAMP" "${PIP_PKGS[@]}"
}

# Optional: a failure only makes the newest toolkit's matrix entries skip; say why and go on.
install_newest_toolkit() {
  install_toolkit "$NEWEST_VER" "$NEWEST_VENV" "$NEWEST_STAMP" "${NEWEST_PKGS[@]}" ||
    log "CUDA $NEWEST_VER pip toolchain: unavailable; the toolkit matrix covers $CUDA_VER only"
}

case "${1:-}" in
  --env)
    print_env
    exit 0
    ;;
esac

# Optional: User-Mode Linux for the guest-side virtio tests (tests/tests/uml_virtio.rs). A
# failure here only means those tests skip; say why and go on.
install_uml() {
  if [[ -n "${VCUDA_SKIP_UML:-}" ]]; then
    log "User-Mode Linux: skipped (VCUDA_SKIP_UML is set)"
    return
  fi
  local here
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  local rc=0
  "$here/uml.sh" setup || rc=$?
  case "$rc" in
    0) log "User-Mode Linux: ok (uml_virtio tests will run)" ;;
    2) log "User-Mode Linux: unavailable, the uml_virtio tests will skip (see the error above;"
       log "  it needs a Debian/Ubuntu host with apt-get and root for flex/bison)" ;;
    *) log "User-Mode Linux: installed but BROKEN on this host (see above): the uml_virtio tests will fail" ;;
  esac
}

# Optional: lavapipe (software Vulkan) for the virtio-gpu presenter tests; they skip without it.
install_vulkan() {
  local here
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  "$here/setup-gpu.sh" || log "Vulkan (lavapipe): unavailable; the virtio-gpu window tests will skip"
}

# Optional: QEMU (8.1+, from bookworm-backports where Debian's is older), Debian's kernel and
# busybox for the stock-driver virtio-gpu test (tests/tests/qemu_gpu.rs); it skips without them.
install_qemu_gpu() {
  if [[ -n "${VCUDA_SKIP_QEMU:-}" ]]; then
    log "QEMU virtio-gpu harness: skipped (VCUDA_SKIP_QEMU is set)"
    return
  fi
  local here
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  if "$here/qemu-gpu.sh" setup; then
    log "QEMU virtio-gpu harness: ok (qemu_gpu test will run)"
  else
    log "QEMU virtio-gpu harness: unavailable, the qemu_gpu test will skip (see the error above)"
  fi
}

# Optional: the nested-KVM harness for real Linux guests of `vcuda run` (QEMU, the kernel and
# busybox shared with the virtio-gpu harness, plus the L1 initramfs; tests/tests/linux_guest.rs).
install_qemu_linux() {
  if [[ -n "${VCUDA_SKIP_QEMU:-}" ]]; then
    log "QEMU nested-Linux harness: skipped (VCUDA_SKIP_QEMU is set)"
    return
  fi
  local here
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  if "$here/qemu-linux.sh" setup; then
    log "QEMU nested-Linux harness: ok (linux_guest tests will run)"
  else
    log "QEMU nested-Linux harness: unavailable (see the error above); linux_guest will report it"
  fi
}

install_cuda_toolchain
install_newest_toolkit
install_uml
install_vulkan
install_qemu_gpu
install_qemu_linux
print_env
