"""A real bank's book: the protocol's operations on the bank's SQLite ledger.

Place in the design: the async driver (:mod:`bank.transfers.service`) executes the batches the
pure coordinator and participant yield (:mod:`bank.transfers.book`) through :class:`LedgerBook`.

- Money goes through the ledger's own idempotent hold operations (``place_hold_in``,
  ``commit_hold_in``, ``release_hold_in``, ``credit_in``), and the protocol's own records (the
  highest fence accepted, decisions applied here, yes votes awaiting a decision, the
  coordinator's transfers and their deliveries, cross-bank idempotency keys) live in tables
  of the same database. A whole batch is **one job** of the ledger's writer thread
  (``Ledger.write``): its operations run in order in one transaction, so a batch is atomic,
  shares the ledger's durability (WAL, synchronous=FULL) and its group commit (one fsync for
  whatever else is queued with it).
- A transfer the coordinator records is also written to the ledger's ``transfers`` table, so
  ``GET /api/v1/transfers/{id}`` shows cross-bank transfers exactly like local ones.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import structlog

from bank import ledger as ledger_module
from bank.ledger import CASH_ACCOUNT, SETTLEMENT_ACCOUNT, Ledger
from bank.transfers.book import (
    AcceptFence,
    BookOp,
    CashOut,
    CheckAccount,
    CommitHold,
    Credit,
    LoadCoordinator,
    LoadFence,
    LoadOutstanding,
    PlaceHold,
    ReadDecision,
    RecordAcks,
    RecordDecision,
    RecordOutcomes,
    RecordPending,
    RecordPrepared,
    ReleaseHold,
)
from bank.transfers.protocol import Transfer, transfer_from_dict, transfer_to_dict
from tokenring import jsonio
from tokenring.core import Fence

__all__ = ["SCHEMA", "LedgerBook", "account_number"]

log = structlog.get_logger("bank.transfers.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS transfer_fence (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL, issuer TEXT NOT NULL, seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS transfer_applied (
    transfer_id TEXT PRIMARY KEY,
    outcome TEXT NOT NULL CHECK (outcome IN ('committed', 'aborted')),
    at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS transfer_prepared (
    transfer_id TEXT PRIMARY KEY,
    coordinator TEXT NOT NULL,
    at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS transfer_coordinated (
    seq INTEGER PRIMARY KEY,
    transfer_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    outcome TEXT CHECK (outcome IN ('committed', 'aborted')),
    unacked TEXT
);
CREATE INDEX IF NOT EXISTS transfer_coordinated_open ON transfer_coordinated(outcome, unacked);
CREATE TABLE IF NOT EXISTS transfer_keys (
    scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,
    transfer_id TEXT NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS transfer_cash_outs (
    transfer_id TEXT PRIMARY KEY, amount_cents INTEGER NOT NULL, at_ms INTEGER NOT NULL
) WITHOUT ROWID;
"""
"""The protocol's tables, in the ledger's database (created when the service starts)."""

_MONEY_OPS = (PlaceHold, CheckAccount, CommitHold, ReleaseHold, Credit)
_LOADS = (ReadDecision, LoadFence, LoadOutstanding, LoadCoordinator)


def account_number(account: str) -> int | None:
    """A protocol account (text) as the ledger's number; None when it cannot be one."""
    if not account.isdigit() or len(account) > 16:
        return None
    number = int(account)
    return number if number > 0 else None


class KeyReused(Exception):
    """An Idempotency-Key sent again with a different request."""


