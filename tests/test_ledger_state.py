"""The ledger against a plain-dict model, driven by Hypothesis through random programs of
deposits, withdrawals, local transfers, holds, credits, idempotent retries and crashes.

After every step: every balance and hold equals the model, the journal sums to zero, nothing is
negative, and ``check()`` (which recomputes everything from the journal) finds no problem.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
)

from bank.documents import complete_cpf
from bank.ledger import Idempotency, Ledger, request_fingerprint
from ledger_machines import LedgerOnALoop

ANA = complete_cpf("529982247")
BRUNO = complete_cpf("111444777")
# Account 1: Ana's; 2: Bruno's; 3: joint. 99 does not exist.
OWNERS = {1: {ANA}, 2: {BRUNO}, 3: {ANA, BRUNO}}
ACCOUNTS = st.sampled_from([1, 2, 3])
ANY_ACCOUNT = st.sampled_from([1, 2, 3, 99])
DOCUMENTS = st.sampled_from([ANA, BRUNO])
AMOUNTS = st.integers(min_value=1, max_value=200)
DEPOSITS = st.integers(min_value=1, max_value=1_000)
KEYS = st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"]))
TRANSFERS = st.sampled_from(["t1", "t2", "t3", "t4"])


class LedgerMachine(LedgerOnALoop, RuleBasedStateMachine):
    placed = Bundle("placed")
    """(transfer, account) pairs whose hold was placed: decisions aim at them most often."""

    def __init__(self) -> None:
        super().__init__()
        self.open_ledger("ledger-state-", "alfa.sqlite3")
        for document in (ANA, BRUNO):
            self.run(self.ledger.create_customer(document, "x", "hash"))
        for kind, owners in (("individual", [ANA]), ("individual", [BRUNO]), ("joint", [ANA, BRUNO])):
            self.run(self.ledger.create_account(kind, owners))  # type: ignore[arg-type]
        self.available = {1: 0, 2: 0, 3: 0}
        self.held = {1: 0, 2: 0, 3: 0}
        self.deposited_net = 0
        self.settlement = 0
        self.holds: dict[tuple[str, int], list[Any]] = {}  # (transfer, account) -> [amount, state]
        self.hold_outcomes: dict[tuple[str, str, int], str] = {}
        self.answers: dict[tuple[str, str], tuple[str, int, dict[str, Any]]] = {}

    # -- client operations, with idempotency keys -----------------------------------------

    def _keyed(self, document: str, key: str | None, request: Any, call: Any, model: Any) -> None:
        """Run ``call`` with an optional key and compare with the model's expectation."""
        idempotency = None
        fingerprint = request_fingerprint("POST", "/x", request)
        if key is not None:
            idempotency = Idempotency(document, key, fingerprint)
            first = self.answers.get((document, key))
            if first is not None:
                answer = self.run(call(idempotency))
                if first[0] == fingerprint:
                    assert answer.replayed and (answer.status, answer.body) == (first[1], first[2])
                else:
                    assert answer.status == 422
                    assert answer.body["error"]["code"] == "idempotency_key_reused"
                return
        answer = self.run(call(idempotency))
        expected_status = model()
        assert answer.status == expected_status, (answer, expected_status)
        if key is not None:
            self.answers[(document, key)] = (fingerprint, answer.status, answer.body)

    @rule(account=ANY_ACCOUNT, amount=DEPOSITS, document=DOCUMENTS, key=KEYS)
    def deposit(self, account: int, amount: int, document: str, key: str | None) -> None:
        def model() -> int:
            if account not in OWNERS:
                return 404
            if document not in OWNERS[account]:
                return 403
            self.available[account] += amount
            self.deposited_net += amount
            return 201

        self._keyed(
            document,
            key,
            ["deposit", account, amount],
            lambda idem: self.ledger.deposit(account, amount, document=document, idempotency=idem),
            model,
        )

    @rule(account=ANY_ACCOUNT, amount=AMOUNTS, document=DOCUMENTS, key=KEYS)
    def withdraw(self, account: int, amount: int, document: str, key: str | None) -> None:
        def model() -> int:
            if account not in OWNERS:
                return 404
            if document not in OWNERS[account]:
                return 403
            if self.available[account] < amount:
                return 409
            self.available[account] -= amount
            self.deposited_net -= amount
            return 201

        self._keyed(
            document,
            key,
            ["withdraw", account, amount],
            lambda idem: self.ledger.withdraw(account, amount, document=document, idempotency=idem),
            model,
        )

    @rule(
        sources=st.dictionaries(ACCOUNTS, AMOUNTS, min_size=1, max_size=2),
        destination=ACCOUNTS,
        document=DOCUMENTS,
        key=KEYS,
    )
    def transfer(self, sources: dict[int, int], destination: int, document: str, key: str | None) -> None:
        if destination in sources:
            return

        def model() -> int:
            if any(document not in OWNERS[account] for account in sources):
                return 403
            if all(self.available[account] >= amount for account, amount in sources.items()):
                for account, amount in sources.items():
                    self.available[account] -= amount
                self.available[destination] += sum(sources.values())
            return 202

        self._keyed(
            document,
            key,
            ["transfer", sorted(sources.items()), destination],
            lambda idem: self.ledger.transfer_local(
                list(sources.items()), destination, document=document, request={}, idempotency=idem
            ),
            model,
        )

    # -- holds and credits -----------------------------------------------------------------

    @rule(target=placed, transfer=TRANSFERS, account=ANY_ACCOUNT, amount=AMOUNTS, document=DOCUMENTS)
    def place_hold(self, transfer: str, account: int, amount: int, document: str) -> Any:
        outcome = self.run(self.ledger.place_hold(transfer, account, amount, document))
        first = self.hold_outcomes.get(("place", transfer, account))
        if first is not None:
            assert outcome == first
            return multiple()
        if ("commit", transfer, account) in self.hold_outcomes or (
            "release",
            transfer,
            account,
        ) in self.hold_outcomes:
            expected = "decided"
        elif account not in OWNERS:
            expected = "unknown_account"
        elif document not in OWNERS[account]:
            expected = "forbidden"
        elif self.available[account] < amount:
            expected = "insufficient_funds"
        else:
            expected = "ok"
            self.available[account] -= amount
            self.held[account] += amount
            self.holds[(transfer, account)] = [amount, "held"]
        assert outcome == expected
        self.hold_outcomes[("place", transfer, account)] = outcome
        return (transfer, account) if outcome == "ok" else multiple()

    def _decide(self, operation: str, transfer: str, account: int, destination: int | None) -> None:
        if operation == "commit":
            call = self.ledger.commit_hold(transfer, account, destination=destination)
        else:
            call = self.ledger.release_hold(transfer, account)
        outcome = self.run(call)
        first = self.hold_outcomes.get((operation, transfer, account))
        if first is not None:
            assert outcome == first
            return
        hold = self.holds.get((transfer, account))
        if hold is None:
            expected = "no_hold"
        elif hold[1] != "held":
            expected = hold[1]
        else:
            expected = "ok"
            amount = hold[0]
            self.held[account] -= amount
            if operation == "release":
                self.available[account] += amount
                hold[1] = "released"
            else:
                hold[1] = "committed"
                if destination is None:
                    self.settlement += amount
                else:
                    self.available[destination] += amount
        assert outcome == expected
        self.hold_outcomes[(operation, transfer, account)] = outcome

    @rule(transfer=TRANSFERS, account=ANY_ACCOUNT, destination=st.one_of(st.none(), ACCOUNTS))
    def commit_hold(self, transfer: str, account: int, destination: int | None) -> None:
        self._decide("commit", transfer, account, destination)

    @rule(transfer=TRANSFERS, account=ANY_ACCOUNT)
    def release_hold(self, transfer: str, account: int) -> None:
        self._decide("release", transfer, account, None)

    @rule(hold=placed, destination=st.one_of(st.none(), ACCOUNTS))
    def commit_placed_hold(self, hold: tuple[str, int], destination: int | None) -> None:
        self._decide("commit", hold[0], hold[1], destination)

    @rule(hold=placed)
    def release_placed_hold(self, hold: tuple[str, int]) -> None:
        self._decide("release", hold[0], hold[1], None)

    @rule(transfer=TRANSFERS, account=ANY_ACCOUNT, amount=AMOUNTS)
    def credit(self, transfer: str, account: int, amount: int) -> None:
        outcome = self.run(self.ledger.credit(transfer, account, amount))
        first = self.hold_outcomes.get(("credit", transfer, account))
        if first is not None:
            assert outcome == first
            return
        if account not in OWNERS:
            expected = "unknown_account"
        else:
            expected = "ok"
            self.available[account] += amount
            self.settlement -= amount
        assert outcome == expected
        self.hold_outcomes[("credit", transfer, account)] = outcome

    @rule()
    def crash(self) -> None:
        """Close and reopen the database: everything answered must still be there."""
        self.run(self.ledger.close())
        self.ledger = self.run(Ledger.open(self.path))

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def balances_equal_the_model(self) -> None:
        accounts = self.run(self.ledger.all_accounts())
        assert {a.number: a.balance_cents for a in accounts} == self.available
        assert {a.number: a.held_cents for a in accounts} == self.held
        assert all(a.balance_cents >= 0 and a.held_cents >= 0 for a in accounts)
        open_holds = self.run(self.ledger.open_holds())
        assert {(h.transfer_id, h.account): h.amount_cents for h in open_holds} == {
            key: hold[0] for key, hold in self.holds.items() if hold[1] == "held"
        }

    @invariant()
    def each_statement_adds_up_to_the_model(self) -> None:
        for number in self.available:
            page = self.run(self.ledger.statement(number))
            assert page is not None and page.next_before is None  # a short history: one page
            assert sum(line.available_cents for line in page.lines) == self.available[number]
            assert sum(line.held_cents for line in page.lines) == self.held[number]
            # What each transfer still holds in it, line by line, is what the model holds.
            held: dict[str, int] = {}
            for line in page.lines:
                if line.transfer_id is not None:
                    held[line.transfer_id] = held.get(line.transfer_id, 0) + line.held_cents
            assert {t: cents for t, cents in held.items() if cents} == {
                transfer: hold[0]
                for (transfer, account), hold in self.holds.items()
                if account == number and hold[1] == "held"
            }

    @invariant()
    def the_journal_balances_and_check_passes(self) -> None:
        report = self.run(self.ledger.check())
        assert report.ok, report.problems
        assert report.journal_sum_cents == 0
        audit = self.run(self.ledger.audit())
        assert audit["deposited_net_cents"] == self.deposited_net
        assert audit["settlement_cents"] == self.settlement
        # Conservation at one bank.
        assert audit["balance_cents"] + audit["held_cents"] + audit["settlement_cents"] == (
            audit["deposited_net_cents"]
        )


LedgerMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=30, deadline=None
)
TestLedgerAgainstModel = LedgerMachine.TestCase
