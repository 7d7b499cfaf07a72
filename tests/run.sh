#!/usr/bin/env bash
# THE test command (README): builds once, runs every test on CPU and the wgpu parity test on
# Vulkan (lavapipe where there is no GPU), and checks that the core compiles for wasm32.
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
FEATURES="--features bartleby/wgpu"
cargo build --release -p bartleby --bins $FEATURES
cargo test --release --workspace $FEATURES
cargo build --release -p bartleby-core --target wasm32-unknown-unknown
echo "all tests passed"
