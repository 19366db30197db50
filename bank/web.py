"""The web terminal every bank serves: the customer page at ``/`` and a live feed of the ring.

Place in the design: the outermost layer of a bank, beside the client API. The page (plain
HTML, CSS and JavaScript in ``bank/static``, no build step, nothing fetched from elsewhere)
talks only to the client API of CONTRACT.md on the bank that served it. This module adds
three things to a bank's aiohttp application:

- ``GET /``: the page, with the consortium's members (id and name) and this bank's id
  embedded as JSON so that the page knows where it is before its first request;
- ``GET /static/{file}``: the page's files, with explicit content types;
- ``GET /api/v1/ring/events``: server-sent events describing the ring as it moves.

One bank only knows whether *it* holds the token, so the feed learns the holder by polling
every member's public ``GET /ring/status`` (and this bank's own ring object directly). The
member whose status carries the highest (generation, seq) is the last one the token reached:
it holds the token or has just passed it on. One :class:`RingFeed` per application does the
polling for all listeners; it starts with the first listener and stops with the last one.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import structlog
from aiohttp import web

from bank import keys
from tokenring import jsonio

__all__ = [
    "FEED",
    "FEED_CLIENTS_MAX",
    "FEED_DISCONNECT_CHECK_MS",
    "FEED_KEEPALIVE_MS",
    "FEED_QUEUE_EVENTS_MAX",
    "FEED_STREAM_MS_MAX",
    "POLL_INTERVAL_MS",
    "POLL_TIMEOUT_MS",
    "STATIC_DIR",
    "MemberView",
    "RingFeed",
    "install",
    "summarize",
]

log = structlog.get_logger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
"""The page's files; served as they are."""

POLL_INTERVAL_MS = 150
"""How often each member's ``/ring/status`` is read while someone watches."""
POLL_TIMEOUT_MS = 400
"""The longest one status read may take; a paused bank must not stall the picture."""
MEMBER_STALE_MS = 1_000
"""A member with no good answer for this long is drawn as not answering."""
FEED_CLIENTS_MAX = 64
"""Listeners one bank serves at once; the next one is answered 503."""
FEED_QUEUE_EVENTS_MAX = 4
"""Events waiting for one slow listener; the oldest is dropped, the newest always kept."""
FEED_KEEPALIVE_MS = 5_000
"""Silence after which a comment line is sent, so proxies and dead peers are noticed."""
FEED_STREAM_MS_MAX = 600_000
"""The longest one stream lasts; the browser's EventSource reconnects by itself."""
FEED_DISCONNECT_CHECK_MS = 1_000
"""How often an idle stream looks whether its listener has gone, to stop polling soon."""
FEED_RETRY_MS = 1_000
"""How long the browser waits before reconnecting a closed stream (the SSE ``retry:``)."""
PAGE_BANKS_MAX = 64
"""Members the page is told about; the ring itself refuses more (config.MEMBERS_MAX)."""

CONTENT_TYPES: Mapping[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}
"""Explicit types, because the system's mimetypes table differs between machines."""

# The page loads its scripts and styles only from this bank and calls only this bank's API.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_CONSORTIUM_PLACEHOLDER = "{{CONSORTIUM_JSON}}"

StatusSource = Callable[[], "Mapping[str, Any] | Awaitable[Mapping[str, Any]] | None"]
"""Gives this bank's ring status directly; ``None`` means "ask over HTTP like the others"."""


@attrs.define
class MemberView:
    """What the feed last learnt about one member of the ring."""

    id: str
    name: str
    url: str
    status: dict[str, Any] | None = None
    """The last ``/ring/status`` document it answered, or ``None`` before the first."""
    answered_ms: float | None = None
    """Monotonic time of the last good answer."""
    failed: bool = False
    """Whether the latest read failed (refused, timed out, or not a status document)."""


