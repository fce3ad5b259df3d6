#!/usr/bin/env python3
"""A third-party peer for interop tests: a Python `websockets` echo server.

usage: websockets_server.py PORT_FILE [--tls CERT KEY] [--no-compression]

Binds 127.0.0.1 on a free port, writes the port to PORT_FILE, echoes every
message, and answers the text "whoami" with a JSON description of the
connection (negotiated extensions and subprotocol), so the client can check
what was negotiated. Exits when stdin closes.
"""
import argparse
import asyncio
import json
import logging
import os
import ssl
import sys

from websockets.asyncio.server import serve


async def handler(ws):
    async for msg in ws:
        if msg == "whoami":
            ext = [e.name for e in ws.protocol.extensions]
            await ws.send(json.dumps({"extensions": ext, "subprotocol": ws.subprotocol}))
        else:
            await ws.send(msg)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port_file")
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    ap.add_argument("--no-compression", action="store_true")
    a = ap.parse_args()
    if os.environ.get("INTEROP_DEBUG"):
        logging.basicConfig(level=logging.DEBUG)
    ctx = None
    if a.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls[0], a.tls[1])
    compression = None if a.no_compression else "deflate"
    async with serve(handler, "127.0.0.1", 0, ssl=ctx, compression=compression,
                     subprotocols=["chat", "superchat"], max_size=64 * 1024 * 1024) as server:
        port = server.sockets[0].getsockname()[1]
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.replace(tmp, a.port_file)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
