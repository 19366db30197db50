"""The participant: what every bank does with prepares and decisions. Pure: no I/O, no clock.

Rules, in the order they are checked:

1. A prepare whose fence is below the highest fence this bank has accepted is refused whole
   (``stale_fence``): a holder that lost the token cannot move money here any more. The new
   fence is stored durably no later than any hold of the prepare.
2. A source whose transfer this bank already saw decided is refused (``decided``, answered by
   the book, whatever the account: the decision's record, and a release for a hold never
   placed, leave a mark): a late or repeated prepare never leaves a hold that no decision
   will ever release.
3. Otherwise each source leg places a hold (ownership and funds checked here, by the
   caller's document) and each destination leg checks that its account exists. The vote is
   yes only when every leg here succeeded; a transfer that holds money here is remembered
   so that this bank (restarted or not) can ask the coordinator what became of it and give
   its holds back on an abort. One that only credits here holds nothing to give back.

A decision is recorded and applied in one batch (commit: hold -> settlement, credit:
settlement -> account, cash-out: settlement -> cash; abort: release; a presumed abort, which
names no legs, releases whatever this bank holds for the transfer). Every money operation
is idempotent by transfer id, so a repeated decision is applied again harmlessly and
acknowledged again.

A driver must not interleave two steps of one participant (a prepare and a decision for the
same transfer must not race); it runs them one after another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from bank.transfers.book import (
    AcceptFence,
    BookOp,
    CashOut,
    CheckAccount,
    CommitHold,
    Credit,
    LoadFence,
    LoadOutstanding,
    PlaceHold,
    RecordDecision,
    RecordPrepared,
    ReleaseHeld,
    ReleaseHold,
    Steps,
)
from bank.transfers.protocol import (
    COMMITTED,
    Acks,
    DecisionItem,
    DecisionQuery,
    Decisions,
    Message,
    Prepare,
    Vote,
    Votes,
)

__all__ = ["QUERY_AFTER_MS", "QUERY_TRANSFERS_MAX", "Participant"]

QUERY_AFTER_MS = 1_000
"""How long a yes vote waits for its decision before this bank asks the coordinator."""
QUERY_INTERVAL_MS_MAX = 8_000
"""The longest wait between two queries for the same transfers (the backoff's ceiling)."""
QUERY_TRANSFERS_MAX = 512
"""The most transfers one decision query names."""


@attrs.define
class _Outstanding:
    coordinator: str
    next_query_ms: int
    interval_ms: int


@attrs.define
class Participant:
    """One bank's participant state. Rebuild it after a restart with :meth:`start`."""

    bank: str
    """This bank's id."""
    query_after_ms: int = QUERY_AFTER_MS
    """See :data:`QUERY_AFTER_MS`."""
    query_interval_ms_max: int = QUERY_INTERVAL_MS_MAX
    """See :data:`QUERY_INTERVAL_MS_MAX`."""
    fence: Any = None
    """The highest fence accepted (a cache of the book's; the book decides)."""
    outstanding: dict[str, _Outstanding] = attrs.Factory(dict)
    """Transfers voted yes here with no decision yet, and when to ask about them."""

    def start(self, now_ms: int) -> Steps[None]:
        """Load the highest fence accepted and the yes votes not decided (after a restart)."""
        fence, rows = yield [LoadFence(), LoadOutstanding()]
        self.fence = fence
        for transfer_id, coordinator in rows:
            self.outstanding[transfer_id] = _Outstanding(
                coordinator, now_ms + self.query_after_ms, self.query_after_ms
            )

    def handle(self, message: Message, now_ms: int) -> Steps[list[Message]]:
        """A prepare or decisions message; returns the replies (votes, acks)."""
        match message:
            case Prepare():
                votes = yield from self._prepare(message, now_ms)
                return [votes]
            case Decisions():
                acks = yield from self._decide(message.items)
                return [acks]
        raise AssertionError(f"a participant does not handle {type(message).__name__}")

    def _prepare(self, prepare: Prepare, now_ms: int) -> Steps[Votes]:
        items = prepare.items
        # Decisions of earlier rounds that came with this prepare: final, so applied whatever
        # the prepare's fence, in the same batch (ahead of it; they hold nothing).
        decision_ops, acked = self._decision_ops(prepare.decisions)

        def refuse_all(reason: str) -> Votes:
            return Votes(
                self.bank,
                prepare.fence,
                tuple(Vote(i.transfer_id, False, reason) for i in items),
                acked,
            )

        # The check and the raise of the floor happen together, before anything is asked of
        # the book: prepares handled concurrently see each other's fences. The book stores
        # the fence in the same batch, ahead of the holds (a driver runs a batch in order).
        if self.fence is not None and prepare.fence < self.fence:
            if decision_ops:
                yield decision_ops
                self._forget(acked)
            return refuse_all("stale_fence")
        floor, self.fence = self.fence, prepare.fence
        base = len(decision_ops)
        ops: list[BookOp] = [*decision_ops, AcceptFence(prepare.fence)]
        spans: list[tuple[int, int]] = []
        for item in items:
            start = len(ops)
            for leg in item.legs:
                assert leg.bank == self.bank, "a prepare carries only this bank's legs"
                if leg.role == "source":
                    # A source whose decision came first answers "decided": a late prepare
                    # never holds money that no decision will release.
                    ops.append(
                        PlaceHold(item.transfer_id, leg.account, leg.amount_cents, item.owner_document)
                    )
                elif leg.role == "destination":
                    ops.append(CheckAccount(leg.account, leg.amount_cents))
                # A cash-out needs nothing prepared: the terminal bank pays from settlement.
            spans.append((start, len(ops)))
        # Remembered with the holds, not after them: a yes is never sent for a hold this bank
        # could forget to ask about. (A refused one is remembered too; its abort clears it.)
        # A transfer that holds nothing here (a destination only) is not: should its decision
        # never come (its coordinator died before deciding), nothing here waits for it, and
        # a decided one is re-sent by its coordinator until acknowledged.
        holding = [item for item in items if any(leg.role == "source" for leg in item.legs)]
        first_record = len(ops)
        ops += [RecordPrepared(item.transfer_id, prepare.sender) for item in holding]
        try:
            results = yield ops
        except Exception:
            # Nothing of it is stored: the floor is what it was, unless a newer prepare has
            # raised it meanwhile (the book refuses below its own stored fence in any case).
            if self.fence == prepare.fence:
                self.fence = floor
            raise
        self._forget(acked)
        if not results[base]:
            # Only a book ahead of this participant's memory refuses here; whatever was held
            # is released by the abort this vote causes.
            return refuse_all("stale_fence")
        votes: list[Vote] = []
        for item, (begin, end) in zip(items, spans):
            refused = [r for r in results[begin:end] if r != "ok"]
            votes.append(Vote(item.transfer_id, False, refused[0]) if refused else Vote(item.transfer_id, True))
        for index, item in enumerate(holding):
            if results[first_record + index]:
                self.outstanding.setdefault(
                    item.transfer_id,
                    _Outstanding(prepare.sender, now_ms + self.query_after_ms, self.query_after_ms),
                )
        return Votes(self.bank, prepare.fence, tuple(votes), acked)

    def _decide(self, items: Sequence[DecisionItem]) -> Steps[Acks]:
        ops, acked = self._decision_ops(items)
        if ops:
            yield ops
        self._forget(acked)
        return Acks(self.bank, acked)

    def _forget(self, decided: Sequence[str]) -> None:
        """Stop asking about transfers whose decisions are now durable here (not before: a
        decision whose write failed is asked for again)."""
        for transfer_id in decided:
            self.outstanding.pop(transfer_id, None)

    def _decision_ops(self, items: Sequence[DecisionItem]) -> tuple[list[BookOp], tuple[str, ...]]:
        """The book operations that record and apply ``items``, and the ids acknowledged once
        they are done. One batch: the record and the money. Should a crash keep one and lose
        the other, nothing is acknowledged, the coordinator sends the decision again, and
        every operation is idempotent; a late prepare meanwhile finds either the record or
        the hold already decided (the book answers "decided")."""
        ops: list[BookOp] = [RecordDecision(item.transfer_id, item.outcome) for item in items]
        for item in items:
            if not item.legs:
                # A presumed abort (its coordinator has no record of it): whatever this bank
                # holds for it goes back. It held only what a prepare of it named, and any
                # later copy of that prepare is answered as the first one was: no new hold.
                ops.append(ReleaseHeld(item.transfer_id))
            for leg in item.legs:
                assert leg.bank == self.bank, "a decision carries only this bank's legs"
                if item.outcome == COMMITTED:
                    if leg.role == "source":
                        ops.append(CommitHold(item.transfer_id, leg.account, leg.amount_cents, item.cash_out))
                    elif leg.role == "destination":
                        ops.append(Credit(item.transfer_id, leg.account, leg.amount_cents))
                    else:
                        ops.append(CashOut(item.transfer_id, leg.amount_cents))
                elif leg.role == "source":
                    ops.append(ReleaseHold(item.transfer_id, leg.account, leg.amount_cents))
        return ops, tuple(item.transfer_id for item in items)

    def next_deadline_ms(self) -> int | None:
        """When the next decision query is due, if any."""
        if not self.outstanding:
            return None
        return min(o.next_query_ms for o in self.outstanding.values())

    def tick(self, now_ms: int) -> list[tuple[str, Message]]:
        """Queries due now, one per coordinator: ``[(coordinator, DecisionQuery)]``."""
        due: dict[str, list[str]] = {}
        for transfer_id, state in self.outstanding.items():
            if state.next_query_ms <= now_ms:
                asking = due.setdefault(state.coordinator, [])
                if len(asking) < QUERY_TRANSFERS_MAX:
                    asking.append(transfer_id)
                    state.interval_ms = min(state.interval_ms * 2, self.query_interval_ms_max)
                    state.next_query_ms = now_ms + state.interval_ms
        return [
            (coordinator, DecisionQuery(self.bank, tuple(ids))) for coordinator, ids in due.items()
        ]
