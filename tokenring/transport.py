"""The transport: drives one pure core over HTTP, in the aioquic manner. It decides nothing.

Three kinds of input reach the core, each through :meth:`Transport.handle`: a message that
arrived (``POST /ring/message``, decoded into ``Received``), the one timer firing
(``TimerFired``), and what the application says (``Start``, ``Release``, ``Leave``). After
every input the transport carries out the core's actions and re-arms its single timer from
``next_deadline_ms()``. A ``Send`` becomes a signed ``POST {url}/ring/message`` whose body is
``encode_message(message)``, run as a fire-and-forget task with a bounded timeout; a failed or
refused send is simply lost, because the core's own timeouts (hand-off acknowledgement, loss)
already handle lost messages. Every other action is passed up, in order, to the owner (the
:class:`~tokenring.ring.Ring`), which serves the application.

The owner may also post a message of its own (the ``Ring``'s demand for the token,
``POST /ring/demand``) through :meth:`Transport.post`, under the same bounds: the same
timeout, the same count of sends in flight, the same counters.

One saving, with no decision in it: the messages the core sends back to the sender of the
message it is handling (the acknowledgement of a token, a vote) travel in the HTTP answer to
that message, signed for that very request, instead of in a request of their own. An idle
ring then costs one HTTP exchange per hand-off instead of two.

The core's ``now_ms`` is a monotonic clock in milliseconds: it never jumps with the wall clock.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import structlog

from tokenring import core
from tokenring.metrics import RingMetrics
from tokenring.signing import SKEW_MS_MAX, SendFailed, SignedClient, SignedReply

__all__ = [
    "EVENTS_QUEUED_MAX",
    "RING_DEMAND_PATH",
    "RING_MESSAGE_PATH",
    "SEND_TIMEOUT_MS_DEFAULT",
    "SENDS_IN_FLIGHT_MAX",
    "Transport",
    "monotonic_ms",
]

RING_MESSAGE_PATH = "/ring/message"
RING_DEMAND_PATH = "/ring/demand"
"""Where a member announces that it has work waiting for the token (see ``tokenring.ring``)."""
SEND_TIMEOUT_MS_DEFAULT = 1_000
"""How long one ring message may take to be answered before it counts as lost."""
SENDS_IN_FLIGHT_MAX = 64
"""The most ring messages on the wire at once; beyond it a send is dropped (and counted).

A healthy ring has one or two in flight; only a stopped peer that accepts connections but
never answers keeps sends open, each for at most the send timeout."""
REPLIES_MAX = 8
"""The most messages one answer carries back to the member whose message it answers."""
EVENTS_QUEUED_MAX = 1_000
"""Events handed in while the core is busy with another (re-entrant calls from the owner)."""
TIMER_SLACK_MS = 1
"""The timer fires this much after the deadline, so that the millisecond clock has reached it
even when the event loop wakes a little early."""


def monotonic_ms() -> int:
    """The core's clock: monotonic milliseconds."""
    return time.monotonic_ns() // 1_000_000


ActionSink = Callable[[Sequence[Any]], None]


