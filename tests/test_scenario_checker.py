"""The scenario checker on hand-made histories: each invariant holds on a good history and is
reported violated, with the offending record, on a bad one."""

from __future__ import annotations

import attrs
import pytest

from scenarios.checker import INVARIANTS, Verdict, check, load_during_faults
from scenarios.history import (
    AccountRef,
    AuditRead,
    BalanceSeen,
    FaultEvent,
    History,
    Kind,
    Movement,
    Operation,
    Outcome,
    StatementLine,
)

A = AccountRef("alfa", "1")
B = AccountRef("beta", "2")
C = AccountRef("gama", "3")


def op(
    key: str,
    kind: Kind,
    invoke_ms: float,
    complete_ms: float | None,
    outcome: Outcome,
    *,
    debits: tuple[Movement, ...] = (),
    credits: tuple[Movement, ...] = (),
) -> Operation:
    return Operation(
        key=key, client=0, kind=kind, bank="alfa", invoke_ms=invoke_ms,
        complete_ms=complete_ms, outcome=outcome, debits=debits, credits=credits,
    )  # fmt: skip


def deposit(key: str, account: AccountRef, cents: int, t0: float, t1: float | None,
            outcome: Outcome = Outcome.OK) -> Operation:  # fmt: skip
    return op(key, Kind.DEPOSIT, t0, t1, outcome, credits=(Movement(account, cents),))


def withdrawal(key: str, account: AccountRef, cents: int, t0: float, t1: float | None,
               outcome: Outcome = Outcome.OK) -> Operation:  # fmt: skip
    return op(key, Kind.WITHDRAWAL, t0, t1, outcome, debits=(Movement(account, cents),))


def transfer(key: str, sources: dict[AccountRef, int], into: AccountRef, t0: float,
             t1: float | None, outcome: Outcome = Outcome.OK) -> Operation:  # fmt: skip
    return op(
        key, Kind.TRANSFER, t0, t1, outcome,
        debits=tuple(Movement(a, c) for a, c in sources.items()),
        credits=(Movement(into, sum(sources.values())),),
    )  # fmt: skip


def audit(t0: float, t1: float, total: int, expected: int | None = None) -> AuditRead:
    return AuditRead(
        bank="alfa", invoke_ms=t0, complete_ms=t1, ok=True, total_cents=total, held_cents=0,
        expected_cents=total if expected is None else expected,
    )  # fmt: skip


def line(kind: str, transfer_id: str | None, available: int, held: int = 0) -> StatementLine:
    return StatementLine(kind, transfer_id, available, held)


# The statements of good_history(): t1 moved from A to B, t2 held at both sources, then gave back.
STATEMENTS = {
    A: (
        line("deposit", None, 10_000), line("withdrawal", None, -2_000), line("debit", "alfa-t1", -3_000),
        line("hold", "alfa-t2", -4_000, 4_000), line("release", "alfa-t2", 4_000, -4_000),
    ),
    B: (
        line("deposit", None, 5_000), line("credit", "alfa-t1", 3_000),
        line("hold", "alfa-t2", -1_000, 1_000), line("release", "alfa-t2", 1_000, -1_000),
    ),
    C: (),
}


def good_history() -> History:
    """A = 10000 - 2000 - 3000 = 5000; B = 5000 + 3000 = 8000; C = 0 (an aborted transfer)."""
    return History(
        operations=(
            deposit("d1", A, 10_000, 0, 10),
            deposit("d2", B, 5_000, 0, 12),
            withdrawal("w1", A, 2_000, 20, 30),
            attrs.evolve(transfer("t1", {A: 3_000}, B, 40, 60), transfer_id="alfa-t1"),
            attrs.evolve(transfer("t2", {A: 4_000, B: 1_000}, C, 70, 90, Outcome.REFUSED), transfer_id="alfa-t2"),
        ),
        audits=(audit(15, 18, 15_000), audit(35, 38, 13_000), audit(95, 99, 13_000)),
        balances=(BalanceSeen(at_ms=10, account=A, balance_cents=10_000),),
        accounts=(A, B, C),
        final_balances={A: 5_000, B: 8_000, C: 0},
        final_held={A: 0, B: 0, C: 0},
        statements=dict(STATEMENTS),
    )


