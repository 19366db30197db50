"""The ledger: money moves only in balanced journal entries, holds keep their promises, every
keyed operation takes effect once, and what was answered survives a restart."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bank.documents import complete_cnpj, complete_cpf
from bank.ledger import (
    AMOUNT_CENTS_MAX,
    BALANCE_CENTS_MAX,
    CASH_ACCOUNT,
    ROWS_PER_INSERT_MAX,
    Answer,
    Idempotency,
    Ledger,
    LedgerClosed,
    LedgerInUse,
    LedgerUnusable,
    insert_rows,
    new_transfer_id,
    post_in,
    request_fingerprint,
    _Job,
)

READY_S_MAX = 10.0
"""Bound on a test's wait for the writer thread."""

ANA = complete_cpf("529982247")
BRUNO = complete_cpf("111444777")
FIRMA = complete_cnpj("112223330001")


async def _setup(ledger: Ledger) -> tuple[int, int, int]:
    for document in (ANA, BRUNO, FIRMA):
        assert (await ledger.create_customer(document, "x", "hash")).status == 201
    a = (await ledger.create_account("individual", [ANA])).body["account"]
    b = (await ledger.create_account("individual", [BRUNO])).body["account"]
    joint = (await ledger.create_account("joint", [ANA, BRUNO])).body["account"]
    return a, b, joint


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    opened = await Ledger.open(tmp_path / "alfa.sqlite3")
    yield opened
    await opened.close()


async def test_a_new_database_is_migrated_once_and_reopening_keeps_everything(
    tmp_path: Path,
) -> None:
    path = tmp_path / "alfa.sqlite3"
    first = await Ledger.open(path)
    a, _, _ = await _setup(first)
    assert (await first.deposit(a, 700, document=ANA)).status == 201
    await first.close()
    second = await Ledger.open(path)
    try:
        account = await second.account(a)
        assert account is not None and account.balance_cents == 700
        assert (await second.audit())["deposited_net_cents"] == 700
    finally:
        await second.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,), (2,)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_sign_up_fingerprints_written_before_schema_2_are_dropped(tmp_path: Path) -> None:
    """A database written before sign-up keys left the password out of their fingerprint (a
    SHA-256 over the body, password included) keeps none of those once opened."""
    path = tmp_path / "alfa.sqlite3"
    await (await Ledger.open(path)).close()
    with sqlite3.connect(path) as conn:  # as the version before wrote it
        conn.execute("DELETE FROM schema_version WHERE version > 1")
        conn.execute("INSERT INTO idempotency VALUES ('signup:52998224725', 'k', 'a0b1c2', 201, '{}', 0)")
        conn.execute("INSERT INTO idempotency VALUES ('52998224725', 'k', 'd3e4f5', 201, '{}', 0)")
    await (await Ledger.open(path)).close()
    with sqlite3.connect(path) as conn:
        fingerprints = dict(conn.execute("SELECT scope, fingerprint FROM idempotency").fetchall())
    assert fingerprints["signup:52998224725"] != "a0b1c2" and fingerprints["52998224725"] == "d3e4f5"


async def test_bank_id_comes_from_the_file_name(ledger: Ledger) -> None:
    assert ledger.bank_id == "alfa"


def test_transfer_ids_are_unique_and_ordered_by_the_time_they_were_made() -> None:
    before_ms = time.time_ns() // 1_000_000
    ids = [new_transfer_id("alfa") for _ in range(2_000)]
    after_ms = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"alfa-[0-9a-f]{11}[0-9a-f]{16}", i) for i in ids), ids[:3]
    made_ms = [int(i[len("alfa-") : len("alfa-") + 11], 16) for i in ids]
    assert made_ms == sorted(made_ms)
    assert before_ms <= made_ms[0] and made_ms[-1] <= after_ms


