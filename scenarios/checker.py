"""The checker: decides each invariant from a history, knowing nothing of how load was made.

It reads a :class:`scenarios.history.History` and gives one :class:`Verdict` per invariant
of DESIGN.md that a client can observe from outside:

- ``audit_total``: every consistent consortium audit shows the money the clients put in
  (baseline + deposits - withdrawals), allowing exactly the operations that were in flight
  during the read, and agrees with the consortium's own count (``expected_cents``);
- ``no_negative_balance``: no balance or held amount ever seen is below zero;
- ``final_balances``: every account ends with what a model replaying the committed
  operations says;
- ``operations_settled``: every transfer (and every deposit and withdrawal) ended committed
  or aborted once the faults stopped;
- ``at_most_existed_moved``: no account gave more than it had (credits in minus debits out
  never below zero in the model);
- ``no_hold_outlives_transfer``: once everything settled, no money is held;
- ``transfers_all_or_nothing``: in the accounts' statements, read once everything settled,
  each transfer (a cross-bank withdrawal included) moved all of its legs or none: a committed
  one exactly what it was asked, a refused one nothing, one whose outcome stayed unknown one
  or the other, and none left money held or moved money nobody asked for.

Operations whose outcome stayed unknown may or may not have happened; the checker widens
its bounds for them rather than guessing, so it never reports a violation a correct system
could have produced (Jepsen's bank test reasons the same way).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import attrs

from scenarios.history import AccountRef, AuditRead, History, Kind, Operation, Outcome

__all__ = [
    "INVARIANTS",
    "Verdict",
    "audited_money_cents",
    "check",
    "load_during_faults",
    "unaccounted_cents",
    "violated",
]

EXAMPLES_MAX = 5
"""How many offending records a verdict quotes; the count is always complete."""

INVARIANTS = (
    "audit_total",
    "no_negative_balance",
    "final_balances",
    "operations_settled",
    "at_most_existed_moved",
    "no_hold_outlives_transfer",
    "transfers_all_or_nothing",
)


@attrs.frozen
class Verdict:
    """Whether one invariant held over a history."""

    name: str
    """One of :data:`INVARIANTS`."""
    held: bool
    """Nothing broke it."""
    checked: int
    """How many records it looked at (0: nothing to judge, which is not a violation)."""
    violations: int = 0
    """How many records broke it."""
    examples: tuple[str, ...] = ()
    """The first few of them, in words."""

    @property
    def label(self) -> str:
        if not self.held:
            return "VIOLATED"
        return "held" if self.checked else "not exercised"


def violated(verdicts: Iterable[Verdict]) -> list[Verdict]:
    """The verdicts that did not hold."""
    return [v for v in verdicts if not v.held]


def audited_money_cents(read: AuditRead) -> int:
    """The money a consistent audit shows. ``total_cents`` is the consortium-wide total:
    money in accounts, held by unfinished transfers and in flight between banks (the banks
    also give ``held_cents`` on its own, already inside the total)."""
    assert read.total_cents is not None
    return read.total_cents


def check(history: History) -> tuple[Verdict, ...]:
    """One verdict per invariant, in the order of :data:`INVARIANTS`."""
    return (
        _audit_total(history),
        _no_negative_balance(history),
        _final_balances(history),
        _operations_settled(history),
        _at_most_existed_moved(history),
        _no_hold_outlives_transfer(history),
        _transfers_all_or_nothing(history),
    )


POSSIBLE_VALUES_MAX = 4096
"""Up to this many distinct outcomes, the checker knows exactly which totals the uncertain
operations allow (each happened or not); past it, it allows the whole range between."""


@attrs.frozen
class _Possible:
    """The values a total may take: ``certain`` plus any subset of ``uncertain``."""

    low: int
    high: int
    values: frozenset[int] | None
    """Every allowed value, or ``None`` when there were too many to list (then any value in
    ``low..high`` is allowed)."""

    def allows(self, value: int) -> bool:
        if self.values is not None:
            return value in self.values
        return self.low <= value <= self.high

    def describe(self) -> str:
        if self.low == self.high:
            return str(self.low)
        if self.values is not None and len(self.values) <= 4:
            return " or ".join(str(v) for v in sorted(self.values))
        return f"between {self.low} and {self.high}"


def _possible(certain: int, uncertain: Iterable[int]) -> _Possible:
    values: set[int] | None = {certain}
    low = high = certain
    for delta in uncertain:
        if delta > 0:
            high += delta
        else:
            low += delta
        if values is not None:
            values |= {v + delta for v in values}
            if len(values) > POSSIBLE_VALUES_MAX:
                values = None
    return _Possible(low, high, None if values is None else frozenset(values))


class _Findings:
    def __init__(self, name: str) -> None:
        self.name = name
        self.checked = 0
        self.violations = 0
        self.examples: list[str] = []

    def judge(self, ok: bool, describe: str) -> None:
        self.checked += 1
        if not ok:
            self.violations += 1
            if len(self.examples) < EXAMPLES_MAX:
                self.examples.append(describe)

    def verdict(self) -> Verdict:
        return Verdict(
            name=self.name,
            held=self.violations == 0,
            checked=self.checked,
            violations=self.violations,
            examples=tuple(self.examples),
        )


def _inflow(operations: Iterable[Operation], read: AuditRead, baseline: int) -> _Possible:
    """Money the clients put in, as a read over ``[invoke, complete]`` may have seen it."""
    certain = baseline
    uncertain: list[int] = []
    for op in operations:
        inflow = op.inflow_cents
        if inflow == 0 or op.outcome is Outcome.REFUSED:
            continue
        done_before = (
            op.outcome is Outcome.OK
            and op.complete_ms is not None
            and op.complete_ms < read.invoke_ms
        )
        # An unknown operation may take effect at any time after it was sent.
        may_overlap = op.invoke_ms < read.complete_ms
        if done_before:
            certain += inflow
        elif may_overlap:
            uncertain.append(inflow)
    return _possible(certain, uncertain)


def _suspects(operations: Iterable[Operation], *differences: int) -> str:
    """Operations whose amount alone explains an audit's difference (a hint, not a proof)."""
    named = [
        f"{op.kind} {op.key} ({op.outcome}, {op.invoke_ms:.0f}-"
        f"{'?' if op.complete_ms is None else f'{op.complete_ms:.0f}'} ms)"
        for op in operations
        if abs(op.inflow_cents) in {abs(d) for d in differences if d}
    ]
    return f"; same amount as: {', '.join(named[:3])}" if named else ""


