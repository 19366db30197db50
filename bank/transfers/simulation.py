"""A seeded simulation of the transfer protocol: the pure coordinator and participant of
every bank, in-memory books, a virtual clock, a hostile network and a token that can go stale.

The token is modelled, not run: every ``hold_ms`` the next bank in ring order is granted a
fresh, higher fence (the ring's job, proved in ``tokenring.simulation``). What matters here is
that the protocol stays correct whatever the token does, so the schedule also delivers grants
late (a paused holder wakes up with its old fence) and replays stale grants on purpose.

Faults, all drawn from one ``random.Random(seed)``: message drop, duplicate, delay (hence
reorder), partitions that form and heal, crashes (at any point inside a step: a batch of book
operations is the unit of durability) with restarts, and pauses. After ``faults_ms`` every
fault stops and the run continues until every transfer is decided and delivered.

:func:`run` checks the invariants after every event and raises :class:`InvariantViolation`
naming the seed; the same seed replays the same run, event for event.
``python -m bank.transfers.simulation --seed N`` replays one from the command line.
"""

from __future__ import annotations

import argparse
import heapq
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from bank.transfers.book import MemoryBook, Steps
from bank.transfers.coordinator import Coordinator
from bank.transfers.participant import Participant
from bank.transfers.protocol import (
    ABORTED,
    COMMITTED,
    Acks,
    DecisionQuery,
    Decisions,
    Leg,
    Message,
    Prepare,
    Transfer,
    Votes,
)
from tokenring.simulation import run_command

__all__ = [
    "InvariantViolation",
    "SimulationReport",
    "main",
    "replay_command",
    "run",
    "sweep_banks",
]

SETTLE_MS_MAX = 120_000
"""How long (virtual) the run may take to settle after faults stop before it is a failure."""
EVENTS_MAX = 200_000
"""A run that needs more events than this is a failure (a livelock), not a slow test."""
BANKS_MIN = 2
"""A transfer a coordinator runs touches another bank: a run needs two banks at least."""
SWEEP_BANKS_MIN = 2
SWEEP_BANKS_MAX = 5
"""The seeded sweep (tests/test_transfer_simulation.py) runs its seeds on 2 to 5 banks in turn."""

Fence = tuple[int, str, int]


class InvariantViolation(AssertionError):
    """A run broke an invariant; the message names the seed that replays it."""

    trace: tuple[str, ...] = ()
    """The run's events up to the breach (runs with ``trace=True``)."""


class _Crash(Exception):
    """Raised inside a step to crash the bank between two batches of book operations."""


@attrs.frozen
class SimulationReport:
    """What a run did (for tests and the benchmark)."""

    seed: int
    """The seed that replays the run."""
    events: int
    """Events handled."""
    transfers: int
    """Transfers submitted and recorded."""
    committed: int
    """Transfers committed."""
    aborted: int
    """Transfers aborted."""
    crashes: int
    """Bank crashes injected."""
    stale_refusals: int
    """Votes refused because of a stale fence."""
    presumed_aborts: int
    """Transfers a participant gave up on because its coordinator had no record of them
    (it died before it stored them)."""
    trace: tuple[str, ...]
    """One line per event (only when asked for), to compare two runs of one seed."""


@attrs.define
class _Bank:
    id: str
    book: MemoryBook
    participant: Participant
    coordinator: Coordinator
    alive: bool = True
    paused_until_ms: int = 0
    deferred: list[tuple[str, Any]] = attrs.Factory(list)
    timer_ms: int | None = None