@pytest.mark.parametrize("count", [0, 1, 2, 3, 7, 63, 64, 65, 200])
def test_insert_rows_writes_what_a_statement_per_row_writes_with_a_few_texts(count: int) -> None:
    """Rows, their order (rowids) and a conflict clause as one statement per row has them,
    in groups of powers of two of at most ROWS_PER_INSERT_MAX rows."""
    texts: list[str] = []

    class Recording(sqlite3.Connection):
        def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
            texts.append(sql)
            return super().execute(sql, parameters)

    conn = sqlite3.connect(":memory:", factory=Recording)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, n INTEGER)")
    conn.execute("CREATE TABLE u (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, n INTEGER)")
    rows = [(f"k{index % 50}", index) for index in range(count)]  # keys repeat past 50
    conn.executemany("INSERT INTO u (key, n) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", rows)
    insert_rows(conn, "INSERT INTO t (key, n)", rows, " ON CONFLICT (key) DO NOTHING")
    assert conn.execute("SELECT * FROM t").fetchall() == conn.execute("SELECT * FROM u").fetchall()
    sizes = [text.count("(?, ?)") for text in texts if text.startswith("INSERT INTO t ")]
    groups = count // ROWS_PER_INSERT_MAX + bin(count % ROWS_PER_INSERT_MAX).count("1")
    assert sum(sizes) == count and len(sizes) == groups
    assert all(size & (size - 1) == 0 and size <= ROWS_PER_INSERT_MAX for size in sizes)


