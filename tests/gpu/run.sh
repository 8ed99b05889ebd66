#!/usr/bin/env bash
# The cuda backend against native CUDA on a GPU machine, three ways:
#   1. natively, against NVIDIA's libcuda;
#   2. through `vcuda exec --backend cuda` (shim → executor → real GPU);
#   3. through `vcuda exec --backend cpu` (the PTX interpreter).
# Outputs of the conformance programs are compared (self-checking programs must print the same
# lines), then tests/gpu/gpu_bench.cu runs natively and through the cuda backend and the ratios
# are printed (targets: launch loop ≤ 1.05x, 256 MiB copies ≥ 90% of native pageable, MLP ≤ 1.05x).
#
# Usage: tests/gpu/run.sh [out-dir]     (needs an NVIDIA GPU + driver; builds everything itself)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-target/gpu-run}"
mkdir -p "$OUT"

if ! ls /dev/nvidia0 >/dev/null 2>&1 && ! command -v nvidia-smi >/dev/null; then
  echo "tests/gpu/run.sh: no NVIDIA GPU here (no /dev/nvidia0, no nvidia-smi); nothing to compare" >&2
  exit 2
fi

eval "$(scripts/setup.sh)"
cargo build --release -p vcuda -p guest-libcuda
VCUDA="$PWD/target/release/vcuda"
CUDA_LIB="$VCUDA_CUDA_ROOT/lib"

build() { # build <src.cu> <out> [extra nvcc args…]
  local src=$1 out=$2; shift 2
  "$VCUDA_NVCC" -O2 -arch=native "$src" -o "$out" -L"$CUDA_LIB" "$@" 2>/dev/null ||
    "$VCUDA_NVCC" -O2 "$src" -o "$out" -L"$CUDA_LIB" "$@"
}

filter() { grep -v -E '[0-9]+\.[0-9]+ ?ms|seconds' || true; }

status=0
for name in runtime_api; do
  prog="$OUT/$name"
  build "tests/programs/$name.cu" "$prog"
  "$prog" >"$OUT/$name.native" 2>&1 || true
  "$VCUDA" exec --backend cuda -- "$prog" >"$OUT/$name.cuda" 2>&1 || true
  "$VCUDA" exec --backend cpu -- "$prog" >"$OUT/$name.cpu" 2>&1 || true
  for mode in cuda cpu; do
    if diff <(filter <"$OUT/$name.native") <(filter <"$OUT/$name.$mode") >"$OUT/$name.$mode.diff"; then
      echo "$name: $mode output matches native"
    else
      echo "$name: $mode output DIFFERS from native (see $OUT/$name.$mode.diff)"
      status=1
    fi
  done
done

bench="$OUT/gpu_bench"
build tests/gpu/gpu_bench.cu "$bench"
"$bench" >"$OUT/bench.native"
"$VCUDA" exec --backend cuda -- "$bench" >"$OUT/bench.cuda"
python3 - "$OUT/bench.native" "$OUT/bench.cuda" <<'PY'
import json, sys
native = {j["bench"]: j for j in map(json.loads, open(sys.argv[1]))}
vcuda = {j["bench"]: j for j in map(json.loads, open(sys.argv[2]))}
print(f"{'workload':<22}{'native s':>12}{'vcuda s':>12}{'ratio':>9}")
for k, n in native.items():
    v = vcuda.get(k)
    if v:
        print(f"{k:<22}{n['seconds']:>12.4f}{v['seconds']:>12.4f}{v['seconds'] / n['seconds']:>8.2f}x")
PY
exit $status
