"""The OpenAPI 3 document of the client API, served at ``GET /api/v1/openapi.json``.

Place in the design: a description of ``bank.api``'s routes, built from the same named limits
the API enforces, so the document and the checks cannot drift apart. The schemathesis test
(tests/test_openapi.py) fuzzes the served API against this document.
"""

from __future__ import annotations

from typing import Any

from bank.api import (
    ACCOUNT_NUMBER_MAX,
    BODY_BYTES_MAX,
    IDEMPOTENCY_KEY_CHARS_MAX,
    JOINT_OWNERS_MAX,
    NAME_CHARS_MAX,
    STATEMENT_PAGE_LINES,
    TRANSFER_SOURCES_MAX,
    TRANSFER_WAIT_MS_MAX,
)
from bank.auth import (
    DIRECTORY_LOOKUPS_MAX,
    DIRECTORY_WINDOW_S,
    PASSWORD_CHARS_MAX,
    PASSWORD_CHARS_MIN,
)
from bank.errors import STATUS_BY_CODE
from bank.ledger import AMOUNT_CENTS_MAX, STATEMENT_LINES_MAX, STATEMENT_POSITION_MAX

__all__ = ["document"]

OPENAPI_VERSION = "3.0.3"

_REASONS = {
    400: "Bad input (`invalid_request`, `invalid_document`), or an unknown or repeated query "
    "parameter; nothing changed.",
    401: "No valid session (`unauthorized`), or the document or password is wrong.",
    403: "Not one of the account's owners (`forbidden`).",
    404: "No such account (`unknown_account`) or transfer (`not_found`); for a read, also "
    "one that is not the caller's.",
    409: "Refused by the ledger (`insufficient_funds`, `customer_exists`, `balance_limit`).",
    413: f"The body is larger than {BODY_BYTES_MAX} bytes (`payload_too_large`).",
    422: "Unknown bank, unknown customer, or an Idempotency-Key reused for another request.",
    429: "Too many failed logins for this document, or too many payee look-ups by this "
    "customer (`too_many_attempts`); see Retry-After.",
    501: "The request involves another bank of the ring, and this bank runs without it "
    "(`not_implemented`: the client API served alone, as in tests).",
    503: "Unavailable (`unavailable`): the bank is shutting down or starting, or another bank "
    "that the request needs did not answer. The message says whether nothing moved, or whether "
    "what was asked may still happen at that bank (then a retry with the same Idempotency-Key "
    "learns its outcome, and one without a key may do it twice).",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {"description": _REASONS[status], "content": _json(_ref("Error"))}
        for status in statuses
    }


def _operation(
    summary: str,
    responses: dict[str, Any],
    *,
    body: str | None = None,
    secured: bool = True,
    idempotent: bool = False,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    params = list(parameters or [])
    if idempotent:
        params.append({"$ref": "#/components/parameters/IdempotencyKey"})
    if params:
        operation["parameters"] = params
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _json(_ref(body))}
    if secured:
        operation["security"] = [{"bearer": []}]
    else:
        operation["security"] = []
    return operation


