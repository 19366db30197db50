"""Brazilian customer documents: CPF for persons, CNPJ for companies.

Customers are identified by these numbers, digits only. This module is the one place that
knows their check digits; the client API refuses a document that fails here with
``invalid_document`` before anything reaches the ledger.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "CNPJ_DIGITS",
    "CPF_DIGITS",
    "DocumentKind",
    "complete_cnpj",
    "complete_cpf",
    "document_kind",
    "is_cnpj",
    "is_cpf",
]

CPF_DIGITS = 11
CNPJ_DIGITS = 14

DocumentKind = Literal["cpf", "cnpj"]

_CPF_WEIGHTS_FIRST = tuple(range(10, 1, -1))
_CPF_WEIGHTS_SECOND = tuple(range(11, 1, -1))
_CNPJ_WEIGHTS_FIRST = (5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)
_CNPJ_WEIGHTS_SECOND = (6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)


def _check_digit(digits: str, weights: tuple[int, ...]) -> str:
    assert len(digits) == len(weights)
    remainder = sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11
    return "0" if remainder < 2 else str(11 - remainder)


def _only_digits(value: str, length: int) -> bool:
    # str.isdigit accepts other scripts' digits ("٣"); a document is ASCII only.
    return len(value) == length and value.isascii() and value.isdigit()


def is_cpf(value: str) -> bool:
    """Whether ``value`` is a CPF: 11 ASCII digits, not all equal, both check digits right."""
    if not _only_digits(value, CPF_DIGITS) or len(set(value)) == 1:
        # Repeated digits ("11111111111") pass the arithmetic but are never issued.
        return False
    return value == complete_cpf(value[:9])


def is_cnpj(value: str) -> bool:
    """Whether ``value`` is a CNPJ: 14 ASCII digits, not all equal, both check digits right."""
    if not _only_digits(value, CNPJ_DIGITS) or len(set(value)) == 1:
        return False
    return value == complete_cnpj(value[:12])


def document_kind(value: str) -> DocumentKind | None:
    """``"cpf"``, ``"cnpj"``, or ``None`` when ``value`` is neither."""
    if is_cpf(value):
        return "cpf"
    if is_cnpj(value):
        return "cnpj"
    return None


def complete_cpf(base: str) -> str:
    """The CPF whose first nine digits are ``base``, with its two check digits appended."""
    assert _only_digits(base, 9), "a CPF base is nine digits"
    first = _check_digit(base, _CPF_WEIGHTS_FIRST)
    return base + first + _check_digit(base + first, _CPF_WEIGHTS_SECOND)


def complete_cnpj(base: str) -> str:
    """The CNPJ whose first twelve digits are ``base``, with its two check digits appended."""
    assert _only_digits(base, 12), "a CNPJ base is twelve digits"
    first = _check_digit(base, _CNPJ_WEIGHTS_FIRST)
    return base + first + _check_digit(base + first, _CNPJ_WEIGHTS_SECOND)
