"""The scenario checker on hand-made histories: each invariant holds on a good history and is
reported violated, with the offending record, on a bad one."""

from __future__ import annotations

import attrs

from scenarios.checker import INVARIANTS, Verdict, check
from scenarios.history import (
    AccountRef,
    AuditRead,
    BalanceSeen,
    History,
    Kind,
    Movement,
    Operation,
    Outcome,
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


def good_history() -> History:
    """A = 10000 - 2000 - 3000 = 5000; B = 5000 + 3000 = 8000; C = 0 (an aborted transfer)."""
    return History(
        operations=(
            deposit("d1", A, 10_000, 0, 10),
            deposit("d2", B, 5_000, 0, 12),
            withdrawal("w1", A, 2_000, 20, 30),
            transfer("t1", {A: 3_000}, B, 40, 60),
            transfer("t2", {A: 4_000, B: 1_000}, C, 70, 90, Outcome.REFUSED),
        ),
        audits=(audit(15, 18, 15_000), audit(35, 38, 13_000), audit(95, 99, 13_000)),
        balances=(BalanceSeen(at_ms=10, account=A, balance_cents=10_000),),
        accounts=(A, B, C),
        final_balances={A: 5_000, B: 8_000, C: 0},
        final_held={A: 0, B: 0, C: 0},
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