def _as_int(value: Any) -> int | None:
    """An integer field of a status document, or ``None`` when absent or of another type."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def summarize(
    views: list[MemberView],
    *,
    self_id: str,
    now_ms: float,
    previous_generation: int | None,
    member_stale_ms: int = MEMBER_STALE_MS,
) -> dict[str, Any]:
    """The event the page draws, from the members' latest answers. Pure: no I/O, no clock.

    Only the newest generation any member reports counts. The holder is the member that says
    it holds that generation's token; when none does (the token is in flight, or was held
    between two reads), it is the member that saw the highest fence, and ``holder_confirmed``
    is false. A newer generation than ``previous_generation`` sets
    ``minted``: a claim produced a new token; ``issuer`` names the member that minted the
    holder's token when the members say so.
    """
    banks: list[dict[str, Any]] = []
    candidates: list[tuple[int, int, bool, str, str | None]] = []
    ring_view: Mapping[str, Any] = {}
    own_config = next((v.status.get("config") for v in views if v.id == self_id and v.status), None)
    for view in views:
        status = view.status or {}
        fresh = (
            view.answered_ms is not None
            and not view.failed
            and now_ms - view.answered_ms <= member_stale_ms
        )
        generation = _as_int(status.get("generation"))
        seq = _as_int(status.get("seq"))
        holding = fresh and status.get("holding") is True
        successor = status.get("successor")
        if view.id == self_id and isinstance(status.get("members"), Mapping):
            ring_view = status["members"]
        config = status.get("config")
        # Whether it runs with this bank's ring file; None when either cannot say.
        same_file = config == own_config if fresh and isinstance(config, str) and isinstance(own_config, str) else None
        banks.append(
            {
                "id": view.id,
                "name": view.name,
                "answering": fresh,
                "holding": holding,
                "generation": generation,
                "seq": seq,
                "visits": _as_int(status.get("visits")),
                "same_ring_file": same_file,
            }
        )
        if fresh and generation is not None and seq is not None:
            named = successor if isinstance(successor, str) else None
            candidates.append((generation, seq, holding, view.id, named))

    issuers = {
        view.id: view.status.get("issuer")
        for view in views
        if view.status is not None and isinstance(view.status.get("issuer"), str)
    }
    holder: str | None = None
    confirmed = False
    generation_top: int | None = None
    seq_top: int | None = None
    if candidates:
        # Only the newest generation counts: a paused old holder may still say "holding"
        # about a token the others have already replaced.
        newest = max(c[0] for c in candidates)
        current = [c for c in candidates if c[0] == newest]
        pool = [c for c in current if c[2]] or current
        best = max((c[0], c[1]) for c in pool)
        tied = [c for c in pool if (c[0], c[1]) == best]
        # Two members may report the same fence around a hand-off (the sender and the
        # receiver of one token); the receiver is the sender's successor, so it is newer.
        successors = {c[4] for c in tied if c[4] != c[3]}
        chosen = [c for c in tied if c[3] in successors] or tied
        pick = sorted(chosen, key=lambda c: c[3])[0]
        holder, confirmed = pick[3], pick[2]
        generation_top, seq_top = best

    members: dict[str, str] = {}
    for bank in banks:
        said = ring_view.get(bank["id"])
        down = not bank["answering"] or said == "down"
        members[bank["id"]] = "down" if down else "up"

    minted = (
        previous_generation is not None
        and generation_top is not None
        and generation_top > previous_generation
    )
    return {
        "bank": self_id,
        "holder": holder,
        "holder_confirmed": confirmed,
        "generation": generation_top,
        "seq": seq_top,
        "issuer": issuers.get(holder) if holder is not None else None,
        "minted": minted,
        "members": members,
        "banks": banks,
    }


@attrs.define
class RingFeed:
    """The one poller of an application, shared by every listener of the ring's events."""

    views: list[MemberView]
    """Every configured member, in ring order."""
    self_id: str
    local_status: StatusSource | None = None
    """This bank's ring ``status()``; when absent, this bank is polled over HTTP like the rest."""
    poll_interval_ms: int = POLL_INTERVAL_MS
    poll_timeout_ms: int = POLL_TIMEOUT_MS
    queue_events_max: int = FEED_QUEUE_EVENTS_MAX
    clients_max: int = FEED_CLIENTS_MAX
    listeners: set[asyncio.Queue[dict[str, Any] | None]] = attrs.Factory(set)
    latest: dict[str, Any] | None = None
    """The last event sent, given at once to a listener that joins."""
    generation_seen: int | None = None
    """The highest generation seen while running; a higher one is a minted token."""
    polls: int = 0
    """Status reads done since creation (observable in tests and logs)."""
    starts: int = 0
    """How many times polling started: once per period with at least one listener."""
    _session: aiohttp.ClientSession | None = None
    _tasks: list[asyncio.Task[None]] = attrs.Factory(list)
    _lock: asyncio.Lock = attrs.Factory(asyncio.Lock)
    _closed: bool = False

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    async def subscribe(self) -> asyncio.Queue[dict[str, Any] | None] | None:
        """A queue of events for one listener, or ``None`` when ``clients_max`` listen already
        or the application is shutting down. Starts the polling for the first listener."""
        async with self._lock:
            if self._closed or len(self.listeners) >= self.clients_max:
                return None
            queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(self.queue_events_max)
            self.listeners.add(queue)
            if not self.running:
                self._start()
            elif self.latest is not None:
                queue.put_nowait(self.latest)
            return queue

    async def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        """Forget one listener; stops the polling when it was the last."""
        async with self._lock:
            self.listeners.discard(queue)
            if not self.listeners and self.running:
                await self._stop()

    async def close(self) -> None:
        """End every stream and stop polling (application shutdown)."""
        async with self._lock:
            self._closed = True
            for queue in self.listeners:
                _offer(queue, None)
            await self._stop()

    def _start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.poll_timeout_ms / 1000)
        self._session = aiohttp.ClientSession(timeout=timeout)
        self.generation_seen = None
        self.latest = None
        # The tasks outlive the request that started them: they get a fresh context, so
        # that their log lines do not carry that first listener's request id.
        for view in self.views:
            view.status, view.answered_ms, view.failed = None, None, False
            self._tasks.append(
                asyncio.create_task(self._poll_member(view), context=contextvars.Context())
            )
        self._tasks.append(asyncio.create_task(self._publish(), context=contextvars.Context()))
        self.starts += 1
        log.info("ring feed started", members=len(self.views), bank=self.self_id)

    async def _stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        # Their endings are collected, not raised; a cancellation of this caller still is
        # (a suppress around each await would swallow that one too).
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if tasks:
            log.info("ring feed stopped", polls=self.polls, bank=self.self_id)

    async def _read_status(self, view: MemberView) -> dict[str, Any] | None:
        if view.id == self.self_id and self.local_status is not None:
            answer = self.local_status()
            if inspect.isawaitable(answer):
                answer = await answer
            if answer is not None:
                return dict(answer) if isinstance(answer, Mapping) else None
        assert self._session is not None
        async with self._session.get(f"{view.url}/ring/status") as response:
            if response.status != 200:
                return None
            document = await response.json(content_type=None)
            return document if isinstance(document, dict) else None

    async def _poll_member(self, view: MemberView) -> None:
        interval_s = self.poll_interval_ms / 1000
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                # asyncio.timeout, not wait_for: on Python 3.11, wait_for swallows a
                # cancellation that comes as its awaitable finishes (the read of this bank's
                # own status finishes at once), and the feed's stop then waited forever.
                async with asyncio.timeout(self.poll_timeout_ms / 1000):
                    status = await self._read_status(view)
            except (aiohttp.ClientError, TimeoutError, ValueError, OSError):
                # A member that is down, paused or answering garbage is an operating
                # condition the picture shows, not an error of this bank.
                status = None
            self.polls += 1
            if status is None:
                view.failed = True
            else:
                view.status, view.answered_ms, view.failed = status, loop.time() * 1000, False
            await asyncio.sleep(max(0.0, interval_s - (loop.time() - started)))

    async def _publish(self) -> None:
        interval_s = self.poll_interval_ms / 1000
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval_s)
            event = summarize(
                self.views,
                self_id=self.self_id,
                now_ms=loop.time() * 1000,
                previous_generation=self.generation_seen,
            )
            if event["generation"] is not None:
                if event["minted"]:
                    log.info("ring feed saw a new generation", generation=event["generation"])
                self.generation_seen = max(event["generation"], self.generation_seen or 0)
            if _same_picture(event, self.latest) and not event["minted"]:
                continue
            event["time_ms"] = int(time.time() * 1000)
            self.latest = event
            for queue in self.listeners:
                _offer(queue, event)