def verdicts(history: History) -> dict[str, Verdict]:
    result = {v.name: v for v in check(history)}
    assert tuple(result) == INVARIANTS
    return result


def broken(history: History) -> list[str]:
    return [name for name, verdict in verdicts(history).items() if not verdict.held]


def test_a_correct_history_holds_every_invariant_and_exercises_each() -> None:
    result = verdicts(good_history())
    assert all(v.held for v in result.values()), result
    assert all(v.checked > 0 for v in result.values()), result


def test_a_double_credit_breaks_the_final_balances_and_says_where() -> None:
    history = attrs.evolve(good_history(), final_balances={A: 5_000, B: 13_000, C: 0})
    assert broken(history) == ["final_balances"]
    example = verdicts(history)["final_balances"].examples[0]
    assert "beta/2" in example and "13000" in example and "8000" in example


def test_an_audit_total_off_the_model_is_a_violation() -> None:
    history = attrs.evolve(good_history(), audits=(audit(35, 38, 13_100),))
    assert broken(history) == ["audit_total"]


def test_an_audit_that_disagrees_with_the_consortiums_own_count_is_a_violation() -> None:
    history = attrs.evolve(good_history(), audits=(audit(35, 38, 13_000, expected=12_000),))
    assert broken(history) == ["audit_total"]


def test_an_audit_may_or_may_not_include_a_deposit_in_flight_but_nothing_else() -> None:
    base = good_history()
    overlapping = deposit("d3", C, 700, 50, 120)
    ops = base.operations + (overlapping,)
    finals = {A: 5_000, B: 8_000, C: 700}
    for total in (13_000, 13_700):
        history = attrs.evolve(
            base, operations=ops, audits=(audit(60, 100, total),), final_balances=finals
        )
        assert broken(history) == [], total
    history = attrs.evolve(
        base, operations=ops, audits=(audit(60, 100, 13_350),), final_balances=finals
    )
    assert broken(history) == ["audit_total"]


def test_a_withdrawal_in_flight_may_lower_an_audit_and_a_refused_one_may_not() -> None:
    base = good_history()
    in_flight = withdrawal("w2", B, 500, 50, 120)
    refused = withdrawal("w3", B, 400, 50, 120, Outcome.REFUSED)
    finals = {A: 5_000, B: 7_500, C: 0}
    ops = base.operations + (in_flight, refused)
    ok = attrs.evolve(
        base, operations=ops, audits=(audit(60, 100, 12_500),), final_balances=finals
    )
    assert broken(ok) == []
    bad = attrs.evolve(
        base, operations=ops, audits=(audit(60, 100, 12_100),), final_balances=finals
    )
    assert broken(bad) == ["audit_total"]


def test_an_unknown_operation_allows_both_outcomes_but_is_reported_unsettled() -> None:
    base = good_history()
    unknown = deposit("d9", C, 900, 100, None, Outcome.UNKNOWN)
    for final_c in (0, 900):
        history = attrs.evolve(
            base,
            operations=base.operations + (unknown,),
            final_balances={A: 5_000, B: 8_000, C: final_c},
        )
        assert broken(history) == ["operations_settled"], final_c
    history = attrs.evolve(
        base, operations=base.operations + (unknown,), final_balances={A: 5_000, B: 8_000, C: 450}
    )
    assert broken(history) == ["final_balances", "operations_settled"]


def test_a_pending_transfer_is_named_in_the_unsettled_verdict() -> None:
    base = good_history()
    pending = attrs.evolve(
        transfer("t9", {B: 100}, C, 100, None, Outcome.UNKNOWN), transfer_id="abc-1"
    )
    history = attrs.evolve(base, operations=base.operations + (pending,))
    result = verdicts(history)
    assert not result["operations_settled"].held
    assert "abc-1" in result["operations_settled"].examples[0]


