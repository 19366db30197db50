"""The pure participant and coordinator, step by step, and the messages' JSON form."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from bank.transfers.book import CommitHold, KeyReused, MemoryBook, RecordOutcomes, run_steps
from bank.transfers.coordinator import BATCH_TRANSFERS_MAX, Coordinator
from bank.transfers.participant import Participant
from bank.transfers.protocol import (
    ACCOUNT_CHARS_MAX,
    AMOUNT_CENTS_MAX,
    ITEMS_PER_MESSAGE_MAX,
    LEG_BYTES_MAX,
    MESSAGE_BYTES_MAX,
    MESSAGE_ITEMS_BYTES_MAX,
    SOURCES_MAX,
    TRANSFER_ID_CHARS_MAX,
    Acks,
    DecisionItem,
    DecisionQuery,
    Decisions,
    Leg,
    Prepare,
    PrepareItem,
    Transfer,
    Vote,
    Votes,
    decode_message,
    encode_message,
    item_bytes_max,
)
from tokenring import jsonio


def fence_json(fence: Any) -> Any:
    return list(fence)


def fence_back(data: Any) -> Any:
    if not isinstance(data, list) or len(data) != 3:
        raise ValueError("fence")
    return tuple(data)


def book_with(balance_cents: int) -> MemoryBook:
    book = MemoryBook("beta")
    book.open_account("1", "doc", balance_cents)
    book.open_account("2", "other", 0)
    return book


def prepare(fence: tuple[int, str, int], transfer_id: str = "alfa:1", amount: int = 100) -> Prepare:
    legs = (Leg("beta", "1", amount, "source"),)
    return Prepare("alfa", fence, (PrepareItem(transfer_id, "doc", legs),))


def test_a_prepare_holds_the_source_and_votes_yes() -> None:
    book = book_with(500)
    participant = Participant("beta")
    [votes] = run_steps(participant.handle(prepare((1, "alfa", 3)), 0), book)
    assert votes == Votes("beta", (1, "alfa", 3), (Vote("alfa:1", True),))
    assert (book.accounts["1"].balance_cents, book.accounts["1"].held_cents) == (400, 100)
    assert book.prepared == {"alfa:1": "alfa"}


def test_a_prepare_below_the_accepted_fence_is_refused_and_holds_nothing() -> None:
    book = book_with(500)
    run_steps(Participant("beta").handle(prepare((2, "gama", 1), "alfa:0"), 0), book)
    # A restarted participant loads the fence it had accepted from its book.
    restarted = Participant("beta")
    run_steps(restarted.start(0), book)
    [votes] = run_steps(restarted.handle(prepare((1, "alfa", 9)), 0), book)
    assert votes.votes == (Vote("alfa:1", False, "stale_fence"),)
    assert book.accounts["1"].held_cents == 100  # only the first prepare's hold


def test_a_late_prepare_of_a_decided_transfer_leaves_no_hold() -> None:
    book = book_with(500)
    participant = Participant("beta")
    abort = Decisions("alfa", (DecisionItem("alfa:1", "aborted", (Leg("beta", "1", 100, "source"),)),))
    [acks] = run_steps(participant.handle(abort, 0), book)
    assert acks == Acks("beta", ("alfa:1",))
    [votes] = run_steps(participant.handle(prepare((1, "alfa", 1)), 5), book)
    assert votes.votes == (Vote("alfa:1", False, "decided"),)
    assert book.accounts["1"].held_cents == 0 and book.accounts["1"].balance_cents == 500


def test_decisions_carried_by_a_prepare_apply_even_when_the_prepare_is_stale() -> None:
    book = book_with(500)
    participant = Participant("beta")
    run_steps(participant.handle(prepare((2, "alfa", 1), "alfa:1"), 0), book)
    assert book.accounts["1"].held_cents == 100
    commit = (DecisionItem("alfa:1", "committed", (Leg("beta", "1", 100, "source"),)),)
    # A prepare under an older fence: refused, but the decision it carries is final.
    late = Prepare("gama", (1, "gama", 7), prepare((1, "gama", 7), "gama:1").items, commit)
    [votes] = run_steps(participant.handle(late, 1), book)
    assert votes.votes == (Vote("gama:1", False, "stale_fence"),) and votes.acked == ("alfa:1",)
    assert (book.accounts["1"].balance_cents, book.accounts["1"].held_cents) == (400, 0)
    assert book.settlement_cents == 100 and participant.outstanding == {}
    # Carried again with a fresh prepare: applied once, acknowledged again.
    fresh = Prepare("alfa", (2, "alfa", 4), prepare((2, "alfa", 4), "alfa:2").items, commit)
    [votes] = run_steps(participant.handle(fresh, 2), book)
    assert votes.votes == (Vote("alfa:2", True),) and votes.acked == ("alfa:1",)
    assert book.settlement_cents == 100 and book.accounts["1"].held_cents == 100


def test_a_prepare_of_a_decided_transfer_holds_no_other_account_either() -> None:
    """A transfer id prepared again naming another account than its first prepare did:
    refused, since no decision would come again to release that hold."""
    book = book_with(500)
    book.open_account("3", "doc", 500)
    participant = Participant("beta")
    run_steps(participant.handle(prepare((1, "alfa", 1)), 0), book)
    commit = Decisions("alfa", (DecisionItem("alfa:1", "committed", (Leg("beta", "1", 100, "source"),)),))
    run_steps(participant.handle(commit, 1), book)
    other = Prepare("alfa", (1, "alfa", 2), (PrepareItem("alfa:1", "doc", (Leg("beta", "3", 100, "source"),)),))
    [votes] = run_steps(participant.handle(other, 2), book)
    assert votes.votes == (Vote("alfa:1", False, "decided"),)
    assert (book.accounts["3"].balance_cents, book.accounts["3"].held_cents) == (500, 0)
    assert participant.outstanding == {}


def failing_once(book: MemoryBook, when: Any) -> Any:
    """A driver like ``run_steps`` whose first batch matching ``when`` fails (a write that
    did not happen), raised inside the step as the bank's driver does."""

    def run(steps: Any) -> Any:
        failed = False
        try:
            batch = next(steps)
            while True:
                if not failed and when(batch):
                    failed = True
                    batch = steps.throw(OSError("disk I/O error"))
                else:
                    batch = steps.send(book.execute(batch))
        except StopIteration as stop:
            return stop.value

    return run