def _audit_total(history: History) -> Verdict:
    findings = _Findings("audit_total")
    moving = [op for op in history.operations if op.inflow_cents != 0]
    first_ms = min((op.invoke_ms for op in history.operations), default=None)
    # A read that ended before the first operation was sent is the one the baseline came
    # from (or says the same): it cannot disagree with it, so it is no check.
    judged = [
        read
        for read in history.audits
        if first_ms is None or read.complete_ms >= first_ms
    ]
    complete = [read for read in judged if read.ok and read.total_cents is not None]
    if judged and not complete:
        # Reads were made and none answered whole: the audit was never judged, and a
        # consortium whose audit never works must not pass as 'not exercised'.
        findings.judge(
            False,
            f"none of the {len(judged)} audit reads made during the run gave a complete answer "
            f"(first: {judged[0].reason or 'no total'})",
        )
    for read in complete:
        money = audited_money_cents(read)
        possible = _inflow(moving, read, history.baseline_cents)
        allowed = possible.allows(money)
        findings.judge(
            allowed,
            f"audit at {read.bank} ({read.invoke_ms:.0f}-{read.complete_ms:.0f} ms) shows "
            f"{money} cents; the clients put in {possible.describe()}"
            + ("" if allowed else _suspects(moving, money - possible.low, money - possible.high)),
        )
        if read.expected_cents is not None:
            findings.judge(
                money == read.expected_cents,
                f"audit at {read.bank} ({read.invoke_ms:.0f} ms) shows {money} cents but "
                f"counts deposits minus withdrawals of {read.expected_cents}",
            )
    return findings.verdict()


def _no_negative_balance(history: History) -> Verdict:
    findings = _Findings("no_negative_balance")
    for seen in history.balances:
        findings.judge(
            seen.balance_cents >= 0 and seen.held_cents >= 0,
            f"{seen.account} showed balance {seen.balance_cents}, held {seen.held_cents} "
            f"({seen.source} at {seen.at_ms:.0f} ms)",
        )
    for account, balance in sorted(history.final_balances.items()):
        findings.judge(balance >= 0, f"{account} ended with balance {balance}")
    return findings.verdict()


