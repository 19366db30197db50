"""What one signed member-to-member request costs in CPU, through aiohttp's client and through
``tokenring.peers.PeerClient`` (prints figures; asserts nothing but that answers came).

Server and client run in this one process, so each figure is the CPU of both sides of a
request: a signed POST of a small JSON body to an aiohttp endpoint that reads it and answers
JSON, at 16 requests in flight, measured twice for each client, alternating.

    .venv/bin/python benchmarks/peer_bench.py
    .venv/bin/python benchmarks/peer_bench.py --requests 10000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from tokenring.peers import PeerClient  # noqa: E402
from tokenring.signing import SignedClient  # noqa: E402

IN_FLIGHT = 16
WARM_UP_REQUESTS = 200
ROUNDS = 2


async def _measure(client: SignedClient, url: str, requests: int) -> float:
    """Microseconds of process CPU per request."""
    payload = {"items": [{"transfer_id": f"b0-{i}", "ok": True} for i in range(10)]}
    for _ in range(WARM_UP_REQUESTS):
        await client.post_json(url, "/x", payload)

    async def worker() -> None:
        for _ in range(requests // IN_FLIGHT):
            reply = await client.post_json(url, "/x", payload)
            assert reply.status == 200 and reply.body == {"ok": True}, reply

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return 1e6 * (time.process_time() - started) / (requests // IN_FLIGHT * IN_FLIGHT)


async def main(requests: int) -> None:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/x", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        for _ in range(ROUNDS):
            for name in ("aiohttp ClientSession", "tokenring PeerClient"):
                transport: Any = (
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
                    if name.startswith("aiohttp")
                    else PeerClient()
                )
                try:
                    micros = await _measure(SignedClient(transport, b"benchmark-key", "b0"), url, requests)
                finally:
                    await transport.close()
                print(f"{name:<22} {micros:6.0f} µs CPU per signed request (client and server)", flush=True)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="per measurement")
    asyncio.run(main(parser.parse_args().requests))
