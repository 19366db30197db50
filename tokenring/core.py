"""The pure token-ring core: one ring member as a state machine with no I/O and no clock.

Rules, in two sentences: the token (with its fence, strictly increasing over its life) goes
round the configured ring, each hand-off acknowledged, silent members skipped and probed until
they answer; a member that has seen no token for a loss timeout bids for a new generation, and
only a bid that a strict majority of the configured members promised is ever minted.
Everything that changes a member's state happens in :meth:`Member.handle`, which turns one
event at ``now_ms`` into a list of actions (:meth:`Member.receive` is the same for a message);
:meth:`Member.next_deadline_ms` says when to send :class:`TimerFired`. The transport and the
simulator only carry events and actions.
docs/protocol.md explains the protocol, its state diagram and its timing bounds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal, Union

import attrs

from tokenring.messages import (
    FENCE_NONE,
    Claim,
    Fence,
    Leaving,
    Message,
    Probe,
    ProbeAck,
    Token,
    TokenAck,
    Vote,
    decode_message,
    encode_message,
)

__all__ = [
    "Action",
    "Claim",
    "ClaimStarted",
    "Event",
    "Fence",
    "Grant",
    "HandoffAcked",
    "Leave",
    "Leaving",
    "Member",
    "MemberDown",
    "MemberStatus",
    "MemberUp",
    "Message",
    "Probe",
    "ProbeAck",
    "Received",
    "Release",
    "Revoke",
    "Send",
    "Start",
    "TimerFired",
    "Token",
    "TokenAck",
    "TokenMinted",
    "TokenPurged",
    "Vote",
    "decode_message",
    "encode_message",
    "loss_timeout_ms_for",
    "recovery_ms_for",
    "rotation_ms_for",
]

IDLE_HOLD_MS_DEFAULT = 5
"""The shortest visit: a member whose work is done at once still keeps the token this long,
so an idle ring makes at most a few hundred hand-offs a second instead of spinning."""
_ANNOUNCEMENTS = (Probe, Claim, ProbeAck)
"""What a member that left sends only once it takes part again. A member that left answers no
probe, so an answer to one comes from a member that takes part: one whose Leaving was sent in
its name by another process (a second copy started by mistake, which left as it failed), or a
late answer sent before it left, which costs at most one hand-off timeout to skip it again."""
LOSS_MARGIN_ROTATIONS = 1
"""The loss timeout is one worst-case rotation plus this many more, as margin."""


# --- Timing bounds: formulas of the configuration (docs/protocol.md states them) ---------------


def rotation_ms_for(members: int, hold_max_ms: int, handoff_timeout_ms: int) -> int:
    """The longest one rotation takes without loss: every member holds for at most
    ``hold_max_ms`` and every hand-off ends (acknowledged or skipped) within
    ``handoff_timeout_ms``."""
    assert members >= 1 and hold_max_ms >= 1 and handoff_timeout_ms >= 1
    return members * (hold_max_ms + handoff_timeout_ms)


def loss_timeout_ms_for(members: int, hold_max_ms: int, handoff_timeout_ms: int) -> int:
    """The derived loss timeout: one full worst-case rotation plus a margin of one more.

    ``L = (1 + LOSS_MARGIN_ROTATIONS) * members * (hold_max_ms + handoff_timeout_ms)``.
    """
    return (1 + LOSS_MARGIN_ROTATIONS) * rotation_ms_for(members, hold_max_ms, handoff_timeout_ms)


def recovery_ms_for(
    members: int, hold_max_ms: int, handoff_timeout_ms: int, loss_timeout_ms: int | None = None
) -> int:
    """After the last fault, by this long exactly one token circulates (and every live
    member is visited within one rotation after it): ``3 * L + 2 * R`` with ``R`` the rotation
    bound and ``L`` the loss timeout. docs/protocol.md gives the argument."""
    rotation_ms = rotation_ms_for(members, hold_max_ms, handoff_timeout_ms)
    if loss_timeout_ms is None:
        loss_timeout_ms = loss_timeout_ms_for(members, hold_max_ms, handoff_timeout_ms)
    return 3 * loss_timeout_ms + 2 * rotation_ms


# --- Events: the inputs of Member.handle ------------------------------------------------------


@attrs.frozen
class Start:
    """The member starts; a restarted member is a new :class:`Member` and knows nothing."""


@attrs.frozen
class TimerFired:
    """The time :meth:`Member.next_deadline_ms` asked for has come (perhaps late)."""


@attrs.frozen
class Received:
    """A message from another member: it may be stale, duplicated or reordered."""

    message: Message
    """What arrived (already authenticated by the transport)."""


@attrs.frozen
class Release:
    """The application finished its critical section under ``fence`` early."""

    fence: Fence
    """The fence of the :class:`Grant` being released; a stale one is ignored."""
    wanted: bool = False
    """Another member is known to wait for the token: hand it on now, without the
    ``idle_hold_ms`` that keeps an idle ring from spinning."""
    again: bool = False
    """Work still waits here: the token carries this member's want round the ring
    (:attr:`Token.wanting`), so the holders on the way hand unused visits on at once."""


@attrs.frozen
class Leave:
    """Graceful leave: hand the token on if held, then stop taking part."""


Event = Union[Start, TimerFired, Received, Release, Leave]


# --- Actions: the outputs of Member.handle ----------------------------------------------------


@attrs.frozen
class Send:
    """Deliver ``message`` to member ``to`` (best effort: the core copes with loss)."""

    to: str
    """The receiving member's id."""
    message: Message
    """The message."""


