#!/usr/bin/env bash
# The example chat page (examples/browser) in headless Chromium: builds it,
# serves it, points it at `unisocket serve` (the embedded echo server), has
# it say two lines, and checks the page's DOM for their echoes.
#
# Needs what scripts/browser-tests.sh needs, and the CLI built
# (target/debug/unisocket, or UNISOCKET_BIN).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${UNISOCKET_BIN:-target/debug/unisocket}"
bash examples/browser/build.sh

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
WS_PORT=$(free_port)
HTTP_PORT=$(free_port)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
"$BIN" serve --port "$WS_PORT" >/dev/null 2>&1 &
PIDS+=($!)
python3 -m http.server -b 127.0.0.1 -d examples/browser "$HTTP_PORT" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$WS_PORT") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$HTTP_PORT") 2>/dev/null && break
  sleep 0.1
done

PAGE="http://127.0.0.1:$HTTP_PORT/index.html?ws=ws://127.0.0.1:$WS_PORT/&say=hello%20browser|second%20line"
# The budget is the page's virtual time: network waits do not use it up.
DOM=$(timeout 120 chromium --headless=new --no-sandbox --disable-gpu --virtual-time-budget=10000 \
  --dump-dom "$PAGE" 2>/dev/null)
LINES=$(grep -o '<li class="[a-z]*">[^<]*</li>' <<<"$DOM" || true)
echo "$LINES"
for want in '<li class="echo">echo: hello browser</li>' '<li class="echo">echo: second line</li>'; do
  grep -qF "$want" <<<"$LINES" || { echo "browser example: missing $want" >&2; exit 1; }
done
echo "browser example: the echoes are on the page"
