#!/usr/bin/env bash
# The browser engine in a real browser: tests/browser.rs, built for
# wasm32-unknown-unknown, run by wasm-bindgen-test-runner in headless
# Chromium (through chromedriver) against a Node `ws` echo server
# (tests/interop/ws_server.js) on 127.0.0.1.
#
# Needs: the wasm32-unknown-unknown target, wasm-bindgen-test-runner of the
# wasm-bindgen version in Cargo.lock, chromium and chromedriver, node with
# `ws` installed in crates/unisocket/tests/interop (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

TMP=$(mktemp -d)
SERVER_PID=
SILENT_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  [ -n "$SILENT_PID" ] && kill "$SILENT_PID" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

# The echo server exits when its stdin closes: it is fed from a FIFO that
# this script holds open until it ends.
mkfifo "$TMP/stdin"
node crates/unisocket/tests/interop/ws_server.js "$TMP/port" <"$TMP/stdin" 2>"$TMP/server.log" &
SERVER_PID=$!
# A server that accepts connections and never answers, for the connect
# timeout; it also ends with the FIFO.
node -e '
  const s = require("net").createServer(() => {});
  s.listen(0, "127.0.0.1", () => require("fs").writeFileSync(process.argv[1], String(s.address().port)));
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
' "$TMP/silent-port" <"$TMP/stdin" &
SILENT_PID=$!
exec 3>"$TMP/stdin"
for _ in $(seq 100); do [ -s "$TMP/port" ] && [ -s "$TMP/silent-port" ] && break; sleep 0.1; done
[ -s "$TMP/port" ] && [ -s "$TMP/silent-port" ] \
  || { echo "the test servers did not start" >&2; cat "$TMP/server.log" >&2; exit 1; }

# A port with nothing listening, for the refused connection.
REFUSED=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

export UNISOCKET_BROWSER_PORT
UNISOCKET_BROWSER_PORT=$(cat "$TMP/port")
export UNISOCKET_BROWSER_REFUSED_PORT=$REFUSED
export UNISOCKET_BROWSER_SILENT_PORT
UNISOCKET_BROWSER_SILENT_PORT=$(cat "$TMP/silent-port")
export CHROMEDRIVER="${CHROMEDRIVER:-$(command -v chromedriver)}"
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export WASM_BINDGEN_TEST_TIMEOUT=120
cargo test -p unisocket --target wasm32-unknown-unknown --test browser --test browser_global "$@"
