"""Hold operations applied together (``apply_holds_in``, what a prepare or a decision of many
transfers does) leave exactly what the same operations applied one at a time leave: the same
outcomes, the same journal, entries, balances, holds and records. Hypothesis draws the
sequences: repeated transfer ids, shared accounts, missing and system accounts, wrong owners,
amounts beyond the balance, commits to local destinations."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bank import ledger as ledger_module
from bank.documents import complete_cpf
from bank.ledger import HoldOutcome, HoldRequest, Ledger, apply_holds_in

ANA = complete_cpf("529982247")
BIA = complete_cpf("200000000")
NOW_MS = 7


async def _template(path: Path) -> list[int]:
    ledger = await Ledger.open(path, bank_id="b0")
    try:
        for document in (ANA, BIA):
            await ledger.create_customer(document, "x", "hash")
        numbers = [
            (await ledger.create_account("individual", [ANA])).body["account"],
            (await ledger.create_account("joint", [ANA, BIA])).body["account"],
            (await ledger.create_account("individual", [BIA])).body["account"],
        ]
        await ledger.deposit(numbers[0], 1_000, document=ANA)
        await ledger.deposit(numbers[1], 50, document=BIA)
    finally:
        await ledger.close()
    # Near the balance limit (beyond what one deposit may bring): a credit takes it past.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    near = ledger_module.BALANCE_CENTS_MAX - 100
    ledger_module.post_in(
        conn, "deposit", None, 0, [(ledger_module.CASH_ACCOUNT, "available", -near), (numbers[2], "available", near)]
    )
    conn.execute("COMMIT")
    conn.close()
    return numbers


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    path = tmp_path_factory.mktemp("holds") / "template.sqlite3"
    return path, asyncio.run(_template(path))


def _copy(template: Path, to: Path) -> sqlite3.Connection:
    for suffix in ("", "-wal", "-shm"):
        source = template.with_name(template.name + suffix)
        if source.exists():
            shutil.copy(source, to.with_name(to.name + suffix))
    conn = sqlite3.connect(to, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _tables(conn: sqlite3.Connection) -> dict[str, list[Any]]:
    order = {
        "journal": "txn",
        "entries": "id",
        "accounts": "number",
        "holds": "transfer_id, account",
        "hold_operations": "operation, transfer_id, account",
    }
    return {table: conn.execute(f"SELECT * FROM {table} ORDER BY {key}").fetchall() for table, key in order.items()}


def _one(conn: sqlite3.Connection, request: HoldRequest) -> str:
    match request.operation:
        case "place":
            return ledger_module.place_hold_in(
                conn, request.transfer_id, request.account, request.amount_cents, request.owner_document, NOW_MS
            )
        case "commit":
            return ledger_module.commit_hold_in(conn, request.transfer_id, request.account, NOW_MS, request.destination)
        case "release":
            return ledger_module.release_hold_in(conn, request.transfer_id, request.account, NOW_MS)
        case _:
            return ledger_module.credit_in(conn, request.transfer_id, request.account, request.amount_cents, NOW_MS)


def _requests(drawn: list[Any], numbers: list[int]) -> list[HoldRequest]:
    def account(choice: int) -> int:
        return numbers[choice] if choice in (0, 1, 2) else choice

    return [
        HoldRequest(
            operation,
            transfer_id,
            account(choice),
            amount if operation in ("place", "credit") else 0,
            owner if operation == "place" else "",
            None if destination is None or operation != "commit" else account(destination),
        )
        for operation, transfer_id, choice, amount, owner, destination in drawn
    ]


# Indexes into the template's accounts, then a missing account and the two system accounts.
ACCOUNT_CHOICES = [0, 1, 2, 999_999, ledger_module.SETTLEMENT_ACCOUNT, ledger_module.CASH_ACCOUNT]
# Every outcome a hold operation has, in order: released first, so a late place is refused;
# committed to a local account, repeated, then too late to release; released, then too late
# to commit; a credit past the balance limit (a decided transfer's: never refused); then the
# refusals of a place.
KNOWN = [
    ("release", "t1", 0, 1, ANA, None), ("place", "t1", 0, 20, ANA, None),
    ("place", "t2", 0, 20, ANA, None), ("commit", "t2", 0, 1, ANA, 2),
    ("commit", "t2", 0, 1, ANA, None), ("release", "t2", 0, 1, ANA, None),
    ("place", "t3", 1, 20, ANA, None), ("release", "t3", 1, 1, ANA, None),
    ("commit", "t3", 1, 1, ANA, None), ("credit", "t4", 2, 400, ANA, None),
    ("place", "t4", 1, 100, ANA, None), ("place", "t4", 2, 1, ANA, None),
    ("place", "t1", 999_999, 1, ANA, None),
]  # fmt: skip
KNOWN_OUTCOMES = [
    "no_hold", "decided", "ok", "ok", "ok", "committed", "ok", "ok", "released",
    "ok", "insufficient_funds", "forbidden", "unknown_account",
]  # fmt: skip

requests = st.tuples(
    st.sampled_from(["place", "place", "commit", "release", "credit"]),
    st.sampled_from(["t1", "t2", "t3", "t4"]),
    st.sampled_from(ACCOUNT_CHOICES),
    st.sampled_from([1, 20, 60, 400, 1_000, ledger_module.AMOUNT_CENTS_MAX]),
    st.sampled_from([ANA, BIA]),
    st.sampled_from([None, None, 0, 1, 2, 999_999]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(drawn=KNOWN, cuts=[3])
@given(drawn=st.lists(requests, min_size=1, max_size=40), cuts=st.lists(st.integers(1, 12), max_size=40))
def test_applied_together_equals_applied_one_at_a_time(
    template: tuple[Path, list[int]], tmp_path: Path, drawn: list[Any], cuts: list[int]
) -> None:
    path, numbers = template
    batch = _requests(drawn, numbers)
    alone = _copy(path, tmp_path / "alone.sqlite3")
    together = _copy(path, tmp_path / "together.sqlite3")
    try:
        alone.execute("BEGIN")
        expected = [_one(alone, request) for request in batch]
        alone.execute("COMMIT")
        together.execute("BEGIN")
        got: list[str] = []
        start = 0
        for cut in [*cuts, len(batch)]:  # the batch in runs of drawn lengths
            got += apply_holds_in(together, batch[start : start + cut], NOW_MS)
            start += cut
            if start >= len(batch):
                break
        together.execute("COMMIT")
        assert got == expected
        assert _tables(together) == _tables(alone)
    finally:
        alone.close()
        together.close()


def test_a_run_of_holds_on_one_account_is_one_update_of_it(template: tuple[Path, list[int]], tmp_path: Path) -> None:
    path, numbers = template
    conn = _copy(path, tmp_path / "run.sqlite3")
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    conn.execute("BEGIN")
    outcomes = apply_holds_in(
        conn, [HoldRequest("place", f"t{index}", numbers[0], 100, ANA) for index in range(12)], NOW_MS
    )
    conn.execute("COMMIT")
    assert outcomes == ["ok"] * 10 + ["insufficient_funds"] * 2  # 1,000 cents, 100 at a time
    updates = [s for s in statements if s.startswith("UPDATE accounts")]
    assert len(updates) == 1
    available, held = conn.execute(
        "SELECT balance_cents, held_cents FROM accounts WHERE number = ?", (numbers[0],)
    ).fetchone()
    assert (available, held) == (0, 1_000)
    conn.close()



def test_every_outcome_of_a_known_run(template: tuple[Path, list[int]], tmp_path: Path) -> None:
    path, numbers = template
    conn = _copy(path, tmp_path / "known.sqlite3")
    conn.execute("BEGIN")
    assert apply_holds_in(conn, _requests(KNOWN, numbers), NOW_MS) == KNOWN_OUTCOMES
    conn.execute("COMMIT")
    # Every outcome but the balance limit, which only a transfer's own legs are refused for.
    assert set(KNOWN_OUTCOMES) == set(HoldOutcome.__args__) - {"balance_limit"}  # type: ignore[attr-defined]
    conn.close()


def _steps(conn: sqlite3.Connection, requests: list[HoldRequest]) -> int:
    """SQLite virtual-machine steps (in tens) that applying ``requests`` takes: a count of the
    work done, the same on a busy machine as on an idle one."""
    ticks = [0]

    def tick() -> int:
        ticks[0] += 1
        return 0

    conn.set_progress_handler(tick, 10)
    conn.execute("BEGIN")
    apply_holds_in(conn, requests, NOW_MS)
    conn.execute("ROLLBACK")
    conn.set_progress_handler(None, 0)
    return ticks[0]


def test_the_work_of_a_run_does_not_grow_with_the_history(template: tuple[Path, list[int]], tmp_path: Path) -> None:
    """Every read of a run goes through a key: thousands of earlier transfers' holds and
    records add a few steps of index depth, not a scan of them."""
    path, numbers = template
    conn = _copy(path, tmp_path / "history.sqlite3")
    run = [HoldRequest("place", f"new-{index}", numbers[0], 1, ANA) for index in range(10)]
    run += [HoldRequest("commit", f"new-{index}", numbers[0]) for index in range(10)]
    run += [HoldRequest("credit", f"new-{index}", numbers[1], 1) for index in range(10)]
    fresh = _steps(conn, run)
    conn.execute("BEGIN")
    for start in range(0, 4_000, 200):
        old = range(start, start + 200)
        apply_holds_in(conn, [HoldRequest("place", f"old-{i:05d}", numbers[0], 1, ANA) for i in old], NOW_MS)
        apply_holds_in(conn, [HoldRequest("release", f"old-{i:05d}", numbers[0]) for i in old], NOW_MS)
    conn.execute("COMMIT")
    assert conn.execute("SELECT COUNT(*) FROM hold_operations").fetchone()[0] >= 8_000
    assert _steps(conn, run) < 2 * fresh
    conn.close()
