"""A deterministic ring on a virtual clock: pure cores, a seeded faulty network, and faults.

This is how the ring's rules are proved (tests/test_simulation*.py) and how an application
can test its own use of the ring: every :class:`tokenring.core.Member` runs here unchanged,
time is one integer clock in milliseconds, and all chance comes from one
``random.Random(seed)``, so the same seed gives the same run, event for event
(:attr:`Simulation.trace` and :attr:`Simulation.digest` show it).

The network delays every message by a seeded amount (which also reorders), may drop or
duplicate it, and drops it across a partition. Faults are crash and restart (a restart is a
fresh ``Member`` that knows nothing), pause and resume (a paused member neither sees time pass
nor handles messages; its timers fire late when it resumes), partitions that form and heal,
and a change of network. :func:`scenario_for_seed` makes a whole run, faults included, from
one seed; ``python -m tokenring.simulation --seed N`` replays one (docs/protocol.md).

Applications plug in through :class:`Application`: three callbacks (grant, revoke, message)
and a :class:`Node` to release the token, send messages through the same simulated network,
and set timers. Every critical section is recorded as a :class:`Section`.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import heapq
import itertools
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, NoReturn, Protocol

import attrs

from tokenring.core import (
    Action,
    ClaimStarted,
    Event,
    Fence,
    Grant,
    HandoffAcked,
    Leave,
    Member,
    MemberDown,
    MemberUp,
    Message,
    Received,
    Release,
    Revoke,
    Send,
    Start,
    TimerFired,
    TokenMinted,
    TokenPurged,
    Vote,
    loss_timeout_ms_for,
    recovery_ms_for,
    rotation_ms_for,
)

__all__ = [
    "Application",
    "Fault",
    "NetworkConfig",
    "Node",
    "Outcome",
    "Scenario",
    "Section",
    "Simulation",
    "WorkApplication",
    "check_fence_owners",
    "check_fences_per_member",
    "check_majority_minting",
    "replay_command",
    "check_single_holder",
    "main",
    "run_command",
    "run_scenario",
    "scenario_for_seed",
]

EVENTS_MAX_DEFAULT = 5_000_000
"""A run handles at most this many events, whatever its schedule (a guard against a loop)."""
MEMBERS_MIN_SWEEP = 2
MEMBERS_MAX_SWEEP = 9
SWEEP_HOLD_MAX_MS = 10
SWEEP_HANDOFF_TIMEOUT_MS = 20
"""Seed sweeps use a fast ring so that thousands of schedules fit in CI."""

_DELIVER, _TIMER, _FAULT, _CALL, _STOP = 0, 1, 2, 3, 4
_TIMER_FIRED = TimerFired()  # one value serves every firing: it has no fields
_heappush = heapq.heappush


@attrs.frozen
class NetworkConfig:
    """How the simulated network treats each message."""

    delay_ms_min: int = 1
    """The shortest one-way delay."""
    delay_ms_max: int = 5
    """The longest one-way delay; below ``handoff_timeout_ms / 2`` is "under the bound"."""
    drop_rate: float = 0.0
    """The chance a message is lost."""
    duplicate_rate: float = 0.0
    """The chance a message is delivered twice (each copy with its own delay)."""


@attrs.frozen
class Fault:
    """One fault at a virtual time."""

    at_ms: int
    """When it happens."""
    kind: Literal["crash", "restart", "pause", "resume", "partition", "heal", "network", "leave"]
    """What happens."""
    members: tuple[str, ...] = ()
    """The members it hits (for partition: the members cut off from the rest)."""
    network: NetworkConfig | None = None
    """The network from now on (kind ``network`` only)."""


@attrs.frozen
class Section:
    """One critical section as the simulation saw it: from Grant to Release, Revoke or crash."""

    member: str
    """The holder."""
    incarnation: int
    """Which start of the member (0 first, +1 per restart)."""
    fence: Fence
    """The fence granted."""
    start_ms: int
    """When the Grant was handled."""
    end_ms: int | None
    """When it ended (None: still open when the run stopped)."""
    ended_by: str
    """release, revoke, crash or open."""


class Node(Protocol):
    """What an :class:`Application` may do on its member's behalf."""

    member_id: str
    random: random.Random

    @property
    def now_ms(self) -> int: ...

    def release(self, fence: Fence) -> None:
        """End the critical section under ``fence`` (the core hands the token on)."""

    def send(self, to: str, payload: Any) -> None:
        """Send an application message through the simulated network."""

    def call_later(self, delay_ms: int, callback: Callable[[], None]) -> None:
        """Run ``callback`` after ``delay_ms`` of this member's time (not while paused)."""