def _same_picture(event: dict[str, Any], latest: dict[str, Any] | None) -> bool:
    if latest is None:
        return False
    fields = ("holder", "holder_confirmed", "generation", "seq", "issuer", "members", "banks")
    return all(event[field] == latest[field] for field in fields)


def _offer(queue: asyncio.Queue[dict[str, Any] | None], event: dict[str, Any] | None) -> None:
    """Queue ``event``, dropping the oldest waiting one when the listener is behind."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(event)


FEED = web.AppKey("web_ring_feed", RingFeed)
"""The application's one :class:`RingFeed`."""
_PAGE_TEMPLATE = web.AppKey("web_page_template", str)
"""``index.html``, read once at install so that no request reads the disk for it."""
_STATIC_FILES = web.AppKey("web_static_files", dict)
"""The files under ``/static/`` by name (:func:`_static_files`), listed once at install."""


def _error(status: int, code: str, message: str) -> web.Response:
    return jsonio.response({"error": {"code": code, "message": message}}, status=status)


def _consortium_document(app: web.Application) -> dict[str, Any]:
    config = app.get(keys.CONFIG)
    bank_id = app.get(keys.BANK_ID)
    banks = [] if config is None else config.banks[:PAGE_BANKS_MAX]
    return {
        "name": None if config is None else config.name,
        "bank": bank_id,
        "banks": [{"id": bank.id, "name": bank.name} for bank in banks],
    }


