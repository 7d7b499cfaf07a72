#!/usr/bin/env bash
# THE test command (README). Installs what the tests need when it is missing (the wasm32 target;
# lavapipe, Mesa's Vulkan on the CPU, for the wgpu test — apt, as root or with sudo), builds
# once, runs every test on CPU plus the wgpu parity test on Vulkan, and checks that the core
# compiles for wasm32.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-unknown-unknown
if ! dpkg -s mesa-vulkan-drivers >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi
test -d ../shared/data || { echo "tests need the dialogue data at ../shared/data"; exit 1; }
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
FEATURES="--features bartleby/wgpu"
cargo build --release -p bartleby --bins $FEATURES
cargo test --release --workspace $FEATURES
cargo build --release -p bartleby-core --target wasm32-unknown-unknown
echo "all tests passed"
