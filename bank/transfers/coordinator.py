"""The coordinator: how a terminal bank runs its cross-bank transfers. Pure: no I/O, no clock.

Life of a transfer here: *pending* -> taken into a *round* at a token visit -> *decided*
(durable: the commit point) -> *delivered* (every bank involved acknowledged the decision),
after which it is forgotten in memory.

*Presumed abort* (as in R*'s two-phase commit): a transfer is stored here at its decision at
the latest, and one that is neither in this coordinator's memory nor in its book never
committed and never will; a participant asking about it is told "aborted" (naming no legs:
it gives back whatever it holds for it). So a pending transfer need not be stored before its
prepares go out. It is stored before anyone outside this process can name it: before its
client hears its id without its outcome (``submit(record=True)``, or :meth:`record` when a
waiting client's wait runs out). A client that waits for the outcome hears the id with it,
and its transfer is stored once, decided (``submit(record=False)``). Should this process die
first, that transfer never happened: its holds are given back on the presumed abort, and its
client, who has no id, hears no answer.

- A round starts at a grant of the token: it takes at most ``batch_transfers_max`` pending
  transfers and sends one :class:`Prepare` per other bank involved under the grant's fence.
  Rounds of earlier visits may still wait for votes (at most ``rounds_in_flight_max``): the
  token need not wait for them, since every participant orders prepares by fence and holds
  keep the money.
- A round ends when every vote is in, or at the deadline given with the grant (a missing vote
  counts as no). All its decisions are written in one batch (the commit point).
- *The coordinator is the last agent* (the last-agent optimization of two-phase commit):
  this bank's own legs of a transfer are neither prepared nor told; they move in the very
  batch that writes the decision, once every other bank voted yes (sources debited,
  destinations credited, cash paid out, all or none). Should one of them be refused there
  (an account unknown, not the customer's, or short of money), the transfer is written
  aborted instead, with that reason. Nothing is ever held here for a transfer this bank coordinates, and the decision
  and the money here are one atomic write: no prepare, no decision message, no
  acknowledgement and no commit of their own for this bank's part.
- Only once written do the decisions go out to the other banks, batched per bank: with the
  next prepare to each (or on their own after ``decision_defer_ms``); an abort, and a
  withdrawal's commit, at once to a bank that holds money for it. Acknowledgements (an
  Acks message, or ``Votes.acked``) are written later, in batches.
- A commit is owed to every other bank of the transfer; an abort only to the banks that
  answered the prepare (one that did not, and holds money for it, asks: see
  ``bank.transfers.participant``), so what a bank that is down is owed does not grow with
  the transfers that fail on it.
- Undelivered decisions are re-sent with a bounded exponential backoff until acknowledged.
  A decision query from a participant is answered at once with what is decided.
- After a restart, :meth:`start` reloads stored pending transfers (they go into the next
  round: a prepare is idempotent by transfer id) and undelivered decisions (re-sent at once).

Steps may overlap in a driver (a vote batch's write need not hold up the next grant): every
step makes its changes to the shared state before it yields, and what it does after a yield
only adds the outcome of its own batch (deliveries, retries).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any, Literal

import attrs

from bank.transfers.book import (
    KeyReused,
    LoadCoordinator,
    LoadDecisions,
    LoadKey,
    RecordAcks,
    RecordOutcomes,
    RecordPending,
    Steps,
    Unstored,
)
from bank.transfers.protocol import (
    ABORTED,
    COMMITTED,
    ITEMS_PER_MESSAGE_MAX,
    MESSAGE_ITEMS_BYTES_MAX,
    Acks,
    DecisionItem,
    DecisionQuery,
    Decisions,
    Message,
    Prepare,
    PrepareItem,
    Transfer,
    Votes,
    item_bytes_max,
)

__all__ = [
    "BATCH_TRANSFERS_MAX",
    "PENDING_TRANSFERS_MAX",
    "PREPARE_ITEMS_BYTES_MAX",
    "RETRY_MS_MAX",
    "RETRY_MS_MIN",
    "ROUNDS_IN_FLIGHT_MAX",
    "STALE_RETRIES_MAX",
    "ROUND_REASONS",
    "UNREACHABLE",
    "VOTE_TIMEOUT",
    "ACKS_FLUSH_MS",
    "DECISION_DEFER_MS",
    "Coordinator",
    "Decided",
]

BATCH_TRANSFERS_MAX = 1024
"""The most transfers one token visit prepares."""
PREPARE_ITEMS_BYTES_MAX = MESSAGE_ITEMS_BYTES_MAX // 2
"""The room a visit's transfers may take in one bank's prepare (by ``item_bytes_max``): the
rest of the message is left to the decisions riding with it. Transfers naming many accounts
at one bank fill it before ``BATCH_TRANSFERS_MAX`` does; the transfers after the first that
would overflow it wait for the next visit."""
PENDING_TRANSFERS_MAX = 50_000
"""The most transfers waiting for the token at one bank; beyond it a bank refuses new ones."""
STALE_FENCE = "stale_fence"
UNREACHABLE = "unreachable"
"""The reason of the no votes a driver makes up for a bank its prepare did not reach (or that
did not answer before the deadline): like a missing vote, it is no answer of that bank's."""
VOTE_TIMEOUT = "vote_timeout"
ROUND_REASONS = (VOTE_TIMEOUT, UNREACHABLE, STALE_FENCE)
"""The reasons a round itself gives an abort (the others are a participant's refusals, or
this bank's own legs': the ledger's outcomes)."""
STALE_RETRIES_MAX = 3
"""How many more rounds a transfer gets when its only refusals were stale fences (another
holder's prepare reached a participant first); then it aborts ``stale_fence``."""
ROUNDS_IN_FLIGHT_MAX = 8
"""The most rounds of one coordinator waiting for votes at once."""
RETRY_MS_MIN = 500
"""The first wait before an unacknowledged decision is sent again."""
RETRY_MS_MAX = 5_000
"""The longest wait between two sends of an unacknowledged decision."""
ACKS_FLUSH_MS = 100
"""How long acknowledgements may wait in memory before they are written, in one batch."""
DECISION_DEFER_MS = 200
"""How long a decision for another bank waits to travel with this coordinator's next prepare
to that bank (under load one comes within a rotation) before it is sent on its own. An abort
for a bank with a source leg in it (money held there) does not wait."""

