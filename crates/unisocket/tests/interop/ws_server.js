#!/usr/bin/env node
// A third-party peer for tests/interop.rs: a Node `ws` 8 server.
//
// usage: node ws_server.js PORT_FILE [--host H] [--port N] [--deflate] [--tls CERT KEY]
//                         [--max-payload BYTES]
//
// Binds H (default 127.0.0.1), port N (or a free one), writes the port to PORT_FILE, and
// then, for every connection:
//   - "close CODE REASON"  -> closes with that code and reason
//   - "ping PAYLOAD"       -> sends a ping with that payload, then "pinged"
//                             once the client's pong came back
//   - "drop"               -> ends the TCP connection without a close frame
//   - "mute"               -> stops reading the connection (a close is never answered)
//   - "last-close"         -> "last-close CODE REASON" of the last close of a
//                             connection to the same path (the browser tests
//                             read what they sent)
//   - anything else        -> echoed as it came (text or binary)
// The subprotocol is "chat" when offered, else the first one offered.
// Logs errors and closes to stderr. Exits when stdin closes.
'use strict';
const fs = require('fs');
const http = require('http');
const https = require('https');
const { WebSocketServer } = require('ws');

const args = process.argv.slice(2);
const portFile = args[0];
let port = 0;
let host = '127.0.0.1';
let deflate = false;
// ws's default maxPayload: 100 MiB.
let maxPayload = 100 * 1024 * 1024;
let tls = null;
for (let i = 1; i < args.length; i++) {
  if (args[i] === '--host') host = args[++i];
  else if (args[i] === '--port') port = Number(args[++i]);
  else if (args[i] === '--deflate') deflate = true;
  else if (args[i] === '--max-payload') maxPayload = Number(args[++i]);
  else if (args[i] === '--tls') tls = { cert: fs.readFileSync(args[++i]), key: fs.readFileSync(args[++i]) };
  else throw new Error(`unknown argument ${args[i]}`);
}

const server = tls ? https.createServer(tls) : http.createServer();
const wss = new WebSocketServer({
  server,
  maxPayload,
  perMessageDeflate: deflate ? { threshold: 0 } : false,
  handleProtocols: (protocols) => (protocols.has('chat') ? 'chat' : protocols.values().next().value || false),
});

const lastClose = new Map();

wss.on('connection', (ws, req) => {
  ws.on('message', (data, isBinary) => {
    if (!isBinary && data.length < 200) {
      const text = data.toString();
      if (text === 'drop') {
        ws.terminate();
        return;
      }
      if (text === 'mute') {
        ws._socket.pause();
        return;
      }
      if (text === 'last-close') {
        ws.send(`last-close ${lastClose.get(req.url) || 'none'}`);
        return;
      }
      const close = /^close (\d+) ?(.*)$/s.exec(text);
      if (close) {
        ws.close(Number(close[1]), close[2]);
        return;
      }
      const ping = /^ping (.*)$/s.exec(text);
      if (ping) {
        ws.once('pong', (payload) => ws.send(`pinged ${payload.toString()}`));
        ws.ping(ping[1]);
        return;
      }
    }
    ws.send(data, { binary: isBinary });
  });
  ws.on('error', (e) => console.error('error', e.message));
  ws.on('close', (code, reason) => {
    lastClose.set(req.url, `${code} ${reason.toString()}`);
    console.error('close', code, reason.toString());
  });
});

server.listen(port, host, () => {
  const tmp = `${portFile}.tmp`;
  fs.writeFileSync(tmp, String(server.address().port));
  fs.renameSync(tmp, portFile);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