async def _page(request: web.Request) -> web.Response:
    template = request.app[_PAGE_TEMPLATE]
    document = json.dumps(_consortium_document(request.app), ensure_ascii=False)
    # Inside <script type="application/json"> only "</" could end the element early.
    body = template.replace(_CONSORTIUM_PLACEHOLDER, document.replace("</", "<\\/"))
    return web.Response(
        text=body,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def _static_files() -> dict[str, Path]:
    """The files ``/static/`` serves, by name under :data:`STATIC_DIR` (the page's template
    is served at ``/`` only). A request's name is looked up here and never reaches the file
    system: no ``..``, NUL byte or name too long for the system can go wrong."""
    root = STATIC_DIR.resolve()
    return {
        path.relative_to(root).as_posix(): path
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix in CONTENT_TYPES and path.name != "index.html"
    }


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = request.app[_STATIC_FILES].get(name)
    if path is None:
        shown = name if len(name) <= 80 else name[:80] + "..."
        return _error(404, "not_found", f"no file {shown!r}")
    content_type = CONTENT_TYPES[path.suffix]
    return web.FileResponse(
        path,
        headers={
            "Content-Type": content_type,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def _ring_events(request: web.Request) -> web.StreamResponse:
    feed = request.app[FEED]
    queue = await feed.subscribe()
    if queue is None:
        return _error(503, "too_many_listeners", "too many ring views are open; try again soon")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FEED_STREAM_MS_MAX / 1000
    try:
        await response.prepare(request)
        await response.write(f"retry: {FEED_RETRY_MS}\n\n".encode())
        written = loop.time()
        while (remaining_s := deadline - loop.time()) > 0:
            # aiohttp does not cancel a handler whose client left; look at the transport.
            if request.transport is None or request.transport.is_closing():
                break
            try:
                async with asyncio.timeout(min(FEED_DISCONNECT_CHECK_MS / 1000, remaining_s)):
                    event = await queue.get()
            except TimeoutError:
                if loop.time() - written >= FEED_KEEPALIVE_MS / 1000:
                    await response.write(b": keepalive\n\n")
                    written = loop.time()
                continue
            if event is None:
                break
            data = json.dumps(event, separators=(",", ":"))
            await response.write(f"event: ring\ndata: {data}\n\n".encode())
            written = loop.time()
    except ConnectionResetError:
        pass  # the listener went away; aiohttp's reset error derives from this one
    finally:
        await feed.unsubscribe(queue)
    return response


def _make_feed(app: web.Application) -> RingFeed:
    config = app.get(keys.CONFIG)
    self_id = app.get(keys.BANK_ID) or ""
    views = (
        []
        if config is None
        else [MemberView(id=b.id, name=b.name, url=b.url) for b in config.banks]
    )

    def local_status() -> Mapping[str, Any] | Awaitable[Mapping[str, Any]] | None:
        # Looked up at each read: the ring may be put in the application after this feed.
        ring = app.get(keys.RING)
        status = getattr(ring, "status", None)
        return None if status is None else status()

    return RingFeed(views=views, self_id=self_id, local_status=local_status)


def install(app: web.Application) -> None:
    """Serve the web terminal on ``app``: ``/``, ``/static/...`` and the ring's events.

    Reads ``keys.CONFIG``, ``keys.BANK_ID`` and ``keys.RING`` from ``app`` when the
    application starts, so it may be called before they are set.
    """
    app[_PAGE_TEMPLATE] = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    app[_STATIC_FILES] = _static_files()
    assert _CONSORTIUM_PLACEHOLDER in app[_PAGE_TEMPLATE], "index.html lost its placeholder"
    app.router.add_get("/", _page, name="web_page")
    app.router.add_get("/static/{name:.+}", _static, name="web_static")
    app.router.add_get("/api/v1/ring/events", _ring_events, name="web_ring_events")

    async def feed_context(app: web.Application) -> Any:
        app[FEED] = _make_feed(app)
        yield

    async def end_streams(app: web.Application) -> None:
        # On shutdown, end the open streams first: they would otherwise hold the server
        # for its whole shutdown timeout.
        if FEED in app:
            await app[FEED].close()

    app.cleanup_ctx.append(feed_context)
    app.on_shutdown.append(end_streams)
