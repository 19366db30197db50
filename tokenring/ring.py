"""The ``Ring``: the asyncio face of one ring member, for any aiohttp program.

A :class:`Ring` owns a pure core member (``tokenring.core.Member``) and the
:class:`~tokenring.transport.Transport` that drives it, and turns the core's ``Grant`` and
``Revoke`` into something an application can use:

- ``async with ring.holding() as fence:`` waits until this member holds the token and runs the
  block while it is held. Blocks of one process run one at a time, so the block is mutually
  exclusive with every other block in the whole ring. The ``fence`` names the visit; work that
  other members check (a cross-bank prepare) carries it, and a member refuses a fence below
  the highest it has seen (:meth:`Ring.admit`, ``POST /ring/fence``).
- ``on_token(fence, deadline)`` is awaited each time the token arrives, with ``deadline`` in
  the event loop's clock (``loop.time()``; use ``asyncio.timeout_at(deadline)``).

**At the deadline** (``hold_max_ms`` after the token arrived) the core takes the token away and
hands it on whether or not the block has finished. Python cannot safely interrupt arbitrary
code, so the block is not cancelled: it goes on running, but from that moment it no longer has
the ring's exclusion, and ``ring.holds(fence)`` turns false. Anything that matters must be
fenced: a peer that has seen a newer fence refuses the old one. Keep blocks well inside the
deadline; a block that overran is logged (``ring.hold_overrun``).

**Release.** When a block or the callback used the visit, the token is released (handed on
early) as soon as the callback and every block of the visit are done. A visit nobody used is
kept until the deadline: that paces an idle ring at one hand-off per ``hold_max_ms`` instead of
letting it spin as fast as HTTP allows. ``on_token`` may return ``False`` to say "nothing to
do"; the visit then counts as unused.

**Demand.** A member with work waiting (a ``holding()`` block, or :meth:`Ring.want` from an
``on_token`` application) while the token is elsewhere announces it to every other member
with a signed ``POST /ring/demand`` ``{"after": fence | null}`` (``after`` is the fence of its
last visit), only while the work waits: once after each of its visits, and again at most
once per idle rotation, ``(n - 1) * hold_max_ms``, while no visit comes (a demand may be
lost). A member holding a visit it does not use releases it at once (and the core hands it
on without its ``idle_hold_ms``) while a demand it heard is newer than the demanding
member's last visit, so the token comes to the work at the pace of the hand-off, not of the
deadline. "Newer" is decided here, with no
clock shared between members: within one generation a member's visits are ``n`` apart in
``seq`` (``docs/protocol.md``, rule 1), so a demand ``after`` fence ``A`` is met once a visit
at ``A.seq + n`` or later exists; with no such comparison (no ``after``, another generation)
a demand lasts until this member's second visit after hearing it, because the token has gone
once round the ring between the two. An idle ring hears no demand and keeps its pace.

The ring runs standalone (``await ring.start()`` / ``await ring.stop()``, serving only the
``/ring/`` routes at the member's URL) or mounted into any aiohttp application
(``ring.mount(app)``: the routes, the signature middleware for them and a ``cleanup_ctx`` that
starts the member when the application starts and leaves the ring when it stops). This module
never imports ``bank``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from typing import Any

import attrs
import structlog
from aiohttp import web

from tokenring import core, jsonio
from tokenring.agreement import ConfigAgreement
from tokenring.config import RingConfig
from tokenring.metrics import RingMetrics
from tokenring.peers import IDLE_S_MAX, PeerClient
from tokenring.serving import answer_unreadable_requests_in_json, bind
from tokenring.signing import (
    HEADER_NONCE,
    SIGNED_SENDER,
    SignedClient,
    Verifier,
    error_body,
    sign_reply,
    signature_middleware,
    wall_clock_ms,
)
from tokenring.transport import (
    RING_DEMAND_PATH,
    RING_MESSAGE_PATH,
    SEND_TIMEOUT_MS_DEFAULT,
    SENDS_IN_FLIGHT_MAX,
    Transport,
    monotonic_ms,
)

__all__ = [
    "CONNECTIONS_MAX",
    "Demand",
    "HOLDS_KEPT_MAX",
    "LEAVE_TIMEOUT_S",
    "Hold",
    "OnToken",
    "Ring",
    "RingClosed",
]

OnToken = Callable[[core.Fence, float], Awaitable[bool | None]]
"""``async def on_token(fence, deadline) -> bool | None``; ``False`` means "nothing to do"."""

LEAVE_TIMEOUT_S = 2.0
"""How long a graceful leave waits for the successor to acknowledge the token."""
HOLDS_KEPT_MAX = 256
"""How many past visits :meth:`Ring.holds_recent` remembers."""
CONNECTIONS_MAX = 32
"""Connections this member keeps open to each other member at most (its PeerClient)."""
LEAVE_POLL_S = 0.01
"""While leaving without the token, how often to look whether the last sends have ended."""
KEEPALIVE_TIMEOUT_S = 2 * IDLE_S_MAX
"""How long a connection to a member running standalone (:meth:`Ring.start`) may stay without
a request (idle between requests, or before its first request's headers are complete) before
the member closes it: twice the time the other members' client
(``tokenring.peers.IDLE_S_MAX``) reuses an idle connection, so it never reuses one being
closed. aiohttp keeps one 3,630 s by default: anyone who opened connections and sent nothing
held each one, and a file descriptor, for an hour, and enough of them left the member unable to
take the token. (A member mounted on an application is served by that application's runner:
``bank.server`` uses this bound too.)"""


@attrs.frozen
class Demand:
    """What this member heard of another member's demand for the token."""

    after: core.Fence | None
    """The fence of the demanding member's last visit, as it said (``None``: it had none)."""
    heard_ms: int
    """When the demand arrived here, on this member's monotonic clock."""


class RingClosed(Exception):
    """The ring member has left or stopped (it will not hold the token again), or has not
    started yet."""



@attrs.frozen
class Hold:
    """One visit of the token to this member, as this member saw it."""

    fence: core.Fence
    """The fence of the visit."""
    from_ms: int
    """When the token arrived (``Grant``), on the ring's monotonic clock."""
    to_ms: int
    """When it was released or revoked, on the same clock."""
    released: bool
    """Whether the application released it early (else the deadline or a newer token ended it)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "fence": self.fence.to_dict(),
            "from_ms": self.from_ms,
            "to_ms": self.to_ms,
            "released": self.released,
        }


class Ring:
    """One member of a token ring (see the module's documentation)."""

    def __init__(
        self,
        config: RingConfig,
        member_id: str,
        *,
        secret: bytes,
        on_token: OnToken | None = None,
        metrics: RingMetrics | None = None,
        clock_ms: Callable[[], int] = monotonic_ms,
        send_timeout_ms: int = SEND_TIMEOUT_MS_DEFAULT,
        sends_in_flight_max: int = SENDS_IN_FLIGHT_MAX,
        connections_max: int = CONNECTIONS_MAX,
        holds_kept_max: int = HOLDS_KEPT_MAX,
        fence_floor: Callable[[], Awaitable[core.Fence | None]] | None = None,
    ) -> None:
        if not isinstance(secret, bytes) or not secret:
            raise ValueError("the ring needs its signing key: non-empty bytes (RingConfig.secret())")
        self.config = config
        self.member_id = member_id
        self.bank = config.bank(member_id)  # ConfigError when unknown
        self.peers = {b.id: b.url for b in config.banks if b.id != member_id}
        self.metrics = RingMetrics() if metrics is None else metrics
        # Messages must be signed for this member: one seen on its way to another member is
        # refused here (each member keeps only its own nonces).
        # A message stamped before this member was made is refused too: the nonces a member
        # took before it restarted are gone, and such a message may be one of them.
        self.verifier = Verifier(
            secret,
            members=frozenset(config.member_ids),
            receiver=member_id,
            receiver_url=self.bank.url,
            not_before_ms=wall_clock_ms(),
        )
        self.agreement = ConfigAgreement(
            config.digest, member_id=member_id, members=frozenset(self.peers)
        )
        """Whether the other members run with the same ring file (logged, and in status)."""
        self.metrics.members_config_differs.set_function(lambda: len(self.agreement.differing()))
        self._secret = secret
        self._on_token = on_token
        self._clock_ms = clock_ms
        self._send_timeout_ms = send_timeout_ms
        self._sends_in_flight_max = sends_in_flight_max
        self._connections_max = connections_max
        self._log = structlog.get_logger("tokenring.ring").bind(bank=member_id)

        self._peers: PeerClient | None = None
        self._client: SignedClient | None = None
        self._member: core.Member | None = None
        self._transport: Transport | None = None
        self._runner: web.AppRunner | None = None
        self._left = False
        self._closed = False

        # The current visit, if the token is here.
        self._grant: core.Fence | None = None
        self._grant_until_ms = 0
        self._grant_from_ms = 0
        self._used = False
        self._granted = asyncio.Event()
        self._lock = asyncio.Lock()
        self._active = 0
        self._waiting = 0
        self._callback_running = False
        self._releasing: core.Fence | None = None
        self._callbacks: set[asyncio.Task[None]] = set()
        self._handoff_acked = asyncio.Event()
        self._fence_admitted: core.Fence | None = None
        self._holds: collections.deque[Hold] = collections.deque(maxlen=holds_kept_max)
        self._fence_floor = fence_floor
        # The tasks in a holding() block now (one at a time, or none): a nested one of the
        # same task would wait for itself. A task started inside a block is another task.
        self._blocks: set[asyncio.Task[Any] | None] = set()
        # Demand: this member's own (announced once after each visit, then at most once per
        # idle rotation, only while work waits) and what it heard from the others (one entry
        # per member, so bounded).
        self._wanted = False
        self._grant_wanting: tuple[str, ...] = ()
        """Other members the token carried as wanting it to this visit."""
        self._want_rides: core.Fence | None = None
        """The visit whose Release put this member's own want on the token."""
        self._demand_sent_ms: int | None = None
        self._demand_sent_after: core.Fence | None = None
        self._demand_timer: asyncio.TimerHandle | None = None
        self._demands: dict[str, Demand] = {}

    def __repr__(self) -> str:
        return f"Ring(member_id={self.member_id!r}, members={list(self.config.member_ids)!r})"

    # --- the application's face -------------------------------------------------------------

    @property
    def on_token(self) -> OnToken | None:
        """The callback awaited at each visit; may be set until the token first arrives."""
        return self._on_token

    @on_token.setter
    def on_token(self, callback: OnToken | None) -> None:
        self._on_token = callback

    @property
    def client(self) -> SignedClient:
        """The signed HTTP client of this member (the bank's inter-bank calls reuse it)."""
        if self._client is None:
            raise RingClosed("the ring member has not started")
        return self._client

    def current_fence(self) -> core.Fence | None:
        """The fence of the visit in progress here, or ``None`` when the token is elsewhere."""
        return self._grant

    def holds(self, fence: core.Fence) -> bool:
        """Whether the visit under ``fence`` is still in progress here."""
        return self._grant is not None and self._grant == fence

    def remaining_ms(self, fence: core.Fence) -> int:
        """How long the visit under ``fence`` may still last here (0 once it is over): what a
        block has left before the deadline takes the token away."""
        if not self.holds(fence):
            return 0
        return max(0, self._grant_until_ms - self._clock_ms())

    def fence_seen(self) -> core.Fence | None:
        """The highest fence this member has seen, from the token or from :meth:`admit`."""
        seen = self._member.status.fence if self._member is not None else None
        admitted = self._fence_admitted
        if seen is None:
            return admitted
        if admitted is None:
            return seen
        return max(seen, admitted)

    def admit(self, fence: core.Fence) -> bool:
        """Accept work under ``fence`` unless a higher fence has been seen here.

        An accepted fence becomes the floor: later work under a lower fence is refused. This is
        the check a participant makes before it acts for another member's critical section.
        """
        seen = self.fence_seen()
        if seen is not None and fence < seen:
            self._log.info(
                "ring.fence_refused", refused=str(fence), seen=str(seen), **self._fields()
            )
            return False
        self._fence_admitted = fence
        return True

    def want(self) -> None:
        """Say that work waits for this member's next visit.

        The other members learn of it (see the module's documentation) and hand an unused
        visit on at once. Called during a visit (in a ``holding()`` block or ``on_token``), the
        want leaves with the token itself (``Token.wanting``), with no message to anyone;
        called between visits, it is posted to every member. Lasts until the token next
        arrives here. A ``holding()`` block waiting for the token needs no call: it is demand
        by itself.
        """
        self._wanted = True
        self._announce_demand()

    def demands_heard(self) -> dict[str, Demand]:
        """The last demand heard from each other member (met ones included, until replaced)."""
        return dict(self._demands)

    @contextlib.asynccontextmanager
    async def holding(
        self, *, timeout_s: float | None = None, min_remaining_ms: int = 0
    ) -> AsyncIterator[core.Fence]:
        """Wait for the token (at most ``timeout_s``; ``None`` waits on) and hold it for a block.

        ``min_remaining_ms``: start the block only while at least that much of the visit is
        left (:meth:`remaining_ms`), else wait for a later visit: a block that knows how long
        it takes need not start just before the deadline. At most ``hold_max_ms`` - 1.

        Raises ``TimeoutError`` when the token did not come in time, :class:`RingClosed` when
        this member has left or has not started, and ``RuntimeError`` when called inside a
        block of this ring in the same task (blocks of one member take turns: it would wait
        for itself). See the module's documentation for the deadline.
        """
        if not 0 <= min_remaining_ms < self.config.token.hold_max_ms:
            raise ValueError(
                f"min_remaining_ms must be from 0 to hold_max_ms - 1 ({self.config.token.hold_max_ms - 1})"
            )
        task = asyncio.current_task()
        if task in self._blocks:
            raise RuntimeError("holding() inside a holding() block of the same ring would wait for itself")
        if self._member is None and not (self._left or self._closed):
            raise RingClosed(f"{self.member_id} has not started: await ring.start(), or mount it on an app that runs")
        self._waiting += 1
        self._announce_demand()
        try:
            async with self._token_within(timeout_s):
                while True:
                    self._check_not_left()
                    await self._granted.wait()
                    await self._lock.acquire()
                    try:
                        self._check_not_left()  # it may have left while this waited for a block
                    except RingClosed:
                        self._lock.release()
                        raise
                    if self._grant is not None and self._clock_ms() + min_remaining_ms < self._grant_until_ms:
                        break
                    # The visit ended (or its time ran out) while this block waited for the
                    # one before it: wait for the next visit. When the time is out but the
                    # core has not revoked yet, sleep until it does rather than spin.
                    self._lock.release()
                    if self._grant is not None:
                        late_ms = self._grant_until_ms - self._clock_ms() + 1
                        await asyncio.sleep(max(late_ms, 1) / 1000)
        finally:
            self._waiting -= 1
        fence = self._grant
        assert fence is not None
        self._used = True
        self._active += 1
        self._blocks.add(task)
        try:
            yield fence
        finally:
            self._blocks.discard(task)
            self._active -= 1
            self._lock.release()
            if self._grant != fence:
                self._log.warning(
                    "ring.hold_overrun", overrun_fence=str(fence), **self._fields()
                )
            self._maybe_release()

    def _check_not_left(self) -> None:
        if self._left or self._closed:
            raise RingClosed(f"{self.member_id} has left the ring")

    @contextlib.asynccontextmanager
    async def _token_within(self, timeout_s: float | None) -> AsyncIterator[None]:
        """``asyncio.timeout(timeout_s)``, whose TimeoutError says what this member knows of
        why the token did not come."""
        try:
            async with asyncio.timeout(timeout_s):
                yield
        except TimeoutError:
            members = {} if self._member is None else self._member.status.members
            down = [member for member, state in members.items() if state != "up"]
            seen = self.fence_seen()
            raise TimeoutError(
                f"{self.member_id}: the token did not come within {timeout_s} s"
                f" (newest fence seen here: {seen if seen is not None else 'none'};"
                f" members down as seen here: {', '.join(down) if down else 'none'})"
            ) from None

    def status(self) -> dict[str, Any]:
        """The ``GET /ring/status`` document (the contract's fields first)."""
        if self._member is None:
            return {
                "bank": self.member_id,
                "holding": False,
                "generation": 0,
                "seq": 0,
                "successor": None,
                "members": {member_id: "down" for member_id in self.config.member_ids},
                "visits": 0,
                "issuer": None,
                "fence": None,
                "fence_seen": None,
                "started": False,
                "left": self._left,
                **self.agreement.status(),
            }
        status = self._member.status
        fence = status.fence
        seen = self.fence_seen()
        return {
            "bank": self.member_id,
            "holding": bool(status.holding),
            "generation": fence.epoch if fence is not None else 0,
            "seq": fence.seq if fence is not None else 0,
            "successor": status.successor,
            "members": dict(status.members),
            "visits": status.visits,
            "issuer": fence.issuer if fence is not None else None,
            "fence": fence.to_dict() if fence is not None else None,
            "fence_seen": seen.to_dict() if seen is not None else None,
            "started": True,
            "left": self._left,
            **self.agreement.status(),
        }

    def holds_recent(self) -> list[Hold]:
        """The last visits here, oldest first (bounded by ``holds_kept_max``)."""
        return list(self._holds)

    # --- life cycle -------------------------------------------------------------------------

    def mount(
        self, app: web.Application, *, signed_prefixes: Collection[str] = ("/ring/",)
    ) -> None:
        """Add the ring's routes, the signature middleware and the member's life cycle to ``app``.

        ``signed_prefixes`` are the paths the middleware guards (a bank adds
        ``/interbank/``); ``GET /ring/status`` stays readable without a key.
        """
        app.middlewares.append(
            signature_middleware(self.verifier, prefixes=signed_prefixes, agreement=self.agreement)
        )
        app.router.add_get("/ring/status", self._serve_status)
        app.router.add_post(RING_MESSAGE_PATH, self._serve_message)
        app.router.add_post("/ring/fence", self._serve_fence)
        app.router.add_get("/ring/holds", self._serve_holds)
        app.router.add_post(RING_DEMAND_PATH, self._serve_demand)
        app.cleanup_ctx.append(self._lifecycle)

    async def start(self, *, host: str | None = None, port: int | None = None) -> None:
        """Run standalone: serve the ``/ring/`` routes at this member's URL and take part.

        The address is taken first: OSError when it is not free (another copy of this member
        serves there), before the member has said anything to the others. A ``Ring`` takes
        part once: :class:`RingClosed` when it started or left before (make a new one)."""
        self._check_fresh()
        listening = bind(self.bank.host if host is None else host, self.bank.port if port is None else port)
        app = web.Application()
        self.mount(app)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT_S)
        try:
            await runner.setup()
            answer_unreadable_requests_in_json(runner)
            for sock in listening:
                await web.SockSite(runner, sock).start()
        except BaseException:
            for sock in listening:
                sock.close()
            await runner.cleanup()
            raise
        self._runner = runner

    def _check_fresh(self) -> None:
        if self._transport is not None or self._left or self._closed:
            raise RingClosed(f"{self.member_id}: a Ring takes part once (it started or left before): make a new Ring")

    async def stop(self) -> None:
        """Leave the ring (handing the token on) and stop serving."""
        await self.leave()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def leave(self, *, timeout_s: float = LEAVE_TIMEOUT_S) -> None:
        """Hand the token on if it is here and stop taking part; idempotent.

        Waits (at most ``timeout_s``) for the successor to acknowledge the token, so that the
        process can stop without the ring having to regenerate it. Blocks waiting in
        :meth:`holding` get :class:`RingClosed`.
        """
        if self._left or self._transport is None or self._member is None:
            self._left = True
            return
        self._left = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self._granted.set()  # wake waiting blocks so that they see the ring has been left
        if self._active and self._grant is not None:
            # A block (or on_token) runs in this visit: the token stays until it ends, or
            # until the visit's deadline, as it would without the leave; handed on at once,
            # the next member's block would run beside it.
            visit_left_s = max(self._grant_until_ms - self._clock_ms(), 0) / 1000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(visit_left_s, max(deadline - loop.time(), 0))):
                    async with self._lock:  # taken by the running block (waiting ones give up)
                        pass
        was_holding = bool(self._member.status.holding)
        self._handoff_acked.clear()
        self._transport.handle(core.Leave())
        if self._grant is not None:
            self._end_grant(self._grant, released=True)
        if was_holding:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._handoff_acked.wait()
        while loop.time() < deadline and self._transport.sends_in_flight:
            await self._transport.drain(timeout_s=min(LEAVE_POLL_S, deadline - loop.time()))
        self._log.info("ring.left", handed_on=was_holding, **self._fields())

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        await self._open()
        try:
            yield
        finally:
            await self._close()

    async def _open(self) -> None:
        self._check_fresh()  # mounted on a second application, or started after a leave
        # Keep-alive connections to the other members, at most connections_max to each.
        self._peers = PeerClient(connections_per_peer_max=self._connections_max)
        self._client = SignedClient(
            self._peers,
            self._secret,
            self.member_id,
            agreement=self.agreement,
            # Signed for the member by id: good through a proxy standing at its URL.
            receivers={url: member for member, url in self.peers.items()},
        )
        floor = None if self._fence_floor is None else await self._fence_floor()
        self._member = core.Member(
            self.member_id,
            list(self.config.member_ids),
            hold_max_ms=self.config.token.hold_max_ms,
            handoff_timeout_ms=self.config.token.handoff_timeout_ms,
            loss_timeout_ms=self.config.token.loss_timeout_ms,
            fence_floor=floor,
        )
        self._transport = Transport(
            self._member,
            member_id=self.member_id,
            peers=self.peers,
            client=self._client,
            on_actions=self._on_actions,
            metrics=self.metrics,
            clock_ms=self._clock_ms,
            send_timeout_ms=self._send_timeout_ms,
            sends_in_flight_max=self._sends_in_flight_max,
        )
        self._log.info("ring.started", members=list(self.config.member_ids), **self._fields())
        self._transport.start()

    async def _close(self) -> None:
        if self._closed:
            return
        await self.leave()
        self._closed = True
        self._granted.set()
        if self._demand_timer is not None:
            self._demand_timer.cancel()
            self._demand_timer = None
        if self._transport is not None:
            await self._transport.close()
        for task in list(self._callbacks):
            task.cancel()
        if self._callbacks:
            await asyncio.gather(*self._callbacks, return_exceptions=True)
        if self._peers is not None:
            await self._peers.close()

    # --- the core's actions -----------------------------------------------------------------

    def _on_actions(self, actions: Sequence[Any]) -> None:
        for action in actions:
            if isinstance(action, core.Grant):
                self._begin_grant(action.fence, action.until_ms, action.wanting)
            elif isinstance(action, core.Revoke):
                self._end_grant(action.fence, released=False)
            elif isinstance(action, core.HandoffAcked):
                if action.accepted:  # a refused one was no hand-off: no latency to count
                    self.metrics.handoff_latency_seconds.observe(action.latency_ms / 1000)
                self._handoff_acked.set()
                self._log.debug(
                    "ring.handoff_acked", to=action.to, latency_ms=action.latency_ms,
                    accepted=action.accepted, **self._fields(action.fence),
                )
            elif isinstance(action, core.ClaimStarted):
                self.metrics.claims_started.inc()
                self._log.info("ring.claim_started", epoch=action.epoch, **self._fields())
            elif isinstance(action, core.TokenMinted):
                self.metrics.claims_won.inc()
                self._log.info("ring.token_minted", **self._fields(action.fence))
            elif isinstance(action, core.TokenPurged):
                self.metrics.tokens_purged.labels(reason=action.reason).inc()
                if self._left:
                    # Leaving with no member up to take the token: nothing to wait for.
                    self._handoff_acked.set()
                self._log.info(
                    "ring.token_purged", reason=action.reason, **self._fields(action.fence)
                )
            elif isinstance(action, core.MemberDown):
                self.metrics.member_down_events.inc()
                self._count_down()
                self._log.info("ring.member_down", member=action.member_id, **self._fields())
            elif isinstance(action, core.MemberUp):
                self._count_down()
                self._log.info("ring.member_up", member=action.member_id, **self._fields())
            else:
                self._log.debug("ring.action", action=repr(action), **self._fields())

    def _begin_grant(
        self, fence: core.Fence, until_ms: int, wanting: Sequence[str] = ()
    ) -> None:
        if self._grant is not None:
            # The core gives one visit at a time; close the previous one all the same.
            self._end_grant(self._grant, released=False)
        now_ms = self._clock_ms()
        self._grant = fence
        self._grant_from_ms = now_ms
        self._grant_until_ms = until_ms
        self._used = False
        self._wanted = False
        self._grant_wanting = tuple(wanting)
        self.metrics.token_visits.inc()
        self._log.debug("ring.granted", until_ms=until_ms, **self._fields(fence))
        if self._left:
            return
        self._granted.set()
        if self._on_token is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + (until_ms - now_ms) / 1000
            self._callback_running = True
            task = loop.create_task(self._run_on_token(self._on_token, fence, deadline))
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)
            return
        if not self._waiting:
            # Nothing here wants this visit: hand it on now if another member waits for it.
            # (Deferred one loop turn: the core is still handing out this Grant.)
            asyncio.get_running_loop().call_soon(self._maybe_release)

    def _end_grant(self, fence: core.Fence, *, released: bool) -> None:
        if self._grant is None or self._grant != fence:
            return
        now_ms = self._clock_ms()
        released = released or self._releasing == fence
        self._grant = None
        self._granted.clear()
        held_ms = now_ms - self._grant_from_ms
        self.metrics.hold_seconds.observe(held_ms / 1000)
        self._holds.append(
            Hold(fence=fence, from_ms=self._grant_from_ms, to_ms=now_ms, released=released)
        )
        self._log.debug("ring.revoked", held_ms=held_ms, released=released, **self._fields(fence))
        if not self._has_work():
            return
        if self._want_rides == fence:
            # The token carries this member's want round the ring (Token.wanting): no message
            # to every member. Counted as announced after this visit; said again only if no
            # visit comes within the repeat interval (the token may be lost).
            self._demand_sent_ms = now_ms
            self._demand_sent_after = fence
            self._arm_demand_timer(self._demand_repeat_ms())
            return
        self._announce_demand()  # blocks still wait: ask for the next visit

    async def _run_on_token(self, on_token: OnToken, fence: core.Fence, deadline: float) -> None:
        try:
            async with self._lock:
                if self._grant != fence:
                    return
                self._active += 1
                try:
                    result = await on_token(fence, deadline)
                except Exception:
                    # The application's error must not stop the ring; it is its to fix.
                    self._log.exception("ring.on_token_failed", **self._fields(fence))
                    result = None
                finally:
                    self._active -= 1
                if result is not False:
                    self._used = True
        finally:
            self._callback_running = False
        self._maybe_release()

    def _maybe_release(self) -> None:
        fence = self._grant
        if fence is None or self._transport is None:
            return
        if self._active or self._waiting or self._callback_running:
            return
        wanted = self._demand_elsewhere(fence)
        if not self._used and not wanted:
            return  # an unused visit is kept to its deadline: that paces an idle ring
        # The core answers Release with Revoke, within this call; mark the visit released.
        # With a demand heard the token goes on at once (no idle_hold_ms): work waits for it.
        # Work still waiting here (Ring.want) rides on the token as this member's demand.
        again = self._has_work()
        self._want_rides = fence if again else None
        self._releasing = fence
        try:
            self._transport.handle(core.Release(fence, wanted=wanted, again=again))
            self._end_grant(fence, released=True)
        finally:
            self._releasing = None

    # --- demand for the token ---------------------------------------------------------------

    def _has_work(self) -> bool:
        return self._wanted or self._waiting > 0

    def _announce_demand(self) -> None:
        """Tell the others that work waits here: once after each visit, and again at most
        once per idle rotation, ``(n - 1) * hold_max_ms``, while no visit came (a demand may
        have been lost; sooner than that, an idle token comes here at its own pace)."""
        if self._transport is None or self._left or self._closed:
            return
        if self._grant is not None or not self._has_work():
            return  # the token is here, or nothing waits: nothing to ask for
        now_ms = self._clock_ms()
        interval_ms = self._demand_repeat_ms()
        after = self._holds[-1].fence if self._holds else None
        sent_ms = self._demand_sent_ms
        if (
            sent_ms is not None
            and after == self._demand_sent_after
            and now_ms - sent_ms < interval_ms
        ):
            self._arm_demand_timer(sent_ms + interval_ms - now_ms)
            return
        self._demand_sent_ms = now_ms
        self._demand_sent_after = after
        payload = {"after": after.to_dict() if after is not None else None}
        for peer in self.peers:
            self._transport.post(peer, RING_DEMAND_PATH, payload)
        self.metrics.demands_sent.inc(len(self.peers))
        self._log.debug("ring.demand_sent", after=str(after), **self._fields())
        # While the work still waits, say it again a visit-time later (a demand may be lost,
        # or met at the others by a visit that did not come here).
        self._arm_demand_timer(interval_ms)

    def _demand_repeat_ms(self) -> int:
        """How long a demand stands before it is said again: an idle rotation."""
        return self.config.token.hold_max_ms * max(1, len(self.config.member_ids) - 1)

    def _arm_demand_timer(self, delay_ms: int) -> None:
        if self._demand_timer is not None:
            return
        loop = asyncio.get_running_loop()
        self._demand_timer = loop.call_later(max(delay_ms, 1) / 1000, self._demand_timer_fired)

    def _demand_timer_fired(self) -> None:
        self._demand_timer = None
        self._announce_demand()

    def _demand_elsewhere(self, fence: core.Fence) -> bool:
        """Whether another member's demand is still unmet at this visit under ``fence``."""
        if self._grant_wanting:
            return True  # the token itself says who waits for it
        if not self._demands:
            return False
        ring_size = len(self.config.member_ids)
        # This member's previous visit: a demand heard before it started has seen the token
        # go once round since (that visit, then this one).
        previous_from_ms = self._holds[-1].from_ms if self._holds else None
        for demand in self._demands.values():
            after = demand.after
            if after is not None and (after.epoch, after.issuer) == (fence.epoch, fence.issuer):
                if fence.seq < after.seq + ring_size:
                    return True  # the demanding member has had no visit since ``after``
            elif previous_from_ms is None or demand.heard_ms >= previous_from_ms:
                return True
        return False

    def _count_down(self) -> None:
        if self._member is not None:
            members = self._member.status.members
            self.metrics.members_down.set(sum(1 for v in members.values() if v == "down"))

    def _fields(self, fence: core.Fence | None = None) -> dict[str, Any]:
        if fence is None:
            fence = self._member.status.fence if self._member is not None else None
        if fence is None:
            return {"generation": 0, "seq": 0}
        return {"generation": fence.epoch, "seq": fence.seq, "issuer": fence.issuer}

    # --- the /ring/ routes ------------------------------------------------------------------

    async def _serve_status(self, request: web.Request) -> web.Response:
        return jsonio.response(self.status())

    async def _serve_message(self, request: web.Request) -> web.Response:
        if self._transport is None or self._closed:
            return jsonio.response(
                error_body("unavailable", "this member is not running"), status=503
            )
        try:
            payload = jsonio.loads(await request.read())
            message = core.decode_message(payload)
        except ValueError as error:
            return jsonio.response(
                error_body("bad_message", f"malformed ring message: {error}"), status=400
            )
        sender = request[SIGNED_SENDER]
        if getattr(message, "sender", sender) != sender:
            return jsonio.response(
                error_body("unauthorized", "message sender differs from the signed sender"),
                status=401,
            )
        replies = self._transport.receive(message, reply=True)
        raw = jsonio.dumps({"accepted": True, "messages": replies})
        headers = sign_reply(
            self._secret,
            responder=self.member_id,
            request_nonce=request.headers[HEADER_NONCE],
            body=raw,
        )
        return web.Response(
            body=raw, status=202, content_type="application/json", headers=headers
        )

    async def _serve_fence(self, request: web.Request) -> web.Response:
        try:
            payload = jsonio.loads(await request.read())
            fence = core.Fence.from_dict(payload["fence"])
        except (ValueError, KeyError, TypeError) as error:
            return jsonio.response(
                error_body("bad_request", f"expected {{\"fence\": {{...}}}}: {error}"),
                status=400,
            )
        if not self.admit(fence):
            seen = self.fence_seen()
            return jsonio.response(
                {
                    "error": {
                        "code": "stale_fence",
                        "message": f"fence {fence} is below {seen}, already seen here",
                    },
                    "fence_seen": seen.to_dict() if seen is not None else None,
                },
                status=409,
            )
        seen = self.fence_seen()
        return jsonio.response(
            {"accepted": True, "fence_seen": seen.to_dict() if seen is not None else None}
        )

    async def _serve_demand(self, request: web.Request) -> web.Response:
        sender = request[SIGNED_SENDER]
        if sender not in self.peers:
            return jsonio.response(
                error_body("bad_request", "a member does not send demand to itself"), status=400
            )
        try:
            payload = jsonio.loads(await request.read())
            raw = payload["after"]
            after = None if raw is None else core.Fence.from_dict(raw)
        except (ValueError, KeyError, TypeError) as error:
            return jsonio.response(
                error_body("bad_request", f"expected {{\"after\": fence | null}}: {error}"),
                status=400,
            )
        self._demands[sender] = Demand(after=after, heard_ms=self._clock_ms())
        self._log.debug("ring.demand_heard", member=sender, after=str(after), **self._fields())
        self._maybe_release()
        return jsonio.response({"accepted": True}, status=202)

    async def _serve_holds(self, request: web.Request) -> web.Response:
        return jsonio.response(
            {"bank": self.member_id, "holds": [h.to_dict() for h in self._holds]}
        )
