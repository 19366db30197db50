"""The partition proxy: forwards bytes both ways, and when cut it drops open connections and
leaves new ones unanswered until healed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from scenarios.proxy import LinkProxy

DEADLINE_S = 5.0


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def roundtrip(port: int, payload: bytes, *, timeout_s: float = DEADLINE_S) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), timeout=timeout_s)
    finally:
        writer.transport.abort()


async def pinged(proxy: LinkProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection through ``proxy`` that has carried a ping both ways."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), DEADLINE_S) == b"ping"
    return reader, writer


async def test_a_healthy_link_forwards_both_ways(echo_port: int) -> None:
    proxy = LinkProxy("a->b", "127.0.0.1", echo_port)
    await proxy.start()
    try:
        assert await roundtrip(proxy.port, b"hello ring") == b"hello ring"
        big = bytes(range(256)) * 1000
        assert await roundtrip(proxy.port, big) == big
        assert proxy.bytes_forwarded >= 2 * len(big)
    finally:
        await proxy.close()


async def test_a_cut_link_resets_open_connections_and_blackholes_new_ones(echo_port: int) -> None:
    proxy = LinkProxy("a->b", "127.0.0.1", echo_port)
    await proxy.start()
    try:
        reader, writer = await pinged(proxy)
        proxy.set_cut(True)
        # The open connection is dropped: reading ends (EOF or reset) instead of hanging.
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await asyncio.wait_for(reader.readexactly(1), DEADLINE_S)
        writer.transport.abort()
        # A new connection is accepted but nothing comes back: the sender times out.
        with pytest.raises(asyncio.TimeoutError):
            await roundtrip(proxy.port, b"lost", timeout_s=0.3)
        proxy.set_cut(False)
        assert await roundtrip(proxy.port, b"healed") == b"healed"
    finally:
        await proxy.close()


async def test_a_link_left_as_it_was_keeps_its_open_connections(echo_port: int) -> None:
    """A partition sets every link, cut or not, and a heal heals every link: one of the same
    side must not lose what is in flight on it."""
    proxy = LinkProxy("a->b", "127.0.0.1", echo_port)
    await proxy.start()
    try:
        reader, writer = await pinged(proxy)
        proxy.set_cut(False)
        writer.write(b"pong")
        assert await asyncio.wait_for(reader.readexactly(4), DEADLINE_S) == b"pong"
        writer.transport.abort()
    finally:
        await proxy.close()


async def test_only_loopback_targets_are_accepted() -> None:
    with pytest.raises(AssertionError):
        LinkProxy("a->b", "10.0.0.1", 80)
