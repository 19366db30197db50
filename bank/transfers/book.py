"""The book: the durable state the transfer protocol reads and writes, as operations.

The pure coordinator and participant never touch storage. They are written as generators
that *yield* a batch of book operations and receive the batch's results (:data:`Steps`);
a driver executes each batch against a book. Every operation of one batch is independent of
the others, so an asynchronous driver may run them concurrently (the ledger then commits
them together); a batch is durable before the next one is asked for. Two books exist:

- :class:`MemoryBook` here, the simulator's: plain dicts, a "crash" keeps it (it stands for
  the disk) and throws the protocol objects away;
- ``bank.transfers.store.LedgerBook``, a real bank's: the SQLite ledger for money and a
  small protocol table for fences, decisions and the coordinator's records.

Every money operation is idempotent by transfer id (and account): a repeat changes nothing
and answers what the first one did. That is what makes re-sent prepares and decisions safe.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any, TypeVar

import attrs

from bank.transfers.protocol import ABORTED, COMMITTED, PENDING, Leg, Transfer

__all__ = [
    "AcceptFence",
    "BookOp",
    "CashOut",
    "CheckAccount",
    "CommitHold",
    "Credit",
    "LoadCoordinator",
    "LoadDecisions",
    "LoadKey",
    "KeyReused",
    "Unstored",
    "LoadFence",
    "LoadOutstanding",
    "MemoryBook",
    "PlaceHold",
    "ReadDecision",
    "RecordAcks",
    "RecordDecision",
    "RecordOutcomes",
    "RecordPending",
    "RecordPrepared",
    "ReleaseHeld",
    "ReleaseHold",
    "Steps",
    "run_steps",
]

R = TypeVar("R")

# --- participant operations -----------------------------------------------------------------


@attrs.frozen
class AcceptFence:
    """Store ``fence`` as the highest accepted unless a higher one is stored.
    Result: True when ``fence`` is at least the stored one (the prepare may go on)."""

    fence: Any
    """The fence of the prepare being handled."""


@attrs.frozen
class ReadDecision:
    """Result: the outcome this bank applied for a transfer, or None."""

    transfer_id: str
    """The transfer asked about."""


@attrs.frozen
class PlaceHold:
    """Move ``amount_cents`` of an account from its balance to held, for one transfer.
    Result: ``ok``, ``insufficient_funds``, ``unknown_account`` or ``forbidden`` (the
    document does not own the account); a repeat answers the first result. ``decided`` when
    the transfer's decision is known here, whatever the account: no decision would come
    again to release a hold placed now."""

    transfer_id: str
    """The transfer the hold is for."""
    account: str
    """The account held."""
    amount_cents: int
    """How much is held."""
    owner_document: str
    """The caller's document; the account must list it as an owner."""


@attrs.frozen
class CheckAccount:
    """Result: ``ok`` when the account exists here and can take ``amount_cents`` (with the
    credits checked before it in the same batch) without passing the ledger's balance
    limit; else ``unknown_account`` or ``balance_limit``."""

    account: str
    """The destination account."""
    amount_cents: int = 0
    """What the transfer would credit it."""


@attrs.frozen
class RecordPrepared:
    """Remember that this bank was asked to prepare a transfer it has not seen decided.
    Result: True when remembered, False when its decision is already known here."""

    transfer_id: str
    """The transfer voted on."""
    coordinator: str
    """Whom to ask for its decision."""


@attrs.frozen
class RecordDecision:
    """Remember the outcome of a transfer here (before applying it, so that a late prepare
    of a decided transfer is refused)."""

    transfer_id: str
    """The transfer decided."""
    outcome: str
    """``committed`` or ``aborted``."""


@attrs.frozen
class CommitHold:
    """Turn a hold into a debit to the settlement account (money leaves this bank)."""

    transfer_id: str
    """The transfer."""
    account: str
    """The source account."""
    amount_cents: int
    """The held amount."""
    cash_out: bool = False
    """The money leaves as cash at the coordinator's bank: journaled as a withdrawal."""


