#!/usr/bin/env bash
# Builds the chat page into examples/browser/pkg (served with index.html).
# Needs the wasm32-unknown-unknown target and wasm-bindgen (the CLI of the
# wasm-bindgen version in Cargo.lock): see examples/browser/README.md.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --target wasm32-unknown-unknown
wasm-bindgen --target web --no-typescript --out-dir pkg \
  target/wasm32-unknown-unknown/release/unisocket_browser_chat.wasm
echo "built: $(pwd)/pkg"