@attrs.frozen
class Grant:
    """This member holds the token: the application may work under ``fence`` until
    ``until_ms``, then send :class:`Release` (or be revoked)."""

    fence: Fence
    """The fence that every piece of work done in this critical section carries."""
    until_ms: int
    """When the core ends the critical section whether released or not."""
    wanting: tuple[str, ...] = ()
    """Other members that wait for the token (it carried their want here): an unused visit
    should be handed on at once."""


@attrs.frozen
class Revoke:
    """The critical section under ``fence`` is over without a :class:`Release` (its deadline
    passed, or a newer generation superseded it): stop working under it."""

    fence: Fence
    """The fence of the critical section that ended."""


@attrs.frozen
class MemberDown:
    """This member now believes ``member_id`` is down (it will be skipped and probed)."""

    member_id: str
    """The member believed down."""


@attrs.frozen
class MemberUp:
    """``member_id``, believed down, spoke again and is back in the ring."""

    member_id: str
    """The member back up."""


@attrs.frozen
class ClaimStarted:
    """This member bid for a new generation ``epoch`` (the token looked lost)."""

    epoch: int
    """The bid's epoch."""


@attrs.frozen
class TokenMinted:
    """A majority promised this member's bid: a token of a new generation exists."""

    fence: Fence
    """The new token's first fence."""


@attrs.frozen
class TokenPurged:
    """A token was discarded here: ``stale`` (older than seen), ``duplicate`` (a fence already
    seen, by another path), ``superseded`` (held, then a newer one was learnt) or ``left``."""

    fence: Fence
    """The discarded token's fence."""
    reason: str
    """One of stale, duplicate, superseded, left."""


@attrs.frozen
class HandoffAcked:
    """A hand-off this member sent was answered: it is over (for metrics, and for a member
    leaving, which waits for it)."""

    to: str
    """The member that answered."""
    fence: Fence
    """The fence handed on."""
    latency_ms: int
    """From sending the token to its answer."""
    accepted: bool = True
    """False when the receiver refused it, having seen that fence or a newer one: the token
    was not taken there (no hand-off latency to count)."""


Action = Union[
    Send, Grant, Revoke, MemberDown, MemberUp, ClaimStarted, TokenMinted, TokenPurged, HandoffAcked
]


@attrs.frozen
class MemberStatus:
    """What a member knows, for ``/ring/status`` and metrics."""

    holding: bool
    """True while this member holds the token."""
    fence: Fence | None
    """The highest token fence this member has seen (None before any)."""
    successor: str | None
    """Whom this member would hand the token to now (None when it alone is up)."""
    members: Mapping[str, Literal["up", "down"]]
    """Every configured member, as this member believes it to be (itself always up)."""
    visits: int
    """How many times this member has received the token (or minted one)."""


# --- Member: the state machine ----------------------------------------------------------------


@attrs.define
class _Handoff:
    """A hand-off sent and not yet acknowledged."""

    target: str
    fence: Fence
    sent_ms: int
    deadline_ms: int