Send = tuple[str, Message]


@attrs.frozen
class Decided:
    """A decision the round just made durable (for whoever waits on the transfer)."""

    transfer_id: str
    """The transfer."""
    outcome: str
    """``committed`` or ``aborted``."""
    reason: str | None
    """Why it aborted (the first refusal, or ``vote_timeout``); None when committed."""


@attrs.define
class _Round:
    fence: Any
    deadline_ms: int
    transfers: dict[str, Transfer]
    awaiting: dict[str, set[str]]
    refusals: dict[str, str]
    stale: set[str] = attrs.Factory(set)
    unreachable: set[tuple[str, str]] = attrs.Factory(set)
    """``(transfer_id, bank)`` whose vote is no because the prepare could not be delivered:
    not an answer of that bank's."""


@attrs.define
class _Delivery:
    transfer: Transfer
    outcome: str


@attrs.define
class _Retry:
    due_ms: int
    interval_ms: int


def _fitting(items: Iterable[DecisionItem], room: int) -> tuple[DecisionItem, ...]:
    """The first of ``items`` that one message carries in ``room`` bytes (by
    ``item_bytes_max``), at most ``ITEMS_PER_MESSAGE_MAX``; the others wait for another."""
    fitting: list[DecisionItem] = []
    for item in itertools.islice(items, ITEMS_PER_MESSAGE_MAX):
        room -= item_bytes_max(len(item.legs))
        if room < 0:
            break
        fitting.append(item)
    return tuple(fitting)


