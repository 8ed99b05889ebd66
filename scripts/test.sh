#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (cached in
# ~/.cache/vcuda), then runs formatting, lints and every test of the workspace.
#
#   scripts/test.sh [CARGO TEST ARGS...]     # e.g. scripts/test.sh -- --nocapture
#
# Every step runs even when an earlier one failed, and `cargo test` runs with --no-fail-fast, so
# one failing test binary never hides the others. The closing summary (scripts/test_summary.py)
# lists every step and every test binary: passed / failed / skipped, the failed tests' names and
# each skip's reason; the script exits non-zero if anything failed. Logs: target/test-report/.
set -uo pipefail
cd "$(dirname "$0")/.."

REPORT="$PWD/target/test-report"
rm -rf "$REPORT"
mkdir -p "$REPORT"
# Tests that skip (vcuda-testkit) append their reason here; the summary lists them.
export VCUDA_SKIP_LOG="$REPORT/skips.tsv"
: >"$VCUDA_SKIP_LOG"
: >"$REPORT/steps.tsv"

# step NAME CMD...: runs CMD with its output shown and kept in the report; records its status.
step() {
  local name="$1" log rc t0
  shift
  log="$(echo "$name" | tr -c 'A-Za-z0-9\n' '-').log"
  echo "[test] $name: $*" >&2
  t0=$SECONDS
  "$@" 2>&1 | tee "$REPORT/$log"
  rc=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$log" >>"$REPORT/steps.tsv"
  ((rc == 0)) || echo "[test] $name: FAILED (exit $rc); going on with the other steps" >&2
  return 0
}

setup() {
  scripts/setup.sh >"$REPORT/setup.env"
}
step "setup" setup
# Whatever setup managed to print (the toolchain's paths) is still worth having.
# shellcheck disable=SC1091
[[ -s "$REPORT/setup.env" ]] && source "$REPORT/setup.env"

step "summary self-test" python3 scripts/test_summary.py --self-test
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
# `cargo test` builds libraries as rlibs only: build the shim (cdylib libcuda.so) and the vcuda
# binary that the end-to-end tests run, into the same target directory, first.
step "cargo build (shim, vcuda)" cargo build -p guest-libcuda -p vcuda
step "cargo test --workspace" cargo test --workspace --no-fail-fast "$@"

# The virtio-gpu vulkano presenter is a cargo feature (off by default: vulkano is heavy); its
# offscreen pixel tests run on lavapipe (installed by setup.sh) or skip saying why. `test-driver`
# (the scripted guest driver, off the public API) brings in the transfer benchmark for the lints.
step "cargo clippy (virtio-gpu window)" cargo clippy -p virtio-gpu --features window,test-driver --all-targets -- -D warnings
step "cargo test (virtio-gpu window)" cargo test -p virtio-gpu --features window,test-driver --no-fail-fast "$@"

python3 scripts/test_summary.py "$REPORT"