@attrs.frozen
class ReleaseHold:
    """Give a hold back to the account's balance (no-op when there is none)."""

    transfer_id: str
    """The transfer."""
    account: str
    """The source account."""
    amount_cents: int
    """The held amount."""


@attrs.frozen
class ReleaseHeld:
    """Give back every hold still held here for a transfer (a presumed abort: its
    coordinator has no record of it, so it names no legs; this bank knows its own)."""

    transfer_id: str
    """The transfer."""


@attrs.frozen
class Credit:
    """Credit an account from the settlement account (money arrives at this bank)."""

    transfer_id: str
    """The transfer."""
    account: str
    """The destination account."""
    amount_cents: int
    """How much arrives."""


@attrs.frozen
class CashOut:
    """Pay out cash from the settlement account (a cross-bank withdrawal arrives)."""

    transfer_id: str
    """The transfer."""
    amount_cents: int
    """How much leaves the consortium as cash."""


@attrs.frozen
class LoadFence:
    """Result: the highest fence accepted here, or None."""


@attrs.frozen
class LoadOutstanding:
    """Result: ``[(transfer_id, coordinator)]`` voted yes here and not decided yet."""


# --- coordinator operations -----------------------------------------------------------------


@attrs.frozen
class RecordPending:
    """Store a transfer as pending (before its client hears its id), unless it is stored
    already (then nothing changes: a decided one stays decided).
    Result: None when stored; the id of the transfer stored earlier under the same
    idempotency key (nothing is stored then)."""

    transfer: Transfer
    """The transfer."""
    idempotency: tuple[str, str, str] | None = None
    """``(scope, key, fingerprint)`` of the client's ``Idempotency-Key``, if it sent one."""
    request: Any = None
    """The client's request body, kept for ``GET /api/v1/transfers/{id}``."""
    submitted_at_ms: int | None = None
    """When the client asked (wall clock); None: now."""


@attrs.frozen
class Unstored:
    """A transfer in a coordinator's memory that may not be stored yet, with what is stored
    with it."""

    transfer: Transfer
    """The transfer."""
    request: Any = None
    """The client's request body."""
    submitted_at_ms: int | None = None
    """When the client asked (wall clock); None: the time of the write."""
    idempotency: tuple[str, str, str] | None = None
    """``(scope, key, fingerprint)`` of the client's ``Idempotency-Key``, if it sent one."""


class KeyReused(Exception):
    """An Idempotency-Key sent again with a different request."""


@attrs.frozen
class RecordOutcomes:
    """The commit point: store the decisions of a batch, each with the banks to tell, and
    apply the coordinator's own legs of the committed ones in the same batch.

    Result: ``{transfer_id: reason}`` for the transfers decided committed whose own legs
    were refused here (a source unknown, not the owner's or short of money, a destination
    unknown or full): those are stored aborted, with that reason. A transfer decided
    before is left as it is (its legs moved then)."""

    outcomes: tuple[tuple[str, str, str | None, tuple[str, ...]], ...]
    """``(transfer_id, outcome, reason, banks)`` per decided transfer (``banks``: every
    other bank the decision must reach)."""
    unrecorded: tuple[Unstored, ...] = ()
    """Decided transfers that may not be stored yet: stored with their outcome (and their
    idempotency keys) unless they are (a transfer is stored at its decision at the latest)."""
    own: tuple[tuple[str, str, tuple[Leg, ...]], ...] = ()
    """``(transfer_id, owner_document, legs)``: this bank's legs of transfers decided
    committed, moved with the decision (sources debited, destinations credited, cash paid
    out), all of a transfer's or none."""


@attrs.frozen
class RecordAcks:
    """Store that a bank applied these decisions (it is not told again)."""

    bank: str
    """The participant that acknowledged."""
    transfer_ids: tuple[str, ...]
    """The decisions it applied."""


@attrs.frozen
class LoadCoordinator:
    """Result: ``(pending, undelivered)``: transfers not decided yet, in order; and
    ``(transfer, outcome, banks not acknowledged)`` for decisions not fully delivered."""