@attrs.define
class Coordinator:
    """One terminal bank's coordinator state. Rebuild it after a restart with :meth:`start`."""

    bank: str
    """This bank's id."""
    batch_transfers_max: int = BATCH_TRANSFERS_MAX
    """See :data:`BATCH_TRANSFERS_MAX`."""
    retry_ms_min: int = RETRY_MS_MIN
    """See :data:`RETRY_MS_MIN`."""
    retry_ms_max: int = RETRY_MS_MAX
    """See :data:`RETRY_MS_MAX`."""
    pending: dict[str, Transfer] = attrs.Factory(dict)
    """Undecided, in no round; in arrival order."""
    unrecorded: dict[str, Unstored] = attrs.Factory(dict)
    """Undecided transfers in memory (pending, in a round or being decided) that may not be
    stored yet: stored with their decision, or by :meth:`record`. An entry leaves only once
    a write that stores the transfer is done."""
    keys: dict[tuple[str, str], tuple[str, str]] = attrs.Factory(dict)
    """Idempotency keys of transfers not stored yet (or being checked against the book):
    ``(scope, key)`` -> ``(fingerprint, transfer_id)``."""
    deciding: dict[str, Transfer] = attrs.Factory(dict)
    """Transfers whose round ended and whose decision is being written."""
    rounds: dict[Any, _Round] = attrs.Factory(dict)
    """The rounds waiting for votes, by fence."""
    rounds_in_flight_max: int = ROUNDS_IN_FLIGHT_MAX
    """See :data:`ROUNDS_IN_FLIGHT_MAX`."""
    stale_retries_max: int = STALE_RETRIES_MAX
    """See :data:`STALE_RETRIES_MAX`."""
    stale_retries: dict[str, int] = attrs.Factory(dict)
    """Transfers put back after a stale-fence refusal, and how many times."""
    deliveries: dict[str, _Delivery] = attrs.Factory(dict)
    """Decided and not acknowledged by every bank involved (which: :attr:`owed`)."""
    owed: dict[str, dict[str, None]] = attrs.Factory(dict)
    """By bank, the transfer ids whose decision that bank has not acknowledged, in the order
    decided. A message to a bank, and an acknowledgement from it, cost what concerns that
    bank only, however many decisions wait for a bank that is down."""
    retries: dict[str, _Retry] = attrs.Factory(dict)
    """Per bank with undelivered decisions: when to send them again."""
    acks_flush_ms: int = ACKS_FLUSH_MS
    """See :data:`ACKS_FLUSH_MS`."""
    decision_defer_ms: int = DECISION_DEFER_MS
    """See :data:`DECISION_DEFER_MS`."""
    acks_unrecorded: dict[str, list[str]] = attrs.Factory(dict)
    """Acknowledgements applied in memory, not yet in the book: bank -> transfer ids."""
    acks_due_ms: int = 0
    """When the unrecorded acknowledgements are due to be written."""

    def start(self, now_ms: int) -> Steps[list[Send]]:
        """Reload what the book holds (after a restart); returns the decisions to re-send."""
        ((pending, undelivered),) = yield [LoadCoordinator()]
        for transfer in pending:
            self.pending[transfer.id] = transfer
        for transfer, outcome, banks in undelivered:
            # In leg order, not the set's: the order of the re-sends must not depend on
            # string hashing, or the simulator's seeds would not replay in another process.
            told = [bank for bank in transfer.banks if bank in banks]
            self._owe(transfer, outcome, told)
            for bank in told:
                self.retries.setdefault(bank, _Retry(now_ms, self.retry_ms_min))
        return self.tick(now_ms)[1]

    def submit(
        self,
        transfer: Transfer,
        *,
        idempotency: tuple[str, str, str] | None = None,
        request: Any = None,
        record: bool = True,
        submitted_at_ms: int | None = None,
    ) -> Steps[str]:
        """A new pending transfer; it goes out at the next token visit. Returns its id: an
        earlier transfer's when the idempotency key was used (raises :class:`KeyReused`
        when that was for another request).

        ``record``: stored now, before the client hears the id. False: stored with its
        decision (or by :meth:`record`), for a client that hears the id only with the
        outcome. Its idempotency key is stored with it, and kept in memory until then (a
        retry meanwhile finds the same transfer; after a crash, the key is free again, as
        the transfer it named never happened). ``submitted_at_ms``: the wall-clock time the
        client asked, stored with it (None: the time of the write)."""
        assert transfer.coordinator == self.bank
        assert self._others(transfer), "a cross-bank transfer touches another bank"
        assert self._undecided(transfer.id) is None
        reserved: tuple[str, str] | None = None
        fingerprint = ""
        if idempotency is not None:
            scope, key, fingerprint = idempotency
            earlier = self.keys.get((scope, key))
            if earlier is not None:
                if earlier[0] != fingerprint:
                    raise KeyReused(key)
                return earlier[1]
            # Taken before any yield: a retry meanwhile finds this transfer.
            reserved = (scope, key)
            self.keys[reserved] = (fingerprint, transfer.id)
        try:
            stored_earlier: str | None = None
            if record:
                (stored_earlier,) = yield [RecordPending(transfer, idempotency, request, submitted_at_ms)]
            elif reserved is not None:
                (found,) = yield [LoadKey(*reserved)]
                if found is not None:
                    if found[0] != fingerprint:
                        raise KeyReused(reserved[1])
                    stored_earlier = found[1]
        except BaseException:
            if reserved is not None:
                self.keys.pop(reserved, None)
            raise
        if stored_earlier is not None or record:
            if reserved is not None:
                self.keys.pop(reserved, None)  # the book has the key now
            if stored_earlier is not None:
                return str(stored_earlier)
        else:
            self.unrecorded[transfer.id] = Unstored(transfer, request, submitted_at_ms, idempotency)
        self.pending[transfer.id] = transfer
        return transfer.id

    def record(self, transfer_id: str) -> Steps[bool]:
        """Make sure a transfer of this coordinator is stored (its client is about to hear
        its id); False when it is not and cannot be: it is unknown here (never submitted,
        or lost with an earlier run of this process), so it never moved money."""
        unstored = self.unrecorded.get(transfer_id)
        if unstored is not None:
            # Stored unless its decision's write stored it first (then nothing changes).
            yield [
                RecordPending(
                    unstored.transfer, unstored.idempotency, unstored.request, unstored.submitted_at_ms
                )
            ]
            self._stored(unstored)
            return True
        if self._undecided(transfer_id) is not None or transfer_id in self.deliveries:
            return True  # stored when submitted, or decided
        (stored,) = yield [LoadDecisions((transfer_id,))]
        return transfer_id in stored

    def _stored(self, unstored: Unstored) -> None:
        """A write that stores this transfer (and its key) is done."""
        if self.unrecorded.pop(unstored.transfer.id, None) is not None and unstored.idempotency:
            scope, key, _ = unstored.idempotency
            if self.keys.get((scope, key), ("", ""))[1] == unstored.transfer.id:
                del self.keys[(scope, key)]

    def _undecided(self, transfer_id: str) -> Transfer | None:
        """The transfer, if it is in memory and its decision is not durable yet."""
        transfer = self.pending.get(transfer_id) or self.deciding.get(transfer_id)
        if transfer is None:
            for current in self.rounds.values():
                transfer = current.transfers.get(transfer_id)
                if transfer is not None:
                    break
        return transfer

    @property
    def backlog(self) -> int:
        """Transfers waiting for the token."""
        return len(self.pending)

    def grant(self, fence: Any, until_ms: int, now_ms: int) -> list[Send]:
        """The token arrived: start a round under ``fence`` ending at ``until_ms`` at the latest."""
        if fence in self.rounds or len(self.rounds) >= self.rounds_in_flight_max or not self.pending:
            return []
        batch: dict[str, Transfer] = {}
        by_bank: dict[str, list[PrepareItem]] = {}
        room: dict[str, int] = {}  # what each bank's prepare takes so far
        for transfer in itertools.islice(self.pending.values(), self.batch_transfers_max):
            # This bank's own legs move with the decision: a prepare for each other bank.
            prepared: list[tuple[str, PrepareItem, int]] = []  # (bank, its item, what that bank's prepare takes with it)
            for bank in transfer.banks:
                if bank != self.bank:
                    item = PrepareItem(transfer.id, transfer.owner_document, transfer.legs_at(bank))
                    prepared.append((bank, item, room.get(bank, 0) + item_bytes_max(len(item.legs))))
            if batch and any(taken > PREPARE_ITEMS_BYTES_MAX for _, _, taken in prepared):
                break  # it waits for the next visit, and so do the later ones: arrival order
            batch[transfer.id] = transfer
            for bank, item, taken in prepared:
                room[bank] = taken
                by_bank.setdefault(bank, []).append(item)
        for transfer_id in batch:
            del self.pending[transfer_id]
        self.rounds[fence] = _Round(
            fence=fence,
            deadline_ms=max(until_ms, now_ms),
            transfers=batch,
            awaiting={t.id: set(self._others(t)) for t in batch.values()},
            refusals={},
        )
        sends: list[Send] = []
        for bank, items in by_bank.items():
            # Decisions this bank has not acknowledged travel with the prepare: no message of
            # their own. Sent now, so their next re-send is a retry interval away.
            decisions = self._undelivered(bank, MESSAGE_ITEMS_BYTES_MAX - room[bank])
            if decisions:
                self.retries[bank] = _Retry(now_ms + self.retry_ms_min, self.retry_ms_min)
            sends.append((bank, Prepare(self.bank, fence, tuple(items), decisions)))
        return sends

    def _owe(self, transfer: Transfer, outcome: str, banks: Iterable[str]) -> None:
        """Remember that ``banks`` are to hear the decision of ``transfer``."""
        if not banks:
            return  # an abort no bank has to hear
        self.deliveries[transfer.id] = _Delivery(transfer, outcome)
        for bank in banks:
            self.owed.setdefault(bank, {})[transfer.id] = None

    def _undelivered(self, bank: str, room: int = MESSAGE_ITEMS_BYTES_MAX) -> tuple[DecisionItem, ...]:
        """The decisions ``bank`` has not acknowledged, as that bank's items, the earliest
        decided first: as many as one message carries in ``room`` bytes."""
        owed = self.owed.get(bank, {})
        return _fitting((self._item(self.deliveries[transfer_id], bank) for transfer_id in owed), room)

    @property
    def round_open(self) -> bool:
        """True while a round waits for votes."""
        return bool(self.rounds)

    def handle(self, message: Message, now_ms: int) -> Steps[tuple[list[Decided], list[Send]]]:
        """Votes, acknowledgements and decision queries from participants."""
        match message:
            case Votes(sender, fence, votes, acked):
                if acked:
                    self._acknowledged(sender, acked, now_ms)
                current = self.rounds.get(fence)
                if current is None:
                    return [], []  # a late answer to a finished round: its transfers are decided
                for vote in votes:
                    waiting = current.awaiting.get(vote.transfer_id)
                    if waiting is None or sender not in waiting:
                        continue
                    waiting.discard(sender)
                    if not vote.ok and vote.reason == UNREACHABLE:
                        current.unreachable.add((vote.transfer_id, sender))
                    if not vote.ok and vote.reason == STALE_FENCE:
                        current.stale.add(vote.transfer_id)
                    elif not vote.ok:
                        current.refusals.setdefault(vote.transfer_id, vote.reason or "refused")
                if all(not banks for banks in current.awaiting.values()):
                    return (yield from self._finish_rounds([current], now_ms))
                return [], []
            case Acks(sender, transfer_ids):
                self._acknowledged(sender, transfer_ids, now_ms)
                return [], []
            case DecisionQuery(sender, transfer_ids):
                items: list[DecisionItem] = []
                unknown_ids: list[str] = []
                for i in transfer_ids[:ITEMS_PER_MESSAGE_MAX]:
                    delivery = self.deliveries.get(i)
                    if delivery is not None:
                        # Waiting for delivery (to the asker, or only to others: an abort
                        # is not owed to a bank whose vote never came, and it may ask).
                        if sender in delivery.transfer.banks:
                            items.append(self._item(delivery, sender))
                    elif self._undecided(i) is None:
                        # Neither undecided here nor waiting for delivery: the book knows,
                        # or no one does. An id unknown now stays unknown (ids are never
                        # reused).
                        unknown_ids.append(i)
                unknown = tuple(unknown_ids)
                if unknown:
                    (stored,) = yield [LoadDecisions(unknown)]
                    for transfer_id in unknown:
                        entry = stored.get(transfer_id)
                        if entry is None:
                            # Presumed abort: never stored, so never committed. The
                            # participant gives back what it holds for it.
                            items.append(DecisionItem(transfer_id, ABORTED, ()))
                            continue
                        outcome, transfer = entry
                        # Stored pending and not in memory (not started yet), or not the
                        # asker's: nothing to tell.
                        if outcome is not None and sender in transfer.banks:
                            items.append(DecisionItem.of(transfer, outcome, sender))
                if not items:
                    return [], []
                return [], [(sender, Decisions(self.bank, _fitting(items, MESSAGE_ITEMS_BYTES_MAX)))]
        raise AssertionError(f"a coordinator does not handle {type(message).__name__}")

    def _acknowledged(self, sender: str, transfer_ids: Iterable[str], now_ms: int) -> None:
        """``sender`` applied these decisions (an Acks message, or with its votes)."""
        done = [i for i in transfer_ids if self._owes(sender, i)]
        if done:
            # Recorded later, in batches (flush_acks): an acknowledgement lost in a crash only
            # makes the restarted coordinator send the decision again.
            if not self.acks_unrecorded:
                self.acks_due_ms = now_ms + self.acks_flush_ms
            self.acks_unrecorded.setdefault(sender, []).extend(done)
        owed = self.owed.get(sender, {})
        for transfer_id in done:
            owed.pop(transfer_id, None)
            if not any(transfer_id in others for others in self.owed.values()):
                del self.deliveries[transfer_id]
        if not owed:
            self.owed.pop(sender, None)
            self.retries.pop(sender, None)

    def _owes(self, bank: str, transfer_id: str) -> bool:
        """Whether ``bank`` has yet to acknowledge the decision of ``transfer_id``."""
        return transfer_id in self.owed.get(bank, ())

    def _item(self, delivery: _Delivery, bank: str) -> DecisionItem:
        outcome: Literal["committed", "aborted"] = (
            COMMITTED if delivery.outcome == COMMITTED else ABORTED
        )
        return DecisionItem.of(delivery.transfer, outcome, bank)

    def _finish_rounds(
        self, finished: list[_Round], now_ms: int
    ) -> Steps[tuple[list[Decided], list[Send]]]:
        decided: list[Decided] = []
        transfers: dict[str, Transfer] = {}
        again: dict[str, Transfer] = {}
        answered: dict[str, tuple[str, ...]] = {}
        for current in finished:
            for transfer_id, banks in current.awaiting.items():
                reason = current.refusals.get(transfer_id)
                if reason is None and banks:
                    reason = VOTE_TIMEOUT
                if reason is None and transfer_id in current.stale:
                    # Refused only because another holder's prepare got there first: not the
                    # transfer's fault. It goes into a later round (under a newer fence), a
                    # bounded number of times; its holds elsewhere stay, and repeat.
                    tries = self.stale_retries.get(transfer_id, 0)
                    if tries < self.stale_retries_max:
                        self.stale_retries[transfer_id] = tries + 1
                        again[transfer_id] = current.transfers[transfer_id]
                        continue
                    reason = STALE_FENCE
                self.stale_retries.pop(transfer_id, None)
                answered[transfer_id] = tuple(
                    bank
                    for bank in self._others(current.transfers[transfer_id])
                    if bank not in banks and (transfer_id, bank) not in current.unreachable
                )
                decided.append(
                    Decided(transfer_id, COMMITTED if reason is None else ABORTED, reason)
                )
            transfers.update(current.transfers)
            # The round is over before its decisions are written: the token need not wait
            # for the write. Should this process die before it, its book still has these
            # transfers pending, or nothing of them (then they are presumed aborted).
            del self.rounds[current.fence]
        if again:
            self.pending = {**again, **self.pending}
        if not decided:
            return [], []
        deciding = {d.transfer_id: transfers[d.transfer_id] for d in decided}
        self.deciding.update(deciding)
        unrecorded = tuple(self.unrecorded[i] for i in deciding if i in self.unrecorded)
        own = tuple(
            (d.transfer_id, deciding[d.transfer_id].owner_document, legs)
            for d in decided
            if d.outcome == COMMITTED and (legs := deciding[d.transfer_id].legs_at(self.bank))
        )
        # Who is told: every other bank of a commit (each voted yes); of an abort, only the
        # banks that answered. A bank whose vote never came (down, cut off, too slow) is not
        # owed an abort: should it hold anything for the transfer, it remembered so with the
        # hold and asks (see bank.transfers.participant); and what a bank that is down is
        # owed stays bounded however many transfers fail on it meanwhile.
        others = {
            d.transfer_id: self._others(deciding[d.transfer_id])
            if d.outcome == COMMITTED
            else answered[d.transfer_id]
            for d in decided
        }
        try:
            # Acknowledgements waiting to be written ride with the decisions: one commit.
            *_, refused = yield [
                *self._take_acks(),
                RecordOutcomes(
                    tuple((d.transfer_id, d.outcome, d.reason, others[d.transfer_id]) for d in decided),
                    unrecorded,
                    own,
                ),
            ]
        except Exception:
            # Not written: nothing is decided. They go into a later round (holds stay and
            # repeat), never forgotten: a forgotten one would be presumed aborted.
            self.pending = {**deciding, **self.pending}
            raise
        finally:
            for transfer_id in deciding:
                self.deciding.pop(transfer_id, None)
        for unstored in unrecorded:
            self._stored(unstored)
        if refused:
            # This bank's own legs could not move (the money went meanwhile, say): aborted,
            # and stored so, in the same write.
            decided = [
                Decided(d.transfer_id, ABORTED, refused[d.transfer_id]) if d.transfer_id in refused else d
                for d in decided
            ]
        # Durable from here on: the decisions are final, whatever happens to this process,
        # and this bank's own legs moved with them. Another bank's part waits up to
        # decision_defer_ms to travel with the next prepare to it (under load one comes
        # within a rotation), then goes on its own; but an abort goes at once to a bank with
        # a source leg in it: the money it holds for the transfer is the customer's again as
        # the client hears the abort, not a defer later (a client that retries at once, at
        # any terminal, would find it still held). So does a withdrawal's commit (a transfer
        # that pays cash here): its client is answered with the account as its bank shows it
        # once it applied the commit (bank.interbank), not with the money still held.
        now: list[str] = []
        for d in decided:
            transfer = transfers[d.transfer_id]
            told = others[d.transfer_id]
            self._owe(transfer, d.outcome, told)
            at_once = d.outcome == ABORTED or transfer.pays_cash
            for bank in told:
                if bank in now:
                    continue
                if at_once and any(leg.role == "source" for leg in transfer.legs_at(bank)):
                    now.append(bank)
                elif bank not in self.retries:
                    self.retries[bank] = _Retry(now_ms + self.decision_defer_ms, self.retry_ms_min)
        sends: list[Send] = []
        for bank in now:
            self.retries[bank] = _Retry(now_ms + self.retry_ms_min, self.retry_ms_min)
            sends.append((bank, Decisions(self.bank, self._undelivered(bank))))
        return decided, sends

    def _others(self, transfer: Transfer) -> tuple[str, ...]:
        """The banks of a transfer other than this one: those that vote on it, and are told.
        In leg order (not a set's): what is sent, and when, must not depend on string
        hashing, or the simulator's seeds would not replay."""
        return tuple(bank for bank in transfer.banks if bank != self.bank)

    def flush_acks(self) -> Steps[None]:
        """Write the acknowledgements received since the last flush, in one batch (under
        load they ride with a round's decisions before ``acks_flush_ms`` is up)."""
        batch = self._take_acks()
        if batch:
            yield batch

    def _take_acks(self) -> list[RecordAcks]:
        """The acknowledgements not written yet, as book operations, forgotten in memory: an
        acknowledgement lost with a failed write only costs a repeated decision after a
        restart."""
        batch = [RecordAcks(bank, tuple(ids)) for bank, ids in self.acks_unrecorded.items()]
        self.acks_unrecorded = {}
        return batch

    def next_deadline_ms(self) -> int | None:
        """The round's deadline or the next re-send of decisions, whichever comes first."""
        times = [r.due_ms for r in self.retries.values()]
        times += [r.deadline_ms for r in self.rounds.values()]
        if self.acks_unrecorded:
            times.append(self.acks_due_ms)
        return min(times) if times else None

    def next_resend_ms(self) -> int | None:
        """When undelivered decisions are next due to be sent, or acknowledgements to be
        written (the round's deadline aside)."""
        times = [r.due_ms for r in self.retries.values()]
        if self.acks_unrecorded:
            times.append(self.acks_due_ms)
        return min(times, default=None)

    @property
    def acks_due(self) -> bool:
        """Whether unrecorded acknowledgements wait (see :meth:`flush_acks`)."""
        return bool(self.acks_unrecorded)

    def tick(self, now_ms: int) -> tuple[bool, list[Send]]:
        """Decisions due to be (re-)sent now; and whether the round's deadline has passed
        (then the driver runs :meth:`expire`)."""
        sends: list[Send] = []
        for bank, retry in self.retries.items():
            if retry.due_ms > now_ms:
                continue
            items = self._undelivered(bank)
            if items:
                sends.append((bank, Decisions(self.bank, tuple(items))))
            retry.due_ms = now_ms + retry.interval_ms
            retry.interval_ms = min(retry.interval_ms * 2, self.retry_ms_max)
        expired = any(r.deadline_ms <= now_ms for r in self.rounds.values())
        return expired, sends

    def expire(self, now_ms: int) -> Steps[tuple[list[Decided], list[Send]]]:
        """End the rounds past their deadline: votes still missing count as no."""
        finished = [r for r in self.rounds.values() if r.deadline_ms <= now_ms]
        if not finished:
            return [], []
        return (yield from self._finish_rounds(finished, now_ms))