class Application(Protocol):
    """The hook an application plugs into each member (one instance per incarnation)."""

    def on_grant(self, node: Node, fence: Fence, until_ms: int) -> None: ...

    def on_revoke(self, node: Node, fence: Fence) -> None: ...

    def on_message(self, node: Node, sender: str, payload: Any) -> None: ...


@attrs.define
class WorkApplication:
    """The default application: works a seeded while under each grant, then releases.

    With chance ``overrun_rate`` it never releases, so the core's revoke path runs too.
    """

    work_ms_max: int = 10
    overrun_rate: float = 0.0

    def on_grant(self, node: Node, fence: Fence, until_ms: int) -> None:
        rng = node.random
        if self.overrun_rate and rng.random() < self.overrun_rate:
            return
        work_ms = int(rng.random() * (self.work_ms_max + 1))
        if work_ms == 0:
            node.release(fence)
        else:
            node.call_later(work_ms, functools.partial(node.release, fence))

    def on_revoke(self, node: Node, fence: Fence) -> None:
        pass

    def on_message(self, node: Node, sender: str, payload: Any) -> None:
        pass


@attrs.define
class _AppMessage:
    """An application's message on the simulated network (never shown to the core)."""

    sender: str
    payload: Any


class _Host:
    """One member's process: its core, its application and whether it runs."""

    __slots__ = (
        "member_id", "core", "app", "incarnation", "state", "inbox", "simulation", "random",
        "pending_calls", "armed_ms",
    )

    def __init__(self, simulation: Simulation, member_id: str) -> None:
        self.simulation = simulation
        self.member_id = member_id
        self.random = simulation.random
        self.core: Member | None = None
        self.app: Application | None = None
        self.incarnation = -1
        self.state = "down"  # up, paused, down (crashed), left
        self.inbox: list[tuple[str, Any]] = []  # (sender, message) that came while paused
        self.pending_calls: list[Callable[[], None]] = []  # callbacks due while paused
        self.armed_ms: int | None = None  # the deadline the member's timer is set for

    @property
    def now_ms(self) -> int:
        return self.simulation.now_ms

    def release(self, fence: Fence) -> None:
        self.simulation._input(self, Release(fence))

    def send(self, to: str, payload: Any) -> None:
        self.simulation._transmit(self.member_id, to, _AppMessage(self.member_id, payload))

    def call_later(self, delay_ms: int, callback: Callable[[], None]) -> None:
        assert delay_ms >= 0
        sim = self.simulation
        heapq.heappush(
            sim._queue,
            (sim.now_ms + delay_ms, next(sim._made), _CALL, self, self.incarnation, callback),
        )


