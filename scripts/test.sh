#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (cached in
# ~/.cache/vcuda), then runs formatting, lints and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(scripts/setup.sh)"

echo "[test] cargo fmt --check" >&2
cargo fmt --all -- --check

echo "[test] cargo clippy" >&2
cargo clippy --workspace --all-targets -- -D warnings

# `cargo test` builds libraries as rlibs only: build the shim (cdylib libcuda.so) and the vcuda
# binary that the end-to-end tests run, into the same target directory, first.
echo "[test] cargo build -p guest-libcuda -p vmm" >&2
cargo build -p guest-libcuda -p vmm

echo "[test] cargo test" >&2
cargo test --workspace "$@"

# The virtio-gpu vulkano presenter is a cargo feature (off by default: vulkano is heavy); its
# offscreen pixel tests run on lavapipe (installed by setup.sh) or skip saying why.
echo "[test] cargo clippy + test -p virtio-gpu --features window" >&2
cargo clippy -p virtio-gpu --features window --all-targets -- -D warnings
cargo test -p virtio-gpu --features window "$@"
