"""A real bank's book: the protocol's operations on the bank's SQLite ledger.

Place in the design: the async driver (:mod:`bank.transfers.service`) executes the batches the
pure coordinator and participant yield (:mod:`bank.transfers.book`) through :class:`LedgerBook`.

- Money goes through the ledger's own idempotent hold operations (a run of holds, commits,
  releases and credits at once: ``apply_holds_in``), and the protocol's own records (the
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
from bank.ledger import (
    CASH_ACCOUNT,
    IN_LIST_MAX,
    SETTLEMENT_ACCOUNT,
    HoldRequest,
    Ledger,
    LegsRequest,
    in_list,
    insert_rows,
)
from bank.transfers.book import (
    AcceptFence,
    BookOp,
    CashOut,
    CheckAccount,
    CommitHold,
    Credit,
    LoadCoordinator,
    KeyReused,
    LoadDecisions,
    LoadKey,
    LoadFence,
    LoadOutstanding,
    PlaceHold,
    ReadDecision,
    RecordAcks,
    RecordDecision,
    RecordOutcomes,
    RecordPending,
    RecordPrepared,
    ReleaseHeld,
    ReleaseHold,
    Unstored,
)
from bank.transfers.protocol import ABORTED, COMMITTED, Leg, Transfer, transfer_from_dict, transfer_to_dict
from tokenring import jsonio
from tokenring.core import Fence

__all__ = ["SCHEMA", "LedgerBook", "account_number", "stored_fence"]

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

_LOADS = (ReadDecision, LoadFence, LoadOutstanding, LoadCoordinator, LoadDecisions)
# Not LoadKey: it asks whether a local write took the key, and must see one that the writer
# is running now (stored, not committed yet), so it runs in the writer, after it.


def account_number(account: str) -> int | None:
    """A protocol account (text) as the ledger's number; None when it cannot be one."""
    if not account.isdigit() or len(account) > 16:
        return None
    number = int(account)
    return number if number > 0 else None


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
        return await self.ledger.write(lambda conn: _apply_batch(conn, batch, now_ms))

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


def _apply_batch(conn: sqlite3.Connection, batch: Sequence[BookOp], now_ms: int) -> list[Any]:
    """A batch's operations in order, inside the writer's transaction. A run of consecutive
    operations of one kind (a prepare's or a decision's items, a round's accounts to check, a
    flush of acknowledgements) is read and written with a few statements for the whole run
    instead of a few per item, and so is a run of hold operations (holds placed, committed or
    released, credits)."""
    results: list[Any] = []
    index = 0
    while index < len(batch):
        op = batch[index]
        kind = type(op)
        if kind in _BULK or kind in _HOLD_OPS:
            end = index + 1
            same = _HOLD_OPS if kind in _HOLD_OPS else (kind,)
            while end < len(batch) and type(batch[end]) in same and end - index < IN_LIST_MAX:
                end += 1
            run = batch[index:end]
            results += _holds(conn, run, now_ms) if kind in _HOLD_OPS else _BULK[kind](conn, run, now_ms)
            index = end
            continue
        results.append(_record(conn, op, now_ms))
        index += 1
    return results


def _decided_here(conn: sqlite3.Connection, transfer_ids: Sequence[str]) -> set[str]:
    """Which of these transfers (at most ``IN_LIST_MAX``) have their decision recorded here."""
    if not transfer_ids:
        return set()
    marks, ids = in_list(transfer_ids)
    return {
        row[0]
        for row in conn.execute(f"SELECT transfer_id FROM transfer_applied WHERE transfer_id IN ({marks})", ids)
    }


def _record_prepared(conn: sqlite3.Connection, ops: Sequence[Any], now_ms: int) -> list[bool]:
    """``RecordPrepared`` for a run: False for a transfer already decided here."""
    decided = _decided_here(conn, [op.transfer_id for op in ops])
    insert_rows(
        conn,
        "INSERT OR IGNORE INTO transfer_prepared (transfer_id, coordinator, at_ms)",
        [(op.transfer_id, op.coordinator, now_ms) for op in ops if op.transfer_id not in decided],
    )
    return [op.transfer_id not in decided for op in ops]


