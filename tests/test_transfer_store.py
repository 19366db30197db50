"""The real bank's book (``LedgerBook``) on its SQLite ledger: the protocol's records written a
run of items at a time answer exactly what the protocol expects of them, item by item."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bank import ledger as ledger_module
from bank.documents import complete_cpf
from bank.ledger import Ledger
from bank.transfers import store
from bank.transfers.book import (
    AcceptFence,
    CheckAccount,
    Credit,
    KeyReused,
    LoadCoordinator,
    LoadDecisions,
    LoadFence,
    LoadKey,
    LoadOutstanding,
    PlaceHold,
    RecordAcks,
    RecordDecision,
    RecordOutcomes,
    RecordPending,
    RecordPrepared,
    ReleaseHeld,
    Unstored,
)
from bank.transfers.protocol import Leg, Transfer
from bank.transfers.store import LedgerBook
from tokenring.core import Fence

ANA = complete_cpf("529982247")
BIA = complete_cpf("111444777")


def transfer(transfer_id: str) -> Transfer:
    return Transfer(
        transfer_id,
        "b0",
        ANA,
        (Leg("b0", "1", 5, "source"), Leg("b1", "2", 5, "destination")),
    )


@pytest.fixture
async def book(tmp_path: Path) -> AsyncIterator[LedgerBook]:
    ledger = await Ledger.open(tmp_path / "b0.sqlite3")
    opened = LedgerBook(ledger)
    await opened.open()
    yield opened
    await ledger.close()


async def test_prepared_records_answer_per_item_and_decisions_clear_them(book: LedgerBook) -> None:
    assert await book.execute([RecordDecision("t9", "aborted")]) == [None]
    answers = await book.execute(
        [RecordPrepared("t1", "b1"), RecordPrepared("t9", "b1"), RecordPrepared("t2", "b1"),
         RecordPrepared("t1", "b1")]  # fmt: skip
    )
    assert answers == [True, False, True, True]  # t9 was decided here already
    assert await book.execute([LoadOutstanding()]) == [[("t1", "b1"), ("t2", "b1")]]
    decided = [RecordDecision("t1", "committed"), RecordDecision("t1", "committed"),
               RecordDecision("t2", "aborted")]  # fmt: skip
    assert await book.execute(decided) == [None, None, None]
    assert await book.execute(decided) == [None, None, None]  # told again: the same
    assert await book.execute([LoadOutstanding()]) == [[]]
    assert await book.applied_here("t1") and not await book.applied_here("t3")
    with pytest.raises(AssertionError, match="decided committed, now told aborted"):
        await book.execute([RecordDecision("t1", "aborted")])
    # The failed batch changed nothing.
    assert await book.execute([RecordPrepared("t1", "b1")]) == [False]


async def test_outcomes_and_acks_in_bulk(book: LedgerBook, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "IN_LIST_MAX", 2)  # several statements per operation
    ids = ["t1", "t2", "t3"]
    for transfer_id in ids:
        assert await book.execute([RecordPending(transfer(transfer_id))]) == [None]
    outcomes = RecordOutcomes(
        (("t1", "committed", None, ("b0", "b1")), ("t2", "aborted", "insufficient_funds", ("b0", "b1")),
         ("t1", "committed", None, ("b0", "b1")))  # fmt: skip
    )
    assert await book.execute([outcomes]) == [{}]
    await book.execute([outcomes])  # a repeat changes nothing
    ((pending, undelivered),) = await book.execute([LoadCoordinator()])
    assert [t.id for t in pending] == ["t3"]
    assert [(t.id, outcome, banks) for t, outcome, banks in undelivered] == [
        ("t1", "committed", frozenset({"b0", "b1"})),
        ("t2", "aborted", frozenset({"b0", "b1"})),
    ]
    record = await book.ledger.transfer("t2")
    assert record is not None and (record.status, record.reason) == ("aborted", "insufficient_funds")
    # A decision stands: told again otherwise, nothing changes.
    assert await book.execute([RecordOutcomes((("t1", "aborted", "x", ("b0", "b1")),))]) == [{}]
    assert (await book.ledger.transfer("t1")).status == "committed"  # type: ignore[union-attr]
    await book.execute([RecordAcks("b1", ("t1", "t2", "t3"))])
    await book.execute([RecordAcks("b0", ("t1",))])
    ((_, undelivered),) = await book.execute([LoadCoordinator()])
    assert [(t.id, banks) for t, _, banks in undelivered] == [("t2", frozenset({"b0"}))]


def test_in_lists_have_a_handful_of_texts_whatever_the_batch_size() -> None:
    texts = set()
    for size in range(1, ledger_module.IN_LIST_MAX + 1):
        keys = [f"t{index}" for index in range(size)]
        marks, params = ledger_module.in_list(keys)
        assert marks.count("?") == len(params) >= size
        assert params[:size] == keys and set(params[size:]) <= {keys[-1]}
        texts.add(marks)
    assert len(texts) == ledger_module.IN_LIST_MAX.bit_length()  # 1, 2, 4, ... IN_LIST_MAX


async def test_runs_of_every_length_answer_item_by_item(book: LedgerBook) -> None:
    for size in range(1, 34):
        ids = [f"s{size}-{index}" for index in range(size)]
        decided = ids[::3]
        await book.execute([RecordDecision(transfer_id, "aborted") for transfer_id in decided])
        answers = await book.execute([RecordPrepared(transfer_id, "b1") for transfer_id in ids])
        assert answers == [transfer_id not in decided for transfer_id in ids]


async def test_presumed_abort_in_the_ledger(book: LedgerBook) -> None:
    """What presumed abort asks of the real book: a transfer stored at its decision (or
    before, either order), what the coordinator's book knows of transfers asked about, and a
    participant giving back every hold it has for a transfer without naming the legs."""
    ledger = book.ledger
    assert (await ledger.create_customer(ANA, "Ana", "hash")).status == 201
    first = (await ledger.create_account("individual", [ANA])).body["account"]
    second = (await ledger.create_account("individual", [ANA])).body["account"]
    for number in (first, second):
        assert (await ledger.deposit(number, 1_000, document=ANA)).status == 201
    # Coordinator: t1 stored by its client's record first, t2 only at its decision, and the
    # record of t1 again after the decision changes nothing.
    t1, t2 = transfer("t1"), transfer("t2")
    await book.execute([RecordPending(t1, None, {"n": 1}, 1_000)])
    decisions = (("t1", "committed", None, ("b0", "b1")), ("t2", "aborted", "forbidden", ("b0", "b1")))
    await book.execute([RecordOutcomes(decisions, (Unstored(t1, {"n": 1}, 1_000), Unstored(t2, {"n": 2}, 2_000)))])
    await book.execute([RecordPending(t1, None, {"n": 1}), RecordPending(t2, None, {"n": 2})])
    (stored,) = await book.execute([LoadDecisions(("t1", "t2", "t3"))])
    assert {i: (outcome, t.id) for i, (outcome, t) in stored.items()} == {
        "t1": ("committed", "t1"), "t2": ("aborted", "t2")}  # fmt: skip
    # As submitted: the client's request and time, whenever the transfer was stored.
    for transfer_id, status, reason, n, at_ms in (
        ("t1", "committed", None, 1, 1_000), ("t2", "aborted", "forbidden", 2, 2_000)
    ):
        record = await ledger.transfer(transfer_id)
        assert record is not None
        assert (record.status, record.reason, record.request, record.created_at_ms) == (status, reason, {"n": n}, at_ms)
    # Participant: two holds for t9, one for t8; a presumed abort of t9 gives back t9's only.
    places = [PlaceHold("t9", str(first), 300, ANA), PlaceHold("t9", str(second), 200, ANA),
              PlaceHold("t8", str(first), 100, ANA)]  # fmt: skip
    assert await book.execute(places) == ["ok", "ok", "ok"]
    assert await book.execute([RecordDecision("t9", "aborted"), ReleaseHeld("t9")]) == [None, None]
    balances = {n: ((a := await ledger.account(n)) and (a.balance_cents, a.held_cents)) for n in (first, second)}
    assert balances == {first: (900, 100), second: (1_000, 0)}
    # A late copy of t9's prepare answers as before and holds nothing again.
    assert await book.execute(places[:2]) == ["ok", "ok"]
    assert (await ledger.account(first)).held_cents == 100  # type: ignore[union-attr]
    assert await book.execute([ReleaseHeld("t7")]) == [None]  # nothing held: nothing happens


async def test_a_key_is_stored_with_its_transfers_decision(book: LedgerBook) -> None:
    t5 = transfer("t5")
    assert await book.execute([LoadKey(ANA, "k5")]) == [None]
    decided = RecordOutcomes((("t5", "committed", None, ("b0", "b1")),), (Unstored(t5, {}, None, (ANA, "k5", "fp")),))
    await book.execute([decided])
    assert await book.execute([LoadKey(ANA, "k5")]) == [("fp", "t5")]
    # A waiting client's record after the decision changes nothing; another transfer under
    # the key gets the first one's id, and another request is refused.
    assert await book.execute([RecordPending(t5, (ANA, "k5", "fp"))]) == [None]
    assert await book.execute([RecordPending(transfer("t6"), (ANA, "k5", "fp"))]) == ["t5"]
    with pytest.raises(KeyReused):
        await book.execute([RecordPending(transfer("t7"), (ANA, "k5", "other"))])
    (stored,) = await book.execute([LoadDecisions(("t5", "t6"))])
    assert list(stored) == ["t5"] and stored["t5"][0] == "committed"


async def test_a_key_a_local_write_took_is_refused_to_a_transfer_and_the_other_way(book: LedgerBook) -> None:
    ledger = book.ledger
    assert (await ledger.create_customer(ANA, "Ana", "hash")).status == 201
    number = (await ledger.create_account("individual", [ANA])).body["account"]
    local = ledger_module.Idempotency(ANA, "k1", "deposit-fp")
    assert (await ledger.deposit(number, 10, document=ANA, idempotency=local)).status == 201
    for asked in (LoadKey(ANA, "k1"), RecordPending(transfer("t1"), (ANA, "k1", "transfer-fp"))):
        with pytest.raises(KeyReused):
            await book.execute([asked])
    assert await book.execute([LoadKey(BIA, "k1")]) == [None]  # another customer's key
    # A key lookup runs in the writer, after what it queued first: it sees a local write's
    # key before that write's group commit is over.
    for index in range(20):
        taken = ledger_module.Idempotency(ANA, f"q{index}", "deposit-fp")
        deposit, lookup = await asyncio.gather(
            ledger.deposit(number, 1, document=ANA, idempotency=taken),
            book.execute([LoadKey(ANA, f"q{index}")]),
            return_exceptions=True,
        )
        assert deposit.status == 201 and isinstance(lookup, KeyReused), (index, lookup)
    # A key a transfer recorded here took is refused to a local write, once the ledger is
    # told where to look (the transfer service does, when it starts).
    assert await book.execute([RecordPending(transfer("t2"), (ANA, "k2", "transfer-fp"))]) == [None]
    ledger.keys_elsewhere = store.transfer_key_taken
    refused = await ledger.deposit(number, 10, document=ANA, idempotency=ledger_module.Idempotency(ANA, "k2", "fp"))
    assert refused.status == 422 and refused.body["error"]["code"] == "idempotency_key_reused"
    assert (await ledger.account(number)).balance_cents == 30  # nothing moved
    assert (await ledger.deposit(number, 5, document=ANA, idempotency=local)).replayed  # its own key still replays


async def test_a_run_of_account_checks_answers_item_by_item(book: LedgerBook) -> None:
    ledger = book.ledger
    assert (await ledger.create_customer(ANA, "Ana", "hash")).status == 201
    number = (await ledger.create_account("individual", [ANA])).body["account"]
    accounts = [str(number), "999", "x1", str(number), "0", str(ledger_module.SETTLEMENT_ACCOUNT)]
    answers = await book.execute([CheckAccount(account) for account in accounts])
    assert answers == ["ok", "unknown_account", "unknown_account", "ok", "unknown_account", "unknown_account"]


async def _account_near_the_limit(book: LedgerBook, monkeypatch: pytest.MonkeyPatch) -> tuple[Ledger, int]:
    """An account of Ana's with 900 cents, under a balance limit of 1,000."""
    ledger = book.ledger
    monkeypatch.setattr(ledger_module, "BALANCE_CENTS_MAX", 1_000)
    assert (await ledger.create_customer(ANA, "Ana", "hash")).status == 201
    number = (await ledger.create_account("individual", [ANA])).body["account"]
    await ledger.deposit(number, 900, document=ANA)
    return ledger, number