class LedgerBook:
    """Executes book operations against one bank's :class:`~bank.ledger.Ledger`."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def open(self) -> None:
        """Create the protocol's tables when they are missing."""

        def run(conn: sqlite3.Connection) -> None:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)

        await self.ledger.write(run)

    async def execute(self, batch: Sequence[BookOp]) -> list[Any]:
        """Run a batch and answer each operation's result, in order.

        The whole batch is one job of the ledger's writer: its operations run in order inside
        one transaction (so a fence stored by the batch is durable no later than its holds,
        and the batch shares a group commit with whatever else is queued), with one future
        and one wake-up of the event loop for all of them. Batches that only load state
        (after a restart) run on the reader thread."""
        now_ms = self.ledger.now_ms()
        if all(isinstance(op, _LOADS) for op in batch):
            return await self.ledger.read(lambda conn: [_record(conn, op, now_ms) for op in batch])
        bank = self.ledger.bank_id
        return await self.ledger.write(lambda conn: _apply_batch(conn, bank, batch, now_ms))

    # -- reads for the API -------------------------------------------------------------------

    async def applied_here(self, transfer_id: str) -> bool:
        """Whether this bank recorded (and, in the same transaction, applied) the decision
        of ``transfer_id`` as a participant."""

        def run(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT 1 FROM transfer_applied WHERE transfer_id = ?", (transfer_id,)
            ).fetchone()
            return row is not None

        return await self.ledger.point(run)

    async def transfer_body(self, transfer_id: str) -> Transfer | None:
        """A transfer this bank coordinates, as recorded."""

        def run(conn: sqlite3.Connection) -> Transfer | None:
            row = conn.execute(
                "SELECT body FROM transfer_coordinated WHERE transfer_id = ?", (transfer_id,)
            ).fetchone()
            return None if row is None else transfer_from_dict(jsonio.loads(row[0]))

        return await self.ledger.point(run)


IN_LIST_MAX = 512
"""The most keys one ``IN (...)`` list of a bulk statement names (SQLite's own limit on
bound parameters is far above it). A power of two: see :func:`_in_list`."""


def _apply_batch(conn: sqlite3.Connection, bank: str, batch: Sequence[BookOp], now_ms: int) -> list[Any]:
    """A batch's operations in order, inside the writer's transaction. A run of consecutive
    ``RecordPrepared`` or ``RecordDecision`` operations (a prepare's or a decision's items)
    is written with a few statements for the whole run instead of a few per item."""
    results: list[Any] = []
    index = 0
    while index < len(batch):
        op = batch[index]
        kind = type(op)
        if kind in _BULK:
            end = index + 1
            while end < len(batch) and type(batch[end]) is kind and end - index < IN_LIST_MAX:
                end += 1
            results += _BULK[kind](conn, batch[index:end], now_ms)
            index = end
            continue
        results.append(_money(conn, bank, op, now_ms) if isinstance(op, _MONEY_OPS) else _record(conn, op, now_ms))
        index += 1
    return results


def _in_list(keys: Sequence[str]) -> tuple[str, list[str]]:
    """The ``?, ?, ...`` of an ``IN`` list naming ``keys``, and its parameters.

    The list is padded to a power of two by repeating the last key (a repeat in an ``IN``
    list changes nothing), so a statement has a handful of texts instead of one per batch
    size: the connection's cache of prepared statements keeps them all, and none is parsed
    and planned again because a batch size it had not seen pushed it out."""
    assert 0 < len(keys) <= IN_LIST_MAX
    size = 1 << (len(keys) - 1).bit_length()
    params = list(keys) + [keys[-1]] * (size - len(keys))
    return ", ".join("?" * size), params


def _record_prepared(conn: sqlite3.Connection, ops: Sequence[Any], now_ms: int) -> list[bool]:
    """``RecordPrepared`` for a run: False for a transfer already decided here."""
    marks, ids = _in_list([op.transfer_id for op in ops])
    decided = {
        row[0]
        for row in conn.execute(f"SELECT transfer_id FROM transfer_applied WHERE transfer_id IN ({marks})", ids)
    }
    conn.executemany(
        "INSERT OR IGNORE INTO transfer_prepared (transfer_id, coordinator, at_ms) VALUES (?, ?, ?)",
        [(op.transfer_id, op.coordinator, now_ms) for op in ops if op.transfer_id not in decided],
    )
    return [op.transfer_id not in decided for op in ops]