def _record_decisions(conn: sqlite3.Connection, ops: Sequence[Any], now_ms: int) -> list[None]:
    """``RecordDecision`` for a run: the first decision told stands, and is the only one."""
    changes = conn.total_changes
    insert_rows(
        conn,
        "INSERT INTO transfer_applied (transfer_id, outcome, at_ms)",
        [(op.transfer_id, op.outcome, now_ms) for op in ops],
        " ON CONFLICT (transfer_id) DO NOTHING",
    )
    ids = [op.transfer_id for op in ops]
    marks, params = in_list(ids)
    if conn.total_changes - changes != len(ops):
        # Some were recorded before (a repeated decision): what was told then must agree.
        # (When every row went in, each holds the decision just told.)
        stored = dict(
            conn.execute(
                f"SELECT transfer_id, outcome FROM transfer_applied WHERE transfer_id IN ({marks})", params
            ).fetchall()
        )
        for op in ops:
            told = stored[op.transfer_id]
            assert told == op.outcome, f"{op.transfer_id}: decided {told}, now told {op.outcome}"
    # One statement for the run (most decided transfers had no record: a destination's).
    conn.execute(f"DELETE FROM transfer_prepared WHERE transfer_id IN ({marks})", params)
    return [None] * len(ops)


def _record_pending(conn: sqlite3.Connection, ops: Sequence[Any], now_ms: int) -> list[Any]:
    """``RecordPending`` for a run, one statement per table (with no idempotency keys). A
    transfer stored already is left as it is: a waiting client's record and its decision's
    may come in either order, and a decided transfer stays decided."""
    if any(op.idempotency is not None for op in ops):
        return [_record(conn, op, now_ms) for op in ops]
    _store_transfers(conn, [Unstored(op.transfer, op.request, op.submitted_at_ms) for op in ops], now_ms)
    return [None] * len(ops)


def _store_transfers(conn: sqlite3.Connection, transfers: Sequence[Unstored], now_ms: int) -> None:
    """Store transfers as pending (each with its client's request and when it was
    submitted, or now), each unless it is stored already. Their keys are the caller's."""
    insert_rows(
        conn,
        "INSERT INTO transfer_coordinated (transfer_id, body)",
        [(u.transfer.id, jsonio.dumps_text(transfer_to_dict(u.transfer))) for u in transfers],
        " ON CONFLICT (transfer_id) DO NOTHING",
    )
    insert_rows(
        conn,
        "INSERT INTO transfers (id, requested_by, status, reason, request, created_at_ms)",
        [
            (
                u.transfer.id, u.transfer.owner_document, "pending", None,
                jsonio.dumps_text(u.request or {}), u.submitted_at_ms or now_ms,
            )  # fmt: skip
            for u in transfers
        ],
        " ON CONFLICT (id) DO NOTHING",
    )


def _record_acks(conn: sqlite3.Connection, ops: Sequence[Any], now_ms: int) -> list[None]:
    """``RecordAcks`` for a run (a flush: one per bank): each transfer's banks still to
    acknowledge are read once and written once, whatever the number of banks that did."""
    acked: dict[str, set[str]] = {}
    for op in ops:
        for transfer_id in op.transfer_ids:
            acked.setdefault(transfer_id, set()).add(op.bank)
    ids = list(acked)
    for start in range(0, len(ids), IN_LIST_MAX):
        marks, params = in_list(ids[start : start + IN_LIST_MAX])
        rows = conn.execute(
            "SELECT seq, transfer_id, unacked FROM transfer_coordinated"
            f" WHERE unacked IS NOT NULL AND transfer_id IN ({marks})",
            params,
        ).fetchall()
        updates = []
        done = []  # acknowledged by every bank now: most of them, in one statement
        for seq, transfer_id, unacked in rows:
            left = [b for b in jsonio.loads(unacked) if b not in acked[transfer_id]]
            if left:
                updates.append((jsonio.dumps_text(left), seq))
            else:
                done.append(seq)
        # By the rows' own key: no second look-up through the index of transfer ids.
        if done:
            marks, seqs = in_list(done)
            conn.execute(f"UPDATE transfer_coordinated SET unacked = NULL WHERE seq IN ({marks})", seqs)
        conn.executemany("UPDATE transfer_coordinated SET unacked = ? WHERE seq = ?", updates)
    return [None] * len(ops)