def test_a_decision_whose_write_failed_is_asked_for_again() -> None:
    book = book_with(500)
    participant = Participant("beta", query_after_ms=10)
    run_steps(participant.handle(prepare((1, "alfa", 1)), 0), book)
    abort = Decisions("alfa", (DecisionItem("alfa:1", "aborted", ()),))
    with pytest.raises(OSError):
        failing_once(book, lambda batch: True)(participant.handle(abort, 5))
    assert book.accounts["1"].held_cents == 100
    assert participant.tick(20) == [("alfa", DecisionQuery("beta", ("alfa:1",)))]
    [acks] = run_steps(participant.handle(abort, 25), book)
    assert acks == Acks("beta", ("alfa:1",)) and participant.outstanding == {}
    assert book.accounts["1"].held_cents == 0


def test_a_prepare_whose_write_failed_leaves_the_fence_as_it_was() -> None:
    """A floor raised in memory for a prepare that was never stored would refuse every
    honest prepare below it until a restart."""
    book = book_with(500)
    participant = Participant("beta")
    run_steps(participant.handle(prepare((1, "alfa", 1), "alfa:1"), 0), book)
    with pytest.raises(OSError):
        failing_once(book, lambda batch: True)(participant.handle(prepare((9, "gama", 1), "gama:1"), 1))
    assert participant.fence == (1, "alfa", 1) and book.fence == (1, "alfa", 1)
    [votes] = run_steps(participant.handle(prepare((1, "alfa", 2), "alfa:2"), 2), book)
    assert votes.votes == (Vote("alfa:2", True),)


def test_only_a_transfer_holding_money_here_waits_for_its_decision() -> None:
    book = book_with(500)
    participant = Participant("beta", query_after_ms=100)
    items = (
        PrepareItem("alfa:1", "doc", (Leg("beta", "1", 100, "source"),)),
        PrepareItem("alfa:2", "doc", (Leg("beta", "2", 100, "destination"),)),
    )
    [votes] = run_steps(participant.handle(Prepare("alfa", (1, "alfa", 1), items), 0), book)
    assert [v.ok for v in votes.votes] == [True, True]
    # The credit holds nothing here: no record, no question (its coordinator re-sends a
    # decision until acknowledged, and an undecided one never moved money here).
    assert book.prepared == {"alfa:1": "alfa"} and list(participant.outstanding) == ["alfa:1"]
    assert participant.tick(100) == [("alfa", DecisionQuery("beta", ("alfa:1",)))]


def test_refusals_name_their_reason() -> None:
    book = book_with(50)
    items = (
        PrepareItem("alfa:1", "doc", (Leg("beta", "1", 100, "source"),)),
        PrepareItem("alfa:2", "doc", (Leg("beta", "2", 1, "source"),)),
        PrepareItem("alfa:3", "doc", (Leg("beta", "9", 1, "destination"),)),
        PrepareItem("alfa:4", "doc", (Leg("beta", "2", 1, "destination"),)),
    )
    [votes] = run_steps(Participant("beta").handle(Prepare("alfa", (1, "a", 1), items), 0), book)
    assert [(v.ok, v.reason) for v in votes.votes] == [
        (False, "insufficient_funds"),
        (False, "forbidden"),
        (False, "unknown_account"),
        (True, None),
    ]


def test_a_decision_applies_once_however_often_it_arrives() -> None:
    book = book_with(500)
    participant = Participant("beta")
    run_steps(participant.handle(prepare((1, "alfa", 1)), 0), book)
    commit = Decisions("alfa", (DecisionItem("alfa:1", "committed", (Leg("beta", "1", 100, "source"),)),))
    for _ in range(3):
        run_steps(participant.handle(commit, 1), book)
    assert (book.accounts["1"].balance_cents, book.accounts["1"].held_cents) == (400, 0)
    assert book.settlement_cents == 100
    assert participant.outstanding == {} and book.prepared == {}


def test_an_undecided_yes_is_asked_about_with_backoff() -> None:
    book = book_with(500)
    participant = Participant("beta", query_after_ms=100, query_interval_ms_max=300)
    run_steps(participant.handle(prepare((1, "alfa", 1)), 0), book)
    assert participant.tick(99) == []
    assert participant.tick(100) == [("alfa", DecisionQuery("beta", ("alfa:1",)))]
    assert participant.next_deadline_ms() == 300
    # A restarted participant finds the yes in its book and asks too.
    restarted = Participant("beta", query_after_ms=100)
    run_steps(restarted.start(1_000), book)
    assert restarted.tick(1_100) == [("alfa", DecisionQuery("beta", ("alfa:1",)))]


def alfa_book(balance_cents: int = 500) -> MemoryBook:
    """The coordinator's book, with the account its own source leg draws from."""
    book = MemoryBook("alfa")
    book.open_account("1", "doc", balance_cents)
    return book


def transfer(transfer_id: str = "alfa:1") -> Transfer:
    return Transfer(
        transfer_id,
        "alfa",
        "doc",
        (Leg("alfa", "1", 70, "source"), Leg("beta", "1", 30, "source"), Leg("gama", "5", 100, "destination")),
    )


def test_a_round_prepares_once_per_other_bank_and_decides_when_all_voted() -> None:
    book = alfa_book()
    coordinator = Coordinator("alfa")
    run_steps(coordinator.submit(transfer("alfa:1")), book)
    run_steps(coordinator.submit(transfer("alfa:2")), book)
    sends = coordinator.grant((1, "alfa", 1), until_ms=25, now_ms=0)
    # Its own legs are not prepared: they move with the decision (the last agent).
    assert sorted(to for to, _ in sends) == ["beta", "gama"]
    assert all(len(m.items) == 2 for _, m in sends if isinstance(m, Prepare))
    yes = Votes("beta", (1, "alfa", 1), (Vote("alfa:1", True), Vote("alfa:2", True)))
    assert run_steps(coordinator.handle(yes, 1), book) == ([], [])
    last = Votes("gama", (1, "alfa", 1), (Vote("alfa:1", True), Vote("alfa:2", False, "unknown_account")))
    decided, sends = run_steps(coordinator.handle(last, 2), book)
    assert [(d.transfer_id, d.outcome, d.reason) for d in decided] == [
        ("alfa:1", "committed", None),
        ("alfa:2", "aborted", "unknown_account"),
    ]
    assert book.outcomes == {"alfa:1": ("committed", None), "alfa:2": ("aborted", "unknown_account")}
    # The committed one's own source was debited in the same write; nothing was held here.
    assert (book.accounts["1"].balance_cents, book.accounts["1"].held_cents) == (430, 0)
    assert book.settlement_cents == 70 and not book.holds and not book.applied
    # beta holds money for the aborted one: it hears at once (with what else it is owed).
    # gama only checked a destination: its part waits to travel with the next prepare.
    told = {to: [(i.transfer_id, i.outcome) for i in m.items] for to, m in sends}
    assert told == {"beta": [("alfa:1", "committed"), ("alfa:2", "aborted")]}
    run_steps(coordinator.submit(transfer("alfa:3")), book)
    sends = coordinator.grant((1, "alfa", 4), until_ms=50, now_ms=3)
    carried = {to: m.decisions for to, m in sends if isinstance(m, Prepare)}
    assert sorted(carried) == ["beta", "gama"]
    assert [(d.transfer_id, d.outcome) for d in carried["beta"]] == [("alfa:1", "committed"), ("alfa:2", "aborted")]
    assert carried["gama"][0].legs == (Leg("gama", "5", 100, "destination"),)
    # Votes that acknowledge them end their delivery there.
    votes = Votes("beta", (1, "alfa", 4), (Vote("alfa:3", True),), acked=("alfa:1", "alfa:2"))
    run_steps(coordinator.handle(votes, 4), book)
    assert "beta" not in coordinator.owed and set(coordinator.owed["gama"]) == {"alfa:1", "alfa:2"}
    assert book.unacked == {"alfa:1": {"beta", "gama"}, "alfa:2": {"beta", "gama"}}  # written later