@attrs.define
class _World:
    rng: random.Random
    banks: dict[str, _Bank]
    order: list[str]
    faults_ms: int
    now_ms: int = 0
    seq: int = 0
    queue: list[tuple[int, int, str, str, Any]] = attrs.Factory(list)
    partition: frozenset[str] = frozenset()
    partition_until_ms: int = 0
    crashes: int = 0
    stale_refusals: int = 0
    events: int = 0
    trace: list[str] | None = None
    decided_seen: dict[str, str] = attrs.Factory(dict)
    presumed_aborted: set[str] = attrs.Factory(set)
    told_ids: set[str] = attrs.Factory(set)
    """Transfers whose client heard the id before the outcome: stored, never presumed
    aborted."""
    hold_fences: dict[str, Any] = attrs.Factory(dict)
    applied_checked: dict[str, int] = attrs.Factory(dict)

    def push(self, at_ms: int, bank: str, kind: str, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at_ms, self.seq, bank, kind, payload))

    @property
    def faulty(self) -> bool:
        return self.now_ms < self.faults_ms


def run(
    seed: int,
    *,
    banks_count: int = 3,
    transfers_count: int = 24,
    faults_ms: int = 1_500,
    hold_ms: int = 20,
    fault_rate: float = 1.0,
    trace: bool = False,
    batch_transfers_max: int = 8,
) -> SimulationReport:
    """Run one seeded schedule; raise :class:`InvariantViolation` (with the seed) on a breach."""
    rng = random.Random(seed)
    world = _World(rng=rng, banks={}, order=[], faults_ms=faults_ms, trace=[] if trace else None)
    customers = ["c0", "c1", "c2"]
    # Participants that ask soon ask while rounds are still open: a coordinator must tell an
    # undecided transfer from one it never stored.
    query_after_ms = rng.choice([10, 200])
    for index in range(banks_count):
        bank_id = f"b{index}"
        book = MemoryBook(bank_id)
        for number in range(3):
            owner = customers[(index + number) % len(customers)]
            book.open_account(f"a{number}", owner, rng.randrange(0, 5_000))
        world.banks[bank_id] = _Bank(
            bank_id,
            book,
            Participant(bank_id, query_after_ms=query_after_ms, query_interval_ms_max=1_000),
            Coordinator(
                bank_id,
                batch_transfers_max=batch_transfers_max,
                retry_ms_min=20,
                retry_ms_max=400,
                acks_flush_ms=10,
                stale_retries_max=rng.randrange(0, 3),
            ),
        )
        world.order.append(bank_id)
    initial = {
        (b.id, number): account.balance_cents
        for b in world.banks.values()
        for number, account in b.book.accounts.items()
    }

    for index in range(transfers_count):
        world.push(rng.randrange(0, faults_ms), rng.choice(world.order), "submit", index)
    world.push(0, world.order[0], "grant", (1, world.order[0], 1))
    if fault_rate > 0:
        _schedule_faults(world, fault_rate)

    def fail(problem: str) -> InvariantViolation:
        violation = InvariantViolation(f"seed {seed}: {problem} (at {world.now_ms} ms)")
        violation.trace = tuple(world.trace or ())
        return violation

    try:
        _loop(world, hold_ms, fail)
    except InvariantViolation:
        raise
    except Exception as error:  # any crash of the protocol is a failure of this seed
        raise fail(f"{type(error).__name__}: {error}") from error
    _check_settled(world, initial, fail)
    committed = sum(1 for o in world.decided_seen.values() if o == COMMITTED)
    return SimulationReport(
        seed=seed,
        events=world.events,
        transfers=sum(len(b.book.transfers) for b in world.banks.values()),
        committed=committed,
        aborted=len(world.decided_seen) - committed,
        crashes=world.crashes,
        stale_refusals=world.stale_refusals,
        presumed_aborts=len(world.presumed_aborted),
        trace=tuple(world.trace or ()),
    )


def _schedule_faults(world: _World, rate: float) -> None:
    rng = world.rng
    count = int(rng.randrange(0, 6) * rate)
    for _ in range(count):
        at = rng.randrange(0, world.faults_ms)
        kind = rng.choice(["crash", "pause", "partition", "stale_grant"])
        world.push(at, rng.choice(world.order), kind, rng.randrange(30, 400))


