"""A small HTTP/1.1 client for the requests members send each other: keep-alive connections to
a few known peers, one request at a time per connection, bodies of a known length.

Members talk to each other all the time (a token hand-off, a prepare, a decision, a demand),
and under load a general-purpose client's bookkeeping per request (cookies, redirects,
tracing, proxies, content codings) costs a bank more CPU than the message itself. A member
needs none of that: it posts small signed JSON bodies to the URLs of the ring file and reads
small JSON answers. :class:`PeerClient` does exactly that and nothing else:

- one pool of idle connections per ``(host, port)``, at most ``connections_per_peer_max``
  connections open to one peer at once (a request beyond it waits for one to come back);
- a connection is reused only while the peer keeps it open and for at most ``idle_s_max``
  seconds idle (well inside a server's keep-alive timeout, so a reused connection is not one
  the peer is closing at that very moment); a request that fails is never re-sent here: the
  caller decides (members' messages are retried by their protocols);
- an answer is read by its ``Content-Length`` or its chunks (or up to the peer closing when
  it says neither), at most ``reply_bytes_max`` bytes;
- a request cancelled midway (the caller's timeout) closes its connection: a late answer
  can never be read as the answer to the next request.

It speaks plain HTTP over TCP (``http://`` URLs), which is what the ring's members serve;
:class:`~tokenring.signing.SignedClient` signs what goes through it.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, cast

__all__ = [
    "CONNECTIONS_PER_PEER_MAX",
    "HEADER_BYTES_MAX",
    "IDLE_S_MAX",
    "PeerClient",
    "PeerError",
    "PeerReply",
]

CONNECTIONS_PER_PEER_MAX = 64
"""Connections open to one peer at once; more concurrent requests wait for one."""
IDLE_S_MAX = 15.0
"""How long an idle connection is kept for reuse (aiohttp servers close after 75 s)."""
HEADER_BYTES_MAX = 16 * 1024
"""The most bytes of status line and headers an answer may have."""


class PeerError(Exception):
    """The request got no complete answer (refused, reset, closed early, malformed, too big)."""


class PeerReply:
    """An answer: status, headers (names in lower case) and the body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Connection(asyncio.Protocol):
    """One keep-alive connection; the owner sends a request and awaits :meth:`answer`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not a subclass of asyncio.Transport, only alike).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self.closed = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # the owner's side

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def _more(self, *, eof_ends: bool = False) -> None:
        """Wait until more bytes arrived or the peer closed; a close before the answer is
        complete is an error unless ``eof_ends`` (an answer that runs to the close)."""
        if self._eof:
            if eof_ends:
                return
            raise PeerError("the peer closed the connection")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def exchange(self, request: bytes, reply_bytes_max: int) -> tuple[PeerReply, bool]:
        """Send ``request``, read the whole answer; and whether the connection may be reused."""
        assert self.transport is not None and not self._buffer
        self.transport.write(request)
        buffer = self._buffer
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buffer) > HEADER_BYTES_MAX:
                raise PeerError("the answer's headers are too large")
            await self._more()
        head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        del buffer[: end + 4]
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise PeerError(f"not an HTTP answer: {head[0][:60]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in head[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise PeerError("a malformed header line")
            headers[name.strip().lower()] = value.strip()
        keep = parts[0] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if status in (204, 304) or 100 <= status < 200:
            return PeerReply(status, headers, b""), keep
        length = headers.get("content-length")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._chunked(reply_bytes_max)
        elif length is not None:
            if not length.isdigit():
                raise PeerError("a malformed Content-Length")
            size = int(length)
            if size > reply_bytes_max:
                raise PeerError("the answer is too large")
            while len(buffer) < size:
                await self._more()
            body = bytes(buffer[:size])
            del buffer[:size]
        else:
            # Neither: the body runs until the peer closes.
            while not self._eof:
                if len(buffer) > reply_bytes_max:
                    raise PeerError("the answer is too large")
                await self._more(eof_ends=True)
            body = bytes(buffer)
            buffer.clear()
            keep = False
        if buffer:
            keep = False  # bytes nobody asked for: do not trust this connection again
        return PeerReply(status, headers, body), keep and not self.closed

    async def _chunked(self, reply_bytes_max: int) -> bytes:
        buffer = self._buffer
        body = bytearray()
        while True:
            while (line_end := buffer.find(b"\r\n")) < 0:
                if len(buffer) > HEADER_BYTES_MAX:
                    raise PeerError("a malformed chunk")
                await self._more()
            size_text = bytes(buffer[:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise PeerError("a malformed chunk size") from None
            del buffer[: line_end + 2]
            if size == 0:
                # Trailers, if any, end with an empty line.
                while (trailer_end := buffer.find(b"\r\n")) != 0:
                    if trailer_end > 0:
                        del buffer[: trailer_end + 2]
                        continue
                    await self._more()
                del buffer[:2]
                return bytes(body)
            if len(body) + size > reply_bytes_max:
                raise PeerError("the answer is too large")
            while len(buffer) < size + 2:
                await self._more()
            body += buffer[:size]
            del buffer[: size + 2]


class PeerClient:
    """Keep-alive HTTP/1.1 requests to the ring's members (see the module's note)."""

    def __init__(
        self,
        *,
        connections_per_peer_max: int = CONNECTIONS_PER_PEER_MAX,
        idle_s_max: float = IDLE_S_MAX,
    ) -> None:
        assert connections_per_peer_max > 0 and idle_s_max > 0
        self.connections_per_peer_max = connections_per_peer_max
        self.idle_s_max = idle_s_max
        self._idle: dict[tuple[str, int], collections.deque[_Connection]] = {}
        self._slots: dict[tuple[str, int], asyncio.Semaphore] = {}
        self._busy: set[_Connection] = set()
        self._closed = False
        self.connections_opened = 0
        """Connections made so far (tests and metrics: reuse keeps it low)."""

    async def request(
        self,
        method: str,
        host: str,
        port: int,
        target: str,
        headers: dict[str, str],
        body: bytes = b"",
        *,
        reply_bytes_max: int,
    ) -> PeerReply:
        """Send one request and return its answer; :class:`PeerError` or ``OSError`` when
        none came. ``target`` is the path with its query, sent exactly as given."""
        if self._closed:
            raise PeerError("the client is closed")
        key = (host, port)
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = asyncio.Semaphore(self.connections_per_peer_max)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method not in ("GET", "HEAD"):
            lines.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        async with slots:
            connection = self._take_idle(key) or await self._connect(host, port)
            self._busy.add(connection)
            reusable = False
            try:
                reply, reusable = await connection.exchange(request, reply_bytes_max)
            finally:
                self._busy.discard(connection)
                if reusable and not self._closed:
                    connection.idle_since = time.monotonic()
                    self._idle.setdefault(key, collections.deque()).append(connection)
                else:
                    connection.close()
        return reply

    def _take_idle(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # the most recently used: the likeliest to be warm
            if not connection.closed and now - connection.idle_since < self.idle_s_max:
                return connection
            connection.close()
        return None

    async def _connect(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_Connection, host, port)
        self.connections_opened += 1
        return protocol

    async def close(self) -> None:
        """Close every connection; later requests fail."""
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        for connection in list(self._busy):
            connection.close()

    def stats(self) -> dict[str, Any]:
        """Connections opened so far and idle now (for tests and status pages)."""
        return {
            "opened": self.connections_opened,
            "idle": sum(len(idle) for idle in self._idle.values()),
        }