def test_own_legs_refused_at_the_decision_abort_the_transfer_everywhere() -> None:
    book = alfa_book(100)
    coordinator = Coordinator("alfa")
    for index in (1, 2):
        run_steps(coordinator.submit(transfer(f"alfa:{index}")), book)
    coordinator.grant((1, "alfa", 1), until_ms=25, now_ms=0)
    for bank in ("beta", "gama"):
        votes = Votes(bank, (1, "alfa", 1), (Vote("alfa:1", True), Vote("alfa:2", True)))
        decided, sends = run_steps(coordinator.handle(votes, 1), book)
    # Both were voted yes elsewhere; here the money covers the first only (70 of 100).
    assert [(d.transfer_id, d.outcome, d.reason) for d in decided] == [
        ("alfa:1", "committed", None),
        ("alfa:2", "aborted", "insufficient_funds"),
    ]
    assert book.outcomes["alfa:2"] == ("aborted", "insufficient_funds")
    assert book.accounts["1"].balance_cents == 30 and book.settlement_cents == 70
    # The others hear the abort, and give back what they hold for it.
    _, sends = coordinator.tick(10_000)
    told = {to: [(i.transfer_id, i.outcome) for i in m.items] for to, m in sends}
    assert told == {bank: [("alfa:1", "committed"), ("alfa:2", "aborted")] for bank in ("beta", "gama")}


def test_a_coordinators_own_destination_and_cash_out_move_with_the_decision() -> None:
    book = alfa_book(0)
    coordinator = Coordinator("alfa")
    credit = Transfer("alfa:1", "alfa", "doc", (Leg("beta", "1", 40, "source"), Leg("alfa", "1", 40, "destination")))
    cash = Transfer("alfa:2", "alfa", "doc", (Leg("beta", "1", 25, "source"), Leg("alfa", "", 25, "cash_out")))
    nowhere = Transfer("alfa:3", "alfa", "doc", (Leg("beta", "1", 5, "source"), Leg("alfa", "9", 5, "destination")))
    for made in (credit, cash, nowhere):
        run_steps(coordinator.submit(made), book)
    coordinator.grant((1, "alfa", 1), until_ms=25, now_ms=0)
    votes = Votes("beta", (1, "alfa", 1), tuple(Vote(f"alfa:{i}", True) for i in (1, 2, 3)))
    decided, _ = run_steps(coordinator.handle(votes, 1), book)
    assert [(d.outcome, d.reason) for d in decided] == [
        ("committed", None),
        ("committed", None),
        ("aborted", "unknown_account"),
    ]
    assert book.accounts["1"].balance_cents == 40
    assert book.cash_out_cents == 25 and book.settlement_cents == -65
    # This bank still balances: its settlement owes what beta's commits will bring in.
    assert book.money_cents() == book.cash_in_cents - book.cash_out_cents


def test_a_transfer_the_coordinator_runs_touches_another_bank() -> None:
    local = Transfer("alfa:1", "alfa", "doc", (Leg("alfa", "1", 5, "source"), Leg("alfa", "2", 5, "destination")))
    with pytest.raises(AssertionError):
        run_steps(Coordinator("alfa").submit(local), alfa_book())


def test_decisions_with_no_prepare_to_ride_go_on_their_own_after_the_defer() -> None:
    book = alfa_book()
    coordinator = Coordinator("alfa", decision_defer_ms=50)
    run_steps(coordinator.submit(transfer("alfa:1")), book)
    coordinator.grant((1, "alfa", 1), until_ms=25, now_ms=0)
    for bank in ("beta", "gama"):
        votes = Votes(bank, (1, "alfa", 1), (Vote("alfa:1", True),))
        _, sends = run_steps(coordinator.handle(votes, 10), book)
    assert sends == []
    assert coordinator.tick(59) == (False, [])
    _, sends = coordinator.tick(60)
    assert sorted(to for to, m in sends if isinstance(m, Decisions)) == ["beta", "gama"]


def test_an_abort_goes_at_once_to_a_bank_that_holds_money_for_it() -> None:
    book = alfa_book()
    coordinator = Coordinator("alfa", decision_defer_ms=50)
    run_steps(coordinator.submit(transfer("alfa:1")), book)
    coordinator.grant((1, "alfa", 1), until_ms=25, now_ms=0)
    run_steps(coordinator.handle(Votes("beta", (1, "alfa", 1), (Vote("alfa:1", True),)), 5), book)
    refusal = Votes("gama", (1, "alfa", 1), (Vote("alfa:1", False, "unknown_account"),))
    decided, sends = run_steps(coordinator.handle(refusal, 6), book)
    assert [(d.outcome, d.reason) for d in decided] == [("aborted", "unknown_account")]
    # beta holds the source's money: told with the decision. gama only checked a
    # destination: it hears with the next prepare, or after the defer.
    assert [(to, [(i.transfer_id, i.outcome) for i in m.items]) for to, m in sends] == [
        ("beta", [("alfa:1", "aborted")])
    ]
    assert coordinator.tick(55) == (False, [])
    _, later = coordinator.tick(56)
    assert [to for to, _ in later] == ["gama"]