def _record_decisions(conn: sqlite3.Connection, ops: Sequence[Any], now_ms: int) -> list[None]:
    """``RecordDecision`` for a run: the first decision told stands, and is the only one."""
    conn.executemany(
        "INSERT INTO transfer_applied (transfer_id, outcome, at_ms) VALUES (?, ?, ?)"
        " ON CONFLICT (transfer_id) DO NOTHING",
        [(op.transfer_id, op.outcome, now_ms) for op in ops],
    )
    ids = [op.transfer_id for op in ops]
    marks, params = _in_list(ids)
    stored = dict(
        conn.execute(
            f"SELECT transfer_id, outcome FROM transfer_applied WHERE transfer_id IN ({marks})", params
        ).fetchall()
    )
    for op in ops:
        told = stored[op.transfer_id]
        assert told == op.outcome, f"{op.transfer_id}: decided {told}, now told {op.outcome}"
    conn.executemany(
        "DELETE FROM transfer_prepared WHERE transfer_id = ?", [(transfer_id,) for transfer_id in ids]
    )
    return [None] * len(ops)


_BULK: dict[type, Any] = {RecordPrepared: _record_prepared, RecordDecision: _record_decisions}


def _money(conn: sqlite3.Connection, bank: str, op: BookOp, now_ms: int) -> Any:
    """A money operation through the ledger's own idempotent hold operations."""
    match op:
        case PlaceHold(transfer_id, account, amount, owner):
            number = account_number(account)
            if number is None:
                return "unknown_account"
            return ledger_module.place_hold_in(conn, transfer_id, number, amount, owner, now_ms)
        case CheckAccount(account):
            number = account_number(account)
            found = number is not None and ledger_module.account_exists_in(conn, number)
            return "ok" if found else "unknown_account"
        case CommitHold(transfer_id, account, _):
            number = account_number(account)
            assert number is not None, "a committed source was held, so it is a number"
            outcome = ledger_module.commit_hold_in(conn, bank, transfer_id, number, now_ms)
            if outcome != "ok":
                log.error("transfer.commit_hold_refused", transfer_id=transfer_id, outcome=outcome)
            return outcome
        case ReleaseHold(transfer_id, account, _):
            number = account_number(account)
            if number is None:
                return "no_hold"
            return ledger_module.release_hold_in(conn, transfer_id, number, now_ms)
        case Credit(transfer_id, account, amount):
            number = account_number(account)
            assert number is not None, "a committed destination was checked, so it is a number"
            outcome = ledger_module.credit_in(conn, transfer_id, number, amount, now_ms)
            if outcome != "ok":
                # The money stays in settlement, visible to the audit as in flight.
                log.error("transfer.credit_refused", transfer_id=transfer_id, outcome=outcome)
            return outcome
    raise AssertionError(f"not a money operation: {op!r}")


def _fence_row(conn: sqlite3.Connection) -> Fence | None:
    row = conn.execute("SELECT epoch, issuer, seq FROM transfer_fence WHERE id = 1").fetchone()
    return None if row is None else Fence(row[0], row[1], row[2])