def _check_accounts(conn: sqlite3.Connection, ops: Sequence[Any], now_ms: int) -> list[str]:
    """``CheckAccount`` for a run (a prepare's destinations): one read for all of them."""
    numbers = [account_number(op.account) for op in ops]
    balances = ledger_module.balances_in(conn, sorted({n for n in numbers if n is not None}))
    outcomes: list[str] = []
    for number, op in zip(numbers, ops):
        if number is None or number not in balances:
            outcomes.append("unknown_account")
        elif balances[number] + op.amount_cents > ledger_module.BALANCE_CENTS_MAX:
            # Refused now, while the transfer can still abort: a credit refused after the
            # decision would leave the money in settlement.
            outcomes.append("balance_limit")
        else:
            balances[number] += op.amount_cents  # the run's earlier credits count too
            outcomes.append("ok")
    return outcomes


_BULK: dict[type, Any] = {
    RecordPrepared: _record_prepared,
    RecordDecision: _record_decisions,
    RecordPending: _record_pending,
    RecordAcks: _record_acks,
    CheckAccount: _check_accounts,
}


_HOLD_OPS = (PlaceHold, CommitHold, ReleaseHold, Credit)


def _holds(conn: sqlite3.Connection, ops: Sequence[BookOp], now_ms: int) -> list[Any]:
    """A run of hold operations through the ledger's own idempotent ones, applied together
    (:func:`bank.ledger.apply_holds_in`); each one's outcome, in order."""
    outcomes: list[Any] = [None] * len(ops)
    requests: list[HoldRequest] = []
    where: list[int] = []
    decided = _decided_here(conn, list(dict.fromkeys(op.transfer_id for op in ops if isinstance(op, PlaceHold))))
    for position, op in enumerate(ops):
        request: HoldRequest | None = None
        match op:
            case PlaceHold(transfer_id, account, amount, owner):
                number = account_number(account)
                if number is None:
                    outcomes[position] = "unknown_account"
                else:
                    # Known decided here: no decision would come again to release a hold
                    # placed now, whatever the account (a repeat still answers as first).
                    request = HoldRequest("place", transfer_id, number, amount, owner, decided=transfer_id in decided)
            case CommitHold(transfer_id, account, _, cash_out):
                number = account_number(account)
                assert number is not None, "a committed source was held, so it is a number"
                request = HoldRequest("commit", transfer_id, number, cash_out=cash_out)
            case ReleaseHold(transfer_id, account, _):
                number = account_number(account)
                if number is None:
                    outcomes[position] = "no_hold"
                else:
                    request = HoldRequest("release", transfer_id, number)
            case Credit(transfer_id, account, amount):
                number = account_number(account)
                assert number is not None, "a committed destination was checked, so it is a number"
                request = HoldRequest("credit", transfer_id, number, amount)
            case _:
                raise AssertionError(f"not a hold operation: {op!r}")
        if request is not None:
            requests.append(request)
            where.append(position)
    for position, request, outcome in zip(where, requests, ledger_module.apply_holds_in(conn, requests, now_ms)):
        outcomes[position] = outcome
        if outcome != "ok" and request.operation in ("commit", "credit"):
            # A decided transfer's commit or credit is never refused (its destination exists:
            # it voted for it); one refused would leave money held or in settlement, so it
            # is a bug worth a loud line.
            log.error(f"transfer.{request.operation}_refused", transfer_id=request.transfer_id, outcome=outcome)
    return outcomes