def test_missing_votes_abort_at_the_deadline_and_only_the_banks_that_answered_are_told() -> None:
    book = alfa_book()
    coordinator = Coordinator("alfa", retry_ms_min=10, retry_ms_max=40, decision_defer_ms=5)
    run_steps(coordinator.submit(transfer()), book)
    coordinator.grant((1, "alfa", 1), until_ms=25, now_ms=0)
    run_steps(coordinator.handle(Votes("beta", (1, "alfa", 1), (Vote("alfa:1", True),)), 5), book)
    assert coordinator.tick(24) == (False, [])
    expired, _ = coordinator.tick(25)
    assert expired
    decided, sends = run_steps(coordinator.expire(25), book)
    assert [(d.outcome, d.reason) for d in decided] == [("aborted", "vote_timeout")]
    assert book.accounts["1"].balance_cents == 500  # nothing of its own moved
    # beta holds money for the transfer: told. gama never answered: not told; had its
    # prepare reached it, it would hold its money under a record it asks about.
    assert [(to, [i.transfer_id for i in m.items]) for to, m in sends] == [("beta", ["alfa:1"])]
    _, again = coordinator.tick(40)
    assert [to for to, _ in again] == ["beta"]
    assert book.unacked == {"alfa:1": {"beta"}}
    assert "gama" not in coordinator.owed
    query = DecisionQuery("gama", ("alfa:1",))
    _, answers = run_steps(coordinator.handle(query, 40), book)
    assert answers == [("gama", Decisions("alfa", (DecisionItem("alfa:1", "aborted", (transfer().legs[2],)),)))]


def test_a_bank_that_is_down_is_owed_no_abort_however_many_transfers_fail_on_it() -> None:
    book = alfa_book(10_000)
    coordinator = Coordinator("alfa", decision_defer_ms=5)
    for index in range(20):
        run_steps(coordinator.submit(transfer(f"alfa:{index}")), book)
        fence = (1, "alfa", 3 * index + 1)
        coordinator.grant(fence, until_ms=100 * index + 50, now_ms=100 * index)
        # beta refuses; gama's prepare cannot be delivered (the driver's made-up vote).
        run_steps(coordinator.handle(Votes("beta", fence, (Vote(f"alfa:{index}", False, "forbidden"),)), 100 * index + 1), book)
        decided, _ = run_steps(
            coordinator.handle(Votes("gama", fence, (Vote(f"alfa:{index}", False, "unreachable"),)), 100 * index + 2),
            book,
        )
        assert [(d.outcome, d.reason) for d in decided] == [("aborted", "forbidden")]
        run_steps(coordinator.handle(Acks("beta", (f"alfa:{index}",)), 100 * index + 3), book)
    assert coordinator.owed == {} and coordinator.deliveries == {}
    run_steps(coordinator.flush_acks(), book)
    assert book.unacked == {}
    assert run_steps(Coordinator("alfa").start(5_000), book) == []


def test_undelivered_decisions_are_resent_until_acked_and_after_a_restart() -> None:
    book = alfa_book()
    coordinator = Coordinator("alfa", retry_ms_min=10, retry_ms_max=40, decision_defer_ms=5)
    run_steps(coordinator.submit(transfer()), book)
    coordinator.grant((1, "alfa", 1), until_ms=25, now_ms=0)
    for bank in ("beta", "gama"):
        run_steps(coordinator.handle(Votes(bank, (1, "alfa", 1), (Vote("alfa:1", True),)), 5), book)
    assert book.outcomes["alfa:1"] == ("committed", None)
    _, sends = coordinator.tick(10)
    assert sorted(to for to, _ in sends) == ["beta", "gama"]
    run_steps(coordinator.handle(Acks("beta", ("alfa:1",)), 11), book)
    _, again = coordinator.tick(1_000)
    assert sorted(to for to, _ in again) == ["gama"]
    # A coordinator restarted from its book re-sends what is still unacknowledged; an
    # acknowledgement not yet written only costs a repeated (idempotent) decision.
    assert sorted(to for to, _ in run_steps(Coordinator("alfa").start(100), book)) == ["beta", "gama"]
    assert coordinator.next_resend_ms() is not None
    run_steps(coordinator.flush_acks(), book)
    restarted = Coordinator("alfa")
    resent = run_steps(restarted.start(100), book)
    assert sorted(to for to, _ in resent) == ["gama"]
    assert restarted.pending == {}


def test_a_restarted_coordinator_prepares_undecided_transfers_again() -> None:
    book = alfa_book()
    coordinator = Coordinator("alfa")
    run_steps(coordinator.submit(transfer()), book)
    coordinator.grant((1, "alfa", 1), until_ms=25, now_ms=0)  # then it crashes mid-round
    restarted = Coordinator("alfa")
    assert run_steps(restarted.start(50), book) == []
    assert sorted(to for to, _ in restarted.grant((2, "beta", 1), until_ms=80, now_ms=50)) == ["beta", "gama"]


def test_late_votes_of_a_finished_round_are_ignored() -> None:
    book = alfa_book()
    coordinator = Coordinator("alfa")
    run_steps(coordinator.submit(transfer()), book)
    coordinator.grant((1, "alfa", 1), until_ms=5, now_ms=0)
    run_steps(coordinator.expire(5), book)
    late = Votes("beta", (1, "alfa", 1), (Vote("alfa:1", True),))
    assert run_steps(coordinator.handle(late, 6), book) == ([], [])
    assert book.outcomes["alfa:1"] == ("aborted", "vote_timeout")


@pytest.mark.parametrize(
    "message",
    [
        prepare((1, "alfa", 2)),
        Votes("beta", (1, "alfa", 2), (Vote("alfa:1", True), Vote("alfa:2", False, "forbidden"))),
        Decisions("alfa", (DecisionItem("alfa:1", "committed", (Leg("alfa", "", 5, "cash_out"),)),)),
        Decisions("alfa", (DecisionItem("alfa:1", "committed", (Leg("beta", "1", 5, "source"),), cash_out=True),)),
        Acks("beta", ("alfa:1", "alfa:2")),
        DecisionQuery("beta", ("alfa:1",)),
        Prepare("alfa", (1, "alfa", 5), (), (DecisionItem("alfa:0", "aborted", (Leg("beta", "1", 9, "source"),)),)),
        Votes("beta", (1, "alfa", 5), (), acked=("alfa:0",)),
    ],
)
def test_messages_survive_their_json_form(message: Any) -> None:
    assert decode_message(encode_message(message, fence_json), fence_back) == message


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"type": "nope", "sender": "a"},
        {"type": "acks", "sender": "a", "transfer_ids": "x"},
        {"type": "acks", "sender": "", "transfer_ids": []},
        {"type": "votes", "sender": "a", "fence": [1, "a", 1], "votes": [{"transfer_id": "t", "ok": 1}]},
        {"type": "prepare", "sender": "a", "fence": [1, "a", 1], "items": [{"transfer_id": "t",
         "owner_document": "d", "legs": [{"bank": "b", "account": "1", "amount_cents": 1.5, "role": "source"}]}]},
        {"type": "prepare", "sender": "a", "fence": [1, "a", 1], "items": [{"transfer_id": "t",
         "owner_document": "d", "legs": [{"bank": "b", "account": "1", "amount_cents": -1, "role": "source"}]}]},
        {"type": "prepare", "sender": "a", "fence": "bad", "items": []},
        {"type": "decisions", "sender": "a", "items": [{"transfer_id": "t", "outcome": "maybe", "legs": []}]},
        {"type": "prepare", "sender": "a", "fence": [1, "a", 1], "items": [], "decisions": "x"},
        {"type": "votes", "sender": "a", "fence": [1, "a", 1], "votes": [], "acked": [3]},
        # A source named twice: held once per transfer and account, it would be paid twice.
        {"type": "prepare", "sender": "a", "fence": [1, "a", 1], "items": [{"transfer_id": "t",
         "owner_document": "d", "legs": [{"bank": "b", "account": "1", "amount_cents": 1, "role": "source"},
                                         {"bank": "b", "account": "1", "amount_cents": 2, "role": "source"}]}]},
        {"type": "decisions", "sender": "a", "items": [{"transfer_id": "t", "outcome": "committed",
         "legs": [{"bank": "b", "account": "1", "amount_cents": 1, "role": "destination"},
                  {"bank": "b", "account": "2", "amount_cents": 1, "role": "destination"}]}]},
        # Longer than any ledger stores.
        {"type": "prepare", "sender": "a", "fence": [1, "a", 1], "items": [{"transfer_id": "t" * 101,
         "owner_document": "d", "legs": []}]},
        {"type": "acks", "sender": "a", "transfer_ids": ["t" * 101]},
    ],
)
def test_malformed_messages_are_refused(data: Any) -> None:
    with pytest.raises(ValueError):
        decode_message(data, fence_back)