async def test_every_connection_keeps_its_temporary_files_in_memory(ledger: Ledger) -> None:
    def temp_store(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA temp_store").fetchone()[0])

    memory = 2
    assert await ledger.write(temp_store) == memory
    assert await ledger.read(temp_store) == memory
    assert await ledger.point(temp_store) == memory


async def test_writes_queued_while_a_batch_runs_join_its_commit(ledger: Ledger) -> None:
    running, release = threading.Event(), threading.Event()

    def slow(conn: sqlite3.Connection) -> str:
        running.set()
        assert release.wait(READY_S_MAX)
        return "first"

    before = ledger.batches
    first = asyncio.ensure_future(ledger.write(slow))
    assert await asyncio.to_thread(running.wait, READY_S_MAX)  # the batch is running
    later = [asyncio.ensure_future(ledger.write(lambda conn, i=i: i)) for i in range(3)]
    await asyncio.sleep(0)  # each task takes its first step: its job is in the ledger's outbox
    await asyncio.sleep(0)  # the loop's next pass hands the outbox to the writer's queue
    release.set()
    assert await asyncio.gather(first, *later) == ["first", 0, 1, 2]
    assert ledger.batches - before == 1  # one COMMIT for all four


class _CountingQueue:
    """The writer's queue, counting the hand-offs put into it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.puts = 0

    def put_nowait(self, item: Any) -> None:
        self.puts += 1
        self.inner.put_nowait(item)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_writes_made_in_one_pass_of_the_loop_reach_the_writer_together(ledger: Ledger) -> None:
    counting = _CountingQueue(ledger._writer.queue)
    ledger._writer.queue = counting
    before = ledger.batches
    # gather starts all twenty in the same pass of the event loop.
    assert await asyncio.gather(*(ledger.write(lambda conn, i=i: i) for i in range(20))) == list(range(20))
    assert counting.puts == 1  # one hand-off to the writer's thread, one wake-up of it
    assert ledger.batches - before == 1  # and one commit


async def test_deposit_withdrawal_and_refusals(ledger: Ledger) -> None:
    a, b, _ = await _setup(ledger)
    answer = await ledger.deposit(a, 1_000, document=ANA)
    assert answer.status == 201 and answer.body["balance_cents"] == 1_000
    assert (await ledger.withdraw(a, 400, document=ANA)).body["balance_cents"] == 600
    refused = await ledger.withdraw(a, 601, document=ANA)
    assert refused.status == 409 and refused.body["error"]["code"] == "insufficient_funds"
    assert (await ledger.deposit(b, 5, document=ANA)).body["error"]["code"] == "forbidden"
    assert (await ledger.deposit(999, 5, document=ANA)).body["error"]["code"] == "unknown_account"
    account = await ledger.account(a)
    assert account is not None and account.balance_cents == 600
    audit = await ledger.audit()
    assert audit["balance_cents"] == 600 and audit["deposited_net_cents"] == 600
    counted = await ledger.read(lambda conn: conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
    assert audit["journal_entries"] == counted > 0  # read from the last id, not counted
    assert (await ledger.check()).ok


async def test_a_joint_account_is_operated_by_every_owner(ledger: Ledger) -> None:
    _, _, joint = await _setup(ledger)
    assert (await ledger.deposit(joint, 10, document=ANA)).status == 201
    assert (await ledger.withdraw(joint, 10, document=BRUNO)).status == 201
    assert (await ledger.deposit(joint, 10, document=FIRMA)).status == 403
    assert [acc.number for acc in await ledger.accounts_of(BRUNO)] == [2, joint]


async def test_balance_limit_is_refused(ledger: Ledger) -> None:
    a, _, _ = await _setup(ledger)
    deposits = BALANCE_CENTS_MAX // AMOUNT_CENTS_MAX
    await asyncio.gather(*(ledger.deposit(a, AMOUNT_CENTS_MAX, document=ANA) for _ in range(deposits)))
    over = await ledger.deposit(a, 1, document=ANA)
    assert over.status == 409 and over.body["error"]["code"] == "balance_limit"


async def test_create_account_refuses_an_owner_who_is_not_a_customer(ledger: Ledger) -> None:
    await _setup(ledger)
    stranger = complete_cpf("123456789")
    answer = await ledger.create_account("joint", [ANA, stranger])
    assert answer.status == 422 and answer.body["error"]["code"] == "unknown_customer"
    assert (await ledger.audit())["accounts"] == 3
    assert (await ledger.create_customer(ANA, "again", "h")).body["error"]["code"] == "customer_exists"


async def test_local_transfer_commits_or_aborts_whole(ledger: Ledger) -> None:
    a, b, joint = await _setup(ledger)
    await ledger.deposit(a, 100, document=ANA)
    await ledger.deposit(joint, 50, document=ANA)
    done = await ledger.transfer_local([(a, 60), (joint, 50)], b, document=ANA, request={})
    assert done.status == 202 and done.body["status"] == "committed"
    balances = {acc.number: acc.balance_cents for acc in await ledger.all_accounts()}
    assert balances == {a: 40, b: 110, joint: 0}
    aborted = await ledger.transfer_local([(a, 40), (joint, 1)], b, document=ANA, request={})
    assert aborted.body == {"id": aborted.body["id"], "status": "aborted", "reason": "insufficient_funds"}
    assert {acc.number: acc.balance_cents for acc in await ledger.all_accounts()} == balances
    record = await ledger.transfer(aborted.body["id"])
    assert record is not None and record.status == "aborted" and record.requested_by == ANA
    forbidden = await ledger.transfer_local([(b, 1)], a, document=ANA, request={})
    assert forbidden.status == 403
    assert (await ledger.check()).ok


async def test_idempotency_key_gives_the_first_answer_even_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "alfa.sqlite3"
    ledger = await Ledger.open(path)
    a, _, _ = await _setup(ledger)
    key = Idempotency(ANA, "k-1", request_fingerprint("POST", "/d", {"amount_cents": 10}))
    first = await ledger.deposit(a, 10, document=ANA, idempotency=key)
    again = await ledger.deposit(a, 10, document=ANA, idempotency=key)
    assert not first.replayed and again.replayed
    assert (again.status, again.body) == (first.status, first.body)
    await ledger.close()
    ledger = await Ledger.open(path)
    try:
        after_restart = await ledger.deposit(a, 10, document=ANA, idempotency=key)
        assert after_restart.replayed and after_restart.body == first.body
        other_body = Idempotency(ANA, "k-1", request_fingerprint("POST", "/d", {"amount_cents": 11}))
        reused = await ledger.deposit(a, 11, document=ANA, idempotency=other_body)
        assert reused.status == 422 and reused.body["error"]["code"] == "idempotency_key_reused"
        # The same key of another customer is another key.
        bruno_key = Idempotency(BRUNO, "k-1", key.fingerprint)
        assert not (await ledger.deposit(a, 10, document=ANA, idempotency=bruno_key)).replayed
        account = await ledger.account(a)
        assert account is not None and account.balance_cents == 20
    finally:
        await ledger.close()


async def test_concurrent_retries_with_one_key_apply_once(ledger: Ledger) -> None:
    a, _, _ = await _setup(ledger)
    key = Idempotency(ANA, "same", "f")
    answers = await asyncio.gather(*(ledger.deposit(a, 7, document=ANA, idempotency=key) for _ in range(50)))
    assert sum(not answer.replayed for answer in answers) == 1
    account = await ledger.account(a)
    assert account is not None and account.balance_cents == 7


async def test_owners_are_read_once_and_kept_within_their_bound(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bank import ledger as ledger_module

    monkeypatch.setattr(ledger_module, "OWNERS_CACHED_MAX", 2)
    a, b, joint = await _setup(ledger)
    assert await ledger.owners(joint) == frozenset({ANA, BRUNO})
    assert await ledger.owners(a) == frozenset({ANA})
    assert await ledger.owners(999) is None and await ledger.owners(-1) is None  # none; system
    reads: list[int] = []
    account = ledger.account

    async def counted(number: int) -> Any:
        reads.append(number)
        return await account(number)

    monkeypatch.setattr(ledger, "account", counted)
    assert await ledger.owners(joint) == frozenset({ANA, BRUNO})  # remembered
    assert await ledger.owners(b) == frozenset({BRUNO})  # read; the oldest (a) is forgotten
    assert await ledger.owners(a) == frozenset({ANA})
    assert reads == [b, a]


async def test_a_point_read_that_finds_the_database_busy_is_read_on_the_reader_thread(
    ledger: Ledger,
) -> None:
    a, _, _ = await _setup(ledger)
    await ledger.deposit(a, 40, document=ANA)

    real = ledger._point_conn

    class Failing:
        """A connection whose every statement fails with ``message``."""

        def __init__(self, message: str) -> None:
            self.message = message

        def execute(self, *args: Any) -> Any:
            raise sqlite3.OperationalError(self.message)

    try:
        ledger._point_conn = Failing("database is locked")  # type: ignore[assignment]
        account = await ledger.account(a)
        assert account is not None and account.balance_cents == 40
        # Any other error is a programmer's, raised as it is.
        ledger._point_conn = Failing("no such table: accounts")  # type: ignore[assignment]
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await ledger.account(a)
    finally:
        ledger._point_conn = real


async def test_hold_place_commit_release_and_their_repeats(ledger: Ledger) -> None:
    a, b, joint = await _setup(ledger)
    await ledger.deposit(a, 100, document=ANA)
    await ledger.deposit(joint, 100, document=BRUNO)
    assert await ledger.place_hold("t1", a, 70, ANA) == "ok"
    assert await ledger.place_hold("t1", a, 70, ANA) == "ok"  # a repeat moves nothing
    account = await ledger.account(a)
    assert account is not None and (account.balance_cents, account.held_cents) == (30, 70)
    # Two sources of one transfer at one bank.
    assert await ledger.place_hold("t1", joint, 100, ANA) == "ok"
    assert [h.account for h in await ledger.holds("t1")] == [a, joint]
    assert await ledger.commit_hold("t1", a) == "ok"
    assert await ledger.commit_hold("t1", a) == "ok"
    assert await ledger.release_hold("t1", a) == "committed"
    assert await ledger.commit_hold("t1", joint, destination=b) == "ok"
    audit = await ledger.audit()
    assert audit["settlement_cents"] == 70 and audit["held_cents"] == 0
    assert (await ledger.account(b)).balance_cents == 100  # type: ignore[union-attr]
    assert await ledger.open_holds() == []
    # Refusals are outcomes too, and a repeat answers the first one.
    assert await ledger.place_hold("t2", a, 31, ANA) == "insufficient_funds"
    await ledger.deposit(a, 100, document=ANA)
    assert await ledger.place_hold("t2", a, 31, ANA) == "insufficient_funds"
    assert await ledger.place_hold("t3", b, 1, ANA) == "forbidden"
    assert await ledger.place_hold("t3", 999, 1, ANA) == "unknown_account"
    # Release gives it back; a commit after it is refused.
    assert await ledger.place_hold("t4", a, 30, ANA) == "ok"
    assert await ledger.release_hold("t4", a) == "ok"
    assert await ledger.commit_hold("t4", a) == "released"
    assert (await ledger.account(a)).balance_cents == 130  # type: ignore[union-attr]
    # A late prepare after the decision must not hold money again.
    assert await ledger.release_hold("t5", a) == "no_hold"
    assert await ledger.place_hold("t5", a, 1, ANA) == "decided"
    assert (await ledger.check()).ok


async def test_a_key_is_given_back_only_while_it_names_the_answer_given(ledger: Ledger) -> None:
    a, _, _ = await _setup(ledger)
    key = Idempotency(ANA, "k", "fp")
    taken = {"id": "b2-x", "status": "pending", "withdrawal_at": "b2"}
    assert (await ledger.first_answer(key, Answer(202, taken))).replayed is False
    # Not another request's (fingerprint), not another answer: the key stays taken.
    assert await ledger.forget_answer(Idempotency(ANA, "k", "other"), taken) is False
    assert await ledger.forget_answer(key, {**taken, "id": "b2-y"}) is False
    assert await ledger.forget_answer(key, taken) is True
    assert await ledger.forget_answer(key, taken) is False  # given back once
    made = await ledger.deposit(a, 5, document=ANA, idempotency=key)
    assert made.status == 201 and not made.replayed
    assert (await ledger.deposit(a, 5, document=ANA, idempotency=key)).replayed


async def test_credit_applies_once_and_debits_settlement(ledger: Ledger) -> None:
    a, _, _ = await _setup(ledger)
    assert await ledger.credit("x1", a, 25) == "ok"
    assert await ledger.credit("x1", a, 25) == "ok"
    assert await ledger.credit("x1", 999, 25) == "unknown_account"
    audit = await ledger.audit()
    assert audit["balance_cents"] == 25 and audit["settlement_cents"] == -25
    assert audit["balance_cents"] + audit["held_cents"] + audit["settlement_cents"] == audit["deposited_net_cents"]
    assert (await ledger.check()).ok


async def test_one_thousand_concurrent_one_cent_deposits(ledger: Ledger) -> None:
    a, _, _ = await _setup(ledger)
    answers = await asyncio.gather(*(ledger.deposit(a, 1, document=ANA) for _ in range(1_000)))
    assert all(answer.status == 201 for answer in answers)
    assert sorted(answer.body["balance_cents"] for answer in answers) == list(range(1, 1_001))
    account = await ledger.account(a)
    assert account is not None and account.balance_cents == 1_000
    # Group commit: concurrent operations shared transactions.
    assert ledger.batches < ledger.operations


async def test_check_finds_a_stored_balance_that_disagrees_with_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "alfa.sqlite3"
    ledger = await Ledger.open(path)
    a, _, _ = await _setup(ledger)
    await ledger.deposit(a, 10, document=ANA)
    await ledger.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE accounts SET balance_cents = 11 WHERE number = ?", (a,))
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE entries SET amount_cents = 11")
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute("UPDATE accounts SET balance_cents = -1 WHERE number = ?", (a,))
    ledger = await Ledger.open(path)
    try:
        report = await ledger.check()
        assert not report.ok and report.journal_sum_cents == 0
        assert any(f"account {a}" in problem for problem in report.problems)
    finally:
        await ledger.close()


async def test_sessions_expire_and_end(ledger: Ledger) -> None:
    await _setup(ledger)
    now_ms = ledger.now_ms()
    await ledger.create_session("h1", ANA, now_ms + 1_000)
    assert await ledger.session_document("h1") == ANA
    ledger.clock = lambda: (now_ms + 1_000) / 1000
    assert await ledger.session_document("h1") is None
    await ledger.create_session("h2", ANA, now_ms + 10_000)
    assert await ledger.delete_session("h2") is True
    assert await ledger.session_document("h2") is None


async def test_a_session_read_while_its_deletion_is_queued_stays_deleted(ledger: Ledger) -> None:
    """A request using a token while its logout waits for the writer's COMMIT reads the row
    still there; the token must still be dead once the logout has answered."""
    await _setup(ledger)
    await ledger.create_session("h3", ANA, ledger.now_ms() + 10_000)
    running, release = threading.Event(), threading.Event()

    def slow(conn: sqlite3.Connection) -> None:
        running.set()
        assert release.wait(READY_S_MAX)

    first = asyncio.ensure_future(ledger.write(slow))
    assert await asyncio.to_thread(running.wait, READY_S_MAX)  # the writer's batch is open
    deleting = asyncio.ensure_future(ledger.delete_session("h3"))
    await asyncio.sleep(0)  # the logout dropped the cached session and queued its DELETE
    assert await ledger.session_document("h3") == ANA  # not committed yet: still live
    release.set()
    await first
    assert await deleting is True
    assert await ledger.session_document("h3") is None


async def test_a_closed_ledger_refuses_work(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path / "alfa.sqlite3")
    await ledger.close()
    await ledger.close()
    with pytest.raises(LedgerClosed):
        await ledger.audit()
    with pytest.raises(LedgerClosed):
        await ledger.create_customer(ANA, "x", "h")


async def test_a_write_that_raced_close_is_answered_closed_not_left_waiting(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path / "alfa.sqlite3", queue_operations_max=1)
    running, release = threading.Event(), threading.Event()

    def slow(conn: sqlite3.Connection) -> str:
        running.set()
        assert release.wait(READY_S_MAX)
        return "done"

    first = asyncio.ensure_future(ledger.write(slow))
    assert await asyncio.to_thread(running.wait, READY_S_MAX)
    second = asyncio.ensure_future(ledger.write(lambda conn: "late"))
    await asyncio.sleep(0)  # it got past the closed check and waits for the only slot
    closing = asyncio.ensure_future(ledger.close())
    await asyncio.sleep(0)  # close() has begun: the writer will stop after the slow job
    release.set()
    assert await first == "done"
    with pytest.raises(LedgerClosed):
        await asyncio.wait_for(second, READY_S_MAX)
    await closing
    # The other order of the same race: handed over once the writer has ended.
    late: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    ledger._writer.hand_over([_Job(lambda conn: None, late)])
    with pytest.raises(LedgerClosed):
        await asyncio.wait_for(late, READY_S_MAX)


async def test_a_failing_operation_does_not_undo_its_batch_neighbours(ledger: Ledger) -> None:
    a, _, _ = await _setup(ledger)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE accounts SET balance_cents = balance_cents + 5 WHERE number = ?", (a,))
        raise RuntimeError("boom")

    results = await asyncio.gather(
        ledger.deposit(a, 1, document=ANA),
        ledger.write(broken),
        ledger.deposit(a, 2, document=ANA),
        return_exceptions=True,
    )
    assert isinstance(results[1], RuntimeError)
    assert (await ledger.account(a)).balance_cents == 3  # type: ignore[union-attr]
    assert (await ledger.check()).ok


async def test_a_batch_s_first_operations_failing_leave_nothing_and_keep_the_rest(ledger: Ledger) -> None:
    """A batch's first operations run without a savepoint of their own (a failure rolls the
    transaction back, which holds nothing else yet): what they wrote is gone, and the
    operations after them, in the same batch, are kept."""
    a, _, _ = await _setup(ledger)

    def broken(conn: sqlite3.Connection) -> None:
        post_in(conn, "deposit", None, 0, [(a, "available", 5), (CASH_ACCOUNT, "available", -5)])
        raise RuntimeError("boom")

    before = ledger.batches
    results = await asyncio.gather(
        ledger.write(broken),
        ledger.write(broken),
        ledger.deposit(a, 1, document=ANA),
        ledger.write(broken),
        ledger.deposit(a, 2, document=ANA),
        ledger.write(broken),
        return_exceptions=True,
    )
    assert ledger.batches == before + 1  # one batch, so the first two ran bare
    assert [isinstance(result, RuntimeError) for result in results] == [True, True, False, True, False, True]
    assert (await ledger.account(a)).balance_cents == 3  # type: ignore[union-attr]
    report = await ledger.check()
    assert report.ok and report.entries == 4  # the two deposits', nothing of the failures

    # A batch whose every operation fails keeps nothing and leaves the writer working.
    failed = await asyncio.gather(ledger.write(broken), ledger.write(broken), return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in failed)
    assert (await ledger.deposit(a, 4, document=ANA)).body["balance_cents"] == 7
    assert (await ledger.check()).ok


_KILLED_WRITER = """
import asyncio, sys
from bank.ledger import Ledger