def _legs_request(transfer_id: str, owner: str, legs: Sequence[Leg]) -> LegsRequest:
    """A coordinator's own legs of one transfer, as the ledger moves them."""
    return LegsRequest(
        transfer_id,
        owner,
        tuple((leg.role, None if leg.role == "cash_out" else account_number(leg.account), leg.amount_cents) for leg in legs),
    )


def _unacked(banks: Sequence[str]) -> str | None:
    """The banks still to acknowledge a decision, as stored (None: no one)."""
    return jsonio.dumps_text(sorted(banks)) if banks else None


def _transfer_key_row(conn: sqlite3.Connection, scope: str, key: str) -> tuple[str, str] | None:
    """``(fingerprint, transfer_id)`` stored for a key in ``transfer_keys``, if any."""
    row = conn.execute(
        "SELECT fingerprint, transfer_id FROM transfer_keys WHERE scope = ? AND key = ?", (scope, key)
    ).fetchone()
    return None if row is None else (row[0], row[1])


def _transfer_key(conn: sqlite3.Connection, scope: str, key: str) -> tuple[str, str] | None:
    """``(fingerprint, transfer_id)`` of the cross-bank transfer a key names, if any. A key
    a local write of the ledger stored (``idempotency``, the same customers' keys) is taken
    by another request: refused as reused."""
    row = _transfer_key_row(conn, scope, key)
    if row is None and ledger_module.key_stored_in(conn, scope, key):
        raise KeyReused(key)
    return row


def transfer_key_taken(conn: sqlite3.Connection, scope: str, key: str) -> bool:
    """Whether a cross-bank transfer recorded here carries this key (for the ledger's own
    keyed writes: :attr:`bank.ledger.Ledger.keys_elsewhere`)."""
    return _transfer_key_row(conn, scope, key) is not None