async def test_a_destination_that_a_credit_would_take_past_the_balance_limit_is_refused(
    book: LedgerBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, number = await _account_near_the_limit(book, monkeypatch)
    # The credits checked earlier in the same run count: 900 + 50 fits, + 60 more does not,
    # + 50 fits again (exactly at the limit).
    checks = [CheckAccount(str(number), amount) for amount in (50, 60, 50)]
    assert await book.execute(checks) == ["ok", "balance_limit", "ok"]
    assert (await ledger.account(number)).balance_cents == 900  # a check moves nothing


async def test_a_decided_credit_lands_even_when_a_deposit_filled_the_account_after_the_vote(
    book: LedgerBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing is reserved at the vote: a deposit landing before the decision may fill the
    # account. The decided credit must land all the same; refused, it would stay in
    # settlement for good.
    ledger, number = await _account_near_the_limit(book, monkeypatch)
    assert await book.execute([CheckAccount(str(number), 80)]) == ["ok"]
    assert (await ledger.deposit(number, 100, document=ANA)).status == 201  # now at the limit
    assert await book.execute([Credit("t1", str(number), 80), Credit("t1", str(number), 80)]) == ["ok", "ok"]
    assert (await ledger.account(number)).balance_cents == 1_080  # once, past the limit
    audit = await ledger.audit()
    assert audit["settlement_cents"] == -80  # the money arrived: settlement paid it out
    assert audit["balance_cents"] + audit["held_cents"] + audit["settlement_cents"] == audit["deposited_net_cents"]
    assert (await ledger.check()).ok
    # The limit still stands for what has not been decided.
    assert await book.execute([CheckAccount(str(number), 1)]) == ["balance_limit"]
    assert (await ledger.deposit(number, 1, document=ANA)).body["error"]["code"] == "balance_limit"


async def test_a_flush_of_acknowledgements_from_several_banks_is_one_update_per_transfer(
    book: LedgerBook,
) -> None:
    three = Transfer("t1", "b0", ANA, (Leg("b0", "1", 5, "source"), Leg("b1", "2", 5, "source"),
                                       Leg("b2", "3", 10, "destination")))  # fmt: skip
    await book.execute([RecordPending(three), RecordPending(transfer("t2"))])
    await book.execute([RecordOutcomes((("t1", "committed", None, ("b0", "b1", "b2")),
                                        ("t2", "aborted", "x", ("b0", "b1"))))])  # fmt: skip
    await book.execute([RecordAcks("b1", ("t1", "t2")), RecordAcks("b0", ("t1",)), RecordAcks("b1", ("t1",))])
    ((_, undelivered),) = await book.execute([LoadCoordinator()])
    assert [(t.id, banks) for t, _, banks in undelivered] == [("t1", frozenset({"b2"})), ("t2", frozenset({"b0"}))]
    await book.execute([RecordAcks("b2", ("t1", "t9")), RecordAcks("b0", ("t2",))])
    ((_, undelivered),) = await book.execute([LoadCoordinator()])
    assert undelivered == []


async def test_a_coordinators_own_legs_move_with_its_decisions_all_or_none(book: LedgerBook) -> None:
    """The last agent in the real book: the coordinator's own legs of committed transfers
    move in the write of the decisions, each transfer's all or none, in order; a transfer
    whose legs are refused is stored aborted with the refusal; nothing is held, and a
    decision written again moves nothing again."""
    ledger = book.ledger
    bia = complete_cpf("111444777")
    for document in (ANA, bia):
        assert (await ledger.create_customer(document, "N", "hash")).status == 201
    first = (await ledger.create_account("individual", [ANA])).body["account"]
    second = (await ledger.create_account("individual", [ANA])).body["account"]
    hers = (await ledger.create_account("individual", [bia])).body["account"]
    assert (await ledger.deposit(first, 1_000, document=ANA)).status == 201

    def made(transfer_id: str, *legs: Leg) -> Transfer:
        return Transfer(transfer_id, "b0", ANA, legs)

    there = Leg("b1", "7", 1, "source")
    cases = [
        # 600 of 1,000 out, then 300 from the two accounts at once with 100 credited back.
        made("m1", Leg("b0", str(first), 600, "source"), Leg("b1", "7", 600, "destination")),
        made("m2", there, Leg("b0", str(second), 1, "destination")),
        made("m3", Leg("b0", str(first), 500, "source"), Leg("b1", "7", 500, "destination")),  # short
        made("m4", Leg("b0", str(hers), 1, "source"), Leg("b1", "7", 1, "destination")),  # not hers
        made("m5", Leg("b0", str(first), 300, "source"), Leg("b0", "424242", 1, "source"),
             Leg("b1", "7", 301, "destination")),  # fmt: skip
        made("m6", there, Leg("b0", "", 1, "cash_out")),
        made("m7", Leg("b0", str(first), 400, "source"), Leg("b1", "7", 400, "destination")),
        made("m8", there, Leg("b0", "x", 1, "destination")),
    ]
    decided = RecordOutcomes(
        tuple((t.id, "committed", None, ("b1",)) for t in cases),
        tuple(Unstored(t, {}) for t in cases),
        tuple((t.id, ANA, t.legs_at("b0")) for t in cases),
    )
    refused = {"m3": "insufficient_funds", "m4": "forbidden", "m5": "unknown_account", "m8": "unknown_account"}
    assert await book.execute([decided]) == [refused]
    for t in cases:
        record = await ledger.transfer(t.id)
        assert record is not None
        assert (record.status, record.reason) == (("aborted", refused[t.id]) if t.id in refused else ("committed", None))
    balances = {n: ((a := await ledger.account(n)) and (a.balance_cents, a.held_cents)) for n in (first, second, hers)}
    assert balances == {first: (0, 0), second: (1, 0), hers: (0, 0)}
    assert await ledger.holds("m1") == []
    assert (await ledger.check()).problems == ()
    # Written again (a coordinator cannot, but the book holds to it): nothing moves twice.
    assert await book.execute([decided]) == [{}]
    assert (await ledger.account(second)).balance_cents == 1  # type: ignore[union-attr]


async def test_a_coordinators_own_destination_may_be_credited_up_to_the_balance_limit(
    book: LedgerBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limit is the largest balance allowed, as for a participant's destination: a
    credit that reaches it exactly moves; one cent past it is refused and aborts."""
    ledger, number = await _account_near_the_limit(book, monkeypatch)

    def credit(transfer_id: str, amount: int) -> RecordOutcomes:
        legs = (Leg("b1", "7", amount, "source"), Leg("b0", str(number), amount, "destination"))
        made = Transfer(transfer_id, "b0", ANA, legs)
        return RecordOutcomes(((transfer_id, "committed", None, ("b1",)),), (Unstored(made, {}),),
                              ((transfer_id, ANA, made.legs_at("b0")),))  # fmt: skip

    assert await book.execute([credit("t1", 100)]) == [{}]
    assert (await ledger.account(number)).balance_cents == 1_000  # type: ignore[union-attr]
    assert await book.execute([credit("t2", 1)]) == [{"t2": "balance_limit"}]
    assert (await ledger.account(number)).balance_cents == 1_000  # type: ignore[union-attr]


async def test_the_book_refuses_a_fence_below_the_one_it_stored(book: LedgerBook) -> None:
    """The book decides (bank.transfers.participant): a fence below the stored one is refused
    and the stored one stays; an equal or higher one is taken."""
    assert await book.execute([AcceptFence(Fence(2, "b1", 5))]) == [True]
    assert await book.execute([AcceptFence(Fence(2, "b1", 4)), AcceptFence(Fence(1, "b2", 9))]) == [False, False]
    assert await book.execute([LoadFence()]) == [Fence(2, "b1", 5)]
    assert await book.execute([AcceptFence(Fence(2, "b1", 5)), AcceptFence(Fence(3, "b0", 1))]) == [True, True]
    assert await book.execute([LoadFence()]) == [Fence(3, "b0", 1)]