@attrs.frozen
class LoadKey:
    """Result: ``(fingerprint, transfer_id)`` stored under a client's idempotency key, or
    None."""

    scope: str
    """Whose key (the caller's document)."""
    key: str
    """The key."""


@attrs.frozen
class LoadDecisions:
    """Result: ``{transfer_id: (outcome or None while pending, transfer)}`` for those of
    ``transfer_ids`` stored here; one absent was never stored (nor will it be)."""

    transfer_ids: tuple[str, ...]
    """The transfers asked about."""


BookOp = (
    AcceptFence
    | ReadDecision
    | PlaceHold
    | CheckAccount
    | RecordPrepared
    | RecordDecision
    | CommitHold
    | ReleaseHold
    | ReleaseHeld
    | Credit
    | CashOut
    | LoadFence
    | LoadOutstanding
    | RecordPending
    | RecordOutcomes
    | RecordAcks
    | LoadCoordinator
    | LoadDecisions
    | LoadKey
)

Steps = Generator[Sequence[BookOp], list[Any], R]
"""A protocol step: yields batches of book operations, receives their results, returns R."""


def run_steps(steps: Steps[R], book: MemoryBook) -> R:
    """Drive a step to its end against a synchronous book."""
    try:
        batch = next(steps)
        while True:
            batch = steps.send(book.execute(batch))
    except StopIteration as stop:
        result: R = stop.value
        return result


# --- the simulator's book -------------------------------------------------------------------


@attrs.define
class MemoryAccount:
    """One account of the in-memory book."""

    owner: str
    """The one document allowed to move its money."""
    balance_cents: int = 0
    """Available money."""
    held_cents: int = 0
    """Money held for transfers not yet decided."""


