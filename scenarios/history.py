"""What a scenario saw: the history the checker judges.

The load makers (``scenarios.workload``) write it, the checker (``scenarios.checker``) reads
it, and neither knows about the other. Every record is a plain value: operations with their
invoke and complete times and their outcome, consortium audit reads, balances seen, fault
moments, and the final balance of every account the scenario created. Times are milliseconds
since the scenario started, from the monotonic clock.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

__all__ = [
    "AccountRef",
    "AuditRead",
    "BalanceSeen",
    "FaultEvent",
    "History",
    "Kind",
    "Movement",
    "Operation",
    "Outcome",
    "StatementLine",
]


@attrs.frozen(order=True)
class AccountRef:
    """One account in the whole consortium: (bank, account) names it."""

    bank: str
    """The id of the bank that keeps it."""
    account: str
    """Its number, unique within its bank."""

    def __str__(self) -> str:
        return f"{self.bank}/{self.account}"


@attrs.frozen
class Movement:
    """Money an operation takes from or puts into one account."""

    account: AccountRef
    """Which account."""
    amount_cents: int
    """How much; always positive (the side of the operation says the direction)."""

    def __attrs_post_init__(self) -> None:
        assert isinstance(self.amount_cents, int) and self.amount_cents > 0, self.amount_cents


class Kind(enum.StrEnum):
    """What an operation asked for."""

    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    TRANSFER = "transfer"


class Outcome(enum.StrEnum):
    """How an operation ended, as far as its client knows."""

    OK = "ok"
    """Applied: a deposit or withdrawal answered 201, a transfer reached ``committed``."""
    REFUSED = "refused"
    """Definitely not applied: a 4xx answer, or a transfer that reached ``aborted``."""
    UNKNOWN = "unknown"
    """No final answer (timeout, connection lost, 5xx, transfer still pending): it may or
    may not have taken effect, and the checker must allow both."""


@attrs.frozen
class StatementLine:
    """One line of an account's statement (``GET /api/v1/accounts/{bank}/{account}/statement``):
    what one movement of money did to the account."""

    kind: str
    """What it was: ``deposit``, ``withdrawal``, ``transfer``, ``hold``, ``commit``, ``release``,
    ``credit``, ``debit``."""
    transfer_id: str | None
    """The transfer it belongs to (None for cash at the account's own bank)."""
    available_cents: int
    """The change of the account's balance."""
    held_cents: int
    """The change of the money held in it."""


@attrs.frozen
class Operation:
    """One client request and its outcome."""

    key: str
    """Its Idempotency-Key: unique in the history, and how a retry asks for the first answer."""
    client: int
    """The client that made it."""
    kind: Kind
    """Deposit, withdrawal or transfer."""
    bank: str
    """The bank the request was sent to (the customer's terminal bank)."""
    invoke_ms: float
    """When the request was sent."""
    complete_ms: float | None
    """When the final answer arrived; ``None`` when it never did."""
    outcome: Outcome
    """Applied, refused, or unknown."""
    debits: tuple[Movement, ...] = ()
    """What it takes out (a withdrawal, a transfer's sources)."""
    credits: tuple[Movement, ...] = ()
    """What it puts in (a deposit, a transfer's destination)."""
    transfer_id: str | None = None
    """The id the terminal bank gave a transfer."""
    reason: str | None = None
    """Why it was refused or is unknown (error code, abort reason, exception)."""
    late: bool = False
    """Its answer was lost, and it ended only when asked again after the load: its
    ``complete_ms`` is then, so it counts in no latency or throughput figure."""

    def __attrs_post_init__(self) -> None:
        assert self.complete_ms is None or self.complete_ms >= self.invoke_ms
        if self.kind is Kind.TRANSFER:
            assert sum(m.amount_cents for m in self.debits) == sum(
                m.amount_cents for m in self.credits
            ), "a transfer credits exactly what it debits"

    @property
    def inflow_cents(self) -> int:
        """Money it brings into the consortium (deposits minus withdrawals)."""
        if self.kind is Kind.DEPOSIT:
            return sum(m.amount_cents for m in self.credits)
        if self.kind is Kind.WITHDRAWAL:
            return -sum(m.amount_cents for m in self.debits)
        return 0

    @property
    def latency_ms(self) -> float | None:
        return None if self.complete_ms is None else self.complete_ms - self.invoke_ms


@attrs.frozen
class AuditRead:
    """One ``GET /api/v1/consortium/audit`` and what it answered."""

    bank: str
    """The bank asked."""
    invoke_ms: float
    """When the request was sent."""
    complete_ms: float
    """When its answer (or the lack of one) was known."""
    ok: bool
    """A complete, consistent answer (200, nobody unavailable)."""
    total_cents: int | None = None
    """All the consortium's money, as the answer gives it (in accounts, held, in flight)."""
    held_cents: int | None = None
    """The part of it held by unfinished transfers."""
    expected_cents: int | None = None
    """The consortium's own count of deposits minus withdrawals ever made."""
    reason: str | None = None
    """Why it is not ``ok``."""


@attrs.frozen
class BalanceSeen:
    """A balance some answer showed."""

    at_ms: float
    """When the answer arrived."""
    account: AccountRef
    """Whose balance."""
    balance_cents: int
    """The available balance it showed."""
    held_cents: int = 0
    """The held money it showed."""
    source: str = ""
    """Which answer showed it (``deposit``, ``accounts``, ``final``...)."""


@attrs.frozen
class FaultEvent:
    """A moment the scenario did something to the ring (or undid it)."""

    at_ms: float
    """When it was done."""
    action: str
    """``kill``, ``pause``, ``resume``, ``restart``, ``partition``, ``heal``."""
    target: str
    """The bank(s) it touched."""
    detail: str = ""


@attrs.frozen
class History:
    """Everything one run of load saw, for the checker."""

    operations: tuple[Operation, ...]
    """Every operation, in the order they were sent."""
    audits: tuple[AuditRead, ...] = ()
    """Every consortium audit read."""
    balances: tuple[BalanceSeen, ...] = ()
    """Balances seen during the run (answers to deposits, account listings)."""
    faults: tuple[FaultEvent, ...] = ()
    """What was done to the ring, and when."""
    accounts: tuple[AccountRef, ...] = ()
    """Every account the scenario created (each starts at zero)."""
    final_balances: dict[AccountRef, int] = attrs.field(factory=dict)
    """Balance of every account after the load stopped and everything settled."""
    final_held: dict[AccountRef, int] = attrs.field(factory=dict)
    """Held money of every account at the same time."""
    baseline_cents: int = 0
    """Money that existed in the consortium before the scenario (non-zero under --attach)."""
    settled: bool = True
    """The final balances were read after every operation had its final answer."""
    funds_before: dict[AccountRef, int] = attrs.field(factory=dict)
    """Balances read just before a burst of operations (``seed-replay``): what existed."""
    funds_before_ms: float | None = None
    """When they were read; operations sent after it may move at most that much."""
    statements: dict[AccountRef, tuple[StatementLine, ...]] = attrs.field(factory=dict)
    """Every line of each account's statement, read with the final balances; an account whose
    statement could not be read (or a bank that has none) is missing."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form (accounts as ``bank/account``)."""
        return {
            "operations": [
                {
                    "key": op.key,
                    "client": op.client,
                    "kind": str(op.kind),
                    "bank": op.bank,
                    "invoke_ms": round(op.invoke_ms, 1),
                    "complete_ms": None if op.complete_ms is None else round(op.complete_ms, 1),
                    "outcome": str(op.outcome),
                    "debits": {str(m.account): m.amount_cents for m in op.debits},
                    "credits": {str(m.account): m.amount_cents for m in op.credits},
                    "transfer_id": op.transfer_id,
                    "reason": op.reason,
                    "late": op.late,
                }
                for op in self.operations
            ],
            "audits": [attrs.asdict(a) for a in self.audits],
            "faults": [attrs.asdict(f) for f in self.faults],
            "final_balances": {str(k): v for k, v in sorted(self.final_balances.items())},
            "final_held": {str(k): v for k, v in sorted(self.final_held.items())},
            "statement_lines": {str(k): len(v) for k, v in sorted(self.statements.items())},
            "baseline_cents": self.baseline_cents,
        }