class Transport:
    """One core member on the network.

    ``peers`` maps every other member's id to its base URL; ``on_actions`` receives every
    action that is not a ``Send``, in the order the core gave them.
    """

    def __init__(
        self,
        member: core.Member,
        *,
        member_id: str,
        peers: Mapping[str, str],
        client: SignedClient,
        on_actions: ActionSink,
        metrics: RingMetrics | None = None,
        clock_ms: Callable[[], int] = monotonic_ms,
        send_timeout_ms: int = SEND_TIMEOUT_MS_DEFAULT,
        sends_in_flight_max: int = SENDS_IN_FLIGHT_MAX,
        events_queued_max: int = EVENTS_QUEUED_MAX,
    ) -> None:
        assert member_id not in peers, "a member does not send to itself"
        assert send_timeout_ms > 0 and sends_in_flight_max > 0 and events_queued_max > 0
        self.member = member
        self.member_id = member_id
        self.peers = dict(peers)
        self.client = client
        self.metrics = RingMetrics() if metrics is None else metrics
        self._on_actions = on_actions
        self._clock_ms = clock_ms
        self._send_timeout_s = send_timeout_ms / 1000
        self._sends_in_flight_max = sends_in_flight_max
        self._events_queued_max = events_queued_max
        self._sends: set[asyncio.Task[None]] = set()
        self._signature_refused_by: set[str] = set()
        """Members that refused this one's signature since they last took a message from it."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline_ms: int | None = None
        self._handling = False
        self._queued: collections.deque[Any] = collections.deque()
        self._closed = False
        self._reply_to: str | None = None
        self._replies: list[dict[str, Any]] = []
        self._log = structlog.get_logger("tokenring.transport").bind(bank=member_id)
        self._received_from: dict[str, Any] = {}
        """``metrics.messages_received``'s counter of each sender (the members: a message
        is signed by one, or carried in the answer of the one it was sent to)."""

    @property
    def sends_in_flight(self) -> int:
        return len(self._sends)

    @property
    def closed(self) -> bool:
        return self._closed

    def now_ms(self) -> int:
        return self._clock_ms()

    def start(self) -> None:
        """Give the core its ``Start`` event."""
        self.handle(core.Start())

    def receive(self, message: Any, *, reply: bool = False) -> list[dict[str, Any]]:
        """Hand one decoded message (``core.decode_message``) to the core.

        With ``reply``, the messages the core sends back to the message's sender while it
        handles it (an acknowledgement, a vote) are not posted: they are returned, encoded, for
        the HTTP answer to carry, which saves one request per hand-off. The sender's transport
        takes them out of the signed answer as if they had been posted.
        """
        sender = str(message.sender)
        counter = self._received_from.get(sender)
        if counter is None:
            # The counter of each sender looked up once: a label look-up costs more than
            # the increment, at every message.
            counter = self._received_from[sender] = self.metrics.messages_received.labels(sender=sender)
        counter.inc()
        if not reply or self._reply_to is not None:
            self.handle(core.Received(message))
            return []
        self._reply_to = str(message.sender)
        self._replies = []
        try:
            self.handle(core.Received(message))
            return self._replies
        finally:
            self._reply_to = None
            self._replies = []

    def handle(self, event: Any) -> None:
        """Feed one event to the core and carry out its actions.

        The owner may call this again from inside ``on_actions`` (to release, say): such an
        event is queued and handled right after the current one, so the core always sees one
        event at a time and its actions are carried out in order.
        """
        if self._closed:
            return
        if self._handling:
            assert len(self._queued) < self._events_queued_max, "re-entrant events pile up"
            self._queued.append(event)
            return
        self._handling = True
        try:
            self._handle_one(event)
            while self._queued:
                self._handle_one(self._queued.popleft())
        finally:
            self._handling = False
        self._arm_timer()

    def _handle_one(self, event: Any) -> None:
        actions = self.member.handle(event, self._clock_ms())
        passed_up: list[Any] = []
        for action in actions:
            if isinstance(action, core.Send):
                self._send(action.to, action.message)
            else:
                passed_up.append(action)
        if passed_up:
            self._on_actions(passed_up)

    def _arm_timer(self) -> None:
        if self._closed:
            return
        deadline_ms = self.member.next_deadline_ms()
        if deadline_ms == self._timer_deadline_ms and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline_ms = deadline_ms
        if deadline_ms is None:
            return
        delay_ms = max(0, deadline_ms - self._clock_ms()) + TIMER_SLACK_MS
        self._timer = asyncio.get_running_loop().call_later(delay_ms / 1000, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_deadline_ms = None
        self.handle(core.TimerFired())

    def _send(self, to: str, message: Any) -> None:
        url = self.peers.get(to)
        assert url is not None, f"the core sent to {to!r}, which is not a peer"
        if to == self._reply_to and len(self._replies) < REPLIES_MAX:
            self._replies.append(core.encode_message(message))
            return
        self._spawn(to, RING_MESSAGE_PATH, lambda: self._post(to, url, core.encode_message(message)))

    def post(self, to: str, path: str, payload: dict[str, Any]) -> bool:
        """Post the owner's own signed message to peer ``to``, fire and forget.

        Bounded like the core's sends (timeout, sends in flight); the answer is ignored and a
        failure is only counted. Whether the message went out (``False``: dropped or closed).
        """
        url = self.peers.get(to)
        assert url is not None, f"{to!r} is not a peer"
        if self._closed:
            return False
        return self._spawn(to, path, lambda: self._post_plain(to, url, path, payload))

    def _spawn(self, to: str, path: str, send: Callable[[], Coroutine[Any, Any, Any]]) -> bool:
        """Start ``send()`` as one of the sends in flight; False (counted as dropped) when
        ``SENDS_IN_FLIGHT_MAX`` are already out."""
        if len(self._sends) >= self._sends_in_flight_max:
            self.metrics.sends_dropped.inc()
            self._log.debug(
                "ring.send_dropped", to=to, path=path, in_flight=len(self._sends),
                **self._fields(),
            )
            return False
        task = asyncio.get_running_loop().create_task(send())
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)
        return True

    async def _post_plain(
        self, to: str, url: str, path: str, payload: dict[str, Any]
    ) -> SignedReply | None:
        """Post and count a failure; the answer when it was a success (a 2xx), else None."""
        try:
            reply = await self.client.post_json(url, path, payload, timeout_s=self._send_timeout_s)
        except SendFailed as error:
            self.metrics.sends_failed.inc()
            self._log.debug(
                "ring.send_failed", to=to, path=path, reason=str(error), **self._fields()
            )
            return None
        if reply.status >= 300:
            self.metrics.sends_failed.inc()
            if reply.status == 401 and to not in self._signature_refused_by:
                # Most often a member started with another secret: said once per member (until
                # it takes a message again), not at every message of every rotation.
                self._signature_refused_by.add(to)
                self._log.warning(
                    "ring.signature_refused", to=to, path=path, answer=reply.body,
                    hint="that member does not take this member's signature (the answer says "
                    "why): every member of the ring needs the same secret, and clocks within "
                    f"{SKEW_MS_MAX} ms of each other",
                    **self._fields(),
                )  # fmt: skip
            else:
                # A refusal said already (401) is not said again at every message.
                log = self._log.debug if reply.status == 401 else self._log.info
                log("ring.send_refused", to=to, path=path, status=reply.status, answer=reply.body, **self._fields())
            return None
        self._signature_refused_by.discard(to)
        return reply

    async def _post(self, to: str, url: str, payload: dict[str, Any]) -> None:
        reply = await self._post_plain(to, url, RING_MESSAGE_PATH, payload)
        if reply is None:
            return
        carried = reply.body.get("messages") if isinstance(reply.body, dict) else None
        if not carried or reply.signed_by != to or self._closed:
            return
        for data in carried[:REPLIES_MAX]:
            try:
                message = core.decode_message(data)
            except ValueError as error:
                self._log.info("ring.reply_malformed", to=to, reason=str(error), **self._fields())
                continue
            if getattr(message, "sender", None) != to:
                self._log.info("ring.reply_wrong_sender", to=to, **self._fields())
                continue
            self.receive(message)

    def _fields(self) -> dict[str, Any]:
        # Every ring line names the token's generation and seq as this member knows them.
        fence = self.member.status.fence
        if fence is None:
            return {"generation": 0, "seq": 0}
        return {"generation": fence.epoch, "seq": fence.seq}

    async def drain(self, *, timeout_s: float) -> bool:
        """Wait until no send is in flight, at most ``timeout_s``; whether it drained."""
        if not self._sends:
            return True
        _, pending = await asyncio.wait(set(self._sends), timeout=timeout_s)
        return not pending

    async def close(self) -> None:
        """Stop the timer and every send in flight; later events are ignored."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sends = list(self._sends)
        for task in sends:
            task.cancel()
        if sends:
            await asyncio.gather(*sends, return_exceptions=True)