@attrs.define
class MemoryBook:
    """A bank's durable state in dicts: what survives a simulated crash.

    Money identity, true after every operation: sum of balances + held + settlement equals
    deposits - withdrawals (cash in minus cash out) of this bank.
    """

    bank: str
    """The bank this book belongs to."""
    accounts: dict[str, MemoryAccount] = attrs.Factory(dict)
    """By account number."""
    settlement_cents: int = 0
    """Money that left through committed sources minus money credited on arrival."""
    cash_in_cents: int = 0
    """Deposits ever made here."""
    cash_out_cents: int = 0
    """Withdrawals ever paid here (cash-outs of cross-bank withdrawals included)."""
    holds: dict[tuple[str, str], list[Any]] = attrs.Factory(dict)
    """``(transfer_id, account)`` -> ``[amount_cents, state]``; state held/committed/released."""
    hold_results: dict[tuple[str, str], str] = attrs.Factory(dict)
    """The first answer of each place-hold, repeated to a repeat."""
    credited: set[tuple[str, str]] = attrs.Factory(set)
    """``(transfer_id, account)`` credited (a credit applies at most once)."""
    cashed_out: set[str] = attrs.Factory(set)
    """Transfers paid out as cash here."""
    fence: Any = None
    """The highest fence accepted in a prepare."""
    applied: dict[str, str] = attrs.Factory(dict)
    """Participant side: transfer -> outcome recorded here."""
    prepared: dict[str, str] = attrs.Factory(dict)
    """Participant side: voted yes, undecided: transfer -> coordinator."""
    transfers: dict[str, Transfer] = attrs.Factory(dict)
    """Coordinator side: every transfer this bank started, in order."""
    outcomes: dict[str, tuple[str, str | None]] = attrs.Factory(dict)
    """Coordinator side: transfer -> (outcome, reason); absent while pending."""
    unacked: dict[str, set[str]] = attrs.Factory(dict)
    """Coordinator side: transfer -> banks that have not acknowledged its decision."""
    keys: dict[tuple[str, str], tuple[str, str]] = attrs.Factory(dict)
    """Coordinator side: ``(scope, key)`` -> ``(fingerprint, transfer_id)``."""

    def open_account(self, account: str, owner: str, balance_cents: int = 0) -> None:
        """Create an account and deposit its opening balance (test setup)."""
        assert account not in self.accounts
        self.accounts[account] = MemoryAccount(owner, balance_cents)
        self.cash_in_cents += balance_cents

    def status_of(self, transfer_id: str) -> str:
        """Coordinator side: pending, committed or aborted."""
        assert transfer_id in self.transfers
        return self.outcomes.get(transfer_id, (PENDING, None))[0]

    def money_cents(self) -> int:
        """Balances + held + settlement: what this bank's part of the audit reports."""
        return (
            sum(a.balance_cents + a.held_cents for a in self.accounts.values())
            + self.settlement_cents
        )

    def execute(self, batch: Sequence[BookOp]) -> list[Any]:
        """Apply a batch in order and answer each operation's result."""
        return [self._apply(op) for op in batch]

    def _apply(self, op: BookOp) -> Any:
        match op:
            case AcceptFence(fence):
                if self.fence is not None and fence < self.fence:
                    return False
                self.fence = fence
                return True
            case ReadDecision(transfer_id):
                return self.applied.get(transfer_id)
            case PlaceHold(transfer_id, account, amount, owner):
                key = (transfer_id, account)
                if key in self.hold_results:
                    return self.hold_results[key]
                result = "decided" if transfer_id in self.applied else self._place_hold(key, amount, owner)
                self.hold_results[key] = result
                return result
            case CheckAccount(account, _):
                # This book has no balance limit (its credits never refuse).
                return "ok" if account in self.accounts else "unknown_account"
            case RecordPrepared(transfer_id, coordinator):
                if transfer_id in self.applied:
                    return False
                self.prepared[transfer_id] = coordinator
                return True
            case LoadFence():
                return self.fence
            case RecordDecision(transfer_id, outcome):
                assert self.applied.get(transfer_id, outcome) == outcome, "decisions never change"
                self.applied[transfer_id] = outcome
                self.prepared.pop(transfer_id, None)
                return None
            case CommitHold(transfer_id, account, amount, _):
                hold = self.holds.get((transfer_id, account))
                assert hold is not None, "a committed transfer had every source held"
                assert hold[0] == amount
                if hold[1] == "held":
                    hold[1] = "committed"
                    self.accounts[account].held_cents -= amount
                    self.settlement_cents += amount
                assert hold[1] == "committed", "a hold is committed or released, never both"
                return None
            case ReleaseHold(transfer_id, account, amount):
                hold = self.holds.get((transfer_id, account))
                if hold is None:
                    # Refuse any later hold for this transfer and account: the decision came first.
                    self.hold_results.setdefault((transfer_id, account), "decided")
                    return None
                if hold[1] == "held":
                    hold[1] = "released"
                    self.accounts[account].held_cents -= amount
                    self.accounts[account].balance_cents += amount
                assert hold[1] == "released", "a hold is committed or released, never both"
                return None
            case ReleaseHeld(transfer_id):
                for (held_for, account), hold in self.holds.items():
                    if held_for == transfer_id and hold[1] == "held":
                        self._apply(ReleaseHold(transfer_id, account, hold[0]))
                return None
            case Credit(transfer_id, account, amount):
                if (transfer_id, account) not in self.credited:
                    self.credited.add((transfer_id, account))
                    self.accounts[account].balance_cents += amount
                    self.settlement_cents -= amount
                return None
            case CashOut(transfer_id, amount):
                if transfer_id not in self.cashed_out:
                    self.cashed_out.add(transfer_id)
                    self.settlement_cents -= amount
                    self.cash_out_cents += amount
                return None
            case LoadOutstanding():
                return sorted(self.prepared.items())
            case RecordPending(transfer, idempotency, _):
                return self._store(transfer, idempotency)
            case RecordOutcomes(outcomes, unrecorded, own):
                for unstored in unrecorded:
                    self._store(unstored.transfer, unstored.idempotency)
                own_legs = {transfer_id: (owner, legs) for transfer_id, owner, legs in own}
                refused: dict[str, str] = {}
                for transfer_id, outcome, reason, banks in outcomes:
                    transfer = self.transfers[transfer_id]
                    # Every other bank hears a commit; an abort, those that answered.
                    others = set(transfer.banks) - {self.bank}
                    assert set(banks) <= others and (outcome != COMMITTED or set(banks) == others)
                    assert outcome in (COMMITTED, ABORTED)
                    known = self.outcomes.get(transfer_id)
                    if known is not None:
                        continue  # decided before: its legs moved then
                    if outcome == COMMITTED and transfer_id in own_legs:
                        refusal = self._move_own(transfer_id, *own_legs[transfer_id])
                        if refusal is not None:
                            refused[transfer_id] = refusal
                            outcome, reason = ABORTED, refusal
                    self.outcomes[transfer_id] = (outcome, reason)
                    if banks:
                        self.unacked[transfer_id] = set(banks)
                return refused
            case RecordAcks(bank, transfer_ids):
                for transfer_id in transfer_ids:
                    waiting = self.unacked.get(transfer_id)
                    if waiting is not None:
                        waiting.discard(bank)
                        if not waiting:
                            del self.unacked[transfer_id]
                return None
            case LoadCoordinator():
                pending = [t for i, t in self.transfers.items() if i not in self.outcomes]
                undelivered = [
                    (self.transfers[i], self.outcomes[i][0], frozenset(banks))
                    for i, banks in self.unacked.items()
                ]
                return pending, undelivered
            case LoadKey(scope, key):
                return self.keys.get((scope, key))
            case LoadDecisions(transfer_ids):
                return {
                    i: (self.outcomes[i][0] if i in self.outcomes else None, self.transfers[i])
                    for i in transfer_ids
                    if i in self.transfers
                }
        raise AssertionError(f"unknown book operation {op!r}")

    def _store(self, transfer: Transfer, idempotency: tuple[str, str, str] | None) -> str | None:
        """Store a transfer (and its key) unless it is stored: None; or the id stored
        earlier under the same key (nothing is stored then)."""
        if idempotency is not None:
            scope, key, fingerprint = idempotency
            earlier = self.keys.get((scope, key))
            if earlier is not None and earlier[1] != transfer.id:
                if earlier[0] != fingerprint:
                    raise KeyReused(key)
                return earlier[1]
            self.keys[(scope, key)] = (fingerprint, transfer.id)
        assert self.transfers.setdefault(transfer.id, transfer) == transfer
        return None

    def _move_own(self, transfer_id: str, owner: str, legs: tuple[Leg, ...]) -> str | None:
        """A coordinator's own legs of a committed transfer, all or none: the refusal of
        the first leg that cannot move, or None when every one moved."""
        changes: dict[str, int] = {}
        for leg in legs:
            assert leg.bank == self.bank
            if leg.role == "cash_out":
                continue
            account = self.accounts.get(leg.account)
            if account is None:
                return "unknown_account"
            if leg.role == "source":
                if account.owner != owner:
                    return "forbidden"
                if account.balance_cents + changes.get(leg.account, 0) < leg.amount_cents:
                    return "insufficient_funds"
            changes[leg.account] = changes.get(leg.account, 0) + (
                -leg.amount_cents if leg.role == "source" else leg.amount_cents
            )
        for leg in legs:
            if leg.role == "source":
                self.accounts[leg.account].balance_cents -= leg.amount_cents
                self.settlement_cents += leg.amount_cents
            elif leg.role == "destination":
                self.credited.add((transfer_id, leg.account))
                self.accounts[leg.account].balance_cents += leg.amount_cents
                self.settlement_cents -= leg.amount_cents
            else:
                self.cashed_out.add(transfer_id)
                self.settlement_cents -= leg.amount_cents
                self.cash_out_cents += leg.amount_cents
        return None

    def _place_hold(self, key: tuple[str, str], amount: int, owner: str) -> str:
        account = self.accounts.get(key[1])
        if account is None:
            return "unknown_account"
        if account.owner != owner:
            return "forbidden"
        if account.balance_cents < amount:
            return "insufficient_funds"
        account.balance_cents -= amount
        account.held_cents += amount
        self.holds[key] = [amount, "held"]
        return "ok"