async def main():
    ledger = await Ledger.open(sys.argv[1])
    await ledger.create_customer(sys.argv[2], "x", "hash")
    account = (await ledger.create_account("individual", [sys.argv[2]])).body["account"]

    async def one():
        answer = await ledger.deposit(account, 1, document=sys.argv[2])
        print(answer.body["balance_cents"], flush=True)

    while True:  # until the test kills this process
        await asyncio.gather(*(one() for _ in range(32)))

asyncio.run(main())
"""
ANSWERS_BEFORE_KILL = 300
KILL_WAIT_S_MAX = 60.0


async def test_every_answered_deposit_survives_a_kill_9(tmp_path: Path) -> None:
    import os
    import signal
    import sys

    path = tmp_path / "alfa.sqlite3"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _KILLED_WRITER,
        str(path),
        ANA,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert process.stdout is not None
    answered = 0
    try:
        async with asyncio.timeout(KILL_WAIT_S_MAX):
            seen = 0
            while seen < ANSWERS_BEFORE_KILL:
                line = await process.stdout.readline()
                assert line, "the writer process ended early"
                if not line.strip().isdigit():  # a log line
                    continue
                answered = max(answered, int(line))
                seen += 1
    finally:
        os.kill(process.pid, signal.SIGKILL)
        await process.wait()
    ledger = await Ledger.open(path)
    try:
        (account,) = await ledger.all_accounts()
        # Whatever was answered was committed; more may have committed unanswered.
        assert account.balance_cents >= answered >= ANSWERS_BEFORE_KILL
        report = await ledger.check()
        assert report.ok, report.problems
    finally:
        await ledger.close()


async def test_one_ledger_at_a_time_has_a_database(tmp_path: Path) -> None:
    path = tmp_path / "alfa.sqlite3"
    first = await Ledger.open(path)
    try:
        with pytest.raises(LedgerInUse, match="another process has this bank's database open"):
            await Ledger.open(path)
        # Another process neither: a second process of a bank must not run on its database.
        import subprocess
        import sys

        code = (
            "import asyncio, sys; from bank.ledger import Ledger, LedgerInUse\n"
            "try:\n    asyncio.run(Ledger.open(sys.argv[1]))\nexcept LedgerInUse as error:\n"
            "    print('in use:', error); sys.exit(3)\n"
        )
        other = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=30)
        assert other.returncode == 3 and "in use" in other.stdout, other.stderr
        assert (await first.deposit((await _setup(first))[0], 5, document=ANA)).status == 201
    finally:
        await first.close()
    again = await Ledger.open(path)  # closed, it is free again
    await again.close()


async def test_a_file_system_without_locks_runs_the_bank_unguarded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import fcntl

    from structlog.testing import capture_logs

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with capture_logs() as logged:
        ledger = await Ledger.open(tmp_path / "alfa.sqlite3")
    await ledger.close()
    assert any(entry["event"] == "ledger_unlocked" for entry in logged), logged

    def broken(fd: int, operation: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(fcntl, "flock", broken)
    with pytest.raises(LedgerUnusable, match="alfa.sqlite3: Input/output error"):
        await Ledger.open(tmp_path / "alfa.sqlite3")


async def test_the_writer_outlives_a_batch_that_fails_outside_its_own_handling(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever escapes a batch (once a failed log write did): its callers hear it, and the
    writer goes on; else every later write would wait for an answer that never comes."""
    from bank import ledger as ledger_module

    a, _, _ = await _setup(ledger)
    run_batch = ledger_module._Writer._run_batch
    failed: list[int] = []

    def failing_once(self: Any, jobs: Any) -> None:
        if not failed:
            failed.append(len(jobs))
            raise OSError(28, "No space left on device")
        run_batch(self, jobs)

    monkeypatch.setattr(ledger_module._Writer, "_run_batch", failing_once)
    with pytest.raises(OSError, match="No space left"):
        await asyncio.wait_for(ledger.deposit(a, 100, document=ANA), READY_S_MAX)
    assert ledger.writing
    answer = await asyncio.wait_for(ledger.deposit(a, 100, document=ANA), READY_S_MAX)
    assert answer.status == 201 and answer.body["balance_cents"] == 100


