"""A bank's aiohttp application and the loop that serves it until told to stop.

:func:`build_app` makes the application every bank process serves: the ring member mounted
(``/ring/...``; every path under ``/ring/`` and ``/interbank/`` must be signed except
``GET /ring/status``), ``GET /healthz`` and ``GET /metrics``. The client API and the web
terminal are added at the one marked place. :func:`serve` runs it on the bank's address and,
on SIGTERM or SIGINT, leaves the ring (handing the token on) while the server still answers,
and only then stops serving. It takes the address before the application starts: a bank that
cannot have it (another process serves there) opens no database and sends no message.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Callable
from typing import cast

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bank.keys import BANK_ID, CONFIG, LEDGER, RING
from bank.ledger import Ledger
from bank.metrics import BankCollector
from bank.transfers.protocol import MESSAGE_BYTES_MAX
from bank.transfers.store import stored_fence
from tokenring import jsonio
from tokenring.config import RingConfig
from tokenring.ring import KEEPALIVE_TIMEOUT_S as RING_KEEPALIVE_TIMEOUT_S
from tokenring.ring import Ring
from tokenring.serving import answer_unreadable_requests_in_json, bind
from tokenring.signing import SIGNED_PREFIXES

__all__ = [
    "GC_YOUNG_THRESHOLD",
    "KEEPALIVE_TIMEOUT_S",
    "PARENT_POLL_S",
    "SHUTDOWN_TIMEOUT_S",
    "build_app",
    "serve",
    "tune_gc",
    "unavailable_addresses",
]

SHUTDOWN_TIMEOUT_S = 3.0
"""How long open requests may take to finish once the bank stops serving."""
KEEPALIVE_TIMEOUT_S = RING_KEEPALIVE_TIMEOUT_S
"""How long a connection may stay without a request before the bank closes it: the ring's
bound for its members (``tokenring.ring.KEEPALIVE_TIMEOUT_S``, which says why), for the
client API and the other banks' requests alike."""
PARENT_POLL_S = 1.0
"""How often a bank started by ``consortium up`` (or a scenario, or a test) looks whether its
parent is still there."""

GC_YOUNG_THRESHOLD = 20_000
"""CPython collects its youngest generation of objects once this many more container objects
were made than freed (its default is 700). A round of transfers keeps a few thousand alive
at once (messages, protocol items, futures, requests), so under load the default collected
many times a second and, through the older generations, scanned the whole heap: 12-15 % of a
terminal bank's event-loop CPU (``py-spy record --native``: ``gc_collect_main``). Reference
counting frees nearly everything; the collector is only for cycles, and these wait longer."""

log = structlog.get_logger("bank.server")