class Simulation:
    """N ring members on one virtual clock and a seeded network.

    ``run(until_ms)`` handles events in time order (ties in the order they were made) and
    stops at ``until_ms`` or after ``events_max`` events. Results: :attr:`sections`,
    :attr:`counts` (claims, mints, purges, downs, ups), :attr:`events_handled`, and with
    ``trace=True`` :attr:`trace` (one line per event and action) and :attr:`digest`.
    """

    def __init__(
        self,
        members: Sequence[str],
        *,
        seed: int,
        hold_max_ms: int,
        handoff_timeout_ms: int,
        loss_timeout_ms: int | None = None,
        network: NetworkConfig = NetworkConfig(),
        faults: Iterable[Fault] = (),
        application: Callable[[str], Application] | None = None,
        trace: bool = False,
        events_max: int = EVENTS_MAX_DEFAULT,
        member_factory: Callable[..., Member] = Member,
    ) -> None:
        assert members, "a ring has at least one member"
        self.members = tuple(members)
        self.seed = seed
        self.random = random.Random(seed)
        self.hold_max_ms = hold_max_ms
        self.handoff_timeout_ms = handoff_timeout_ms
        self.loss_timeout_ms = loss_timeout_ms
        self._network = network
        self._draws = _draws(network)
        self._draw = self.random.random
        self.application = application or (lambda _member: WorkApplication(hold_max_ms))
        self.events_max = events_max
        self.member_factory = member_factory
        self.now_ms = 0
        self.events_handled = 0
        self.run_s = 0.0
        """Wall-clock seconds spent in :meth:`run` (for :attr:`events_per_s`)."""
        self._sections: list[list[Any]] = []  # [member, incarnation, fence, start, end, by]
        self.counts: dict[str, int] = {
            "claims": 0, "mints": 0, "purges": 0, "downs": 0, "ups": 0, "messages": 0,
        }
        self.claims: list[tuple[int, str, int]] = []
        """Every ClaimStarted: (time, member, epoch)."""
        self.mints: list[tuple[int, str, Fence]] = []
        """Every TokenMinted: (time, member, fence)."""
        self.assents: set[tuple[str, int, str]] = set()
        """Every granted vote sent: (voter, epoch, candidate)."""
        self.trace: list[str] | None = [] if trace else None
        # The event queue: a heap of plain tuples (at_ms, number, kind, host, a, b); the number
        # (from _made) runs events due at one instant in the order they were made. a and b:
        # sender and message (deliver), timer version (timer), incarnation and callback
        # (call), the fault (fault).
        self._queue: list[tuple[int, int, int, Any, Any, Any]] = []
        self._made = itertools.count(1)
        self._timers: dict[_Host, tuple[int, int, _Host]] = {}  # set timers (see _set_timer)
        self._next_timer: tuple[int, int, _Host] | None = None
        self._hosts = {m: _Host(self, m) for m in self.members}
        self._open: dict[str, int] = {}  # member -> index of its open section
        self._cut_off: frozenset[str] = frozenset()  # one side of the current partition
        # What each other kind of action (not Send, Grant or HandoffAcked) records; a kind not
        # named here (a core of the user's own) records nothing.
        self._record: dict[type[Any], Callable[[_Host, Any], None]] = {
            Revoke: self._on_revoke,
            ClaimStarted: self._on_claim_started,
            TokenMinted: self._on_token_minted,
            TokenPurged: self._on_token_purged,
            MemberDown: self._on_member_down,
            MemberUp: self._on_member_up,
        }
        for member_id in self.members:
            self._push(0, _FAULT, None, Fault(0, "restart", (member_id,)))
        for fault in faults:
            self._push(fault.at_ms, _FAULT, None, fault)

    # -- running --

    def run(self, until_ms: int) -> None:
        """Handle every event due up to ``until_ms`` (bounded by ``events_max``)."""
        started = time.perf_counter()
        try:
            self._run(until_ms)
        finally:
            self.run_s += time.perf_counter() - started

    @property
    def events_per_s(self) -> float:
        """Simulated events handled per wall-clock second of :meth:`run`."""
        return self.events_handled / self.run_s if self.run_s > 0 else 0.0

    @property
    def network(self) -> NetworkConfig:
        """How the network treats messages now (a ``network`` fault changes it)."""
        return self._network

    @network.setter
    def network(self, network: NetworkConfig) -> None:
        self._network = network
        self._draws = _draws(network)

    def _run(self, until_ms: int) -> None:
        # The hot loop: locals instead of attributes, the commonest kinds first.
        queue = self._queue
        pop = heapq.heappop
        deliver = self._deliver
        handle = self._input
        events_max = self.events_max
        events = self.events_handled
        # A stop mark sorts after every event due by until_ms and before every later one (their
        # numbers start at 1), so the loop need not look at the queue's head for each event.
        mark: tuple[int, int, int, Any, Any, Any] = (until_ms + 1, 0, _STOP, None, None, None)
        heapq.heappush(queue, mark)
        stop: tuple[int, int, int, Any, Any, Any] | None = mark
        try:
            while True:
                timer = self._next_timer
                if timer is not None and timer < queue[0]:
                    # A member's timer comes first (its number decides a tie, as for events).
                    at_ms, _, host = timer
                    timers = self._timers
                    del timers[host]
                    self._next_timer = min(timers.values()) if timers else None
                    if host.state != "up" and host.state != "left":
                        continue
                    kind = _TIMER
                else:
                    at_ms, _, kind, host, a, b = pop(queue)
                if kind == _STOP:
                    stop = None
                    break
                if events >= events_max:
                    raise RuntimeError(f"seed {self.seed}: more than {events_max} events")
                events += 1
                self.now_ms = at_ms
                if kind == _DELIVER:
                    deliver(host, a, b)
                elif kind == _TIMER:
                    host.armed_ms = None
                    handle(host, _TIMER_FIRED)
                elif kind == _CALL:
                    if host.incarnation == a:
                        if host.state == "up":
                            b()
                        elif host.state == "paused":
                            host.pending_calls.append(b)
                else:
                    self._fault(a)
        finally:
            self.events_handled = events
            if stop is not None:  # stopped by an error: take the mark out again
                queue.remove(stop)
                heapq.heapify(queue)
        self.now_ms = max(self.now_ms, until_ms)

    @property
    def sections(self) -> list[Section]:
        """Every critical section so far, in the order they were granted."""
        return [Section(*fields) for fields in self._sections]

    def live_members(self) -> list[str]:
        """Members running now (not crashed, not paused, not left)."""
        return [m for m, host in self._hosts.items() if host.state == "up"]

    def core(self, member_id: str) -> Member | None:
        """The member's current core (None while crashed)."""
        return self._hosts[member_id].core

    @property
    def digest(self) -> str:
        """A hash of the whole trace (``trace=True``): equal digests, equal runs."""
        assert self.trace is not None, "digest needs Simulation(..., trace=True)"
        return hashlib.sha256("\n".join(self.trace).encode()).hexdigest()[:16]

    # -- internals --

    def _push(self, at_ms: int, kind: int, host: Any, a: Any, b: Any = None) -> None:
        heapq.heappush(self._queue, (at_ms, next(self._made), kind, host, a, b))

    def _transmit(self, sender: str, to: str, message: Any) -> None:
        self.counts["messages"] += 1
        if message.__class__ is Vote and message.granted:
            self.assents.add((sender, message.epoch, message.candidate))
        delay_ms_min, delay_span, drop_rate, duplicate_rate = self._draws
        draw = self._draw
        # The draws, in this order: drop, duplicate, then one delay per copy.
        if drop_rate and draw() < drop_rate:
            return
        duplicate = duplicate_rate and draw() < duplicate_rate
        host = self._hosts[to]
        at_ms = self.now_ms + delay_ms_min
        queue, made = self._queue, self._made
        _heappush(
            queue, (at_ms + int(draw() * delay_span), next(made), _DELIVER, host, sender, message)
        )
        if duplicate:
            _heappush(
                queue,
                (at_ms + int(draw() * delay_span), next(made), _DELIVER, host, sender, message),
            )

    def _deliver(self, host: _Host, sender: str, message: Any) -> None:
        cut_off = self._cut_off
        if cut_off and (sender in cut_off) != (host.member_id in cut_off):
            return  # the partition formed while it was in flight
        state = host.state
        if state != "up":
            if state == "paused":
                host.inbox.append((sender, message))
                return
            if state != "left":
                return
        if message.__class__ is _AppMessage:
            if state == "up":
                assert host.app is not None
                host.app.on_message(host, sender, message.payload)
            return
        core = host.core
        assert core is not None
        actions = core.receive(message, self.now_ms)
        if self.trace is not None:
            self._trace(host, Received(message), actions)
        self._carry_out(host, actions)

    def _input(self, host: _Host, event: Event) -> None:
        core = host.core
        assert core is not None
        actions = core.handle(event, self.now_ms)
        if self.trace is not None:
            self._trace(host, event, actions)
        if type(event) is Release:
            self._close(host.member_id, event.fence, "release")
        self._carry_out(host, actions)

    def _trace(self, host: _Host, event: Event, actions: list[Action]) -> None:
        assert self.trace is not None
        prefix = f"{self.now_ms} {host.member_id}"
        self.trace.append(f"{prefix} <- {event!r}")
        for action in actions:
            self.trace.append(f"{prefix} -> {action!r}")

    def _carry_out(self, host: _Host, actions: list[Action]) -> None:
        """Do what the host's core asked, in order, then set its timer."""
        member_id = host.member_id
        now_ms = self.now_ms
        for action in actions:
            kind = action.__class__
            if kind is Send:
                self._transmit(member_id, action.to, action.message)  # type: ignore[union-attr]
            elif kind is Grant:
                fence: Fence = action.fence  # type: ignore[union-attr]
                self._open[member_id] = len(self._sections)
                self._sections.append([member_id, host.incarnation, fence, now_ms, None, "open"])
                if host.app is not None:
                    until_ms: int = action.until_ms  # type: ignore[union-attr]
                    host.app.on_grant(host, fence, until_ms)
            elif kind is not HandoffAcked:  # (for metrics; nothing to record here)
                record = self._record.get(kind)
                if record is not None:
                    record(host, action)
        # Set the member's one timer (inlined _arm: this runs after every event).
        core = host.core
        assert core is not None
        deadline = core.next_deadline_ms()
        if deadline is not None and deadline < now_ms:
            deadline = now_ms
        if deadline != host.armed_ms:
            self._set_timer(host, deadline)

    def _set_timer(self, host: _Host, deadline: int | None) -> None:
        """Set the host's one timer to ``deadline`` (None: unset it).

        Timers are not queued: each member has at most one, in _timers as (deadline, number,
        host), and _next_timer is the first of them. A timer set takes the next number, as an
        event made does, so a timer and an event due at one instant run in the order they were
        made."""
        host.armed_ms = deadline
        timers = self._timers
        first = self._next_timer
        if deadline is None:
            if timers.pop(host, None) is not None and first is not None and first[2] is host:
                self._next_timer = min(timers.values()) if timers else None
            return
        timer = (deadline, next(self._made), host)
        timers[host] = timer
        if first is None or timer < first:
            self._next_timer = timer
        elif first[2] is host:  # the first timer moved later: find the new first
            self._next_timer = min(timers.values())

    def _on_revoke(self, host: _Host, action: Revoke) -> None:
        self._close(host.member_id, action.fence, "revoke")
        if host.app is not None:
            host.app.on_revoke(host, action.fence)

    def _on_claim_started(self, host: _Host, action: ClaimStarted) -> None:
        self.counts["claims"] += 1
        self.claims.append((self.now_ms, host.member_id, action.epoch))

    def _on_token_minted(self, host: _Host, action: TokenMinted) -> None:
        self.counts["mints"] += 1
        self.mints.append((self.now_ms, host.member_id, action.fence))

    def _on_token_purged(self, host: _Host, action: TokenPurged) -> None:
        self.counts["purges"] += 1

    def _on_member_down(self, host: _Host, action: MemberDown) -> None:
        self.counts["downs"] += 1

    def _on_member_up(self, host: _Host, action: MemberUp) -> None:
        self.counts["ups"] += 1

    def _close(self, member_id: str, fence: Fence, ended_by: str) -> None:
        index = self._open.get(member_id)
        if index is None:
            return
        section = self._sections[index]
        if section[2] is not fence and section[2] != fence:
            return
        del self._open[member_id]
        section[4] = self.now_ms
        section[5] = ended_by

    def _arm(self, host: _Host) -> None:
        assert host.core is not None
        deadline = host.core.next_deadline_ms()
        if deadline is not None:
            deadline = max(deadline, self.now_ms)
        if deadline == host.armed_ms:
            return  # the timer already set is the right one
        self._set_timer(host, deadline)

    def _fault(self, fault: Fault) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.now_ms} fault {fault.kind} {','.join(fault.members)}")
        kind = fault.kind
        if kind == "network":
            assert fault.network is not None
            self.network = fault.network
            return
        if kind == "partition":
            self._cut_off = frozenset(fault.members)
            return
        if kind == "heal":
            self._cut_off = frozenset()
            return
        for member_id in fault.members:
            host = self._hosts[member_id]
            if kind == "crash" and host.state in ("up", "paused", "left"):
                host.state = "down"
                host.core = None
                host.app = None
                host.inbox.clear()
                host.pending_calls.clear()
                self._set_timer(host, None)
                index = self._open.get(member_id)
                if index is not None:
                    self._close(member_id, self._sections[index][2], "crash")
            elif kind == "restart" and host.state == "down":
                host.incarnation += 1
                host.state = "up"
                host.core = self.member_factory(
                    member_id,
                    self.members,
                    hold_max_ms=self.hold_max_ms,
                    handoff_timeout_ms=self.handoff_timeout_ms,
                    loss_timeout_ms=self.loss_timeout_ms,
                )
                host.app = self.application(member_id)
                self._input(host, Start())
            elif kind == "pause" and host.state == "up":
                host.state = "paused"
                self._set_timer(host, None)
            elif kind == "resume" and host.state == "paused":
                host.state = "up"
                assert host.core is not None
                deadline = host.core.next_deadline_ms()
                if deadline is not None and deadline <= self.now_ms:
                    self._input(host, _TIMER_FIRED)  # the timer fires late
                inbox, host.inbox = host.inbox, []
                for sender, message in inbox:
                    if host.state == "up":
                        self._deliver(host, sender, message)
                calls, host.pending_calls = host.pending_calls, []
                for callback in calls:
                    callback()
                self._arm(host)
            elif kind == "leave" and host.state == "up":
                self._input(host, Leave())
                host.state = "left"