async def test_a_full_database_refuses_writes_whole_and_takes_them_again_once_there_is_room(ledger: Ledger) -> None:
    """SQLite's own page limit stands in for a full disk (the same SQLITE_FULL): a write
    that needs a page fails whole, is counted, and the next one after room is made works."""
    from bank.api import storage_failing

    a, _, _ = await _setup(ledger)
    pages = await ledger.write(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
    await ledger.write(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages}"))
    refused: BaseException | None = None
    for index in range(2_000):  # each deposit adds journal rows: pages run out soon
        try:
            await ledger.deposit(a, 1, document=ANA, idempotency=Idempotency(ANA, f"k{index}", "f"))
        except sqlite3.OperationalError as error:
            refused = error
            break
    assert refused is not None and storage_failing(refused), refused
    assert ledger.batch_failures >= 1 and ledger.writing
    before = (await ledger.account(a)).balance_cents  # type: ignore[union-attr]
    await ledger.write(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
    answer = await ledger.deposit(a, 1, document=ANA, idempotency=Idempotency(ANA, f"k{index}", "f"))
    assert answer.status == 201 and answer.body["balance_cents"] == before + 1  # the refused one: never kept
    assert (await ledger.check()).ok


async def test_a_wal_grown_behind_a_long_read_is_cut_back_once_checkpointed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader holding an old snapshot (a backup) lets the WAL grow; once it lets go, the
    next checkpoint that empties the log cuts the file back to WAL_SIZE_LIMIT_BYTES."""
    from bank import ledger as ledger_module

    monkeypatch.setattr(ledger_module, "WAL_SIZE_LIMIT_BYTES", 256 * 1024)
    ledger = await Ledger.open(tmp_path / "alfa.sqlite3")
    try:
        a, _, _ = await _setup(ledger)
        wal = tmp_path / "alfa.sqlite3-wal"
        backup = sqlite3.connect(tmp_path / "alfa.sqlite3", isolation_level=None)
        backup.execute("BEGIN")
        backup.execute("SELECT COUNT(*) FROM accounts").fetchone()  # the snapshot is held
        for _ in range(1_500):
            await ledger.deposit(a, 1, document=ANA)
        grown = wal.stat().st_size
        assert grown > 2 * 256 * 1024, grown
        backup.execute("COMMIT")
        backup.close()
        # The writer's own checkpoints (every 1,000 pages) now empty the log, and its next
        # writes start it again from the head, cutting the file back.
        for _ in range(3_000):
            await ledger.deposit(a, 1, document=ANA)
            if wal.stat().st_size <= 256 * 1024:
                break
        assert wal.stat().st_size <= 256 * 1024, (grown, wal.stat().st_size)
    finally:
        await ledger.close()


async def test_a_new_database_is_said_loudly_and_a_reopened_one_is_not(tmp_path: Path) -> None:
    """A mistyped data folder or an unmounted volume makes a bank start empty: a warning."""
    from structlog.testing import capture_logs

    for expected in (["ledger_created"], []):
        with capture_logs() as logged:
            ledger = await Ledger.open(tmp_path / "alfa.sqlite3")
            await ledger.close()
        assert [line["event"] for line in logged if line["log_level"] == "warning"] == expected
