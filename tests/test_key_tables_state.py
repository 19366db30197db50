"""A customer's ``Idempotency-Key`` names one request, whichever of a bank's two key tables
keeps it: driven by Hypothesis through random programs against a model of what each key names.

A bank keeps the keys of its local writes (and of the withdrawals other banks pay from its
accounts) in the ledger's ``idempotency`` table, and the keys of the cross-bank transfers it
coordinates in the transfer store's ``transfer_keys``. The machine writes through both, on one
real ledger database: keyed deposits, cross-bank transfers recorded with a key, keys taken for
a withdrawal paid at another bank, and such a key given back. After every step the model says
what each key names, and every answer must agree: the first request's again for a retry, 422
(or ``KeyReused``) for another request, and the money of a deposit moved once.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from bank.documents import complete_cpf
from bank.ledger import Answer, Idempotency
from bank.transfers import store
from bank.transfers.book import KeyReused, LoadKey, RecordPending
from bank.transfers.protocol import Leg, Transfer
from bank.transfers.store import LedgerBook
from ledger_machines import LedgerOnALoop

ANA = complete_cpf("529982247")
KEYS = st.sampled_from(["k1", "k2", "k3", "k4"])
AMOUNTS = st.integers(min_value=1, max_value=3)
"""A request's content: two requests with the same key and amount are the same request."""


class KeyTablesMachine(LedgerOnALoop, RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.open_ledger("key-tables-", "b0.sqlite3", bank_id="b0")
        self.book = LedgerBook(self.ledger)
        self.run(self.book.open())
        # As the transfer service sets it (with its coordinator's reservations as well).
        self.ledger.keys_elsewhere = store.transfer_key_taken
        self.run(self.ledger.create_customer(ANA, "Ana", "hash"))
        self.account = self.run(self.ledger.create_account("individual", [ANA])).body["account"]
        # What each key names: ("deposit" | "transfer" | "withdrawal", fingerprint, what).
        self.named: dict[str, tuple[str, str, Any]] = {}
        self.deposited = 0
        self.transfers = 0

    def _another(self, key: str, kind: str, fingerprint: str) -> bool:
        """Whether the model says ``key`` names another request than this one."""
        named = self.named.get(key)
        return named is not None and (named[0], named[1]) != (kind, fingerprint)

    @rule(key=KEYS, amount=AMOUNTS)
    def deposit(self, key: str, amount: int) -> None:
        fingerprint = f"deposit-{amount}"
        answer = self.run(
            self.ledger.deposit(self.account, amount, document=ANA, idempotency=Idempotency(ANA, key, fingerprint))
        )
        if self._another(key, "deposit", fingerprint):
            assert answer.status == 422 and answer.body["error"]["code"] == "idempotency_key_reused", answer
        elif key in self.named:
            assert answer.replayed and answer.body == self.named[key][2], answer
        else:
            assert answer.status == 201 and not answer.replayed, answer
            self.deposited += amount
            self.named[key] = ("deposit", fingerprint, answer.body)

    @rule(key=KEYS, amount=AMOUNTS, look_first=st.booleans())
    def cross_bank_transfer(self, key: str, amount: int, look_first: bool) -> None:
        # A waiting client's transfer is looked up by its key first (LoadKey), one that does
        # not wait is recorded with it at once (RecordPending); both refuse another's key.
        fingerprint = f"transfer-{amount}"
        self.transfers += 1
        transfer = Transfer(
            f"b0-t{self.transfers}", "b0", ANA,
            (Leg("b0", str(self.account), amount, "source"), Leg("b1", "1", amount, "destination")),
        )  # fmt: skip
        named = self.named.get(key)
        if look_first:
            # The lookup answers a transfer's key as stored (the coordinator compares the
            # fingerprints), and refuses one a local write took.
            if named is not None and named[0] != "transfer":
                with pytest.raises(KeyReused):
                    self.run(self.book.execute([LoadKey(ANA, key)]))
            else:
                (found,) = self.run(self.book.execute([LoadKey(ANA, key)]))
                assert found == (None if named is None else (named[1], named[2])), found
            return
        record = RecordPending(transfer, (ANA, key, fingerprint))
        if self._another(key, "transfer", fingerprint):
            with pytest.raises(KeyReused):
                self.run(self.book.execute([record]))
            return
        (found,) = self.run(self.book.execute([record]))
        if named is not None:
            assert found == named[2], found  # the first transfer's id
        else:
            assert found is None  # recorded: the key is this transfer's now
            self.named[key] = ("transfer", fingerprint, transfer.id)

    @rule(key=KEYS, amount=AMOUNTS)
    def withdrawal_paid_elsewhere(self, key: str, amount: int) -> None:
        # Another bank asks this one, the account's, to take the key for a withdrawal it pays.
        fingerprint = f"withdrawal-{amount}"
        self.transfers += 1
        taken = {"id": f"b1-w{self.transfers}", "status": "pending", "withdrawal_at": "b1"}
        answer = self.run(
            self.ledger.first_answer(Idempotency(ANA, key, fingerprint), Answer(202, taken), client_key=True)
        )
        if self._another(key, "withdrawal", fingerprint):
            assert answer.status == 422 and answer.body["error"]["code"] == "idempotency_key_reused", answer
        elif key in self.named:
            assert answer.replayed and answer.body == self.named[key][2], answer
        else:
            assert not answer.replayed and answer.body == taken, answer
            self.named[key] = ("withdrawal", fingerprint, taken)

    @rule(key=KEYS, amount=AMOUNTS)
    def give_back(self, key: str, amount: int) -> None:
        # The withdrawal a key was taken for was never made: the key goes back, but only if
        # it still names exactly that one.
        fingerprint = f"withdrawal-{amount}"
        named = self.named.get(key)
        body = named[2] if named is not None and named[0] == "withdrawal" else {"id": "b1-none", "withdrawal_at": "b1"}
        given = self.run(self.ledger.forget_answer(Idempotency(ANA, key, fingerprint), body))
        expected = named is not None and (named[0], named[1]) == ("withdrawal", fingerprint)
        assert given == expected, (named, given)
        if given:
            del self.named[key]

    @invariant()
    def money_moved_once_per_key(self) -> None:
        account = self.run(self.ledger.account(self.account))
        assert account is not None and account.balance_cents == self.deposited


KeyTablesMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestKeyTablesAgainstModel = KeyTablesMachine.TestCase
