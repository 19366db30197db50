"""The scenario client's documents: every CPF and CNPJ it makes passes the bank's own check."""

from __future__ import annotations

import random

from bank.documents import is_cnpj, is_cpf
from scenarios.client import Answer, make_cnpj, make_cpf


def test_generated_documents_have_valid_check_digits() -> None:
    rng = random.Random(0)
    for _ in range(2000):
        assert is_cpf(make_cpf(rng))
        assert is_cnpj(make_cnpj(rng))


def test_the_same_seed_makes_the_same_people() -> None:
    first = [make_cpf(random.Random(5)) for _ in range(3)]
    assert first == [make_cpf(random.Random(5)) for _ in range(3)]
    assert make_cpf(random.Random(5)) != make_cpf(random.Random(6))


def test_answers_tell_definite_refusals_from_unknown_outcomes() -> None:
    assert Answer(status=409).refused
    assert Answer(status=501).refused
    assert Answer(status=None, sent=False).refused
    assert not Answer(status=None).refused  # sent, no answer: it may have happened
    assert not Answer(status=503).refused
    assert not Answer(status=500).refused
    assert Answer(status=409, body={"error": {"code": "insufficient_funds"}}).error_code == (
        "insufficient_funds"
    )