def _loop(world: _World, hold_ms: int, fail: Callable[[str], InvariantViolation]) -> None:
    rng = world.rng
    settle_deadline = world.faults_ms + SETTLE_MS_MAX
    next_check_ms = world.faults_ms
    while world.queue:
        at, _, bank_id, kind, payload = heapq.heappop(world.queue)
        world.now_ms = max(world.now_ms, at)
        world.events += 1
        if world.events > EVENTS_MAX or world.now_ms > settle_deadline:
            raise fail("the run did not settle")
        if world.trace is not None:
            world.trace.append(f"{world.now_ms} {bank_id} {kind} {payload!r}")
        bank = world.banks[bank_id]
        if kind == "grant":
            _token_moves(world, bank_id, payload, hold_ms)
        if kind in ("crash", "pause", "partition", "stale_grant"):
            _fault(world, bank, kind, payload)
        elif kind == "restart":
            _restart(world, bank)
        elif kind == "resume":
            if bank.alive and bank.paused_until_ms <= world.now_ms:
                for deferred_kind, deferred in bank.deferred:
                    # A grant that arrived during the pause already moved the token on (the
                    # ring's job): the bank wakes up acting on it, a stale holder, but the
                    # token is not moved again (that would make a second one).
                    kind_now = "grant_only" if deferred_kind == "grant" else deferred_kind
                    world.push(world.now_ms, bank.id, kind_now, deferred)
                bank.deferred.clear()
        elif not bank.alive:
            pass  # a dead bank hears nothing; its messages are lost
        elif bank.paused_until_ms > world.now_ms:
            bank.deferred.append((kind, payload))
        else:
            _handle(world, bank, kind, payload, fail)
        _check_always(world, bank, fail)
        if world.now_ms >= next_check_ms and _settled(world):
            return
        if world.now_ms >= next_check_ms:
            next_check_ms = world.now_ms + 50
    if not _settled(world):
        raise fail("the event queue ran dry before the run settled")
    del rng


def _token_moves(world: _World, holder: str, fence: Fence, hold_ms: int) -> None:
    """Schedule the next grant: the ring's job, modelled. Skips dead banks; a new epoch
    when the holder was unavailable (the ring would have regenerated the token)."""
    epoch, issuer, seq = fence
    index = world.order.index(holder)
    for step in range(1, len(world.order) + 1):
        successor = world.order[(index + step) % len(world.order)]
        if world.banks[successor].alive:
            break
    holder_bank = world.banks[holder]
    if not holder_bank.alive or holder_bank.paused_until_ms > world.now_ms:
        epoch, issuer, seq = epoch + 1, successor, 0
    world.push(world.now_ms + hold_ms, successor, "grant", (epoch, issuer, seq + 1))