async def stored_fence(ledger: Ledger) -> Fence | None:
    """The highest prepare fence this bank accepted as a participant, as stored (None for a
    bank that never accepted one): its ring member starts above it (``Ring(fence_floor=)``),
    or after the whole ring restarted, its tokens would start below it and every prepare
    here would be refused as stale until as many hand-offs as before had been made."""

    def run(conn: sqlite3.Connection) -> Fence | None:
        try:
            return _fence_row(conn)
        except sqlite3.OperationalError as error:
            if "no such table" not in str(error):
                raise
            return None  # a new database: the transfer tables come with the service

    return await ledger.read(run)


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
                row = _transfer_key(conn, scope, key)
                if row is not None and row[1] == transfer.id:
                    return None  # stored already (by its decision), key and all
                if row is not None:
                    if row[0] != fingerprint:
                        raise KeyReused(key)
                    return row[1]
                conn.execute(
                    "INSERT INTO transfer_keys (scope, key, fingerprint, transfer_id) VALUES (?, ?, ?, ?)",
                    (scope, key, fingerprint, transfer.id),
                )
            _store_transfers(conn, [Unstored(transfer, request, op.submitted_at_ms)], now_ms)
            return None
        case RecordOutcomes(outcomes, unrecorded, own):
            # Presumed abort: a transfer is stored at its decision at the latest; one not
            # stored yet is stored decided, in one insert.
            bodies = {unstored.transfer.id: unstored for unstored in unrecorded}
            own_legs = {transfer_id: (owner, legs) for transfer_id, owner, legs in own}
            refused: dict[str, str] = {}
            for start in range(0, len(outcomes), IN_LIST_MAX):
                part = outcomes[start : start + IN_LIST_MAX]
                marks, ids = in_list([transfer_id for transfer_id, _, _, _ in part])
                known = dict(
                    conn.execute(
                        f"SELECT transfer_id, outcome FROM transfer_coordinated WHERE transfer_id IN ({marks})",
                        ids,
                    ).fetchall()
                )
                deciding = []
                for transfer_id, outcome, reason, banks in part:
                    if transfer_id in known and known[transfer_id] is not None:
                        continue  # decided before (its own legs moved then)
                    assert transfer_id in known or transfer_id in bodies, f"deciding {transfer_id}, never recorded"
                    deciding.append((transfer_id, outcome, reason, banks, transfer_id not in known))
                    known[transfer_id] = outcome  # a repeat within the batch is the same one
                # The coordinator's own legs move with the decision, in the batch's order; a
                # transfer whose legs here are refused is stored aborted, with the refusal.
                moving = [
                    _legs_request(transfer_id, *own_legs[transfer_id])
                    for transfer_id, outcome, _, _, _ in deciding
                    if outcome == COMMITTED and transfer_id in own_legs
                ]
                if moving:
                    refusals = ledger_module.apply_legs_in(conn, moving, now_ms)
                    refused.update(refusals)
                    deciding = [
                        (t, o, r, b, n) if t not in refusals else (t, ABORTED, refusals[t], b, n)
                        for t, o, r, b, n in deciding
                    ]
                new = [(bodies[t], o, r, b) for t, o, r, b, n in deciding if n]
                fresh = [(t, o, r, b) for t, o, r, b, n in deciding if not n]
                insert_rows(
                    conn,
                    "INSERT INTO transfer_coordinated (transfer_id, body, outcome, unacked)",
                    [
                        (u.transfer.id, jsonio.dumps_text(transfer_to_dict(u.transfer)), o, _unacked(b))
                        for u, o, _, b in new
                    ],
                )
                insert_rows(
                    conn,
                    "INSERT INTO transfers (id, requested_by, status, reason, request, created_at_ms, decided_at_ms)",
                    [
                        (
                            u.transfer.id, u.transfer.owner_document, o, r,
                            jsonio.dumps_text(u.request or {}), u.submitted_at_ms or now_ms, now_ms,
                        )  # fmt: skip
                        for u, o, r, _ in new
                    ],
                )
                # Their idempotency keys with them (free until now: the coordinator kept them).
                insert_rows(
                    conn,
                    "INSERT INTO transfer_keys (scope, key, fingerprint, transfer_id)",
                    [(*u.idempotency, u.transfer.id) for u, _, _, _ in new if u.idempotency is not None],
                )
                conn.executemany(
                    "UPDATE transfer_coordinated SET outcome = ?, unacked = ? WHERE transfer_id = ?",
                    [(o, _unacked(b), t) for t, o, _, b in fresh],
                )
                conn.executemany(
                    "UPDATE transfers SET status = ?, reason = ?, decided_at_ms = ? WHERE id = ?",
                    [(o, r, now_ms, t) for t, o, r, _ in fresh],
                )
            return refused
        case ReleaseHeld(transfer_id):
            held = conn.execute(
                "SELECT account FROM holds WHERE transfer_id = ? AND state = 'held'", (transfer_id,)
            ).fetchall()
            releases = [HoldRequest("release", transfer_id, account) for (account,) in held]
            ledger_module.apply_holds_in(conn, releases, now_ms)
            return None
        case LoadKey(scope, key):
            return _transfer_key(conn, scope, key)
        case LoadDecisions(transfer_ids):
            found: dict[str, tuple[str | None, Transfer]] = {}
            for start in range(0, len(transfer_ids), IN_LIST_MAX):
                marks, ids = in_list(list(transfer_ids[start : start + IN_LIST_MAX]))
                for transfer_id, outcome, body in conn.execute(
                    "SELECT transfer_id, outcome, body FROM transfer_coordinated"
                    f" WHERE transfer_id IN ({marks})",
                    ids,
                ):
                    found[transfer_id] = (outcome, transfer_from_dict(jsonio.loads(body)))
            return found
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