def test_a_negative_balance_seen_anywhere_is_a_violation() -> None:
    seen = BalanceSeen(at_ms=50, account=A, balance_cents=-1, source="withdrawal")
    history = attrs.evolve(good_history(), balances=(seen,))
    assert broken(history) == ["no_negative_balance"]


def test_committing_more_than_an_account_ever_had_is_a_violation() -> None:
    base = good_history()
    overdraft = transfer("t3", {A: 6_000}, C, 100, 110)
    history = attrs.evolve(
        base,
        operations=base.operations + (overdraft,),
        final_balances={A: -1_000, B: 8_000, C: 6_000},
    )
    assert "at_most_existed_moved" in broken(history)


def test_a_burst_may_move_at_most_what_the_balances_showed_before_it() -> None:
    base = good_history()
    burst = (
        transfer("b1", {A: 3_000}, C, 200, 210),
        transfer("b2", {A: 3_000}, C, 200, 220),
    )
    finals = {A: -1_000, B: 8_000, C: 6_000}
    history = attrs.evolve(
        base, operations=base.operations + burst, final_balances=finals,
        funds_before={A: 5_000}, funds_before_ms=150,
    )  # fmt: skip
    result = verdicts(history)
    assert not result["at_most_existed_moved"].held
    assert any("alfa/1 had 5000" in e for e in result["at_most_existed_moved"].examples)
    one = attrs.evolve(
        base, operations=base.operations + burst[:1], final_balances={A: 2_000, B: 8_000, C: 3_000},
        funds_before={A: 5_000}, funds_before_ms=150,
    )  # fmt: skip
    assert broken(one) == []


def test_money_still_held_after_everything_settled_is_a_violation() -> None:
    history = attrs.evolve(good_history(), final_held={A: 0, B: 300, C: 0})
    assert broken(history) == ["no_hold_outlives_transfer"]


def test_an_account_whose_final_balance_could_not_be_read_is_a_violation() -> None:
    history = attrs.evolve(good_history(), final_balances={A: 5_000, B: 8_000})
    assert broken(history) == ["final_balances"]


def test_without_audits_the_audit_invariant_is_not_exercised_rather_than_held() -> None:
    verdict = verdicts(attrs.evolve(good_history(), audits=()))["audit_total"]
    assert verdict.held and verdict.checked == 0 and verdict.label == "not exercised"


def test_a_baseline_from_before_the_scenario_is_added_to_the_model() -> None:
    shifted = attrs.evolve(
        good_history(),
        baseline_cents=1_000,
        audits=(audit(35, 38, 14_000),),
    )
    assert broken(shifted) == []
    assert broken(attrs.evolve(shifted, baseline_cents=0)) == ["audit_total"]


def test_unaccounted_money_is_zero_when_balances_match_and_signed_when_not() -> None:
    from scenarios.checker import unaccounted_cents

    assert unaccounted_cents(good_history()) == 0
    created = attrs.evolve(good_history(), final_balances={A: 5_000, B: 13_000, C: 0})
    assert unaccounted_cents(created) == 5_000
    lost = attrs.evolve(good_history(), final_balances={A: 4_000, B: 8_000, C: 0})
    assert unaccounted_cents(lost) == -1_000
    open_question = attrs.evolve(
        good_history(),
        operations=good_history().operations + (deposit("d9", C, 900, 100, None, Outcome.UNKNOWN),),
    )
    assert unaccounted_cents(open_question) is None


def with_lines(history: History, **changes: tuple[StatementLine, ...]) -> History:
    """``history`` with the statements of some accounts replaced (named a, b, c)."""
    by_name = {"a": A, "b": B, "c": C}
    return attrs.evolve(history, statements={**history.statements, **{by_name[k]: v for k, v in changes.items()}})


def test_a_transfer_that_moved_only_some_of_its_legs_is_a_violation() -> None:
    # t1's money left A but never reached B.
    history = with_lines(good_history(), b=STATEMENTS[B][:1] + STATEMENTS[B][2:])
    assert broken(history) == ["transfers_all_or_nothing"]
    example = verdicts(history)["transfers_all_or_nothing"].examples[0]
    assert "t1" in example and "alfa/1 -3000" in example and "beta/2 +3000" in example