def tune_gc() -> None:
    """Make the garbage collector fit a bank that has started: what start-up made (modules,
    the application, its caches) is frozen out of every later collection (``gc.freeze``),
    and the youngest generation is collected at :data:`GC_YOUNG_THRESHOLD`."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def build_app(config: RingConfig, bank_id: str, *, secret: bytes) -> web.Application:
    """The application of bank ``bank_id``; the ring member starts when the app starts."""
    config.bank(bank_id)  # ConfigError when the id is not in the file
    # The largest body read whole: an inter-bank message. The client API reads its bodies
    # under its own, smaller bound (bank.api.BODY_BYTES_MAX).
    app = web.Application(client_max_size=MESSAGE_BYTES_MAX)
    app[CONFIG] = config
    app[BANK_ID] = bank_id
    # The ring member starts above the fence this bank last accepted (read from the ledger,
    # which opens first): after the whole ring restarts, its tokens are not below it.
    ring = Ring(config, bank_id, secret=secret, fence_floor=lambda: stored_fence(cast(Ledger, app[LEDGER])))
    app[RING] = ring
    # One signature middleware guards both the ring's messages and the inter-bank API.
    ring.mount(app, signed_prefixes=SIGNED_PREFIXES)
    ring.metrics.registry.register(BankCollector(app))
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)

    # ---- Integration point: the bank's own parts install themselves here (issues 4-6). ----
    #   bank.api.install(app)   the client API under /api/v1/ and the inter-bank API under
    #                           /interbank/ (already signed by the middleware above; the
    #                           verified sender is request[tokenring.signing.SIGNED_SENDER])
    #   bank.web.install(app)   the web terminal at /
    # The ring is app[RING]: ring.on_token, ring.holding(), ring.admit(fence), ring.client.
    # ---------------------------------------------------------------------------------------
    from bank import api, interbank
    from bank import web as terminal

    api.install(app)  # opens the ledger: before the transfers, which run on it
    interbank.install(app)  # /interbank/ routes, the consortium audit, the ring's on_token
    terminal.install(app)
    return app


async def _healthz(request: web.Request) -> web.Response:
    # The pid tells the process that started this bank whether its own child answers.
    ledger = cast("Ledger | None", request.app.get(LEDGER))
    if ledger is not None and not ledger.writing:
        # Serving, but unable to write anything: not healthy (a supervisor should restart it).
        return jsonio.response(
            {"status": "unhealthy", "bank": request.app[BANK_ID], "pid": os.getpid(), "reason": "the ledger's writer stopped"},
            status=503,
        )
    return jsonio.response({"status": "ok", "bank": request.app[BANK_ID], "pid": os.getpid()})


async def _metrics(request: web.Request) -> web.Response:
    ring = request.app[RING]
    return web.Response(body=ring.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    stop: asyncio.Event | None = None,
    parent_pid: int | None = None,
    shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` until SIGTERM, SIGINT, ``stop`` or the parent's exit.

    ``parent_pid``: stop when this process is no longer our parent (the ``consortium up``
    that started us has gone), so that no bank outlives the command that started it.
    """
    stop = asyncio.Event() if stop is None else stop
    loop = asyncio.get_running_loop()
    # First the address (OSError when it is taken), then the application's start: its ledger,
    # its ring member and its transfers. A second process of the same bank must not touch the
    # database or speak for the bank before finding out that it cannot serve.
    listening = bind(host, port)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=shutdown_timeout_s, keepalive_timeout=KEEPALIVE_TIMEOUT_S
    )
    try:
        await runner.setup()
    except BaseException:
        for sock in listening:
            sock.close()
        raise
    answer_unreadable_requests_in_json(runner)
    watcher: asyncio.Task[None] | None = None
    try:
        for sock in listening:
            await web.SockSite(runner, sock).start()
        log.info(
            "bank.serving",
            bank=app[BANK_ID],
            url=f"http://{host}:{port}",
            pid=os.getpid(),
            loop=type(loop).__module__.split(".")[0],
        )
        if on_ready is not None:
            on_ready()
        if parent_pid is not None:
            watcher = loop.create_task(watch_parent(parent_pid, stop))
        await stop.wait()
        log.info("bank.stopping", bank=app[BANK_ID])
        # Leave while the server still answers, so the successor's acknowledgement arrives.
        ring = app[RING]
        await ring.leave()
    finally:
        if watcher is not None:
            watcher.cancel()
        # A second SIGTERM or Ctrl-C during the shutdown must not cut it short: the handlers
        # stay (setting an event already set); whoever insists sends SIGKILL.
        await runner.cleanup()
        log.info("bank.stopped", bank=app[BANK_ID])


def unavailable_addresses(config: RingConfig) -> dict[str, OSError]:
    """Each bank of ``config`` whose address this machine cannot serve right now, with why
    (another process serves there, or the address is not this machine's): bound as the
    bank would bind it, then let go at once. ``consortium up`` asks before it starts a bank
    or opens a log, so that over a ring already running it touches nothing of that ring."""
    unavailable: dict[str, OSError] = {}
    for bank in config.banks:
        try:
            for sock in bind(bank.host, bank.port):
                sock.close()
        except OSError as error:
            unavailable[bank.id] = error
    return unavailable


async def watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    """Set ``stop`` once this process is no longer ``parent_pid``'s child (its parent has
    gone), looking every ``PARENT_POLL_S``; return then, or once ``stop`` is set otherwise."""
    while not stop.is_set():
        if os.getppid() != parent_pid:
            log.warning("bank.parent_gone", parent_pid=parent_pid)
            stop.set()
            return
        await asyncio.sleep(PARENT_POLL_S)