def _record(conn: sqlite3.Connection, op: BookOp, now_ms: int) -> Any:
    """One protocol record operation, inside the ledger's transaction (writer or reader)."""
    match op:
        case AcceptFence(fence):
            stored = _fence_row(conn)
            if stored is not None and fence < stored:
                return False
            if stored is None or stored < fence:
                conn.execute(
                    "INSERT INTO transfer_fence (id, epoch, issuer, seq) VALUES (1, ?, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET epoch = excluded.epoch,"
                    " issuer = excluded.issuer, seq = excluded.seq",
                    (fence.epoch, fence.issuer, fence.seq),
                )
            return True
        case ReadDecision(transfer_id):
            row = conn.execute(
                "SELECT outcome FROM transfer_applied WHERE transfer_id = ?", (transfer_id,)
            ).fetchone()
            return None if row is None else row[0]
        case LoadFence():
            return _fence_row(conn)
        case CashOut(transfer_id, amount):
            done = conn.execute(
                "SELECT 1 FROM transfer_cash_outs WHERE transfer_id = ?", (transfer_id,)
            ).fetchone()
            if done is None:
                conn.execute(
                    "INSERT INTO transfer_cash_outs (transfer_id, amount_cents, at_ms) VALUES (?, ?, ?)",
                    (transfer_id, amount, now_ms),
                )
                # Cash leaves from settlement: the source bank's commit put it there.
                ledger_module.post_in(
                    conn,
                    "cash_out",
                    transfer_id,
                    now_ms,
                    [(SETTLEMENT_ACCOUNT, "available", -amount), (CASH_ACCOUNT, "available", amount)],
                )
            return None
        case LoadOutstanding():
            return conn.execute(
                "SELECT transfer_id, coordinator FROM transfer_prepared ORDER BY transfer_id"
            ).fetchall()
        case RecordPending(transfer, idempotency, request):
            if idempotency is not None:
                scope, key, fingerprint = idempotency
                row = conn.execute(
                    "SELECT fingerprint, transfer_id FROM transfer_keys WHERE scope = ? AND key = ?",
                    (scope, key),
                ).fetchone()
                if row is not None:
                    if row[0] != fingerprint:
                        raise KeyReused(key)
                    return row[1]
                conn.execute(
                    "INSERT INTO transfer_keys (scope, key, fingerprint, transfer_id) VALUES (?, ?, ?, ?)",
                    (scope, key, fingerprint, transfer.id),
                )
            conn.execute(
                "INSERT INTO transfer_coordinated (transfer_id, body) VALUES (?, ?)",
                (transfer.id, jsonio.dumps_text(transfer_to_dict(transfer))),
            )
            conn.execute(
                "INSERT INTO transfers (id, requested_by, status, reason, request, created_at_ms)"
                " VALUES (?, ?, 'pending', NULL, ?, ?)",
                (transfer.id, transfer.owner_document, jsonio.dumps_text(request or {}), now_ms),
            )
            return None
        case RecordOutcomes(outcomes):
            for start in range(0, len(outcomes), IN_LIST_MAX):
                part = outcomes[start : start + IN_LIST_MAX]
                marks, ids = _in_list([transfer_id for transfer_id, _, _, _ in part])
                known = dict(
                    conn.execute(
                        f"SELECT transfer_id, outcome FROM transfer_coordinated WHERE transfer_id IN ({marks})",
                        ids,
                    ).fetchall()
                )
                fresh = []
                for transfer_id, outcome, reason, banks in part:
                    assert transfer_id in known, f"deciding {transfer_id}, never recorded"
                    if known[transfer_id] is not None:
                        assert known[transfer_id] == outcome, "decisions never change"
                        continue
                    known[transfer_id] = outcome  # a repeat within the batch is the same one
                    fresh.append((transfer_id, outcome, reason, banks))
                conn.executemany(
                    "UPDATE transfer_coordinated SET outcome = ?, unacked = ? WHERE transfer_id = ?",
                    [(o, jsonio.dumps_text(sorted(b)), t) for t, o, _, b in fresh],
                )
                conn.executemany(
                    "UPDATE transfers SET status = ?, reason = ?, decided_at_ms = ? WHERE id = ?",
                    [(o, r, now_ms, t) for t, o, r, _ in fresh],
                )
            return None
        case RecordAcks(bank, transfer_ids):
            for start in range(0, len(transfer_ids), IN_LIST_MAX):
                marks, acked = _in_list(transfer_ids[start : start + IN_LIST_MAX])
                rows = conn.execute(
                    "SELECT transfer_id, unacked FROM transfer_coordinated"
                    f" WHERE unacked IS NOT NULL AND transfer_id IN ({marks})",
                    acked,
                ).fetchall()
                updates = []
                for transfer_id, unacked in rows:
                    left = [b for b in jsonio.loads(unacked) if b != bank]
                    updates.append((jsonio.dumps_text(left) if left else None, transfer_id))
                conn.executemany(
                    "UPDATE transfer_coordinated SET unacked = ? WHERE transfer_id = ?", updates
                )
            return None
        case LoadCoordinator():
            pending = [
                transfer_from_dict(jsonio.loads(body))
                for (body,) in conn.execute(
                    "SELECT body FROM transfer_coordinated WHERE outcome IS NULL ORDER BY seq"
                )
            ]
            undelivered = [
                (transfer_from_dict(jsonio.loads(body)), outcome, frozenset(jsonio.loads(unacked)))
                for body, outcome, unacked in conn.execute(
                    "SELECT body, outcome, unacked FROM transfer_coordinated"
                    " WHERE outcome IS NOT NULL AND unacked IS NOT NULL ORDER BY seq"
                )
            ]
            return pending, undelivered
    raise AssertionError(f"not a record operation: {op!r}")