def _draws(network: NetworkConfig) -> tuple[int, int, float, float]:
    """What the network's draws need: the shortest delay, the number of delays, the drop
    and duplicate rates."""
    return (
        network.delay_ms_min,
        network.delay_ms_max - network.delay_ms_min + 1,
        network.drop_rate,
        network.duplicate_rate,
    )


# --- Checks any run can use --------------------------------------------------------------------


def check_single_holder(sections: Sequence[Section], *, from_ms: int = 0) -> list[str]:
    """Violations of "at most one holder at any instant" among sections ending after
    ``from_ms`` (an open section counts as lasting for ever)."""
    problems: list[str] = []
    relevant = sorted(
        (s for s in sections if s.end_ms is None or s.end_ms > from_ms), key=lambda s: s.start_ms
    )
    latest: Section | None = None
    for section in relevant:
        if latest is not None and (latest.end_ms is None or latest.end_ms > section.start_ms):
            problems.append(f"two holders: {latest} and {section}")
        if latest is None or latest.end_ms is None or (
            section.end_ms is not None and section.end_ms > latest.end_ms
        ) or section.end_ms is None:
            latest = section
    return problems


def check_fences_per_member(sections: Sequence[Section]) -> list[str]:
    """Violations of "each observer sees strictly increasing fences": the grants one
    incarnation of a member receives, in time order."""
    problems: list[str] = []
    last: dict[tuple[str, int], Fence] = {}
    for section in sections:
        key = (section.member, section.incarnation)
        previous = last.get(key)
        if previous is not None and not section.fence > previous:
            problems.append(f"{section.member}: fence {section.fence} after {previous}")
        last[key] = section.fence
    return problems