def test_rounds_of_successive_visits_overlap_and_end_independently() -> None:
    book = alfa_book()
    coordinator = Coordinator("alfa", rounds_in_flight_max=2)
    for index in range(4):
        run_steps(coordinator.submit(transfer(f"alfa:{index}")), book)
    coordinator.batch_transfers_max = 1
    first = coordinator.grant((1, "alfa", 1), until_ms=1_000, now_ms=0)
    assert coordinator.grant((1, "alfa", 1), until_ms=1_000, now_ms=0) == []  # same visit
    second = coordinator.grant((1, "alfa", 4), until_ms=1_100, now_ms=100)
    assert first and second
    assert coordinator.grant((1, "alfa", 7), until_ms=1_200, now_ms=200) == []  # bound reached
    for bank in ("beta", "gama"):
        run_steps(coordinator.handle(Votes(bank, (1, "alfa", 4), (Vote("alfa:1", True),)), 150), book)
    assert book.outcomes == {"alfa:1": ("committed", None)}
    assert coordinator.round_open  # the first round still waits for its votes
    expired, _ = coordinator.tick(1_000)
    assert expired
    decided, _ = run_steps(coordinator.expire(1_000), book)
    assert [(d.transfer_id, d.reason) for d in decided] == [("alfa:0", "vote_timeout")]
    assert not coordinator.round_open


def test_a_transfer_refused_only_as_stale_goes_into_a_later_round_a_bounded_number_of_times() -> None:
    book = alfa_book()
    coordinator = Coordinator("alfa", stale_retries_max=1)
    run_steps(coordinator.submit(transfer()), book)
    for seq, expected in ((1, []), (4, [("alfa:1", "aborted", "stale_fence")])):
        fence = (1, "alfa", seq)
        coordinator.grant(fence, until_ms=1_000, now_ms=0)
        for bank in ("beta",):
            run_steps(coordinator.handle(Votes(bank, fence, (Vote("alfa:1", True),)), 1), book)
        decided, _ = run_steps(
            coordinator.handle(Votes("gama", fence, (Vote("alfa:1", False, "stale_fence"),)), 2), book
        )
        assert [(d.transfer_id, d.outcome, d.reason) for d in decided] == expected
        if not expected:
            assert list(coordinator.pending) == ["alfa:1"] and "alfa:1" not in book.outcomes
    assert book.outcomes == {"alfa:1": ("aborted", "stale_fence")}


def test_a_transfer_whose_client_waits_is_stored_with_its_decision() -> None:
    book = alfa_book()
    coordinator = Coordinator("alfa")
    run_steps(coordinator.submit(transfer("alfa:1")), book)
    assert run_steps(coordinator.submit(transfer("alfa:2"), request={"n": 2}, record=False), book) == "alfa:2"
    assert list(book.transfers) == ["alfa:1"]  # nothing written for the waiting one
    sends = coordinator.grant((1, "alfa", 1), until_ms=25, now_ms=0)
    assert all(len(m.items) == 2 for _, m in sends if isinstance(m, Prepare))
    for bank in ("beta", "gama"):
        votes = Votes(bank, (1, "alfa", 1), (Vote("alfa:1", True), Vote("alfa:2", True)))
        decided, _ = run_steps(coordinator.handle(votes, 1), book)
    assert [d.outcome for d in decided] == ["committed", "committed"]
    # Stored at the commit point, with its outcome.
    assert list(book.transfers) == ["alfa:1", "alfa:2"]
    assert book.outcomes["alfa:2"] == ("committed", None)
    assert not coordinator.unrecorded


def test_a_waiting_transfer_is_stored_before_its_client_hears_its_id() -> None:
    book = alfa_book()
    coordinator = Coordinator("alfa")
    run_steps(coordinator.submit(transfer("alfa:1"), record=False), book)
    run_steps(coordinator.submit(transfer("alfa:2")), book)
    # The wait of alfa:1's client ran out: stored now, pending.
    assert run_steps(coordinator.record("alfa:1"), book) is True
    assert "alfa:1" in book.transfers and "alfa:1" not in book.outcomes
    assert not coordinator.unrecorded
    # Stored already (at submission, or just now): nothing more to write.
    before = dict(book.transfers)
    assert run_steps(coordinator.record("alfa:1"), book) is True
    assert run_steps(coordinator.record("alfa:2"), book) is True
    assert book.transfers == before
    # Unknown here: never stored, so it moved no money.
    assert run_steps(coordinator.record("alfa:9"), book) is False


def test_a_participant_asking_about_a_transfer_its_coordinator_never_stored_is_told_aborted() -> None:
    book = alfa_book()
    coordinator = Coordinator("alfa")
    run_steps(coordinator.submit(transfer("alfa:1"), record=False), book)
    coordinator.grant((1, "alfa", 1), until_ms=25, now_ms=0)
    # Undecided here: no answer yet (the participant asks again later).
    assert run_steps(coordinator.handle(DecisionQuery("beta", ("alfa:1",)), 5), book) == ([], [])
    # The coordinator dies before it stores the transfer: its next run never heard of it.
    restarted = Coordinator("alfa")
    run_steps(restarted.start(50), book)
    _, sends = run_steps(restarted.handle(DecisionQuery("beta", ("alfa:1",)), 60), book)
    assert sends == [("beta", Decisions("alfa", (DecisionItem("alfa:1", "aborted", ()),)))]


