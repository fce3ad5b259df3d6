#!/usr/bin/env python3
"""A third-party peer for tests/interop.rs: one of the Python WebSocket stacks.

usage: py_server.py PORT_FILE STACK [--deflate]

STACK is `websockets` (websockets' asyncio server), `aiohttp`, or
`uvicorn-websockets`, `uvicorn-websockets-sansio`, `uvicorn-wsproto`
(a Starlette app under uvicorn with that WebSocket implementation).

Binds 127.0.0.1 on a free port, writes the port to PORT_FILE, and answers
as ws_server.js does:
  - "close CODE REASON" -> closes with that code and reason
  - "ping PAYLOAD"      -> sends a ping with that payload (where the stack
                           can), then the text "pinged PAYLOAD"
  - "mute"              -> (websockets only) stops reading the connection:
                           nothing more is answered, pings included
  - anything else       -> echoed as it came (text or binary)
The subprotocol is "chat" when offered. Exits when stdin closes.
"""
import asyncio
import os
import re
import sys

MAX = 65 * 1024 * 1024
CLOSE = re.compile(r"^close (\d+) ?(.*)$", re.S)
PING = re.compile(r"^ping (.*)$", re.S)


def write_port(port_file, port):
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, port_file)


async def until_stdin_closes():
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def run_websockets(port_file, deflate):
    from websockets.asyncio.server import serve

    async def handler(ws):
        async for msg in ws:
            if msg == "mute":
                # A server that hangs: frames wait in the socket unread.
                ws.transport.pause_reading()
                await ws.wait_closed()
                return
            if isinstance(msg, str) and len(msg) < 200:
                m = CLOSE.match(msg)
                if m:
                    await ws.close(int(m[1]), m[2])
                    return
                m = PING.match(msg)
                if m:
                    await (await ws.ping(m[1].encode()))
                    await ws.send("pinged " + m[1])
                    continue
            await ws.send(msg)

    def select_subprotocol(_ws, offered):
        # "chat" when offered, and no subprotocol (rather than a 400) when not.
        return "chat" if "chat" in offered else None

    async with serve(handler, "127.0.0.1", 0, compression="deflate" if deflate else None,
                     select_subprotocol=select_subprotocol, max_size=MAX,
                     ping_interval=None) as server:
        write_port(port_file, server.sockets[0].getsockname()[1])
        await until_stdin_closes()


async def run_aiohttp(port_file, deflate):
    from aiohttp import web, WSMsgType

    async def handler(request):
        ws = web.WebSocketResponse(protocols=("chat",), compress=deflate, max_msg_size=MAX,
                                   heartbeat=None)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                m = CLOSE.match(msg.data) if len(msg.data) < 200 else None
                if m:
                    await ws.close(code=int(m[1]), message=m[2].encode())
                    break
                m = PING.match(msg.data) if len(msg.data) < 200 else None
                if m:
                    await ws.ping(m[1].encode())
                    await ws.send_str("pinged " + m[1])
                    continue
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    app = web.Application(client_max_size=MAX)
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    write_port(port_file, site._server.sockets[0].getsockname()[1])
    await until_stdin_closes()
    await runner.cleanup()


async def run_uvicorn(port_file, impl, deflate):
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocketDisconnect

    async def endpoint(websocket):
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol="chat" if "chat" in offered else None)
        try:
            while True:
                msg = await websocket.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                text = msg.get("text")
                if text is not None:
                    m = CLOSE.match(text) if len(text) < 200 else None
                    if m:
                        await websocket.close(int(m[1]), m[2])
                        return
                    m = PING.match(text) if len(text) < 200 else None
                    if m:
                        # ASGI has no ping: only the text answer.
                        await websocket.send_text("pinged " + m[1])
                        continue
                    await websocket.send_text(text)
                else:
                    await websocket.send_bytes(msg.get("bytes") or b"")
        except WebSocketDisconnect:
            return

    app = Starlette(routes=[WebSocketRoute("/", endpoint)])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, ws=impl, ws_max_size=MAX,
                            ws_per_message_deflate=deflate, ws_ping_interval=None,
                            log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
            raise SystemExit("uvicorn stopped")
        await asyncio.sleep(0.02)
    write_port(port_file, server.servers[0].sockets[0].getsockname()[1])
    await until_stdin_closes()
    server.should_exit = True
    await serving


def main():
    port_file, stack = sys.argv[1], sys.argv[2]
    deflate = "--deflate" in sys.argv[3:]
    if stack == "websockets":
        asyncio.run(run_websockets(port_file, deflate))
    elif stack == "aiohttp":
        asyncio.run(run_aiohttp(port_file, deflate))
    elif stack.startswith("uvicorn-"):
        asyncio.run(run_uvicorn(port_file, stack[len("uvicorn-"):], deflate))
    else:
        raise SystemExit("unknown stack " + stack)


if __name__ == "__main__":
    main()