@attrs.define
class _Claim:
    """This member's bid in progress."""

    bid: Fence
    """``Fence(epoch, self, 0)``: compares with token fences by generation."""
    voters: set[str]
    refusals: int
    deadline_ms: int


class Member:
    """One ring member. Feed it events with :meth:`handle`; carry out the actions it returns.

    Bounds are keyword-only with derived defaults: ``loss_timeout_ms`` from
    :func:`loss_timeout_ms_for`; ``idle_hold_ms`` (shortest visit) ``IDLE_HOLD_MS_DEFAULT``
    capped at ``hold_max_ms``; ``claim_timeout_ms`` (how long a bid waits for votes)
    ``2 * handoff_timeout_ms``; ``probe_interval_ms`` (how often down members are probed) one
    worst-case rotation.

    ``fence_floor``: a token fence this member's application saw in an earlier life and kept
    (a participant's highest accepted fence, stored): the member starts as if it had seen it,
    so a token minted after the whole ring restarted (its members remember no fence) is above
    what that application refuses, not below it for as many hand-offs as the ring made before.
    """

    def __init__(
        self,
        member_id: str,
        members: Sequence[str],
        *,
        hold_max_ms: int,
        handoff_timeout_ms: int,
        loss_timeout_ms: int | None = None,
        idle_hold_ms: int | None = None,
        claim_timeout_ms: int | None = None,
        probe_interval_ms: int | None = None,
        fence_floor: Fence | None = None,
    ) -> None:
        members = tuple(members)
        assert member_id in members, f"{member_id!r} is not one of the members {members}"
        assert len(set(members)) == len(members), f"duplicate member ids in {members}"
        assert all(m for m in members), "member ids are non-empty"
        assert hold_max_ms >= 1 and handoff_timeout_ms >= 1
        n = len(members)
        self.member_id = member_id
        self.members = members
        self._position = {m: i for i, m in enumerate(members)}
        self._others = frozenset(members) - {member_id}  # whom messages may come from
        self._ring_next = tuple(members[(i + 1) % n] for i in range(n))  # by position
        self._n = n
        self._me = members.index(member_id)
        self._majority = n // 2 + 1
        self.hold_max_ms = hold_max_ms
        self.handoff_timeout_ms = handoff_timeout_ms
        self.loss_timeout_ms = (
            loss_timeout_ms_for(n, hold_max_ms, handoff_timeout_ms)
            if loss_timeout_ms is None
            else loss_timeout_ms
        )
        self.idle_hold_ms = (
            min(IDLE_HOLD_MS_DEFAULT, hold_max_ms) if idle_hold_ms is None else idle_hold_ms
        )
        self.claim_timeout_ms = (
            2 * handoff_timeout_ms if claim_timeout_ms is None else claim_timeout_ms
        )
        self.probe_interval_ms = (
            rotation_ms_for(n, hold_max_ms, handoff_timeout_ms)
            if probe_interval_ms is None
            else probe_interval_ms
        )
        assert 0 <= self.idle_hold_ms <= hold_max_ms
        assert self.loss_timeout_ms >= 1 and self.claim_timeout_ms >= 1
        assert self.probe_interval_ms >= 1

        self._started = False
        self._left = False
        self._up = {m: True for m in members}
        self._downs = 0  # how many members are believed down (kept with _up)
        self._departed: set[str] = set()  # members that said Leaving and have not restarted
        # The highest token fence seen (tokens only, never bids): at the start, the floor an
        # application kept from an earlier life of this member (see the class), if any.
        self._seen = FENCE_NONE if fence_floor is None else fence_floor
        self._promised = FENCE_NONE  # the bid promised; older generations are stale here...
        self._promised_until_ms = 0  # ...until then: a promise outlives no bid it could serve
        self._bid_epoch_max = 0  # the highest epoch bid by anyone we heard of
        self._token_seen_ms: int | None = None  # last time the token was here: "fresh" within L
        self._quiet_since_ms = 0  # the loss timer runs from here
        self._holding: Fence | None = None
        self._in_section = False
        self._granted_ms = 0
        self._pass_at_ms = 0  # when the held token is handed on
        self._last_accepted: tuple[str, Fence] | None = None
        self._handoff: _Handoff | None = None
        self._claim: _Claim | None = None
        self._probe_at_ms = 0
        self._visits = 0
        # Who the token carries as wanting it (see Token.wanting): what it brought here, less
        # this member, plus this member when its work still waits at Release.
        self._wanting: tuple[str, ...] = ()
        # Bound once here: one dictionary lookup per event and per message, and subclasses
        # may override the handlers.
        self._on_event: dict[type[Any], Callable[[Any, int, list[Action]], None]] = {
            Received: self._on_received,
            TimerFired: self._on_timer,
            Release: self._on_release,
            Start: self._on_start,
            Leave: self._on_leave,
        }
        self._receive: dict[type[Any], Callable[[Any, int, list[Action]], None]] = {
            Token: self._on_token,
            TokenAck: self._on_token_ack,
            Claim: self._on_claim,
            Vote: self._on_vote,
            Probe: self._on_probe,
            ProbeAck: self._on_probe_ack,
            Leaving: self._on_leaving,
        }

    # -- queries --

    @property
    def status(self) -> MemberStatus:
        successor = None
        if not self._left:
            target, _ = self._next_up(self._me)
            successor = None if target == self.member_id else target
        return MemberStatus(
            holding=self._holding is not None,
            fence=None if self._seen == FENCE_NONE else self._seen,
            successor=successor,
            members=MappingProxyType({m: "up" if self._up[m] else "down" for m in self.members}),
            visits=self._visits,
        )

    def next_deadline_ms(self) -> int | None:
        """When to deliver :class:`TimerFired` next (None: only a message can change things)."""
        if not self._started:
            return None
        # Written out rather than min(list): the simulator asks after every event.
        deadline: int | None = None
        if self._holding is not None:
            deadline = self._pass_at_ms
        handoff = self._handoff
        if handoff is not None and (deadline is None or handoff.deadline_ms < deadline):
            deadline = handoff.deadline_ms
        if self._left:
            return deadline
        claim = self._claim
        if claim is not None:
            if deadline is None or claim.deadline_ms < deadline:
                deadline = claim.deadline_ms
        elif self._holding is None:
            loss_ms = self._quiet_since_ms + self.loss_timeout_ms
            if deadline is None or loss_ms < deadline:
                deadline = loss_ms
        if self._downs and (deadline is None or self._probe_at_ms < deadline):
            deadline = self._probe_at_ms
        return deadline

    # -- the one entry point: every transition starts here --

    def handle(self, event: Event, now_ms: int) -> list[Action]:
        """Apply ``event`` at ``now_ms``; return what to do, in order."""
        out: list[Action] = []
        on_event = self._on_event.get(type(event))
        if on_event is None:
            raise AssertionError(f"not an event: {event!r}")
        on_event(event, now_ms, out)
        return out

    def receive(self, message: Message, now_ms: int) -> list[Action]:
        """The same as ``handle(Received(message), now_ms)``, without making the event (the
        simulator's hot path)."""
        assert self._started, "a member handles messages only after Start"
        out: list[Action] = []
        sender = message.sender
        if sender not in self._others or self._left:
            # A stray or reflected message is an operating error: drop it. A member that
            # left takes no part (it acknowledges no token, so senders skip it).
            if self._left and type(message) is TokenAck:
                self._on_token_ack(message, now_ms, out)
            return out
        # Any message brings a down member back, except its Leaving and what a departed member
        # sent before it left (arriving late): it comes back by starting again, which it
        # announces with probes, by bidding, or by answering the probes sent to it while down.
        if (
            not self._up[sender]
            and type(message) is not Leaving
            and (sender not in self._departed or type(message) in _ANNOUNCEMENTS)
        ):
            self._departed.discard(sender)
            self._up[sender] = True
            self._downs -= 1
            out.append(MemberUp(sender))
        self._receive[type(message)](message, now_ms, out)
        return out

    # -- transitions --

    def _on_received(self, event: Received, now_ms: int, out: list[Action]) -> None:
        out += self.receive(event.message, now_ms)

    def _on_start(self, event: Start, now_ms: int, out: list[Action]) -> None:
        assert not self._started, "Start comes once; a restart is a new Member"
        self._started = True
        self._quiet_since_ms = now_ms
        self._probe_at_ms = now_ms + self.probe_interval_ms
        # Announce ourselves: whoever marked us down takes us back, and their answers tell
        # a restarted member the current fence before the token reaches it.
        for other in self.members:
            if other != self.member_id:
                out.append(Send(other, Probe(self.member_id, self._seen)))
        if self._me == 0:
            # The ring's first member bootstraps the first token at once; if a token already
            # circulates, its fresh holders refuse this bid and nothing changes.
            self._start_claim(now_ms, out)

    def _on_timer(self, event: TimerFired, now_ms: int, out: list[Action]) -> None:
        assert self._started, "a member's timer runs only after Start"
        if self._holding is not None and now_ms >= self._pass_at_ms:
            if self._in_section:
                self._in_section = False
                out.append(Revoke(self._holding))
            self._pass_token(now_ms, out)
        handoff = self._handoff
        if handoff is not None and now_ms >= handoff.deadline_ms:
            self._skip(handoff, now_ms, out)
        if self._left:
            return
        claim = self._claim
        if claim is not None and now_ms >= claim.deadline_ms:
            self._drop_claim(now_ms)  # no majority in time; the loss timer bids again later
        if (
            self._claim is None
            and self._holding is None
            and now_ms >= self._quiet_since_ms + self.loss_timeout_ms
        ):
            self._start_claim(now_ms, out)
        if now_ms >= self._probe_at_ms:
            self._probe_at_ms = now_ms + self.probe_interval_ms
            for other in self.members:
                if not self._up[other]:
                    out.append(Send(other, Probe(self.member_id, self._seen)))

    def _on_release(self, event: Release, now_ms: int, out: list[Action]) -> None:
        assert self._started
        fence = event.fence
        held = self._holding
        if not self._in_section or (fence is not held and fence != held):
            return  # released after a revoke, or under an old fence: nothing to end
        self._in_section = False
        if event.again and self.member_id not in self._wanting:
            self._wanting = tuple(sorted((*self._wanting, self.member_id)))
        # Keep an idle token a moment so an idle ring does not spin; not when another
        # member is known to wait for it (the ring then moves at the pace of the work).
        hold_ms = 0 if event.wanted else self.idle_hold_ms
        self._pass_at_ms = max(now_ms, self._granted_ms + hold_ms)
        if now_ms >= self._pass_at_ms:
            self._pass_token(now_ms, out)

    def _on_leave(self, event: Leave, now_ms: int, out: list[Action]) -> None:
        assert self._started
        if self._left:
            return
        self._left = True
        self._drop_claim(now_ms)
        for other in self.members:
            if other != self.member_id:
                out.append(Send(other, Leaving(self.member_id)))
        if self._holding is not None:
            if self._in_section:
                self._in_section = False
                out.append(Revoke(self._holding))
            self._pass_token(now_ms, out)

    def _on_leaving(self, message: Leaving, now_ms: int, out: list[Action]) -> None:
        self._mark_down(message.sender, out)
        self._departed.add(message.sender)

    def _on_token(self, message: Token, now_ms: int, out: list[Action]) -> None:
        fence = message.fence
        if (fence > self._seen or self._only_heard_of(fence)) and (
            now_ms >= self._promised_until_ms or fence > self._promised
        ):
            self._supersede(fence, now_ms, out)  # drops anything older this member still had
            self._last_accepted = (message.sender, fence)
            out.append(Send(message.sender, TokenAck(self.member_id, fence, True, fence)))
            self._wanting = tuple(m for m in message.wanting if m in self._position)
            self._grant(fence, now_ms, out)
            return
        if self._last_accepted == (message.sender, fence):
            # The network duplicated a hand-off we took: acknowledge again, nothing else.
            out.append(Send(message.sender, TokenAck(self.member_id, fence, True, self._seen)))
            return
        reason = "duplicate" if fence == self._seen else "stale"
        out.append(TokenPurged(fence, reason))
        out.append(Send(message.sender, TokenAck(self.member_id, fence, False, self._seen)))

    def _only_heard_of(self, fence: Fence) -> bool:
        """Whether ``fence``, the highest seen here, is only heard of: learnt from another
        member's message (a probe's answer can overtake the hand-off it tells of), never taken
        or held or handed on here. Within a generation a fence's seq fixes its place in the
        ring, so a token arriving with it is the live one addressed to this member; a second
        copy of it (a skip's, by another path) finds it taken and is purged."""
        return (
            fence == self._seen
            and fence != FENCE_NONE
            and self._holding is None
            and self._handoff is None
            and (self._last_accepted is None or self._last_accepted[1] != fence)
        )

    def _on_token_ack(self, message: TokenAck, now_ms: int, out: list[Action]) -> None:
        handoff = self._handoff
        if (
            handoff is not None
            and message.sender == handoff.target
            and (message.fence is handoff.fence or message.fence == handoff.fence)
        ):
            self._handoff = None  # taken, or refused: the receiver has seen it or newer
            self._token_seen_ms = now_ms
            latency_ms = now_ms - handoff.sent_ms
            out.append(HandoffAcked(handoff.target, handoff.fence, latency_ms, message.accepted))
        if not self._left and message.seen is not self._seen:
            self._learn(message.seen, now_ms, out)

    def _on_claim(self, message: Claim, now_ms: int, out: list[Action]) -> None:
        self._learn(message.fence, now_ms, out)
        if message.epoch > self._bid_epoch_max:
            self._bid_epoch_max = message.epoch  # our own next bid goes above it
        bid = Fence(message.epoch, message.sender, 0)
        seen_ms = self._token_seen_ms
        fresh = seen_ms is not None and now_ms - seen_ms < self.loss_timeout_ms
        granted = (
            not fresh
            and self._holding is None
            and self._handoff is None
            and bid > self._seen
            and (bid > self._promised or now_ms >= self._promised_until_ms)
        )
        before = self._seen
        if granted:
            # The promise: from now on every token of an older generation is stale here.
            self._claim = None  # our own bid, if any, is lower and yields to this one
            self._promised = bid
            # Long enough for the claimant to collect its votes and mint (its window opened
            # before this vote); after that an unminted bid no longer blocks older tokens.
            self._promised_until_ms = now_ms + self.claim_timeout_ms
            self._quiet_since_ms = now_ms
        out.append(
            Send(
                message.sender,
                Vote(self.member_id, message.epoch, message.sender, granted, before),
            )
        )

    def _on_vote(self, message: Vote, now_ms: int, out: list[Action]) -> None:
        self._learn(message.fence, now_ms, out)
        claim = self._claim
        if claim is None or message.candidate != self.member_id or message.epoch != claim.bid.epoch:
            return  # an answer to a bid already decided or abandoned
        if message.granted and message.fence < claim.bid:
            claim.voters.add(message.sender)
        else:
            claim.refusals += 1
            if claim.refusals > self._n - self._majority:
                self._drop_claim(now_ms)  # a majority can no longer assent
                return
        if len(claim.voters) >= self._majority:
            self._mint(claim, now_ms, out)

    def _on_probe(self, message: Probe, now_ms: int, out: list[Action]) -> None:
        self._learn(message.fence, now_ms, out)
        out.append(Send(message.sender, ProbeAck(self.member_id, self._seen)))

    def _on_probe_ack(self, message: ProbeAck, now_ms: int, out: list[Action]) -> None:
        self._learn(message.fence, now_ms, out)

    # -- steps the transitions share --

    def _learn(self, fence: Fence, now_ms: int, out: list[Action]) -> None:
        """A token fence seen anywhere: if newer, everything older here is superseded."""
        seen = self._seen
        if fence is seen or fence <= seen:  # mostly the very fence last seen: no comparison
            return
        self._supersede(fence, now_ms, out)

    def _supersede(self, fence: Fence, now_ms: int, out: list[Action]) -> None:
        """``fence`` is above every fence seen here: everything older here is superseded."""
        self._seen = fence
        self._quiet_since_ms = now_ms  # the ring is alive: the loss timer starts over
        holding = self._holding
        if holding is not None and holding < fence:
            if self._in_section:
                self._in_section = False
                out.append(Revoke(holding))
            self._holding = None
            out.append(TokenPurged(holding, "superseded"))
        if self._handoff is not None and self._handoff.fence < fence:
            self._handoff = None  # the token has moved past this hand-off
        if self._claim is not None and self._claim.bid < fence:
            self._drop_claim(now_ms)

    def _grant(self, fence: Fence, now_ms: int, out: list[Action]) -> None:
        assert self._holding is None and not self._left
        assert fence is self._seen or fence >= self._seen, "a grant never goes below a seen fence"
        self._seen = fence
        self._holding = fence
        self._in_section = True
        self._granted_ms = now_ms
        self._pass_at_ms = now_ms + self.hold_max_ms
        self._token_seen_ms = now_ms
        self._quiet_since_ms = now_ms
        if self._claim is not None:
            self._drop_claim(now_ms)
        self._visits += 1
        # This visit meets this member's own want: the token goes on without it.
        self._wanting = tuple(m for m in self._wanting if m != self.member_id)
        out.append(Grant(fence, self._pass_at_ms, self._wanting))

    def _next_up(self, position: int) -> tuple[str, int]:
        """The first member after ``position`` believed up, and its ring distance; this
        member itself when no other is up."""
        if not self._downs:
            return self._ring_next[position], 1  # everyone is up: the very next one
        n = self._n
        for distance in range(1, n + 1):
            candidate = self.members[(position + distance) % n]
            if candidate == self.member_id or self._up[candidate]:
                return candidate, distance
        raise AssertionError("the ring always reaches this member")

    def _pass_token(self, now_ms: int, out: list[Action]) -> None:
        held = self._holding
        assert held is not None and not self._in_section
        self._holding = None
        self._send_token(held, self._me, now_ms, out)

    def _skip(self, handoff: _Handoff, now_ms: int, out: list[Action]) -> None:
        # The target may have received the token: never re-send that fence. Going on from the
        # target's place keeps the seq a function of ring position within a generation, so two
        # copies of one generation meet with equal fences and one is purged.
        self._handoff = None
        self._mark_down(handoff.target, out)
        self._send_token(handoff.fence, self._position[handoff.target], now_ms, out)

    def _send_token(self, fence: Fence, from_position: int, now_ms: int, out: list[Action]) -> None:
        target, distance = self._next_up(from_position)
        if target == self.member_id and self._left:
            # No other member is up to take it: the token ends here, and a claim replaces it.
            out.append(TokenPurged(fence, "left"))
            return
        nxt = Fence(fence.epoch, fence.issuer, fence.seq + distance)
        if target == self.member_id:
            self._grant(nxt, now_ms, out)  # alone in the ring: the next visit is ours
            return
        if fence is self._seen or nxt > self._seen:  # (nxt is above fence)
            self._seen = nxt
        self._token_seen_ms = now_ms
        self._quiet_since_ms = now_ms
        self._handoff = _Handoff(target, nxt, now_ms, now_ms + self.handoff_timeout_ms)
        out.append(Send(target, Token(self.member_id, nxt, self._wanting)))

    def _mark_down(self, member_id: str, out: list[Action]) -> None:
        if self._up[member_id]:
            self._up[member_id] = False
            self._downs += 1
            out.append(MemberDown(member_id))

    def _start_claim(self, now_ms: int, out: list[Action]) -> None:
        epoch = max(self._seen.epoch, self._bid_epoch_max) + 1
        self._bid_epoch_max = epoch
        bid = Fence(epoch, self.member_id, 0)
        self._promised = bid
        self._promised_until_ms = now_ms + self.claim_timeout_ms
        self._quiet_since_ms = now_ms
        claim = _Claim(bid, {self.member_id}, 0, now_ms + self.claim_timeout_ms)
        self._claim = claim
        out.append(ClaimStarted(epoch))
        for other in self.members:
            if other != self.member_id:
                out.append(Send(other, Claim(self.member_id, epoch, self._seen)))
        if len(claim.voters) >= self._majority:
            self._mint(claim, now_ms, out)

    def _drop_claim(self, now_ms: int) -> None:
        """Give up this member's own bid: it will never be minted, so it blocks nothing."""
        claim = self._claim
        if claim is None:
            return
        self._claim = None
        if self._promised == claim.bid:
            self._promised_until_ms = min(self._promised_until_ms, now_ms)

    def _mint(self, claim: _Claim, now_ms: int, out: list[Action]) -> None:
        fence = Fence(claim.bid.epoch, self.member_id, 1)
        assert fence > self._seen, "a minted token is above every fence this member has seen"
        assert self._holding is None
        self._claim = None  # minted: keep the promise; older tokens stay stale here
        out.append(TokenMinted(fence))
        self._grant(fence, now_ms, out)
