"""CPF and CNPJ: known good numbers pass, any single changed digit or malformed input fails."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bank.documents import complete_cnpj, complete_cpf, document_kind, is_cnpj, is_cpf

# Published examples with valid check digits.
GOOD_CPFS = ["52998224725", "11144477735"]
GOOD_CNPJS = ["11222333000181", "11444777000161"]


@pytest.mark.parametrize("cpf", GOOD_CPFS)
def test_known_cpfs_are_valid(cpf: str) -> None:
    assert is_cpf(cpf) and document_kind(cpf) == "cpf" and not is_cnpj(cpf)


@pytest.mark.parametrize("cnpj", GOOD_CNPJS)
def test_known_cnpjs_are_valid(cnpj: str) -> None:
    assert is_cnpj(cnpj) and document_kind(cnpj) == "cnpj" and not is_cpf(cnpj)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "52998224724",  # wrong second check digit
        "52998224715",  # wrong first check digit
        "11111111111",  # repeated digits pass the arithmetic but are refused
        "00000000000000",
        "529.982.247-25",  # punctuation is not accepted: digits only
        "5299822472",  # too short
        "529982247250",  # too long for a CPF, too short for a CNPJ
        "11222333000182",
        "١١١٤٤٤٧٧٧٣٥",  # non-ASCII digits
        " 52998224725",
    ],
)
def test_malformed_documents_are_refused(value: str) -> None:
    assert document_kind(value) is None


@given(st.text(alphabet="0123456789", min_size=9, max_size=9))
def test_completed_cpf_is_valid_and_every_altered_check_digit_is_not(base: str) -> None:
    cpf = complete_cpf(base)
    if len(set(cpf)) == 1:
        assert not is_cpf(cpf)
        return
    assert is_cpf(cpf)
    for position in (9, 10):  # any change of a check digit is caught
        for digit in "0123456789":
            if digit != cpf[position]:
                assert not is_cpf(cpf[:position] + digit + cpf[position + 1 :])


@given(st.text(alphabet="0123456789", min_size=12, max_size=12))
def test_completed_cnpj_is_valid_and_every_altered_check_digit_is_not(base: str) -> None:
    cnpj = complete_cnpj(base)
    if len(set(cnpj)) == 1:
        assert not is_cnpj(cnpj)
        return
    assert is_cnpj(cnpj)
    for position in (12, 13):  # any change of a check digit is caught
        for digit in "0123456789":
            if digit != cnpj[position]:
                assert not is_cnpj(cnpj[:position] + digit + cnpj[position + 1 :])
