"""The members' HTTP client (``tokenring.peers.PeerClient``): answers read whole by length, by
chunks or to the close; connections reused, bounded per peer, and dropped whenever an answer
was not read cleanly; every failure an error, never a wrong answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from bank.process import free_ports
from tokenring.peers import PeerClient, PeerError
from tokenring.signing import SendFailed, SignedClient

BYTES_MAX = 64 * 1024


@pytest.fixture
async def server() -> AsyncIterator[int]:
    """An aiohttp server on a free port: echo, chunked, slow and big answers."""
    gate = asyncio.Event()

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {"method": request.method, "path": request.path_qs, "body": body.decode(),
             "sender": request.headers.get("X-Test", "")}  # fmt: skip
        )

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b'{"parts": ', b"[1, 2, ", b"3]}"):
            await response.write(part)
        await response.write_eof()
        return response

    async def slow(request: web.Request) -> web.Response:
        await gate.wait()
        return web.json_response({"slow": True})

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (BYTES_MAX + 1))

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/slow", slow)
    app.router.add_get("/big", big)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_ports(1)[0]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        gate.set()
        await runner.cleanup()


async def test_answers_are_read_whole_and_connections_reused(server: int) -> None:
    peers = PeerClient()
    try:
        for index in range(5):
            reply = await peers.request(
                "POST", "127.0.0.1", server, f"/echo?n={index}", {"X-Test": "a"}, b"hello",
                reply_bytes_max=BYTES_MAX,
            )  # fmt: skip
            assert reply.status == 200 and reply.headers["content-type"].startswith("application/json")
            assert reply.body == (
                b'{"method": "POST", "path": "/echo?n=%d", "body": "hello", "sender": "a"}' % index
            )
        reply = await peers.request("GET", "127.0.0.1", server, "/chunked", {}, reply_bytes_max=BYTES_MAX)
        assert reply.body == b'{"parts": [1, 2, 3]}'
        reply = await peers.request("GET", "127.0.0.1", server, "/nowhere", {}, reply_bytes_max=BYTES_MAX)
        assert reply.status == 404
        assert peers.stats() == {"opened": 1, "idle": 1}  # one connection served all of them
    finally:
        await peers.close()


async def test_an_answer_too_large_fails_and_its_connection_is_dropped(server: int) -> None:
    peers = PeerClient()
    try:
        with pytest.raises(PeerError, match="too large"):
            await peers.request("GET", "127.0.0.1", server, "/big", {}, reply_bytes_max=BYTES_MAX)
        assert peers.stats()["idle"] == 0
        reply = await peers.request("GET", "127.0.0.1", server, "/echo", {}, reply_bytes_max=BYTES_MAX)
        assert reply.status == 200 and peers.stats() == {"opened": 2, "idle": 1}
    finally:
        await peers.close()


async def test_a_request_cancelled_midway_never_leaves_its_answer_to_the_next(server: int) -> None:
    peers = PeerClient()
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await peers.request("GET", "127.0.0.1", server, "/slow", {}, reply_bytes_max=BYTES_MAX)
        reply = await peers.request("GET", "127.0.0.1", server, "/echo", {}, reply_bytes_max=BYTES_MAX)
        assert b'"method": "GET"' in reply.body
        assert peers.stats()["opened"] == 2
    finally:
        await peers.close()


async def test_connections_to_one_peer_are_bounded(server: int) -> None:
    peers = PeerClient(connections_per_peer_max=2)
    try:
        replies = await asyncio.gather(*(
            peers.request("POST", "127.0.0.1", server, "/echo", {}, b"x" * i, reply_bytes_max=BYTES_MAX)
            for i in range(20)
        ))  # fmt: skip
        assert [r.status for r in replies] == [200] * 20
        assert peers.stats()["opened"] <= 2
    finally:
        await peers.close()


async def raw_server(answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
                     ) -> tuple[asyncio.Server, int]:  # fmt: skip
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await answer(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_an_answer_read_to_the_close_and_malformed_ones() -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"old\": 1}")
        await writer.drain()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-nope\r\n\r\n")
        await writer.drain()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"cut")
        await writer.drain()

    peers = PeerClient()
    servers = []
    try:
        for answer, expected in ((until_close, None), (garbage, "not an HTTP answer"),
                                 (hang_up, "closed the connection")):  # fmt: skip
            server, port = await raw_server(answer)
            servers.append(server)
            if expected is None:
                reply = await peers.request("GET", "127.0.0.1", port, "/", {}, reply_bytes_max=BYTES_MAX)
                assert (reply.status, reply.body) == (200, b'{"old": 1}')
            else:
                with pytest.raises(PeerError, match=expected):
                    await peers.request("GET", "127.0.0.1", port, "/", {}, reply_bytes_max=BYTES_MAX)
        assert peers.stats()["idle"] == 0  # none of those connections is kept
    finally:
        await peers.close()
        for server in servers:
            server.close()


async def test_a_peer_that_closed_an_idle_connection_costs_nothing(server: int) -> None:
    peers = PeerClient(idle_s_max=0.05)
    try:
        await peers.request("GET", "127.0.0.1", server, "/echo", {}, reply_bytes_max=BYTES_MAX)
        await asyncio.sleep(0.1)  # idle past the bound: not reused
        await peers.request("GET", "127.0.0.1", server, "/echo", {}, reply_bytes_max=BYTES_MAX)
        assert peers.stats()["opened"] == 2
    finally:
        await peers.close()


async def test_the_signed_client_turns_every_failure_into_send_failed() -> None:
    peers = PeerClient()
    client = SignedClient(peers, b"key", "alfa")
    try:
        port = free_ports(1)[0]  # nobody listens there
        with pytest.raises(SendFailed, match="ConnectionRefusedError"):
            await client.post_json(f"http://127.0.0.1:{port}", "/ring/token", {}, timeout_s=1)
        with pytest.raises(SendFailed, match="http://host:port"):
            await client.post_json("https://127.0.0.1:1", "/ring/token", {}, timeout_s=1)
        await peers.close()
        with pytest.raises(SendFailed, match="PeerError"):
            await client.post_json(f"http://127.0.0.1:{port}", "/ring/token", {}, timeout_s=1)
    finally:
        await peers.close()
