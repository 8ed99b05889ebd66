#!/usr/bin/env bash
# Optional: Mesa's Vulkan drivers (lavapipe, a software Vulkan device) for the virtio-gpu
# `window` display and its tests (`cargo test -p virtio-gpu --features window`). Idempotent;
# without it those tests print SKIPPED. Needs root (apt-get).
set -euo pipefail

log() { printf '[setup-gpu] %s\n' "$*" >&2; }

if ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1 && ldconfig -p | grep -q libvulkan.so.1; then
  log "Vulkan (lavapipe): installed"
  exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  log "Vulkan (lavapipe): missing; install mesa-vulkan-drivers and libvulkan1 (needs root and apt)"
  exit 0
fi
log "Vulkan (lavapipe): installing mesa-vulkan-drivers libvulkan1"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
log "Vulkan (lavapipe): ok"