def _model(history: History) -> dict[AccountRef, _Possible]:
    """Per account, the balances a replay of the operations allows."""
    certain: dict[AccountRef, int] = defaultdict(int)
    uncertain: dict[AccountRef, list[int]] = defaultdict(list)
    for account in history.accounts:
        certain[account] += 0
    for op in history.operations:
        if op.outcome is Outcome.REFUSED:
            continue
        for sign, movements in ((1, op.credits), (-1, op.debits)):
            for movement in movements:
                if op.outcome is Outcome.OK:
                    certain[movement.account] += sign * movement.amount_cents
                else:
                    certain[movement.account] += 0
                    uncertain[movement.account].append(sign * movement.amount_cents)
    return {account: _possible(certain[account], uncertain[account]) for account in certain}


def unaccounted_cents(history: History) -> int | None:
    """The money the accounts ended with minus what the committed operations put there
    (negative: lost; positive: created); ``None`` when unknown outcomes leave it open or a
    final balance is missing."""
    model = _model(history)
    if any(p.low != p.high for p in model.values()):
        return None
    if any(account not in history.final_balances for account in model):
        return None
    return sum(history.final_balances[a] - p.low for a, p in model.items())


def _final_balances(history: History) -> Verdict:
    findings = _Findings("final_balances")
    for account, possible in sorted(_model(history).items()):
        if account not in history.final_balances:
            findings.judge(False, f"{account}: no final balance could be read")
            continue
        final = history.final_balances[account]
        findings.judge(
            possible.allows(final),
            f"{account} ended with {final} cents; the committed operations give "
            f"{possible.describe()}",
        )
    return findings.verdict()


def _operations_settled(history: History) -> Verdict:
    findings = _Findings("operations_settled")
    for op in history.operations:
        what = f"transfer {op.transfer_id}" if op.kind is Kind.TRANSFER else str(op.kind)
        findings.judge(
            op.outcome is not Outcome.UNKNOWN,
            f"{what} {op.key} sent to {op.bank} at {op.invoke_ms:.0f} ms never ended "
            f"({op.reason or 'no answer'})",
        )
    return findings.verdict()


def _at_most_existed_moved(history: History) -> Verdict:
    findings = _Findings("at_most_existed_moved")
    # Committed operations only: whatever the order they ran in, an account cannot have
    # given out more than it ever received.
    received: dict[AccountRef, int] = defaultdict(int)
    given: dict[AccountRef, int] = defaultdict(int)
    for op in history.operations:
        if op.outcome is not Outcome.OK:
            continue
        for movement in op.credits:
            received[movement.account] += movement.amount_cents
        for movement in op.debits:
            given[movement.account] += movement.amount_cents
    for account in sorted(set(received) | set(given)):
        findings.judge(
            given[account] <= received[account],
            f"{account} gave {given[account]} cents in committed operations but only "
            f"ever received {received[account]}",
        )
    if history.funds_before_ms is not None:
        # A burst after a read of the balances may move at most what the read showed, plus
        # what the burst itself brought in.
        after = [
            op
            for op in history.operations
            if op.outcome is Outcome.OK and op.invoke_ms >= history.funds_before_ms
        ]
        for account, before in sorted(history.funds_before.items()):
            moved = sum(m.amount_cents for op in after for m in op.debits if m.account == account)
            came = sum(m.amount_cents for op in after for m in op.credits if m.account == account)
            findings.judge(
                moved <= before + came,
                f"{account} had {before} cents (+{came} received) but {moved} moved out of it",
            )
    return findings.verdict()


def _no_hold_outlives_transfer(history: History) -> Verdict:
    findings = _Findings("no_hold_outlives_transfer")
    for account, held in sorted(history.final_held.items()):
        findings.judge(
            held == 0,
            f"{account} still holds {held} cents after every transfer ended"
            + ("" if history.settled else " (when the wait for everything to settle ran out)"),
        )
    if not history.settled and not findings.violations and (history.operations or history.final_held):
        # The final read is marked settled only once the audit shows nothing held and nothing
        # in flight: not settled is this invariant failing (or its audit never answering),
        # never a reason to judge nothing.
        findings.judge(
            False,
            "the consortium never showed nothing held and nothing in flight between banks "
            "before the wait for everything to settle ran out (or its audit never answered)",
        )
    return findings.verdict()


def _legs(op: Operation) -> dict[AccountRef, int]:
    """What an operation moves in customer accounts when it happens (cash is not in them)."""
    legs = {movement.account: -movement.amount_cents for movement in op.debits}
    if op.kind is Kind.TRANSFER:
        legs.update({movement.account: movement.amount_cents for movement in op.credits})
    return legs