def _ok(status: int, description: str, schema: str | None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = _json(_ref(schema))
    return {str(status): answer}


def document(*, bank_id: str, bank_name: str) -> dict[str, Any]:
    """The OpenAPI document of bank ``bank_id``'s client API."""
    document_schema = {
        "type": "string",
        "pattern": "^([0-9]{11}|[0-9]{14})$",
        "description": "A CPF (11 digits) or CNPJ (14 digits), digits only, check digits valid.",
    }
    amount = {"type": "integer", "minimum": 1, "maximum": AMOUNT_CENTS_MAX}
    account_number = {"type": "integer", "minimum": 1, "maximum": ACCOUNT_NUMBER_MAX}
    cents = {"type": "integer"}
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "enum": sorted(STATUS_BY_CODE)},
                        "message": {"type": "string"},
                    },
                }
            },
        },
        "NewCustomer": {
            "type": "object",
            "additionalProperties": False,
            "required": ["document", "name", "password"],
            "properties": {
                "document": document_schema,
                "name": {"type": "string", "minLength": 1, "maxLength": NAME_CHARS_MAX},
                "password": {
                    "type": "string",
                    "minLength": PASSWORD_CHARS_MIN,
                    "maxLength": PASSWORD_CHARS_MAX,
                },
            },
        },
        "Customer": {
            "type": "object",
            "required": ["document", "name"],
            "properties": {"document": {"type": "string"}, "name": {"type": "string"}},
        },
        "Login": {
            "type": "object",
            "additionalProperties": False,
            "required": ["document", "password"],
            "properties": {
                "document": document_schema,
                "password": {"type": "string", "maxLength": PASSWORD_CHARS_MAX},
            },
        },
        "Session": {
            "type": "object",
            "required": ["token", "expires_at"],
            "properties": {
                "token": {"type": "string"},
                "expires_at": {"type": "string", "format": "date-time"},
            },
        },
        "NewAccount": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "owners"],
            "properties": {
                "kind": {"type": "string", "enum": ["individual", "joint", "corporate"]},
                "owners": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": JOINT_OWNERS_MAX,
                    "uniqueItems": True,
                    "items": document_schema,
                    "description": "individual: one CPF; joint: two or more CPFs; "
                    "corporate: one CNPJ. The caller must be one of them.",
                },
            },
        },
        "Account": {
            "type": "object",
            "required": ["bank", "account", "kind", "owners", "balance_cents", "held_cents"],
            "properties": {
                "bank": {"type": "string"},
                "account": {"type": "integer"},
                "kind": {"type": "string", "enum": ["individual", "joint", "corporate"]},
                "owners": {"type": "array", "items": {"type": "string"}},
                "balance_cents": {"type": "integer", "minimum": 0},
                "held_cents": {"type": "integer", "minimum": 0},
            },
        },
        "Statement": {
            "allOf": [
                _ref("Account"),
                {
                    "type": "object",
                    "required": ["lines", "next_before"],
                    "properties": {
                        "lines": {"type": "array", "maxItems": STATEMENT_LINES_MAX, "items": _ref("StatementLine")},
                        "next_before": {
                            "type": "integer",
                            "nullable": True,
                            "description": "Where the next (older) page starts: send it as `before`. "
                            "null on the last page.",
                        },
                    },
                },
            ]
        },
        "StatementLine": {
            "type": "object",
            "additionalProperties": False,
            "required": ["txn", "at_ms", "kind", "transfer_id", "available_cents", "held_cents"],
            "properties": {
                "txn": {"type": "integer", "description": "The journal transaction's number at the account's bank."},
                "at_ms": {"type": "integer", "description": "When it was written (Unix ms)."},
                "kind": {
                    "type": "string",
                    "enum": ["deposit", "withdrawal", "transfer", "hold", "commit", "release", "credit", "debit"],
                    "description": "transfer: both accounts at this bank. A cross-bank transfer shows "
                    "as hold (available to held) then commit (held money paid out) or release (held "
                    "money back) at a source; as debit at a source of the bank that coordinated it "
                    "(its own legs move with its decision); as credit at its destination. Cash "
                    "withdrawn at another bank shows as hold, then withdrawal (held money paid out "
                    "as cash there).",
                },
                "transfer_id": {"type": "string", "nullable": True},
                "available_cents": {**cents, "description": "The change of the account's balance."},
                "held_cents": {**cents, "description": "The change of the money held in it."},
            },
        },
        "BankAccounts": {
            "type": "object",
            "required": ["bank", "name", "accounts"],
            "properties": {
                "bank": {"type": "string"},
                "name": {"type": "string"},
                "accounts": {"type": "array", "items": _ref("Account")},
            },
        },
        "ConsortiumAccounts": {
            "type": "object",
            "required": ["banks", "unavailable"],
            "properties": {
                "banks": {"type": "array", "items": _ref("BankAccounts")},
                "unavailable": {"type": "array", "items": {"type": "string"}},
            },
        },
        "PayeeAccount": {
            "type": "object",
            "additionalProperties": False,
            "required": ["bank", "account", "kind"],
            "properties": {
                "bank": {"type": "string"},
                "account": {"type": "integer"},
                "kind": {"type": "string", "enum": ["individual", "joint", "corporate"]},
            },
        },
        "Directory": {
            "type": "object",
            "additionalProperties": False,
            "required": ["document", "banks", "unavailable"],
            "properties": {
                "document": {"type": "string"},
                "banks": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["bank", "name", "accounts"],
                        "properties": {
                            "bank": {"type": "string"},
                            "name": {"type": "string"},
                            "accounts": {"type": "array", "items": _ref("PayeeAccount")},
                        },
                    },
                },
                "unavailable": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Cash": {
            "type": "object",
            "additionalProperties": False,
            "required": ["bank", "account", "amount_cents"],
            "properties": {
                "bank": {"type": "string"},
                "account": account_number,
                "amount_cents": amount,
            },
        },
        "NewTransfer": {
            "type": "object",
            "additionalProperties": False,
            "required": ["sources", "destination"],
            "properties": {
                "sources": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": TRANSFER_SOURCES_MAX,
                    "items": _ref("Cash"),
                },
                "destination": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["bank", "account"],
                    "properties": {"bank": {"type": "string"}, "account": account_number},
                },
            },
        },
        "TransferAccepted": {
            "type": "object",
            "required": ["id", "status"],
            "properties": {
                "id": {"type": "string"},
                "status": {"type": "string", "enum": ["pending", "committed", "aborted"]},
                "reason": {"type": "string"},
            },
        },
        "Transfer": {
            "type": "object",
            "required": ["id", "kind", "status", "reason", "sources", "destination"],
            "properties": {
                "id": {"type": "string"},
                "kind": {
                    "type": "string",
                    "enum": ["transfer", "withdrawal"],
                    "description": "`withdrawal`: cash paid at the bank that took the request "
                    "from an account at another bank (its one source); its destination is null.",
                },
                "status": {"type": "string", "enum": ["pending", "committed", "aborted"]},
                "reason": {"type": "string", "nullable": True},
                "sources": {"type": "array", "items": {"type": "object"}},
                "destination": {"type": "object", "nullable": True},
                "created_at_ms": {"type": "integer"},
                "delivered": {
                    "type": "boolean",
                    "description": "Decided, and applied by every bank that must hear the "
                    "decision: each balance the transfer touched shows it (until then a "
                    "destination's credit, or a source's debit, may lag the outcome). A bank "
                    "whose vote never came is not told an abort; it gives back on its own "
                    "whatever it holds.",
                },
            },
        },
        "ConsortiumAudit": {
            "type": "object",
            "required": ["total_cents", "held_cents", "banks", "expected_cents"],
            "properties": {
                "total_cents": cents,
                "balance_cents": cents,
                "held_cents": cents,
                "in_flight_cents": cents,
                "expected_cents": cents,
                "consistent": {"type": "boolean"},
                "banks": {"type": "object", "additionalProperties": {"type": "object"}},
            },
        },
        "Audit": {
            "type": "object",
            "required": ["bank", "balance_cents", "held_cents", "accounts"],
            "properties": {
                "bank": {"type": "string"},
                "balance_cents": {**cents, "description": "Sum of available balances."},
                "held_cents": {**cents, "description": "Sum of money held for transfers."},
                "accounts": {"type": "integer", "description": "Customer accounts."},
                "customers": {"type": "integer"},
                "deposited_net_cents": {
                    **cents,
                    "description": "Deposits minus withdrawals ever made at this bank.",
                },
                "settlement_cents": {
                    **cents,
                    "description": "Sent to other banks minus received from them. "
                    "balance + held + settlement = deposited_net.",
                },
                "journal_entries": {"type": "integer"},
                "transfers": {"type": "integer"},
            },
        },
    }
    write_errors = (400, 401, 413)
    paths: dict[str, Any] = {
        "/api/v1/customers": {
            "post": _operation(
                "Become a customer of this bank. A document that another bank of the ring keeps as a "
                "customer is signed up only with the password it has there (409 `customer_exists` "
                "otherwise, counted as a failed login); 503 when another bank cannot say.",
                {
                    **_ok(201, "The customer.", "Customer"),
                    **_errors(400, 409, 413, 422, 429, 503),
                },
                body="NewCustomer",
                secured=False,
                idempotent=True,
            )
        },
        "/api/v1/sessions": {
            "post": _operation(
                "Log in: a bearer token for later calls.",
                {**_ok(201, "A new session.", "Session"), **_errors(400, 401, 413, 429)},
                body="Login",
                secured=False,
            ),
            "delete": _operation(
                "Log out: end the session whose token is sent.",
                {"204": {"description": "The session is over."}, **_errors(401)},
            ),
        },
        "/api/v1/accounts": {
            "post": _operation(
                "Open an account; the caller must be one of its owners.",
                {
                    **_ok(201, "The new account.", "Account"),
                    **_errors(*write_errors, 403, 422),
                },
                body="NewAccount",
                idempotent=True,
            ),
            "get": _operation(
                "The caller's accounts at this bank, or at every bank (scope=consortium).",
                {
                    "200": {
                        "description": "local: BankAccounts; consortium: ConsortiumAccounts.",
                        "content": _json(
                            {"oneOf": [_ref("BankAccounts"), _ref("ConsortiumAccounts")]}
                        ),
                    },
                    **_errors(400, 401),
                },
                parameters=[
                    {
                        "name": "scope",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["local", "consortium"]},
                    }
                ],
            ),
        },
        "/api/v1/accounts/{bank}/{account}/statement": {
            "get": _operation(
                "One of the caller's accounts, at any bank of the ring, with its movements, newest "
                "first, a page at a time. An account the caller does not own is answered like a "
                "missing one (404).",
                {**_ok(200, "A page of the statement.", "Statement"), **_errors(400, 401, 404, 422, 501)},
                parameters=[
                    {"name": "bank", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "account", "in": "path", "required": True, "schema": account_number},
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": f"Lines in the page (default {STATEMENT_PAGE_LINES}).",
                        "schema": {"type": "integer", "minimum": 1, "maximum": STATEMENT_LINES_MAX},
                    },
                    {
                        "name": "before",
                        "in": "query",
                        "required": False,
                        "description": "The previous page's `next_before`: the page starts below it.",
                        "schema": {"type": "integer", "minimum": 1, "maximum": STATEMENT_POSITION_MAX},
                    },
                ],
            )
        },
        "/api/v1/directory": {
            "get": _operation(
                "Where a payee can be paid: the accounts a document owns at every bank of the "
                "ring, named by bank, number and kind only (no balances, holds or owners). A "
                "bank is listed only where the document has an account; a bank that did not "
                "answer is in `unavailable`. An unknown document has empty lists. A customer may "
                f"look up {DIRECTORY_LOOKUPS_MAX} payees per {DIRECTORY_WINDOW_S:.0f} s.",
                {**_ok(200, "The payee's accounts.", "Directory"), **_errors(400, 401, 429)},
                parameters=[
                    {
                        "name": "document",
                        "in": "query",
                        "required": True,
                        "description": "The payee's CPF or CNPJ, digits only "
                        "(`invalid_document` when its check digits are wrong).",
                        "schema": document_schema,
                    }
                ],
            )
        },
        "/api/v1/deposits": {
            "post": _operation(
                "Deposit cash into one of the caller's accounts.",
                {
                    **_ok(201, "The account with its new balance.", "Account"),
                    **_errors(*write_errors, 403, 404, 409, 422, 501),
                },
                body="Cash",
                idempotent=True,
            )
        },
        "/api/v1/withdrawals": {
            "post": _operation(
                "Withdraw cash from one of the caller's accounts. At another bank it is a "
                "cross-bank debit that waits for the token.",
                {
                    **_ok(201, "The account with its new balance.", "Account"),
                    **_ok(
                        202,
                        "A cross-bank withdrawal not decided in time (`status` pending): its "
                        "transfer record, as a transfer answers; follow it there. One aborted "
                        "because a bank did not answer in time is a 503 (no cash was paid; a "
                        "retry, with the same Idempotency-Key too, makes a new attempt).",
                        "TransferAccepted",
                    ),
                    **_errors(*write_errors, 403, 404, 409, 422, 501),
                },
                body="Cash",
                idempotent=True,
            )
        },
        "/api/v1/transfers": {
            "post": _operation(
                "Move money from the caller's accounts to one destination. A transfer within "
                "this bank is decided at once (committed, or aborted with a reason).",
                {
                    **_ok(202, "The transfer's id and status.", "TransferAccepted"),
                    **_errors(*write_errors, 403, 404, 422, 501),
                },
                body="NewTransfer",
                idempotent=True,
                parameters=[
                    {
                        "name": "wait_ms",
                        "in": "query",
                        "required": False,
                        "description": "Wait up to this long for a cross-bank transfer's "
                        "decision before answering (pending when it is not decided yet). Until "
                        "then the transfer is kept in memory, stored with its decision: should "
                        "the bank stop first, it never happened and nothing moved; a retry with "
                        "the same Idempotency-Key then makes it anew.",
                        "schema": {"type": "integer", "minimum": 0, "maximum": TRANSFER_WAIT_MS_MAX},
                    }
                ],
            )
        },
        "/api/v1/transfers/{id}": {
            "get": _operation(
                "A transfer the caller asked for.",
                {**_ok(200, "The transfer.", "Transfer"), **_errors(401, 404)},
                parameters=[
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
            )
        },
        "/api/v1/audit": {
            "get": _operation(
                "This bank's totals, read in one consistent snapshot.",
                _ok(200, "The totals.", "Audit"),
                secured=False,
            )
        },
        "/api/v1/consortium/audit": {
            "get": _operation(
                "Every bank's totals and the consortium's: total = balance + held + money in "
                "flight between banks, expected = deposits minus withdrawals ever made.",
                _ok(200, "The consortium's totals.", "ConsortiumAudit"),
                secured=False,
            )
        },
        "/api/v1/openapi.json": {
            "get": _operation(
                "This document.",
                {"200": {"description": "OpenAPI 3.", "content": _json({"type": "object"})}},
                secured=False,
            )
        },
    }
    for path_item in paths.values():
        for operation in path_item.values():
            # Every route refuses an unknown or repeated query parameter (bank.api's
            # middleware), and may find itself, or a bank it needs, unavailable.
            operation["responses"] = {**_errors(400), **operation["responses"], **_errors(503)}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"{bank_name} ({bank_id}): client API",
            "version": "1",
            "description": "Money is integer cents in fields ending in _cents. Every error is "
            '{"error": {"code", "message"}}; bad input is a 4xx and changes nothing. A write '
            "with an Idempotency-Key is applied at most once; a retry gets the first answer. "
            "Keys are kept per customer by the bank that received the request, except that a "
            "deposit into or a withdrawal from an account at another bank has that bank keep "
            "its key, and a transfer with a key is coordinated by its first source's bank: each "
            "is the same request when retried through any bank. A key is one request's, whatever "
            "the write: used for another, it is refused (422 idempotency_key_reused).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "parameters": {
                "IdempotencyKey": {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": IDEMPOTENCY_KEY_CHARS_MAX,
                        "pattern": "^[!-~]+$",
                    },
                }
            },
        },
    }