def check_fence_owners(sections: Sequence[Section]) -> list[str]:
    """Violations of "a fence is never handed out twice": within a generation a fence's seq
    fixes the ring position it is held at, so one fence is only ever granted to one member."""
    problems: list[str] = []
    owner: dict[Fence, str] = {}
    for section in sections:
        first = owner.setdefault(section.fence, section.member)
        if first != section.member:
            problems.append(f"fence {section.fence} granted to {first} and to {section.member}")
    return problems


def check_majority_minting(simulation: Simulation) -> list[str]:
    """Violations of "only a strict majority of the configured members mints": for every
    TokenMinted, the minter and the members that sent it a granted vote for that bid."""
    problems: list[str] = []
    majority = len(simulation.members) // 2 + 1
    for at_ms, member, fence in simulation.mints:
        voters = {member} | {
            voter for voter, epoch, candidate in simulation.assents
            if epoch == fence.epoch and candidate == member
        }
        if len(voters) < majority:
            problems.append(
                f"{member} minted {fence} at {at_ms} with the assent of only {sorted(voters)}"
            )
    return problems


# --- Seeded scenarios: a whole run from one number ----------------------------------------------


@attrs.frozen
class Scenario:
    """A run made from a seed: the ring, its timing, the faults and when they stop."""

    seed: int
    members: tuple[str, ...]
    hold_max_ms: int
    handoff_timeout_ms: int
    faults: tuple[Fault, ...]
    faults_stop_ms: int
    """After this, no fault: the network is calm, partitions healed, paused resumed."""
    end_ms: int
    """The run stops here: the recovery bound and two rotations after the faults stop."""
    network: NetworkConfig