def _fault(world: _World, bank: _Bank, kind: str, duration_ms: int) -> None:
    if not world.faulty:
        return
    if kind == "crash" and bank.alive:
        _crash(world, bank, duration_ms)
    elif kind == "pause" and bank.alive:
        bank.paused_until_ms = world.now_ms + duration_ms
        world.push(bank.paused_until_ms, bank.id, "resume", None)
    elif kind == "partition":
        size = world.rng.randrange(1, max(2, len(world.order) // 2 + 1))
        world.partition = frozenset(world.rng.sample(world.order, size))
        world.partition_until_ms = world.now_ms + duration_ms
    elif kind == "stale_grant" and bank.alive:
        # An old holder acting on a fence the ring has long since passed.
        world.push(world.now_ms, bank.id, "grant_only", (0, bank.id, world.rng.randrange(0, 50)))


def _crash(world: _World, bank: _Bank, down_ms: int) -> None:
    world.crashes += 1
    bank.alive = False
    bank.deferred.clear()
    bank.paused_until_ms = 0
    bank.timer_ms = None
    world.push(world.now_ms + down_ms, bank.id, "restart", None)


def _restart(world: _World, bank: _Bank) -> None:
    if bank.alive:
        return
    bank.alive = True
    bank.participant = Participant(
        bank.id,
        query_after_ms=bank.participant.query_after_ms,
        query_interval_ms_max=bank.participant.query_interval_ms_max,
    )
    bank.coordinator = Coordinator(
        bank.id,
        batch_transfers_max=bank.coordinator.batch_transfers_max,
        retry_ms_min=bank.coordinator.retry_ms_min,
        retry_ms_max=bank.coordinator.retry_ms_max,
        acks_flush_ms=bank.coordinator.acks_flush_ms,
        stale_retries_max=bank.coordinator.stale_retries_max,
    )
    _drive(world, bank, bank.participant.start(world.now_ms), crash_ok=False)
    sends = _drive(world, bank, bank.coordinator.start(world.now_ms), crash_ok=False)
    for to, message in sends or []:
        _send(world, bank.id, to, message)
    _arm(world, bank)


def _drive(world: _World, bank: _Bank, steps: Steps[Any], *, crash_ok: bool = True) -> Any:
    """Run a step against the bank's book; during faults, sometimes crash between batches.
    Returns None when the bank crashed."""
    crash_at = None
    if crash_ok and world.faulty and world.rng.random() < 0.01:
        crash_at = world.rng.randrange(0, 4)
    done = 0
    try:
        batch = next(steps)
        while True:
            if crash_at is not None and done >= crash_at:
                raise _Crash
            results = bank.book.execute(batch)
            done += 1
            batch = steps.send(results)
    except StopIteration as stop:
        return stop.value
    except _Crash:
        steps.close()
        _crash(world, bank, world.rng.randrange(30, 300))
        return None


def _send(world: _World, sender: str, to: str, message: Message) -> None:
    if to == sender:
        world.push(world.now_ms, to, "message", message)  # no network between a bank and itself
        return
    if world.faulty:
        rng = world.rng
        cut = world.now_ms < world.partition_until_ms and (
            (sender in world.partition) != (to in world.partition)
        )
        if cut or rng.random() < 0.05:
            return
        copies = 2 if rng.random() < 0.05 else 1
        for _ in range(copies):
            # Mostly prompt, sometimes late enough to miss the round's deadline.
            delay_ms = rng.randrange(1, 6) if rng.random() < 0.9 else rng.randrange(6, 60)
            world.push(world.now_ms + delay_ms, to, "message", message)
    else:
        world.push(world.now_ms + world.rng.randrange(1, 5), to, "message", message)


def _arm(world: _World, bank: _Bank) -> None:
    times = [t for t in (bank.coordinator.next_deadline_ms(), bank.participant.next_deadline_ms()) if t is not None]
    if not times:
        return
    due = max(min(times), world.now_ms)
    if bank.timer_ms is None or due < bank.timer_ms or bank.timer_ms < world.now_ms:
        bank.timer_ms = due
        world.push(due, bank.id, "timer", due)


def _handle(world: _World, bank: _Bank, kind: str, payload: Any, fail: Callable[[str], InvariantViolation]) -> None:
    sends: list[tuple[str, Message]] = []
    if kind == "submit":
        transfer = _random_transfer(world, bank.id, payload)
        # Half the clients wait for the outcome: their transfers are stored with their
        # decision (presumed abort), or when the wait runs out first (then the client hears
        # the id).
        record = world.rng.random() < 0.5
        if _drive(world, bank, bank.coordinator.submit(transfer, record=record)) is None and not bank.alive:
            return
        if not record:
            world.push(world.now_ms + world.rng.randrange(5, 200), bank.id, "wait_over", transfer.id)
    elif kind == "wait_over":
        stored = _drive(world, bank, bank.coordinator.record(payload))
        if stored is None and not bank.alive:
            return
        if stored:
            world.told_ids.add(payload)
        elif payload in bank.book.transfers:
            raise fail(f"{payload} is stored, its coordinator says not")
    elif kind in ("grant", "grant_only"):
        fence: Fence = payload
        # Votes may take longer than a visit: rounds of successive visits overlap.
        sends = bank.coordinator.grant(fence, world.now_ms + 45, world.now_ms)
    elif kind == "timer":
        if bank.timer_ms != payload:
            return
        bank.timer_ms = None
        expired, sends = bank.coordinator.tick(world.now_ms)
        if bank.coordinator.acks_due and _drive(world, bank, bank.coordinator.flush_acks()) is None and not bank.alive:
            return
        if expired:
            result = _drive(world, bank, bank.coordinator.expire(world.now_ms))
            if result is None:
                return
            _note_decided(world, result[0], fail)
            sends += result[1]
        sends += bank.participant.tick(world.now_ms)
    elif kind == "message":
        message: Message = payload
        if isinstance(message, (Prepare, Decisions)):
            replies = _drive(world, bank, bank.participant.handle(message, world.now_ms))
            if replies is None:
                return
            for reply in replies:
                if isinstance(reply, Votes):
                    world.stale_refusals += sum(1 for v in reply.votes if v.reason == "stale_fence")
                    if any(v.ok for v in reply.votes):
                        # Fenced mutual exclusion: holds are placed in non-decreasing fence order.
                        last = world.hold_fences.get(bank.id)
                        if last is not None and reply.fence < last:
                            raise fail(f"{bank.id} held under {reply.fence} after {last}")
                        world.hold_fences[bank.id] = reply.fence
                sends.append((message.sender, reply))
        else:
            assert isinstance(message, (Votes, Acks, DecisionQuery))
            result = _drive(world, bank, bank.coordinator.handle(message, world.now_ms))
            if result is None:
                return
            _note_decided(world, result[0], fail)
            sends = result[1]
    for to, message in sends:
        _send(world, bank.id, to, message)
    if bank.alive:
        _arm(world, bank)


def _note_decided(world: _World, decided: list[Any], fail: Callable[[str], InvariantViolation]) -> None:
    for d in decided:
        if d.transfer_id in world.presumed_aborted:
            raise fail(f"{d.transfer_id} decided {d.outcome} after it was presumed aborted")
        known = world.decided_seen.setdefault(d.transfer_id, d.outcome)
        if known != d.outcome:
            raise fail(f"{d.transfer_id} decided twice, differently")


def _random_transfer(world: _World, coordinator: str, index: int) -> Transfer:
    rng = world.rng
    owner = rng.choice(["c0", "c1", "c2"])
    sources: dict[tuple[str, str], int] = {}
    for _ in range(rng.randrange(1, 4)):
        bank = rng.choice(world.order)
        account = f"a{rng.randrange(0, 3)}"
        # Mostly the owner's own accounts, sometimes someone else's (refused there).
        if rng.random() < 0.85:
            mine = [n for n, a in world.banks[bank].book.accounts.items() if a.owner == owner]
            account = rng.choice(mine) if mine else account
        sources[(bank, account)] = sources.get((bank, account), 0) + rng.randrange(1, 2_500)
    legs = [Leg(bank, account, amount, "source") for (bank, account), amount in sources.items()]
    total = sum(sources.values())
    local = all(bank == coordinator for bank, _ in sources)
    if rng.random() < 0.15 and not local:
        legs.append(Leg(coordinator, "", total, "cash_out"))
    else:
        account = f"a{rng.randrange(0, 3)}" if rng.random() < 0.95 else "nowhere"
        # A transfer the coordinator runs touches another bank (one that does not is local).
        others = [b for b in world.order if b != coordinator] if local else world.order
        legs.append(Leg(rng.choice(others), account, total, "destination"))
    return Transfer(f"{coordinator}:{index}", coordinator, owner, tuple(legs))


def _check_always(world: _World, bank: _Bank, fail: Callable[[str], InvariantViolation]) -> None:
    """After each event, at the bank it touched (no other bank changed): money conserved,
    nothing negative, held money equal to the open holds, every decision applied here equal
    to the coordinator's."""
    book = bank.book
    open_held: dict[str, int] = {}
    for (_, held_in), (amount, state) in book.holds.items():
        if state == "held":
            open_held[held_in] = open_held.get(held_in, 0) + amount
    money = book.settlement_cents
    for number, account in book.accounts.items():
        if account.balance_cents < 0 or account.held_cents < 0:
            raise fail(f"{bank.id}/{number} went negative: {account}")
        if account.held_cents != open_held.get(number, 0):
            raise fail(f"{bank.id}/{number} held {account.held_cents} != open holds")
        money += account.balance_cents + account.held_cents
    cash = book.cash_in_cents - book.cash_out_cents
    if money != cash:
        raise fail(f"{bank.id} does not balance: {money} != {cash}")
    checked = world.applied_checked.get(bank.id, 0)
    if len(book.applied) != checked:
        # Decisions are only ever added; check the ones applied since the last event.
        for transfer_id, outcome in list(book.applied.items())[checked:]:
            coordinator = world.banks[transfer_id.split(":")[0]].book
            decided = coordinator.outcomes.get(transfer_id)
            if decided is None and transfer_id not in coordinator.transfers and outcome == ABORTED:
                # Presumed abort: its coordinator has no record, so it must never get one.
                if transfer_id in world.told_ids:
                    raise fail(f"{transfer_id} presumed aborted after its client heard its id")
                world.presumed_aborted.add(transfer_id)
                continue
            if decided is None or decided[0] != outcome:
                raise fail(f"{bank.id} applied {outcome} to {transfer_id}, decided {decided}")
        world.applied_checked[bank.id] = len(book.applied)


def _settled(world: _World) -> bool:
    if world.faulty:
        return False
    for bank in world.banks.values():
        if not bank.alive or bank.paused_until_ms > world.now_ms:
            return False
        book = bank.book
        if len(book.outcomes) != len(book.transfers) or book.unacked or book.prepared:
            return False
        if bank.coordinator.round_open or bank.coordinator.pending:
            return False
    return True


def _check_settled(
    world: _World, initial: dict[tuple[str, str], int], fail: Callable[[str], InvariantViolation]
) -> None:
    """Every transfer decided, delivered and agreed on (an abort may be unknown to a bank
    whose vote never came: it is not told, and holds nothing); no hold left; balances equal a
    model that replays the committed transfers on the opening balances."""
    model = dict(initial)
    for bank in world.banks.values():
        for transfer_id, (outcome, _) in bank.book.outcomes.items():
            if outcome != COMMITTED:
                assert outcome == ABORTED
                continue
            for leg in bank.book.transfers[transfer_id].legs:
                sign = -1 if leg.role == "source" else 1
                if leg.role != "cash_out":
                    if (leg.bank, leg.account) not in model:
                        raise fail(f"{transfer_id} committed, moving money at {leg.bank}/{leg.account}, no account")
                    model[(leg.bank, leg.account)] += sign * leg.amount_cents
    money = sum(b.book.money_cents() for b in world.banks.values())
    cash = sum(b.book.cash_in_cents - b.book.cash_out_cents for b in world.banks.values())
    if money != cash:
        raise fail(f"money {money} != cash {cash}")
    for bank in world.banks.values():
        book = bank.book
        for (transfer_id, held_in), (_, state) in book.holds.items():
            if state == "held":
                raise fail(f"{bank.id} still holds {held_in} for {transfer_id}")
        if book.prepared or bank.participant.outstanding:
            raise fail(f"{bank.id} still waits for decisions: {sorted(book.prepared)}")
        for number, account in book.accounts.items():
            if account.balance_cents != model[(bank.id, number)]:
                raise fail(
                    f"{bank.id}/{number}: balance {account.balance_cents}, model {model[(bank.id, number)]}"
                )
        for transfer_id, transfer in book.transfers.items():
            outcome = book.outcomes[transfer_id][0]
            for participant in transfer.banks:
                if participant == bank.id:
                    continue  # its own legs moved with the decision (the model checks them)
                applied = world.banks[participant].book.applied.get(transfer_id)
                # A bank that never answered a prepare of an aborted transfer is not told
                # (it asks about whatever it holds: none is left, as checked above).
                if applied != outcome and not (outcome == ABORTED and applied is None):
                    raise fail(f"{participant} has {applied} for {transfer_id}, decided {outcome}")
            if transfer_id in bank.book.applied:
                raise fail(f"{bank.id} applied {transfer_id} as a participant of its own transfer")
        for transfer_id in world.presumed_aborted:
            if transfer_id in book.transfers:
                raise fail(f"{transfer_id} was presumed aborted, and then stored by {bank.id}")
        if book.settlement_cents != _expected_settlement(world, bank.id):
            raise fail(f"{bank.id} settlement {book.settlement_cents} is not what committed legs moved")


def _expected_settlement(world: _World, bank_id: str) -> int:
    total = 0
    for bank in world.banks.values():
        for transfer_id, (outcome, _) in bank.book.outcomes.items():
            if outcome != COMMITTED:
                continue
            for leg in bank.book.transfers[transfer_id].legs:
                if leg.bank == bank_id:
                    total += leg.amount_cents if leg.role == "source" else -leg.amount_cents
    return total


def sweep_banks(seed: int) -> int:
    """How many banks the seeded sweep runs ``seed`` with (and the command line, unless told)."""
    return SWEEP_BANKS_MIN + seed % (SWEEP_BANKS_MAX - SWEEP_BANKS_MIN + 1)


def replay_command(seed: int) -> str:
    """The shell command that replays ``seed`` as the sweep ran it."""
    return f".venv/bin/python -m bank.transfers.simulation --seed {seed}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bank.transfers.simulation --seed N``: replay one seeded run and report it;
    exit status 1 when an invariant did not hold."""
    parser = argparse.ArgumentParser(
        prog="python -m bank.transfers.simulation", description=main.__doc__
    )
    parser.add_argument("--seed", type=int, required=True, help="the seed a failing test printed")
    parser.add_argument(
        "--banks",
        type=int,
        default=None,
        help=f"banks in the run, {BANKS_MIN} or more (default: as the seeded sweep runs the seed, "
        f"{SWEEP_BANKS_MIN} to {SWEEP_BANKS_MAX})",
    )
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=1.0,
        help="how many faults the schedule draws, relative to the sweep's (default 1; 0: none)",
    )
    parser.add_argument("--trace", action="store_true", help="print every event")
    args = parser.parse_args(argv)
    banks = sweep_banks(args.seed) if args.banks is None else args.banks
    if banks < BANKS_MIN:
        parser.error(f"--banks must be {BANKS_MIN} or more (a transfer crosses banks), not {banks}")
    if args.fault_rate < 0:
        parser.error(f"--fault-rate must be 0 or more, not {args.fault_rate}")
    started = time.perf_counter()
    try:
        report = run(args.seed, banks_count=banks, fault_rate=args.fault_rate, trace=args.trace)
    except InvariantViolation as violation:
        print(f"seed {args.seed}: {banks} banks")
        for line in violation.trace:
            print(line)
        print(f"VIOLATION: {violation}")
        return 1
    elapsed = time.perf_counter() - started
    print(f"seed {args.seed}: {banks} banks, {report.transfers} transfers: {report.committed} "
          f"committed, {report.aborted} aborted; {report.crashes} crashes, {report.stale_refusals} "
          f"stale fences refused, {report.presumed_aborts} presumed aborted")  # fmt: skip
    print(f"{report.events} events in {elapsed:.2f} s")
    for line in report.trace:
        print(line)
    print("ok: every invariant held")
    return 0


if __name__ == "__main__":
    run_command(main)