def test_a_decided_and_delivered_transfer_is_answered_from_the_book() -> None:
    book = alfa_book()
    coordinator = Coordinator("alfa")
    run_steps(coordinator.submit(transfer("alfa:1"), record=False), book)
    coordinator.grant((1, "alfa", 1), until_ms=25, now_ms=0)
    for bank in ("beta", "gama"):
        run_steps(coordinator.handle(Votes(bank, (1, "alfa", 1), (Vote("alfa:1", True),)), 1), book)
    for bank in ("beta", "gama"):
        run_steps(coordinator.handle(Acks(bank, ("alfa:1",)), 2), book)
    assert not coordinator.deliveries  # forgotten in memory
    _, sends = run_steps(coordinator.handle(DecisionQuery("beta", ("alfa:1",)), 3), book)
    assert sends == [("beta", Decisions("alfa", (DecisionItem("alfa:1", "committed", (Leg("beta", "1", 30, "source"),)),)))]


def test_decisions_that_could_not_be_written_are_not_forgotten() -> None:
    book = alfa_book()
    coordinator = Coordinator("alfa")
    run_steps(coordinator.submit(transfer("alfa:1"), record=False), book)
    coordinator.grant((1, "alfa", 1), until_ms=25, now_ms=0)
    for bank in ("beta",):
        run_steps(coordinator.handle(Votes(bank, (1, "alfa", 1), (Vote("alfa:1", True),)), 1), book)
    steps = coordinator.handle(Votes("gama", (1, "alfa", 1), (Vote("alfa:1", True),)), 2)
    (write,) = next(steps)
    assert isinstance(write, RecordOutcomes) and [u.transfer.id for u in write.unrecorded] == ["alfa:1"]
    assert run_steps(coordinator.handle(DecisionQuery("beta", ("alfa:1",)), 3), book) == ([], [])
    with pytest.raises(OSError):
        steps.throw(OSError("disk full"))
    # Nothing was decided: it goes into a later round, still unstored, never presumed aborted.
    assert list(coordinator.pending) == ["alfa:1"] and "alfa:1" in coordinator.unrecorded
    assert not coordinator.deciding and "alfa:1" not in book.transfers
    assert run_steps(coordinator.handle(DecisionQuery("beta", ("alfa:1",)), 4), book) == ([], [])
    assert coordinator.grant((1, "alfa", 4), until_ms=50, now_ms=5)


def test_a_presumed_abort_gives_back_what_the_participant_holds() -> None:
    book = MemoryBook("beta")
    book.open_account("1", "doc", 100)
    participant = Participant("beta")
    item = PrepareItem("alfa:1", "doc", (Leg("beta", "1", 30, "source"),))
    prepare = Prepare("alfa", (1, "alfa", 1), (item,))
    (votes,) = run_steps(participant.handle(prepare, 0), book)
    assert votes.votes == (Vote("alfa:1", True),)
    assert (book.accounts["1"].balance_cents, book.accounts["1"].held_cents) == (70, 30)
    (acks,) = run_steps(participant.handle(Decisions("alfa", (DecisionItem("alfa:1", "aborted", ()),)), 5), book)
    assert acks == Acks("beta", ("alfa:1",))
    assert (book.accounts["1"].balance_cents, book.accounts["1"].held_cents) == (100, 0)
    assert not participant.outstanding and book.applied["alfa:1"] == "aborted"
    # A late copy of the prepare is answered as the first one was, and holds nothing.
    run_steps(participant.handle(prepare, 6), book)
    assert (book.accounts["1"].balance_cents, book.accounts["1"].held_cents) == (100, 0)


def test_a_withdrawal_decision_tells_the_account_bank_the_money_left_as_cash() -> None:
    """A withdrawal at alfa from beta's account: beta's decision says cash_out, and beta's
    participant commits its hold as such (its journal calls it a withdrawal); a transfer's
    decision does not."""
    cash = Transfer("alfa:1", "alfa", "doc", (Leg("beta", "1", 30, "source"), Leg("alfa", "", 30, "cash_out")))
    assert cash.pays_cash and not transfer().pays_cash
    assert DecisionItem.of(cash, "committed", "beta") == DecisionItem("alfa:1", "committed", (cash.legs[0],), cash_out=True)
    assert DecisionItem.of(transfer(), "committed", "beta").cash_out is False
    book = book_with(100)
    participant = Participant("beta")
    run_steps(participant.handle(Prepare("alfa", (1, "alfa", 1), (PrepareItem("alfa:1", "doc", (cash.legs[0],)),)), 0), book)
    # The participant's first batch of book operations for the decision (the driver's view).
    steps = participant.handle(Decisions("alfa", (DecisionItem.of(cash, "committed", "beta"),)), 1)
    assert [op for op in next(steps) if isinstance(op, CommitHold)] == [CommitHold("alfa:1", "1", 30, True)]
    with pytest.raises(ValueError, match="cash_out"):
        decode_message({"type": "decisions", "sender": "a", "items": [
            {"transfer_id": "t", "outcome": "committed", "legs": [], "cash_out": "yes"}]}, fence_back)


def test_only_an_abort_may_name_no_legs() -> None:
    with pytest.raises(ValueError):
        DecisionItem("alfa:1", "committed", ())
    with pytest.raises(ValueError):
        decode_message({"type": "decisions", "sender": "a", "items": [
            {"transfer_id": "t", "outcome": "committed", "legs": []}]}, fence_back)
    assert decode_message(encode_message(Decisions("a", (DecisionItem("t", "aborted", ()),)), fence_json),
                          fence_back) == Decisions("a", (DecisionItem("t", "aborted", ()),))


def test_an_idempotency_key_of_a_waiting_transfer_is_kept_in_memory_then_stored_with_it() -> None:
    book = alfa_book()
    coordinator = Coordinator("alfa")
    key = ("doc", "k1", "fp")
    assert run_steps(coordinator.submit(transfer("alfa:1"), idempotency=key, record=False), book) == "alfa:1"
    # A retry before anything is stored finds the same transfer; another request is refused.
    assert run_steps(coordinator.submit(transfer("alfa:2"), idempotency=key, record=False), book) == "alfa:1"
    assert run_steps(coordinator.submit(transfer("alfa:3"), idempotency=key), book) == "alfa:1"
    with pytest.raises(KeyReused):
        run_steps(coordinator.submit(transfer("alfa:4"), idempotency=("doc", "k1", "other")), book)
    assert list(coordinator.pending) == ["alfa:1"] and not book.transfers and not book.keys
    coordinator.grant((1, "alfa", 1), until_ms=25, now_ms=0)
    for bank in ("beta", "gama"):
        run_steps(coordinator.handle(Votes(bank, (1, "alfa", 1), (Vote("alfa:1", True),)), 1), book)
    # Stored with its decision, key and all; memory lets go of it and the book answers.
    assert book.keys == {("doc", "k1"): ("fp", "alfa:1")} and not coordinator.keys
    assert run_steps(coordinator.submit(transfer("alfa:5"), idempotency=key, record=False), book) == "alfa:1"
    assert not coordinator.pending
    with pytest.raises(KeyReused):
        run_steps(coordinator.submit(transfer("alfa:6"), idempotency=("doc", "k1", "other"), record=False), book)
    assert not coordinator.keys


