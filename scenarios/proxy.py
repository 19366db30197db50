"""A fault-injecting TCP proxy on loopback, one per directed link between two banks.

The ``partition`` scenario gives every bank its own ring file in which each other member's
url is the address of a :class:`LinkProxy` that forwards to that member; cutting the proxies
between two groups splits the ring without touching a bank. While a link is cut, open
connections are reset and new ones are accepted and left unanswered (what a dead network
looks like to the sender: a timeout, not a refusal); healing closes those and forwards again.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["BUFFER_BYTES", "CONNECTIONS_MAX", "LinkProxy"]

BUFFER_BYTES = 64 * 1024
"""The most one read moves from one side to the other."""
CONNECTIONS_MAX = 128
"""Connections one link carries (or holds while cut) at most; more are closed at once."""
CONNECT_TIMEOUT_S = 2.0
"""The longest the proxy waits to reach its target."""
READS_PER_CONNECTION_MAX = 1_000_000
"""Reads one connection is carried (or swallowed while cut) for at most; then it is closed
(a keep-alive client simply opens a new one)."""


class LinkProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port`` until it is cut."""

    def __init__(self, name: str, target_host: str, target_port: int) -> None:
        assert target_host in ("127.0.0.1", "localhost"), "proxies only talk to loopback"
        self.name = name
        self.target_host = target_host
        self.target_port = target_port
        self.cut = False
        self.connections_total = 0
        self.bytes_forwarded = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "start the proxy first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._drop_all()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await self._server.wait_closed()

    def set_cut(self, cut: bool) -> None:
        """Cut (or heal) the link. When that changes it, every open connection is dropped, so
        that no connection spans the change; a link left as it was keeps its connections (a
        partition cuts only the links between its groups, and requests in flight between two
        banks of one side are no part of the fault)."""
        if cut == self.cut:
            return
        self.cut = cut
        self._drop_all()

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            transport = writer.transport
            if transport is not None:
                transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if len(self._writers) >= CONNECTIONS_MAX:
                writer.transport.abort()
                return
            self.connections_total += 1
            self._writers.add(writer)
            if self.cut:
                await self._blackhole(reader)
                return
            await self._forward(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
            self._tasks.discard(task)

    async def _blackhole(self, reader: asyncio.StreamReader) -> None:
        # Read and drop until the peer gives up or the link heals (which aborts us).
        for _ in range(READS_PER_CONNECTION_MAX):
            if not self.cut:
                return
            data = await reader.read(BUFFER_BYTES)
            if not data:
                return

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                target_reader, target_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except (OSError, TimeoutError):
            return
        self._writers.add(target_writer)
        try:
            await asyncio.gather(
                self._pipe(reader, target_writer), self._pipe(target_reader, writer)
            )
        finally:
            self._writers.discard(target_writer)
            target_writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(READS_PER_CONNECTION_MAX):
                data = await reader.read(BUFFER_BYTES)
                if not data or self.cut:
                    break
                writer.write(data)
                self.bytes_forwarded += len(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            # One side finished: close the other's write half so the half-close travels.
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof() and not writer.transport.is_closing():
                    writer.write_eof()