@attrs.frozen
class Outcome:
    """What a scenario's run showed."""

    scenario: Scenario
    violations: tuple[str, ...]
    """Every broken property, empty when the run is good."""
    recovered_ms: int | None
    """How long after the faults stopped the last claim or purge happened (None: none did)."""
    events: int
    """Simulated events handled."""
    counts: dict[str, int]
    """claims, mints, purges, downs, ups and messages over the run."""
    digest: str | None
    """The trace's digest (runs with ``trace=True``)."""

    def report(self) -> str:
        """What to print for a failing run: its seed, how to replay it, what broke."""
        lines = [
            f"seed {self.scenario.seed} failed ({len(self.scenario.members)} members); "
            f"replay: {replay_command(self.scenario.seed)}"
        ]
        lines += [f"  {v}" for v in self.violations[:VIOLATIONS_SHOWN_MAX]]
        return "\n".join(lines)


VIOLATIONS_SHOWN_MAX = 10


def replay_command(seed: int) -> str:
    """The shell command that replays ``seed`` exactly and prints its trace digest."""
    return f".venv/bin/python -m tokenring.simulation --seed {seed}"


def _member_names(count: int) -> tuple[str, ...]:
    return tuple(f"m{i}" for i in range(count))


def scenario_for_seed(
    seed: int, *, members: int | None = None, fault_rounds_max: int = 4
) -> Scenario:
    """A short random fault schedule over a ring of 2 to 9 members, all from ``seed``."""
    rng = random.Random(seed)
    n = members if members is not None else rng.randint(MEMBERS_MIN_SWEEP, MEMBERS_MAX_SWEEP)
    names = _member_names(n)
    hold, handoff = SWEEP_HOLD_MAX_MS, SWEEP_HANDOFF_TIMEOUT_MS
    loss = loss_timeout_ms_for(n, hold, handoff)
    calm = NetworkConfig(delay_ms_min=1, delay_ms_max=handoff // 2 - 1)
    faults: list[Fault] = []
    t = rng.randint(0, loss)
    crashed: set[str] = set()
    for _ in range(rng.randint(0, fault_rounds_max)):
        kind = rng.choice(["crash", "pause", "partition", "network", "restart"])
        victims = tuple(sorted(rng.sample(names, rng.randint(1, max(1, n // 2)))))
        length = rng.randint(1, 3 * loss)
        if kind == "crash":
            faults.append(Fault(t, "crash", victims))
            crashed.update(victims)
            if rng.random() < 0.7:
                faults.append(Fault(t + length, "restart", victims))
                crashed.difference_update(victims)
        elif kind == "restart":
            faults.append(Fault(t, "crash", victims))
            faults.append(Fault(t + rng.randint(0, 3), "restart", victims))
        elif kind == "pause":
            faults.append(Fault(t, "pause", victims))
            faults.append(Fault(t + length, "resume", victims))
        elif kind == "partition":
            faults.append(Fault(t, "partition", victims))
            faults.append(Fault(t + length, "heal"))
        else:
            lossy = NetworkConfig(
                delay_ms_min=1,
                delay_ms_max=rng.randint(2, 3 * handoff),
                drop_rate=rng.choice([0.0, 0.05, 0.3]),
                duplicate_rate=rng.choice([0.0, 0.1, 0.3]),
            )
            faults.append(Fault(t, "network", network=lossy))
            faults.append(Fault(t + length, "network", network=calm))
        t += rng.randint(0, loss)
    stop = max([t] + [f.at_ms for f in faults]) + 1
    # When the faults stop, the network is calm and everything heals; members stay crashed
    # only while a majority of the ring still runs, so a token can always exist.
    majority = n // 2 + 1
    staying = sorted(crashed)[: max(0, n - majority)] if rng.random() < 0.5 else []
    restart = tuple(sorted(crashed - set(staying)))
    faults += [
        Fault(stop, "network", network=calm),
        Fault(stop, "heal"),
        Fault(stop, "resume", names),
    ]
    if restart:
        faults.append(Fault(stop, "restart", restart))
    end = stop + recovery_ms_for(n, hold, handoff) + 2 * rotation_ms_for(n, hold, handoff)
    return Scenario(seed, names, hold, handoff, tuple(faults), stop, end, calm)


def run_scenario(
    scenario: Scenario, *, trace: bool = False, member_factory: Callable[..., Member] = Member
) -> Outcome:
    """Run ``scenario`` and check every property the ring promises (docs/protocol.md)."""
    n = len(scenario.members)
    hold, handoff = scenario.hold_max_ms, scenario.handoff_timeout_ms
    sim = Simulation(
        scenario.members,
        seed=scenario.seed,
        hold_max_ms=hold,
        handoff_timeout_ms=handoff,
        network=scenario.network,
        faults=scenario.faults,
        trace=trace,
        member_factory=member_factory,
    )
    sim.run(scenario.end_ms)
    violations: list[str] = []
    sections = sim.sections
    violations += check_fences_per_member(sections)
    violations += check_fence_owners(sections)
    violations += check_majority_minting(sim)
    recovery_ms = recovery_ms_for(n, hold, handoff)
    settled_ms = scenario.faults_stop_ms + recovery_ms
    rotation_ms = rotation_ms_for(n, hold, handoff)
    late = [s for s in sections if s.start_ms >= settled_ms]
    violations += check_single_holder(sections, from_ms=settled_ms)
    for earlier, later in zip(late, late[1:]):
        if not later.fence > earlier.fence:
            violations.append(f"after recovery, fence {later.fence} followed {earlier.fence}")
    for at_ms, member, epoch in sim.claims:
        if at_ms >= settled_ms:
            violations.append(f"claim by {member} for epoch {epoch} at {at_ms} after recovery")
    live = sim.live_members()
    for member in live:
        visits = [s.start_ms for s in late if s.member == member]
        if not visits or visits[0] > settled_ms + rotation_ms:
            violations.append(
                f"{member} not visited within one rotation ({rotation_ms} ms) after {settled_ms}"
            )
    after_stop = [t for t, _, _ in sim.claims if t >= scenario.faults_stop_ms]
    return Outcome(
        scenario=scenario,
        violations=tuple(violations),
        recovered_ms=(max(after_stop) - scenario.faults_stop_ms) if after_stop else None,
        events=sim.events_handled,
        counts=dict(sim.counts),
        digest=sim.digest if trace else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tokenring.simulation --seed N``: replay one seeded run and report it."""
    parser = argparse.ArgumentParser(
        prog="python -m tokenring.simulation", description=main.__doc__
    )
    parser.add_argument("--seed", type=int, required=True, help="the seed a failing test printed")
    parser.add_argument("--members", type=int, default=None, help="ring size (default: from seed)")
    parser.add_argument("--trace", action="store_true", help="print every event and action")
    args = parser.parse_args(argv)
    scenario = scenario_for_seed(args.seed, members=args.members)
    started = time.perf_counter()
    outcome = run_scenario(scenario, trace=True)
    elapsed = time.perf_counter() - started
    print(f"seed {args.seed}: {len(scenario.members)} members, {len(scenario.faults)} faults, "
          f"faults stop at {scenario.faults_stop_ms} ms, run ends at {scenario.end_ms} ms")
    for fault in scenario.faults:
        print(f"  {fault.at_ms:>7} ms {fault.kind} {' '.join(fault.members)}")
    print(f"{outcome.events} events in {elapsed:.2f} s ({outcome.events / elapsed:,.0f}/s, "
          f"tracing); trace digest {outcome.digest}")
    if args.trace:
        sim = Simulation(
            scenario.members, seed=scenario.seed, hold_max_ms=scenario.hold_max_ms,
            handoff_timeout_ms=scenario.handoff_timeout_ms, network=scenario.network,
            faults=scenario.faults, trace=True,
        )
        sim.run(scenario.end_ms)
        assert sim.trace is not None
        for line in sim.trace:
            print(line)
    if outcome.violations:
        print("VIOLATIONS:")
        for line in outcome.violations:
            print("  " + line)
        return 1
    print("ok: every property held")
    return 0


def run_command(main: Callable[[], int]) -> NoReturn:
    """Run a command's ``main`` and exit with its status. Output closed before the command
    is done (``--trace | head``) ends it quietly: what was not read was not wanted."""
    try:
        status = main()
        sys.stdout.flush()  # a closed pipe shows here, where it can be caught, not at exit
    except BrokenPipeError:
        # What is left to flush at exit goes nowhere instead of failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    sys.exit(status)


if __name__ == "__main__":
    run_command(main)