def test_a_key_whose_transfer_died_unstored_is_free_again() -> None:
    book = alfa_book()
    coordinator = Coordinator("alfa")
    key = ("doc", "k1", "fp")
    run_steps(coordinator.submit(transfer("alfa:1"), idempotency=key, record=False), book)
    restarted = Coordinator("alfa")  # crashed: alfa:1 never happened
    run_steps(restarted.start(10), book)
    assert run_steps(restarted.submit(transfer("alfa:2"), idempotency=key, record=False), book) == "alfa:2"
    # A client whose wait ran out: stored now, with its key.
    assert run_steps(restarted.record("alfa:2"), book) is True
    assert book.keys == {("doc", "k1"): ("fp", "alfa:2")} and "alfa:2" in book.transfers
    assert not restarted.keys and not restarted.unrecorded


def test_a_query_about_someone_elses_decided_transfer_is_not_answered() -> None:
    book = alfa_book()
    coordinator = Coordinator("alfa")
    run_steps(coordinator.submit(transfer("alfa:1")), book)
    coordinator.grant((1, "alfa", 1), until_ms=25, now_ms=0)
    for bank in ("beta", "gama"):
        run_steps(coordinator.handle(Votes(bank, (1, "alfa", 1), (Vote("alfa:1", True),)), 1), book)
        run_steps(coordinator.handle(Acks(bank, ("alfa:1",)), 2), book)
    # Delivered and forgotten in memory; "delta" took no part in it.
    assert run_steps(coordinator.handle(DecisionQuery("delta", ("alfa:1",)), 3), book) == ([], [])


def test_acknowledgements_ride_with_the_next_decisions_write() -> None:
    book = alfa_book()
    coordinator = Coordinator("alfa", acks_flush_ms=1_000)
    run_steps(coordinator.submit(transfer("alfa:1")), book)
    coordinator.grant((1, "alfa", 1), until_ms=25, now_ms=0)
    for bank in ("beta", "gama"):
        run_steps(coordinator.handle(Votes(bank, (1, "alfa", 1), (Vote("alfa:1", True),)), 1), book)
    run_steps(coordinator.submit(transfer("alfa:2")), book)
    coordinator.grant((1, "alfa", 4), until_ms=50, now_ms=2)
    for bank in ("beta", "gama"):
        votes = Votes(bank, (1, "alfa", 4), (Vote("alfa:2", True),), acked=("alfa:1",))
        steps = coordinator.handle(votes, 3)
        try:
            batch = next(steps)
        except StopIteration:
            continue  # beta's vote: the round still waits for gama's
        # gama's vote ends the round: both acknowledgements go in the decisions' write.
        assert [type(op).__name__ for op in batch] == ["RecordAcks", "RecordAcks", "RecordOutcomes"]
        with pytest.raises(StopIteration):
            steps.send(book.execute(batch))
    assert "alfa:1" not in book.unacked and book.unacked == {"alfa:2": {"beta", "gama"}}
    assert not coordinator.acks_due


def test_a_transfer_refused_for_a_reason_of_its_own_aborts_at_once_though_another_bank_saw_it_stale() -> None:
    """Only a transfer whose *only* refusals were stale fences goes into a later round: one
    that a bank refused for a reason of its own is decided now, with that reason (retried,
    it would keep its client waiting and, refused stale again, abort ``stale_fence``)."""
    book = alfa_book()
    coordinator = Coordinator("alfa", stale_retries_max=1)
    run_steps(coordinator.submit(transfer()), book)
    fence = (1, "alfa", 1)
    coordinator.grant(fence, until_ms=1_000, now_ms=0)
    run_steps(coordinator.handle(Votes("beta", fence, (Vote("alfa:1", False, "stale_fence"),)), 1), book)
    refusal = Votes("gama", fence, (Vote("alfa:1", False, "unknown_account"),))
    decided, _ = run_steps(coordinator.handle(refusal, 2), book)
    assert [(d.transfer_id, d.outcome, d.reason) for d in decided] == [("alfa:1", "aborted", "unknown_account")]
    assert not coordinator.pending and book.outcomes == {"alfa:1": ("aborted", "unknown_account")}


def test_a_withdrawals_commit_goes_at_once_to_the_accounts_bank() -> None:
    """Its client is answered with the account as its bank shows it once that bank applied
    the commit: the commit does not wait for a prepare to ride with, as a transfer's does."""
    book = alfa_book(0)
    coordinator = Coordinator("alfa", decision_defer_ms=200)
    cash = Transfer("alfa:1", "alfa", "doc", (Leg("beta", "1", 30, "source"), Leg("alfa", "", 30, "cash_out")))
    run_steps(coordinator.submit(cash), book)
    coordinator.grant((1, "alfa", 1), until_ms=25, now_ms=0)
    decided, sends = run_steps(coordinator.handle(Votes("beta", (1, "alfa", 1), (Vote("alfa:1", True),)), 5), book)
    assert [(d.outcome, d.reason) for d in decided] == [("committed", None)]
    assert sends == [("beta", Decisions("alfa", (DecisionItem.of(cash, "committed", "beta"),)))]


def test_decisions_owed_beyond_one_messages_bound_go_out_in_messages_the_bank_can_read() -> None:
    """A bank owed more decisions than one message may carry (it voted on that many rounds,
    then stopped acknowledging: down, cut off) gets them a message's worth at a time. One
    item too many and it refuses the message whole, every time: its credits never land, and
    every prepare carrying the same decisions is refused with them."""
    count = ITEMS_PER_MESSAGE_MAX + 2
    book = MemoryBook("alfa")
    coordinator = Coordinator("alfa", decision_defer_ms=5)
    for index in range(count):
        legs = (Leg("beta", "1", 1, "source"), Leg("gama", "5", 1, "destination"))
        run_steps(coordinator.submit(Transfer(f"alfa:{index}", "alfa", "doc", legs)), book)
    seq = 1
    while coordinator.pending:
        fence = (1, "alfa", seq)
        sends = coordinator.grant(fence, until_ms=seq + 1_000, now_ms=seq)
        for bank, prepare in sends:
            assert isinstance(prepare, Prepare)
            votes = Votes(bank, fence, tuple(Vote(item.transfer_id, True) for item in prepare.items))
            run_steps(coordinator.handle(votes, seq), book)
        seq += 3
    assert len(coordinator.owed["gama"]) == count and not coordinator.round_open
    _, sends = coordinator.tick(10_000)
    assert sorted(to for to, _ in sends) == ["beta", "gama"]
    for _, message in sends:
        assert decode_message(encode_message(message, fence_json), fence_back) == message
    # The same bound holds for the decisions that ride with a prepare.
    legs = (Leg("beta", "1", 1, "source"), Leg("gama", "5", 1, "destination"))
    run_steps(coordinator.submit(Transfer("alfa:last", "alfa", "doc", legs)), book)
    for _, message in coordinator.grant((1, "alfa", seq), until_ms=20_000, now_ms=10_001):
        assert decode_message(encode_message(message, fence_json), fence_back) == message


