# SPDX-License-Identifier: MIT
"""A WebSocket server (Debian's python3-websockets) for the proxy's tunnel
tests: echoes every message; "push" makes it send three of its own, "bye"
makes it close with 1001. Usage: ws_echo.py PORT; prints "ready" once it
listens."""

import asyncio
import sys

import websockets


async def handler(ws, path=None):
    async for message in ws:
        if message == "push":
            for i in range(3):
                await ws.send(f"pushed {i}")
        elif message == "bye":
            await ws.close(1001, "going away")
            return
        else:
            await ws.send(message)


async def main(port):
    async with websockets.serve(handler, "127.0.0.1", port, max_size=None):
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