def _shown(moved: dict[AccountRef, int]) -> str:
    return ", ".join(f"{account} {cents:+d}" for account, cents in sorted(moved.items())) or "nothing"


def _transfers_all_or_nothing(history: History) -> Verdict:
    findings = _Findings("transfers_all_or_nothing")
    if not history.settled:
        return findings.verdict()  # holds may still be open: nothing to judge yet
    # What each transfer did to each account whose statement was read: (balance, held).
    moves: dict[str, dict[AccountRef, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for account, lines in history.statements.items():
        for line in lines:
            if line.transfer_id is not None:
                net = moves[line.transfer_id][account]
                net[0] += line.available_cents
                net[1] += line.held_cents
    named = {op.transfer_id: op for op in history.operations if op.transfer_id is not None}
    # Requests whose answer (and so their transfer's id) never came: a transfer nobody named
    # may be one of them, once each.
    unanswered: dict[frozenset[tuple[AccountRef, int]], list[Operation]] = defaultdict(list)
    for op in history.operations:
        if op.transfer_id is None and op.outcome is Outcome.UNKNOWN and op.kind is not Kind.DEPOSIT:
            unanswered[frozenset(_legs(op).items())].append(op)
    every_statement = set(history.accounts) <= set(history.statements)
    for transfer_id in sorted(set(moves) | set(named)):
        nets = moves.get(transfer_id, {})
        moved = {account: net[0] for account, net in nets.items() if net[0]}
        held = {account: net[1] for account, net in nets.items() if net[1]}
        asked = named.get(transfer_id)
        if asked is None:
            if not every_statement:
                continue  # its legs are unknown, and some may be in a statement not read
            candidates = unanswered.get(frozenset(moved.items()), [])
            findings.judge(
                not held and (not moved or bool(candidates)),
                f"transfer {transfer_id}, which no answered request names, moved {_shown(moved)}"
                + (f" and still holds {_shown(held)}" if held else ""),
            )
            if moved and candidates:
                candidates.pop()
            continue
        legs = _legs(asked)
        if not set(legs) <= set(history.statements):
            continue  # a leg's statement is missing: this one cannot be judged
        all_moved, none_moved = moved == legs, not moved
        allowed = {Outcome.OK: all_moved, Outcome.REFUSED: none_moved}.get(asked.outcome, all_moved or none_moved)
        findings.judge(
            allowed and not held,
            f"{asked.kind} {asked.key} ({asked.outcome}, transfer {transfer_id}) moved {_shown(moved)}"
            + (f" and still holds {_shown(held)}" if held else "")
            + f"; all of it is {_shown(legs)}",
        )
    return findings.verdict()


UNDONE_BY = {"kill": "restart", "pause": "resume", "partition": "heal"}
"""Each fault that takes something away, and what gives it back."""
LOAD_DURING_FAULT_MIN = 0.1
"""The least share of the answer rate just before a fault that the load should keep while it
lasts for the money verdicts to have judged a load under that fault."""


def load_during_faults(history: History) -> tuple[str, ...]:
    """A line for each fault the load (nearly) stood still through: fewer operations answered
    between the fault and its undoing than :data:`LOAD_DURING_FAULT_MIN` of those answered in
    as long just before it. The money verdicts then held over a load that was hardly there
    (every client waiting on the faulty bank): the report must say so, since the verdicts
    alone read the same either way. Not a violation: a correct consortium may be slow to the
    clients of a stopped bank; it is the scenario that tested less than it claims."""
    faults = sorted(history.faults, key=lambda f: f.at_ms)

    def answered(since_ms: float, until_ms: float) -> int:
        return sum(
            1
            for op in history.operations
            if not op.late and op.complete_ms is not None and since_ms <= op.complete_ms < until_ms
        )

    lines = []
    for index, fault in enumerate(faults):
        undo = UNDONE_BY.get(fault.action)
        end = next((f.at_ms for f in faults[index + 1 :] if f.action == undo), None)
        if end is None:
            continue
        span = end - fault.at_ms
        during, before = answered(fault.at_ms, end), answered(fault.at_ms - span, fault.at_ms)
        if during < max(1, LOAD_DURING_FAULT_MIN * before):
            lines.append(
                f"the load nearly stood still through {fault.action} {fault.target} at "
                f"{fault.at_ms / 1000:.2f} s: {during} operations answered in the {span:,.0f} ms "
                f"it lasted, {before} in as long just before it; the verdicts saw little load "
                "under this fault"
            )
    return tuple(lines)