def test_a_refused_transfer_must_move_nothing_and_hold_nothing() -> None:
    moved = with_lines(good_history(), a=STATEMENTS[A][:3] + (line("debit", "alfa-t2", -4_000),))
    assert broken(moved) == ["transfers_all_or_nothing"]
    kept = with_lines(good_history(), b=STATEMENTS[B][:3])  # B's hold for t2 never given back
    assert broken(kept) == ["transfers_all_or_nothing"]
    assert "still holds beta/2 +1000" in verdicts(kept)["transfers_all_or_nothing"].examples[0]


def test_a_transfer_of_unknown_outcome_may_move_all_or_nothing_but_not_part() -> None:
    base = good_history()
    unknown = attrs.evolve(transfer("t3", {A: 100, B: 200}, C, 100, None, Outcome.UNKNOWN), transfer_id="alfa-t3")
    history = attrs.evolve(base, operations=base.operations + (unknown,))
    everything = with_lines(
        history, a=STATEMENTS[A] + (line("hold", "alfa-t3", -100, 100), line("commit", "alfa-t3", 0, -100)),
        b=STATEMENTS[B] + (line("debit", "alfa-t3", -200),), c=(line("credit", "alfa-t3", 300),),
    )  # fmt: skip
    nothing = with_lines(
        history, a=STATEMENTS[A] + (line("hold", "alfa-t3", -100, 100), line("release", "alfa-t3", 100, -100)),
    )  # fmt: skip
    part = with_lines(history, b=STATEMENTS[B] + (line("debit", "alfa-t3", -200),), c=(line("credit", "alfa-t3", 200),))
    assert verdicts(everything)["transfers_all_or_nothing"].held
    assert verdicts(nothing)["transfers_all_or_nothing"].held
    assert not verdicts(part)["transfers_all_or_nothing"].held


def test_a_transfer_no_answer_named_must_be_one_a_request_may_have_made_once() -> None:
    base = good_history()
    stray = (line("debit", "gama-x", -100),)
    arrived = (line("credit", "gama-x", 100),)
    history = with_lines(base, a=STATEMENTS[A] + stray, b=STATEMENTS[B] + arrived)
    assert broken(history) == ["transfers_all_or_nothing"]
    assert "gama-x" in verdicts(history)["transfers_all_or_nothing"].examples[0]
    # A transfer whose answer never came, of the same legs, may be that one, but only once.
    lost = transfer("t4", {A: 100}, B, 100, None, Outcome.UNKNOWN)
    asked = attrs.evolve(history, operations=base.operations + (lost,))
    assert "transfers_all_or_nothing" not in broken(asked)
    twice = with_lines(
        asked, a=STATEMENTS[A] + stray + (line("debit", "gama-y", -100),),
        b=STATEMENTS[B] + arrived + (line("credit", "gama-y", 100),),
    )  # fmt: skip
    assert "transfers_all_or_nothing" in broken(twice)
    # A withdrawal paid at another bank is a transfer whose cash is in no statement.
    cash = attrs.evolve(withdrawal("w2", A, 50, 100, 120), transfer_id="beta-w2")
    paid = with_lines(
        attrs.evolve(base, operations=base.operations + (cash,)),
        a=STATEMENTS[A] + (line("hold", "beta-w2", -50, 50), line("commit", "beta-w2", 0, -50)),
    )  # fmt: skip
    assert verdicts(paid)["transfers_all_or_nothing"].held


def test_statements_are_judged_only_once_everything_settled_and_where_they_were_read() -> None:
    partial = with_lines(good_history(), b=STATEMENTS[B][:1] + STATEMENTS[B][2:])
    unsettled = verdicts(attrs.evolve(partial, settled=False))["transfers_all_or_nothing"]
    assert unsettled.held and unsettled.checked == 0
    # B's statement could not be read: t1 and t2 (which touch it) are not judged.
    unread = attrs.evolve(good_history(), statements={A: STATEMENTS[A], C: ()})
    verdict = verdicts(unread)["transfers_all_or_nothing"]
    assert verdict.held and verdict.checked == 0


