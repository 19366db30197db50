"""The client API's error answers: one shape, stable codes, one status per code.

Every refusal a customer can see is ``{"error": {"code": ..., "message": ...}}`` (CONTRACT.md).
Codes are stable names that scripts branch on; messages are for people and may change. The
ledger returns refusals as :class:`Refusal` values and the API turns them into responses here,
so that a code always carries the same status wherever it is raised.
"""

from __future__ import annotations

from typing import Any

import attrs
from aiohttp import web

from tokenring import jsonio
from tokenring.signing import error_body  # the contract's error document, one shape everywhere

__all__ = [
    "STATUS_BY_CODE",
    "ApiError",
    "Refusal",
    "error_body",
    "error_response",
]

STATUS_BY_CODE: dict[str, int] = {
    "invalid_request": 400,
    "invalid_document": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "unknown_account": 404,
    "method_not_allowed": 405,
    "customer_exists": 409,
    "insufficient_funds": 409,
    "balance_limit": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "unknown_bank": 422,
    "unknown_customer": 422,
    "idempotency_key_reused": 422,
    "too_many_attempts": 429,
    "internal_error": 500,
    "not_implemented": 501,
    "unavailable": 503,
}
"""Every code the client API answers with, and its HTTP status."""


@attrs.frozen
class Refusal:
    """An operating error: the request was understood and refused; nothing changed."""

    code: str
    """One of :data:`STATUS_BY_CODE`."""
    message: str
    """What a person should read."""

    def __attrs_post_init__(self) -> None:
        assert self.code in STATUS_BY_CODE, f"unknown error code {self.code!r}"

    @property
    def status(self) -> int:
        return STATUS_BY_CODE[self.code]

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message)


class ApiError(Exception):
    """Raised inside a handler to answer with a refusal; the middleware renders it."""

    def __init__(self, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        assert code in STATUS_BY_CODE, f"unknown error code {code!r}"
        super().__init__(message)
        self.refusal = Refusal(code, message)
        self.headers = headers or {}


def error_response(
    code: str, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response in the contract's error shape with the code's status."""
    return jsonio.response(
        error_body(code, message), status=STATUS_BY_CODE[code], headers=headers
    )