def encoded_bytes(message: Any) -> int:
    return len(jsonio.dumps(encode_message(message, fence_json)))


def test_the_byte_bounds_of_a_leg_and_an_item_hold_for_the_longest_fields() -> None:
    longest = "x" * (2 * ACCOUNT_CHARS_MAX)  # the longest string a message may carry
    leg = Leg(longest, "9" * (2 * ACCOUNT_CHARS_MAX), AMOUNT_CENTS_MAX, "destination")
    transfer_id = "t" * TRANSFER_ID_CHARS_MAX
    prepare = Prepare(longest, (1, longest, 1), (PrepareItem(transfer_id, longest, (leg,)),))
    decisions = Decisions(longest, (DecisionItem(transfer_id, "committed", (leg,), cash_out=True),))
    for one_leg in (prepare, decisions):
        item = one_leg.items[0]
        two_legs = attrs.evolve(one_leg, items=(attrs.evolve(item, legs=(leg, leg)),))
        empty = attrs.evolve(one_leg, items=())
        assert encoded_bytes(two_legs) - encoded_bytes(one_leg) <= LEG_BYTES_MAX
        assert encoded_bytes(two_legs) - encoded_bytes(empty) <= item_bytes_max(2)
        assert encoded_bytes(empty) < MESSAGE_BYTES_MAX - MESSAGE_ITEMS_BYTES_MAX


def transfers_heavy_at(bank: str, count: int, sources: int) -> list[Transfer]:
    """``count`` transfers of ``sources`` sources each at ``bank``, ids as a bank makes them."""
    return [
        Transfer(
            f"alfa-{index:011x}{index:016x}",
            "alfa",
            "12345678909",
            tuple(Leg(bank, str(1_000_000 + n), 1, "source") for n in range(sources))
            + (Leg("gama", "5", sources, "destination"),),
        )
        for index in range(count)
    ]


def test_a_backlog_of_transfers_heavy_at_one_bank_goes_in_prepares_it_can_read() -> None:
    """A visit takes at most BATCH_TRANSFERS_MAX transfers, but a thousand with sixteen
    sources each at one bank would make a prepare of more than MESSAGE_BYTES_MAX: refused
    whole with 413, every transfer of the round aborted, and the same again at every visit
    while the backlog lasts. A visit takes the ones that fit, in arrival order; the rest go
    in the next visits."""
    book = MemoryBook("alfa")
    coordinator = Coordinator("alfa")
    backlog = transfers_heavy_at("beta", BATCH_TRANSFERS_MAX, SOURCES_MAX)
    for transfer in backlog:
        run_steps(coordinator.submit(transfer), book)
    assert sum(item_bytes_max(SOURCES_MAX) for _ in backlog) > MESSAGE_BYTES_MAX  # as it was
    prepared: list[str] = []
    seq = 1
    while coordinator.pending:
        fence = (1, "alfa", seq)
        sends = coordinator.grant(fence, until_ms=seq + 1_000, now_ms=seq)
        assert sends, "every visit takes at least one transfer"
        for bank, message in sends:
            assert isinstance(message, Prepare)
            assert encoded_bytes(message) <= MESSAGE_BYTES_MAX
            if bank == "beta":
                prepared += [item.transfer_id for item in message.items]
            votes = Votes(bank, fence, tuple(Vote(item.transfer_id, True) for item in message.items))
            run_steps(coordinator.handle(votes, seq), book)
        seq += 3
    assert prepared == [t.id for t in backlog]  # every one, once, in arrival order
    assert 3 <= seq // 3  # it took several visits
    assert all(outcome == ("committed", None) for outcome in book.outcomes.values())
    assert len(book.outcomes) == len(backlog)


def test_decisions_heavy_at_one_bank_go_out_in_messages_it_can_read() -> None:
    """Decisions of transfers with many legs at one bank, owed to it beyond what one message
    carries: each message (alone, riding with a prepare, or answering a query) stays under
    MESSAGE_BYTES_MAX, the earliest decided first."""
    book = MemoryBook("alfa")
    coordinator = Coordinator("alfa", decision_defer_ms=5)
    backlog = transfers_heavy_at("beta", 400, SOURCES_MAX)
    for transfer in backlog:
        run_steps(coordinator.submit(transfer), book)
    seq = 1
    while coordinator.pending:
        fence = (1, "alfa", seq)
        for bank, message in coordinator.grant(fence, until_ms=seq + 1_000, now_ms=seq):
            assert isinstance(message, Prepare)
            votes = Votes(bank, fence, tuple(Vote(item.transfer_id, True) for item in message.items))
            run_steps(coordinator.handle(votes, seq), book)
        seq += 3
    assert len(coordinator.owed["beta"]) == len(backlog)
    assert sum(item_bytes_max(SOURCES_MAX) for _ in backlog) > MESSAGE_BYTES_MAX
    _, sends = coordinator.tick(10_000)
    (alone,) = [m for to, m in sends if to == "beta"]
    assert isinstance(alone, Decisions) and encoded_bytes(alone) <= MESSAGE_BYTES_MAX
    assert [i.transfer_id for i in alone.items] == [t.id for t in backlog[: len(alone.items)]]
    assert 0 < len(alone.items) < len(backlog)
    answer = run_steps(coordinator.handle(DecisionQuery("beta", tuple(t.id for t in backlog)), 10_001), book)
    ((_, answered),) = answer[1]
    assert isinstance(answered, Decisions) and encoded_bytes(answered) <= MESSAGE_BYTES_MAX
    assert 0 < len(answered.items) < len(backlog)
    run_steps(coordinator.submit(transfers_heavy_at("beta", 1, SOURCES_MAX)[0]), book)
    for _, message in coordinator.grant((2, "alfa", 1), until_ms=20_000, now_ms=10_002):
        assert isinstance(message, Prepare) and encoded_bytes(message) <= MESSAGE_BYTES_MAX
        assert message.decisions, "decisions ride with it, as many as fit"