def test_an_operation_ended_only_when_asked_again_after_the_load_counts_in_no_latency() -> None:
    """Its answer was lost; it ended when the scenario asked again after the load, minutes
    later: that is the scenario's bookkeeping, not the banks' latency or throughput."""
    from scenarios.report import summarize

    answered = [deposit(f"d{i}", A, 1, i * 10.0, i * 10.0 + 5.0) for i in range(10)]
    late = attrs.evolve(deposit("lost", A, 1, 20.0, 300_000.0), late=True)
    figures = summarize(History(operations=(*answered, late)))
    assert figures["latency_ms_p99"] == 5.0 and figures["resolved_late"] == 1
    assert figures["throughput_ops_s"] == pytest.approx(10 / 0.095)  # the ten answered, over 95 ms
    assert figures["committed"] == 11  # it counts as what it was


# --- runs that must not pass vacuously ------------------------------------------------------------------


def failed_audit(t0: float, t1: float) -> AuditRead:
    return AuditRead(bank="alfa", invoke_ms=t0, complete_ms=t1, ok=False, reason="unavailable: beta, gama")


def test_audit_reads_that_all_failed_are_a_violation_not_an_unexercised_invariant() -> None:
    """A consortium audit that never gives a complete answer (every read 'unavailable') used
    to leave audit_total 'not exercised', and the run passed."""
    history = attrs.evolve(good_history(), audits=(failed_audit(15, 18), failed_audit(95, 99)))
    verdict = verdicts(history)["audit_total"]
    assert not verdict.held
    assert "2 audit reads" in verdict.examples[0] and "unavailable" in verdict.examples[0]


def test_the_read_that_gave_the_baseline_is_not_counted_as_a_check() -> None:
    """The read taken before the first operation defines the baseline: it cannot disagree
    with it, so it is not evidence that the audit matches the clients' money."""
    baseline_only = attrs.evolve(good_history(), baseline_cents=700, audits=(audit(-5, -2, 700),))
    verdict = verdicts(baseline_only)["audit_total"]
    assert verdict.held and verdict.checked == 0


def test_money_still_held_when_the_wait_for_settling_ran_out_is_a_violation() -> None:
    """read_final marks a history settled only when nothing is held, so a hold that never
    goes back made no_hold_outlives_transfer 'not exercised': it could never fail."""
    leaked = attrs.evolve(good_history(), settled=False, final_held={A: 0, B: 1_000, C: 0})
    verdict = verdicts(leaked)["no_hold_outlives_transfer"]
    assert not verdict.held
    assert "beta/2 still holds 1000" in verdict.examples[0]


def test_a_consortium_that_never_went_quiet_is_a_violation() -> None:
    """Nothing held in the accounts, but the final read never saw the audit show nothing held
    and nothing in flight (money stuck between banks, or no audit at all)."""
    stuck = attrs.evolve(good_history(), settled=False)
    verdict = verdicts(stuck)["no_hold_outlives_transfer"]
    assert not verdict.held and "never" in verdict.examples[0]


def test_a_fault_the_load_stood_still_through_is_reported() -> None:
    """pause-holder: every client waited on the stopped bank, 2 operations were answered in
    the 2.8 s it was stopped against 177 in as long before: the money verdicts held over a
    load that was not there. Nothing said so."""
    before = tuple(deposit(f"b{i}", A, 1, 10.0 * i, 10.0 * i + 5) for i in range(20))  # 0-200 ms
    stalled = (deposit("s", A, 1, 205, 390),)
    faults = (FaultEvent(200, "pause", "beta"), FaultEvent(400, "resume", "beta"))
    (line,) = load_during_faults(History(operations=before + stalled, faults=faults))
    assert "pause beta" in line and "1 operations answered in the 200 ms" in line and "20 in as long" in line
    during = tuple(deposit(f"d{i}", A, 1, 200 + 10.0 * i, 205 + 10.0 * i) for i in range(5))
    assert load_during_faults(History(operations=before + during, faults=faults)) == ()
