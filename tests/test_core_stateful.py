"""Hypothesis drives a ring of pure cores through any interleaving it likes.

The network is a bag of messages the machine delivers, duplicates or drops in any order; time
jumps by any amount and every due timer fires; members crash and restart knowing nothing;
applications release or overrun. After every step the invariants hold: each incarnation's
grants strictly increase, a mint always had a strict majority's assent with every voter's fence
below it, a member holds at most one critical section, and its timers, once fired, are never
left due.
A failure shrinks to a short program that replays exactly.
"""

from __future__ import annotations

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tokenring.core import (
    Action,
    Fence,
    Grant,
    Member,
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
)

HOLD_MS = 10
HANDOFF_MS = 20
BAG_MAX = 200
"""Messages kept in flight at most; beyond it the oldest are dropped (the network is lossy)."""


class RingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now_ms = 0
        self.members: list[str] = []
        self.cores: dict[str, Member] = {}
        self.incarnation: dict[str, int] = {}
        self.bag: list[tuple[str, str, Message]] = []  # (sender, to, message)
        self.last_grant: dict[tuple[str, int], Fence] = {}
        self.open: dict[str, Fence] = {}
        self.assents: dict[tuple[int, str], set[str]] = {}
        self.assent_fences: dict[tuple[int, str], list[Fence]] = {}
        self.mints: list[tuple[str, Fence]] = []

    @initialize(n=st.integers(1, 5))
    def start_ring(self, n: int) -> None:
        self.members = [f"m{i}" for i in range(n)]
        for member in self.members:
            self.incarnation[member] = -1
            self._restart(member)

    def _restart(self, member: str) -> None:
        self.incarnation[member] += 1
        self.open.pop(member, None)
        self.cores[member] = Member(
            member, self.members, hold_max_ms=HOLD_MS, handoff_timeout_ms=HANDOFF_MS
        )
        self._apply(member, self.cores[member].handle(Start(), self.now_ms))

    def _apply(self, member: str, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.bag.append((member, action.to, action.message))
                message = action.message
                if isinstance(message, Vote) and message.granted:
                    key = (message.epoch, message.candidate)
                    self.assents.setdefault(key, set()).add(member)
                    self.assent_fences.setdefault(key, []).append(message.fence)
            elif isinstance(action, Grant):
                key = (member, self.incarnation[member])
                previous = self.last_grant.get(key)
                assert previous is None or action.fence > previous, (previous, action.fence)
                assert member not in self.open, "a second grant while a section is open"
                assert action.until_ms == self.now_ms + HOLD_MS
                self.last_grant[key] = action.fence
                self.open[member] = action.fence
            elif isinstance(action, Revoke):
                assert self.open.pop(member) == action.fence
            elif isinstance(action, TokenMinted):
                self.mints.append((member, action.fence))
                event(f"minted in a ring of {len(self.members)}")
            elif isinstance(action, TokenPurged):
                event(f"purged: {action.reason}")
        del self.bag[:-BAG_MAX]

    def _member(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(self.members))

    @precondition(lambda self: bool(self.bag))
    @rule(data=st.data(), duplicate=st.booleans())
    def deliver(self, data: st.DataObject, duplicate: bool) -> None:
        index = data.draw(st.integers(0, len(self.bag) - 1))
        sender, to, message = self.bag[index] if duplicate else self.bag.pop(index)
        self._apply(to, self.cores[to].handle(Received(message), self.now_ms))

    @precondition(lambda self: bool(self.bag))
    @rule()
    def network_catches_up(self) -> None:
        # Deliver what is in flight now, in order (what they send meanwhile stays in flight):
        # without such calm stretches a random interleaving rarely completes a claim.
        in_flight, self.bag = self.bag, []
        for _sender, to, message in in_flight:
            self._apply(to, self.cores[to].handle(Received(message), self.now_ms))

    @precondition(lambda self: bool(self.bag))
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        self.bag.pop(data.draw(st.integers(0, len(self.bag) - 1)))

    @rule(elapsed_ms=st.integers(0, 400))
    def time_passes(self, elapsed_ms: int) -> None:
        self.now_ms += elapsed_ms
        for member in self.members:
            # Each firing may set a new deadline that is also due: bounded by a count.
            for _ in range(10):
                deadline = self.cores[member].next_deadline_ms()
                if deadline is None or deadline > self.now_ms:
                    break
                self._apply(member, self.cores[member].handle(TimerFired(), self.now_ms))
            deadline = self.cores[member].next_deadline_ms()
            assert deadline is None or deadline > self.now_ms, "a due timer did nothing"

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        member = self._member(data)
        fence = self.open.get(member)
        if fence is not None:
            del self.open[member]
            self._apply(member, self.cores[member].handle(Release(fence), self.now_ms))

    @rule(data=st.data())
    def crash_and_restart(self, data: st.DataObject) -> None:
        member = self._member(data)
        self.bag = [item for item in self.bag if item[1] != member]
        self._restart(member)

    @invariant()
    def mints_had_a_majority_above_every_voters_fence(self) -> None:
        majority = len(self.members) // 2 + 1
        for member, fence in self.mints:
            key = (fence.epoch, member)
            voters = self.assents.get(key, set()) | {member}
            assert len(voters) >= majority, (member, fence, voters)
            assert all(seen < fence for seen in self.assent_fences.get(key, []))

    @invariant()
    def status_agrees_with_the_grants(self) -> None:
        for member, core in self.cores.items():
            status = core.status
            if member in self.open:
                assert status.holding and status.fence is not None
                assert status.fence >= self.open[member]
            assert set(status.members) == set(self.members)


RingMachine.TestCase.settings = settings(
    max_examples=120, stateful_step_count=60, deadline=None
)
test_ring_machine = RingMachine.TestCase
