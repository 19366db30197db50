"""The client API: the routes a customer's terminal, the web page and scenario scripts call.

Place in the design: HTTP request -> this module -> the ledger (local operations) or, for
anything that involves another bank of the ring, :func:`cross_bank` (the one place where the
cross-bank transfer work plugs in). Every route of CONTRACT.md's client API that is local to one
bank is here; :func:`install` registers them, the error and logging middleware, and a
``cleanup_ctx`` that opens the ledger at ``app[CONFIG].data_dir / f"{app[BANK_ID]}.sqlite3"``
and puts it at ``app[LEDGER]``.

Request checking happens here, before anything reaches the ledger: bad input is a 4xx in the
contract's error shape (``bank.errors``) and changes nothing. Floats, booleans and strings are
refused where an integer is expected; every body, amount, name and list has a named bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import json
import math
import os
import random
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Literal, cast

import attrs
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from bank import auth
from bank.documents import document_kind
from bank.errors import STATUS_BY_CODE, ApiError, error_body, error_response
from bank.keys import BANK_ID, CONFIG, LEDGER, RING, TRANSFERS
from bank.ledger import (
    AMOUNT_CENTS_MAX,
    STATEMENT_LINES_MAX,
    STATEMENT_POSITION_MAX,
    AccountKind,
    Answer,
    Idempotency,
    Ledger,
    LedgerClosed,
    Transfer,
    request_fingerprint,
    transfer_id_bank,
)
from bank.transfers.protocol import TRANSFER_ID_CHARS_MAX
from tokenring import jsonio
from tokenring.logs import Throttle
from tokenring.signing import BODY_READ_TIMEOUT_S as SIGNED_BODY_READ_TIMEOUT_S
from tokenring.signing import body_read_deadline

__all__ = [
    "ACCOUNT_NUMBER_MAX",
    "BODY_BYTES_MAX",
    "BODY_READ_TIMEOUT_S",
    "IDEMPOTENCY_KEY_CHARS_MAX",
    "JOINT_OWNERS_MAX",
    "NAME_CHARS_MAX",
    "STATEMENT_PAGE_LINES",
    "TRANSFER_ID_CHARS_MAX",
    "TRANSFER_SOURCES_MAX",
    "TRANSFER_WAIT_MS_MAX",
    "answer_response",
    "consortium_accounts",
    "cross_bank",
    "directory",
    "idempotency_of",
    "install",
    "local_transfer",
    "statement",
    "transfer_answer",
    "transfer_is_local",
    "transfer_request",
    "wait_ms",
]

log = structlog.get_logger("bank.api")

BODY_BYTES_MAX = 64 * 1024
"""The largest request body accepted; a larger one is answered 413 ``payload_too_large``."""
NAME_CHARS_MAX = 100
"""The longest customer name."""
JOINT_OWNERS_MAX = 8
"""The most owners a joint account may have."""
TRANSFER_SOURCES_MAX = 16
"""The most source accounts one transfer may name."""
ACCOUNT_NUMBER_MAX = 2**53 - 1
"""Account numbers are positive integers that JSON carries exactly."""
TOKEN_CHARS_MAX = 256
"""A bearer token longer than this is not one of ours; refused without a lookup."""
IDEMPOTENCY_KEY_CHARS_MAX = 255
"""Longest ``Idempotency-Key`` header."""
STORAGE_RETRY_AFTER_S = 5
"""The ``Retry-After`` of a write refused because the bank's storage fails (a full disk)."""
STORAGE_FAILURE_LOG_INTERVAL_S = 10.0
"""How often such failures are logged (with how many were left out meanwhile)."""
REQUEST_ID_CHARS_MAX = 100
"""Longest ``X-Request-Id`` taken from a client; longer ones are replaced."""
HASH_WORKERS_MAX = 2
"""Threads hashing passwords (scrypt is deliberately slow; it must not stall the loop)."""
HASHES_PENDING_MAX = 64
"""Password hashes queued or running; beyond it sign-ups and logins answer 503 at once."""
READ_CHUNK_BYTES = 16 * 1024
BODY_READ_TIMEOUT_S = SIGNED_BODY_READ_TIMEOUT_S
"""The longest a request's body may take to arrive once its headers have (the signed routes'
bound, ``tokenring.signing.BODY_READ_TIMEOUT_S``): a client that
trickles it (or stops sending) is answered 400 and its connection closed, rather than holding
a connection, and one of the process's file descriptors, for as long as it likes."""
TRANSFER_WAIT_MS_MAX = 30_000
"""The longest ``?wait_ms=`` a transfer request may wait for its outcome (the cross-bank code
in ``bank.interbank`` waits; a local transfer is decided at once and ignores it)."""
STATEMENT_PAGE_LINES = 20
"""Lines in a statement page when the request names no ``limit`` (at most
:data:`bank.ledger.STATEMENT_LINES_MAX`)."""

_PRINTABLE_ASCII = re.compile(r"^[\x21-\x7e]+$")


@attrs.define
class ApiState:
    """What the client API keeps per application besides the ledger."""

    throttle: auth.LoginThrottle
    """Refuses logins after repeated failures."""
    lookups: auth.RateLimit
    """Bounds each customer's payee look-ups (``GET /api/v1/directory``)."""
    hashing: concurrent.futures.ThreadPoolExecutor
    """Where password hashes are computed."""
    openapi: dict[str, Any]
    """The OpenAPI document, built once."""
    hashes_pending: int = 0
    """Password hashes queued or running (bounded by HASHES_PENDING_MAX)."""
    storage_failures: Throttle = attrs.Factory(lambda: Throttle(STORAGE_FAILURE_LOG_INTERVAL_S))
    """When a write refused by failing storage was last logged (once per interval)."""


API_STATE = web.AppKey("client_api_state", ApiState)


def install(app: web.Application) -> None:
    """Register the client API's routes, middleware and ledger lifecycle on ``app``."""
    app.middlewares.append(_api_middleware)
    # First of all that starts: the ledger takes its database's lock (Ledger.open) before the
    # ring member speaks for the bank, so a second process of a running bank does neither.
    app.cleanup_ctx.insert(0, _lifecycle)
    routes = [
        web.post("/api/v1/customers", _create_customer),
        web.post("/api/v1/sessions", _create_session),
        web.delete("/api/v1/sessions", _delete_session),
        web.post("/api/v1/accounts", _create_account),
        web.get("/api/v1/accounts", _list_accounts),
        web.get("/api/v1/accounts/{bank}/{account}/statement", _statement),
        web.get("/api/v1/directory", _directory),
        web.post("/api/v1/deposits", _deposit),
        web.post("/api/v1/withdrawals", _withdraw),
        web.post("/api/v1/transfers", _create_transfer),
        web.get("/api/v1/transfers/{id}", _get_transfer),
        web.get("/api/v1/audit", _audit),
        web.get("/api/v1/openapi.json", _openapi),
    ]
    app.router.add_routes(routes)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    from bank import openapi  # imports this module's limits; imported late to avoid a cycle

    config = app[CONFIG]
    bank_id = app[BANK_ID]
    ledger = await Ledger.open(config.data_dir / f"{bank_id}.sqlite3", bank_id=bank_id)
    app[LEDGER] = ledger  # type: ignore[misc]  # LEDGER is AppKey[Any] (bank.keys); nothing to infer
    hashing = concurrent.futures.ThreadPoolExecutor(
        max_workers=HASH_WORKERS_MAX, thread_name_prefix=f"password-hash-{bank_id}"
    )
    app[API_STATE] = ApiState(
        throttle=auth.LoginThrottle(),
        lookups=auth.RateLimit(),
        hashing=hashing,
        openapi=openapi.document(bank_id=bank_id, bank_name=config.bank(bank_id).name),
    )
    try:
        yield
    finally:
        await ledger.close()
        hashing.shutdown(wait=True)


# ---------------------------------------------------------------------------------------------
# Middleware: the error shape and one canonical log line per request
# ---------------------------------------------------------------------------------------------

_CODE_BY_HTTP_STATUS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_attempts",
}


# The query parameters each route takes; any other is refused, as unknown body fields are.
_QUERY_PARAMETERS: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/api/v1/accounts"): frozenset({"scope"}),
    ("GET", "/api/v1/directory"): frozenset({"document"}),
    ("GET", "/api/v1/accounts/{bank}/{account}/statement"): frozenset({"limit", "before"}),
    # Cross-bank transfers may wait for their outcome (TRANSFER_WAIT_MS_MAX, read by wait_ms()).
    ("POST", "/api/v1/transfers"): frozenset({"wait_ms"}),
}


# Request ids only tell log lines apart, they guard nothing: a generator seeded once from the
# system's randomness gives the same 16 hex characters without a system call per request.
_request_ids = random.Random(os.urandom(16))


@web.middleware
async def _api_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if not request.path.startswith("/api/"):
        try:
            return await handler(request)
        except web.HTTPException as error:
            # The routes outside the API (the terminal's files, /healthz, /metrics, the
            # ring's) answer errors in the same JSON shape: an unknown path or method too.
            if error.status < 400 or error.content_type == "application/json":
                raise
            return _http_error(error)[1]
    given = request.headers.get("X-Request-Id", "")
    request_id = (
        given
        if given and len(given) <= REQUEST_ID_CHARS_MAX and _PRINTABLE_ASCII.match(given)
        else f"{_request_ids.getrandbits(64):016x}"
    )
    started = time.perf_counter()
    code: str | None = None
    # Bound for everything logged below this request, and reset when it ends (aiohttp runs
    # each request in a task of its own, on a copy of the context).
    tokens = structlog.contextvars.bind_contextvars(request_id=request_id, bank=request.app[BANK_ID])
    try:
        try:
            resource = request.match_info.route.resource
            route = (request.method, resource.canonical if resource is not None else "")
            unknown = set(request.query) - _QUERY_PARAMETERS.get(route, frozenset())
            if unknown and resource is not None:
                raise ApiError("invalid_request", f"unknown query parameter {sorted(unknown)[0]!r}")
            if len(request.query) > len(set(request.query)):
                repeated = sorted(name for name in request.query if len(request.query.getall(name)) > 1)
                raise ApiError("invalid_request", f"query parameter {repeated[0]!r} is given more than once")
            response = await handler(request)
        except ApiError as error:
            code = error.refusal.code
            response = error_response(code, error.refusal.message, headers=error.headers)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            code, response = _http_error(error)
        except LedgerClosed:
            code = "unavailable"
            response = error_response(code, "the bank is shutting down")
        except Exception as error:
            if storage_failing(error):
                # Every write fails alike until space is freed: a 503 to retry, and a line
                # per interval (not a trace per request).
                code = "unavailable"
                response = error_response(
                    code,
                    "the bank cannot write now (its storage is full or failing); nothing was written: retry later",
                    headers={"Retry-After": str(STORAGE_RETRY_AFTER_S)},
                )
                left_out = request.app[API_STATE].storage_failures.due()
                if left_out is not None:
                    log.error("storage_failing", error=str(error), like_it_since_last=left_out)
            else:
                code = "internal_error"
                log.exception("request_failed", method=request.method, path=request.path)
                response = error_response(code, "internal error")
        if response.headers.get("Connection") == "close":
            # Not only said: the connection ends after this answer (a body left unread, as
            # when it did not arrive in time, is not waited for).
            response.force_close()
        response.headers["X-Request-Id"] = request_id
        if code is None and response.status >= 400 and isinstance(response, web.Response):
            code = _error_code(response)
        # request_id and bank are bound for everything logged below this request; the
        # canonical line names them itself too, so it stands alone in any log pipeline.
        log.info(
            "request",
            request_id=request_id,
            bank=request.app[BANK_ID],
            method=request.method,
            path=request.path,
            status=response.status,
            code=code,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
    return response


def _error_code(response: web.Response) -> str | None:
    try:
        body = jsonio.loads(response.body) if isinstance(response.body, bytes) else None
        return str(body["error"]["code"]) if body else None
    except (ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------
# Request reading and checking
# ---------------------------------------------------------------------------------------------


class _FloatRefused(ValueError):
    pass


# SQLite's primary result codes for a storage that cannot take a write (the extended codes
# carry them in their low byte): full, an I/O error, a file it cannot open.
_STORAGE_CODES = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN})


def storage_failing(error: BaseException) -> bool:
    """Whether ``error`` is the database's storage failing (a full disk, an I/O error), which
    no request can help and every write meets alike, not a bug."""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, sqlite3.OperationalError) and code is not None and code & 0xFF in _STORAGE_CODES


def _http_error(error: web.HTTPException) -> tuple[str, web.Response]:
    """aiohttp's own refusal (an unknown path or method, a body too large) in the JSON shape
    of every error, keeping the ``Allow`` header of a 405: its code, and the response."""
    code = _CODE_BY_HTTP_STATUS.get(error.status, "internal_error")
    headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
    return code, jsonio.response(error_body(code, error.reason), status=error.status, headers=headers)


def _refuse_float(text: str) -> Any:
    raise _FloatRefused(text)


async def _read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, at most BODY_BYTES_MAX bytes, with no floats in it."""
    if request.content_length is not None and request.content_length > BODY_BYTES_MAX:
        raise ApiError("payload_too_large", f"the body is larger than {BODY_BYTES_MAX} bytes")
    data = bytearray()
    try:
        async with body_read_deadline(request, BODY_READ_TIMEOUT_S):
            if request.content_length is not None:
                # Its length is known and within the bound: read it whole.
                data += await request.read()
            else:
                async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
                    data += chunk
                    if len(data) > BODY_BYTES_MAX:
                        raise ApiError(
                            "payload_too_large", f"the body is larger than {BODY_BYTES_MAX} bytes"
                        )
    except TimeoutError:
        request.content.feed_eof()
        raise ApiError(
            "invalid_request",
            f"the body did not arrive within {BODY_READ_TIMEOUT_S:.0f} s",
            headers={"Connection": "close"},
        ) from None
    except RequestPayloadError as error:  # a Content-Encoding its bytes are not in
        # Nothing more of this body can be read, nor of the connection after it: it ends
        # with this answer (and the server does not try to read the rest of the body).
        request.content.feed_eof()
        reason = str(error).splitlines()[-1].strip()
        raise ApiError("invalid_request", f"the body could not be read: {reason}"[:200], headers={"Connection": "close"}) from None
    try:
        value = jsonio.loads_strict_fallback(
            data, parse_float=_refuse_float, parse_constant=_refuse_float
        )
    except _FloatRefused as error:
        raise ApiError(
            "invalid_request", f"numbers must be whole (money is in cents): {error} is not"
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError("invalid_request", "the body is not JSON (UTF-8)") from None
    if not isinstance(value, dict):
        raise ApiError("invalid_request", "the body must be a JSON object")
    if data.count(b":") > _members(value):
        # More separators than names read: a name given twice (the last one would win
        # unseen: an amount must not be ambiguous), or only colons inside strings.
        try:
            json.loads(data, object_pairs_hook=_refuse_repeats)
        except RecursionError:
            raise ApiError("invalid_request", "the body is nested too deeply") from None
    return value


def _members(value: Any) -> int:
    """How many names all the objects in a parsed JSON value have."""
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            count += len(item)
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
    return count


def _refuse_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) < len(names):
        repeated = sorted(name for name in set(names) if names.count(name) > 1)
        raise ApiError("invalid_request", f"the body names {repeated[0]!r} more than once")
    return dict(pairs)


def _fields(body: dict[str, Any], required: tuple[str, ...], where: str = "body") -> None:
    unknown = sorted(set(body) - set(required))
    if unknown:
        raise ApiError("invalid_request", f"{where}: unknown field {unknown[0]!r}")
    for name in required:
        if name not in body:
            raise ApiError("invalid_request", f"{where}: missing field {name!r}")


def _int(value: Any, name: str, low: int, high: int) -> int:
    # bool is an int subclass in Python; true is not an amount.
    if type(value) is not int:
        raise ApiError("invalid_request", f"{name} must be an integer")
    if not low <= value <= high:
        raise ApiError("invalid_request", f"{name} must be between {low} and {high}")
    return value


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ApiError("invalid_request", f"{name} must be a string")
    try:
        # A JSON string may hold a lone surrogate ("\ud800"), which no UTF-8 text (a
        # password to hash, a row to store) can: refused here, for every string field.
        value.encode()
    except UnicodeEncodeError:
        raise ApiError("invalid_request", f"{name} must be valid Unicode text (no lone surrogates)") from None
    return value


def _document(value: Any, name: str = "document") -> str:
    text = _str(value, name)
    if document_kind(text) is None:
        raise ApiError(
            "invalid_document",
            f"{name} must be a valid CPF (11 digits) or CNPJ (14 digits), digits only, "
            "no dots, dashes or slashes",
        )
    return text


def _amount(value: Any, name: str = "amount_cents") -> int:
    return _int(value, name, 1, AMOUNT_CENTS_MAX)


def _account_number(value: Any, name: str = "account") -> int:
    return _int(value, name, 1, ACCOUNT_NUMBER_MAX)


def _bank(request: web.Request, value: Any, name: str = "bank") -> str:
    """The bank id named; 422 ``unknown_bank`` when it is not a member of the ring."""
    bank = _str(value, name)
    if bank not in request.app[CONFIG].member_ids:
        raise ApiError("unknown_bank", f"{name}: no bank {bank!r} in the ring")
    return bank


def idempotency_of(request: web.Request, scope: str, body: Any) -> Idempotency | None:
    """The request's ``Idempotency-Key`` under ``scope`` (None without one); a malformed key
    is refused (400)."""
    keys = request.headers.getall("Idempotency-Key", ())
    if not keys:
        return None
    if len(keys) > 1:
        raise ApiError("invalid_request", "send one Idempotency-Key header, not several")
    key = keys[0]
    if not 0 < len(key) <= IDEMPOTENCY_KEY_CHARS_MAX or not _PRINTABLE_ASCII.match(key):
        raise ApiError(
            "invalid_request",
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_CHARS_MAX} printable ASCII characters",
        )
    return Idempotency(
        scope=scope, key=key, fingerprint=request_fingerprint(request.method, request.path, body)
    )


async def _caller(request: web.Request) -> str:
    """The document of the customer whose live session token the request carries."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="consortium"'}
    # Tokens are URL-safe base64; a header with other bytes (aiohttp hands undecodable ones
    # on as lone surrogates, which cannot even be hashed) names no session.
    if scheme.lower() != "bearer" or not token or len(token) > TOKEN_CHARS_MAX or not token.isascii():
        raise ApiError("unauthorized", "send Authorization: Bearer <token>", headers=challenge)
    document = await _ledger(request).session_document(auth.token_hash(token.strip()))
    if document is None:
        raise ApiError("unauthorized", "the session is unknown or expired", headers=challenge)
    structlog.contextvars.bind_contextvars(customer=document)
    return document


def _ledger(request: web.Request) -> Ledger:
    return cast(Ledger, request.app[LEDGER])


def answer_response(answer: Answer) -> web.Response:
    """A ledger's answer as the client's response (``Idempotent-Replayed`` on a replay)."""
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return jsonio.response(answer.body, status=answer.status, headers=headers)


# ---------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------


async def _create_customer(request: web.Request) -> web.Response:
    body = await _read_json(request)
    _fields(body, ("document", "name", "password"))
    document = _document(body["document"])
    name = _str(body["name"], "name").strip()
    if not 0 < len(name) <= NAME_CHARS_MAX or not name.isprintable():
        raise ApiError(
            "invalid_request", f"name must be 1 to {NAME_CHARS_MAX} printable characters"
        )
    password = _str(body["password"], "password")
    if not auth.PASSWORD_CHARS_MIN <= len(password) <= auth.PASSWORD_CHARS_MAX:
        raise ApiError(
            "invalid_request",
            f"password must be {auth.PASSWORD_CHARS_MIN} to {auth.PASSWORD_CHARS_MAX} characters",
        )
    # Sign-up keys are scoped by the document being signed up: there is no caller yet. The
    # fingerprint, a fast hash kept for good, leaves the password out (over the password it
    # would let a copy of the database test guesses at SHA-256's speed, not scrypt's); a
    # retry's password is checked against the customer's scrypt hash instead.
    idempotency = idempotency_of(request, f"signup:{document}", {k: v for k, v in body.items() if k != "password"})
    if RING in request.app and await _ledger(request).customer(document) is None:
        # Accounts are found and spent by document at every bank of the ring: a document
        # another bank knows is signed up here only by its customer, who proves it with
        # the password used there (else anyone could sign up here as them and reach,
        # from here, the accounts they keep there).
        await _same_customer_elsewhere(request, document, password)
    password_hash = await _in_hashing(request, auth.hash_password, password)
    answer = await _ledger(request).create_customer(
        document, name, password_hash, idempotency=idempotency
    )
    if answer.replayed and answer.status == 201:
        customer = await _ledger(request).customer(document)
        if customer is None or not await _in_hashing(request, auth.verify_password, password, customer.password_hash):
            raise ApiError("idempotency_key_reused", "this Idempotency-Key was used for a different request")
    return answer_response(answer)


async def _same_customer_elsewhere(request: web.Request, document: str, password: str) -> None:
    """Refuse to sign ``document`` up here unless ``password`` is its password at one of the
    other banks that know it (none knowing it: anyone may). Every other bank must answer
    (503 otherwise: one that did not could be keeping the customer's accounts). A wrong
    password counts as a failed login for the document (the same brake, 429)."""
    from bank import interbank  # imported late: it imports us

    hashes, unavailable = await interbank.password_hashes_elsewhere(request, document)
    if unavailable:
        raise ApiError(
            "unavailable",
            f"banks did not answer: {', '.join(unavailable)}; a document is signed up only"
            " once every bank of the ring can say whether it keeps that customer: retry later",
            headers={"Retry-After": "5"},
        )
    if not hashes:
        return
    with _checking_login(request, document) as throttle:
        for stored in hashes:
            if await _in_hashing(request, auth.verify_password, password, stored):
                throttle.succeeded(document)
                return
        throttle.failed(document)
    raise ApiError(
        "customer_exists",
        "this document is a customer of another bank of the ring: sign up here with the"
        " password you use there",
    )


@contextlib.contextmanager
def _checking_login(request: web.Request, document: str) -> Iterator[auth.LoginThrottle]:
    """A password check of ``document`` counted as under way while the block runs (the login
    brake: 429 when it is locked out, or as many checks are under way as failures allowed).
    Entered before the block's first await: guesses sent at once see each other."""
    throttle = request.app[API_STATE].throttle
    wait_s = throttle.begin(document)
    if wait_s > 0:
        raise ApiError(
            "too_many_attempts",
            "too many failed logins for this document; try again later",
            headers={"Retry-After": str(max(1, round(wait_s)))},
        )
    try:
        yield throttle
    finally:
        throttle.end(document)


async def _create_session(request: web.Request) -> web.Response:
    body = await _read_json(request)
    _fields(body, ("document", "password"))
    document = _document(body["document"])
    password = _str(body["password"], "password")
    if len(password) > auth.PASSWORD_CHARS_MAX:
        raise ApiError("invalid_request", f"password is over {auth.PASSWORD_CHARS_MAX} characters")
    with _checking_login(request, document) as throttle:
        customer = await _ledger(request).customer(document)
        stored = customer.password_hash if customer is not None else auth.DUMMY_HASH
        matches = await _in_hashing(request, auth.verify_password, password, stored)
        if customer is None or not matches:
            throttle.failed(document)
            raise ApiError(
                "unauthorized",
                "the document or the password is wrong",
                headers={"WWW-Authenticate": 'Bearer realm="consortium"'},
            )
        throttle.succeeded(document)
    token = auth.new_token()
    ledger = _ledger(request)
    expires_at_ms = ledger.now_ms() + auth.SESSION_TTL_S * 1000
    await ledger.create_session(auth.token_hash(token), document, expires_at_ms)
    structlog.contextvars.bind_contextvars(customer=document)
    expires_at = datetime.datetime.fromtimestamp(expires_at_ms / 1000, datetime.UTC)
    return jsonio.response(
        {"token": token, "expires_at": expires_at.isoformat().replace("+00:00", "Z")},
        status=201,
    )


async def _delete_session(request: web.Request) -> web.Response:
    await _caller(request)
    token = request.headers["Authorization"].partition(" ")[2].strip()
    await _ledger(request).delete_session(auth.token_hash(token))
    return web.Response(status=204)


async def _create_account(request: web.Request) -> web.Response:
    caller = await _caller(request)
    body = await _read_json(request)
    _fields(body, ("kind", "owners"))
    kind = _str(body["kind"], "kind")
    if kind not in ("individual", "joint", "corporate"):
        raise ApiError("invalid_request", "kind must be individual, joint or corporate")
    raw_owners = body["owners"]
    if not isinstance(raw_owners, list) or not 1 <= len(raw_owners) <= JOINT_OWNERS_MAX:
        raise ApiError(
            "invalid_request", f"owners must be a list of 1 to {JOINT_OWNERS_MAX} documents"
        )
    owners = [_document(owner, "owners[]") for owner in raw_owners]
    if len(set(owners)) != len(owners):
        raise ApiError("invalid_request", "owners must be distinct")
    kinds = {document_kind(owner) for owner in owners}
    if kind == "individual" and not (len(owners) == 1 and kinds == {"cpf"}):
        raise ApiError("invalid_request", "an individual account has exactly one CPF owner")
    if kind == "joint" and not (len(owners) >= 2 and kinds == {"cpf"}):
        raise ApiError("invalid_request", "a joint account has two or more CPF owners")
    if kind == "corporate" and not (len(owners) == 1 and kinds == {"cnpj"}):
        raise ApiError("invalid_request", "a corporate account has exactly one CNPJ owner")
    if caller not in owners:
        raise ApiError("forbidden", "you must be one of the account's owners")
    idempotency = idempotency_of(request, caller, body)
    answer = await _ledger(request).create_account(
        cast(AccountKind, kind), owners, idempotency=idempotency
    )
    return answer_response(answer)


async def _list_accounts(request: web.Request) -> web.Response:
    caller = await _caller(request)
    scope = request.query.get("scope", "local")
    if scope not in ("local", "consortium"):
        raise ApiError("invalid_request", "scope must be local or consortium")
    local = await _local_accounts(request, caller)
    if scope == "consortium":
        return jsonio.response(await consortium_accounts(request, caller, local))
    return jsonio.response(local)


async def _local_accounts(request: web.Request, caller: str) -> dict[str, Any]:
    bank_id = request.app[BANK_ID]
    accounts = await _ledger(request).accounts_of(caller)
    return {
        "bank": bank_id,
        "name": request.app[CONFIG].bank(bank_id).name,
        "accounts": [account.to_json() for account in accounts],
    }


async def _statement(request: web.Request) -> web.Response:
    """``GET /api/v1/accounts/{bank}/{account}/statement``: a page of the account's journal,
    newest first, for one of its owners, from any bank of the ring (another bank's is asked
    of it). An account the caller does not own is answered like a missing one."""
    caller = await _caller(request)
    bank = _bank(request, request.match_info["bank"])
    account = _digits(request.match_info["account"], "account", 1, ACCOUNT_NUMBER_MAX)
    limit = _query_int(request, "limit", 1, STATEMENT_LINES_MAX, STATEMENT_PAGE_LINES)
    before = _query_int(request, "before", 1, STATEMENT_POSITION_MAX, 0) or None
    if bank != request.app[BANK_ID]:
        if RING not in request.app:
            raise ApiError("not_implemented", "another bank's statement needs the ring to run")
        from bank import interbank  # imported late: it imports us

        return jsonio.response(await interbank.statement_elsewhere(request, caller, bank, account, before, limit))
    return jsonio.response(await statement(request.app, caller, account, before, limit))


async def statement(
    app: web.Application, caller: str, account: int, before: int | None, limit: int
) -> dict[str, Any]:
    """The statement page of an account here, for ``caller``: asked here, or by another bank
    for its client (``bank.interbank``); 404 ``unknown_account`` unless ``caller`` owns it."""
    found = await cast(Ledger, app[LEDGER]).statement(account, before=before, limit=limit)
    if found is None or caller not in found.account.owners:
        raise ApiError("unknown_account", f"no account {account} of yours at this bank")
    return found.to_json()


async def _directory(request: web.Request) -> web.Response:
    """``GET /api/v1/directory?document=``: where a payee can be paid (see :func:`directory`)."""
    caller = await _caller(request)
    if "document" not in request.query:
        raise ApiError("invalid_request", "send ?document=<CPF or CNPJ>")
    document = _document(request.query["document"])
    # Counted once the request is valid: a typo in a document costs the customer nothing.
    wait_s = request.app[API_STATE].lookups.take(caller)
    if wait_s > 0:
        raise ApiError(
            "too_many_attempts",
            f"at most {auth.DIRECTORY_LOOKUPS_MAX} payee look-ups per"
            f" {auth.DIRECTORY_WINDOW_S:.0f} s; try again later",
            headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
        )
    return jsonio.response(await directory(request, document))


async def _deposit(request: web.Request) -> web.Response:
    return await _cash(request, "deposit")


async def _withdraw(request: web.Request) -> web.Response:
    return await _cash(request, "withdrawal")


async def _cash(request: web.Request, operation: Literal["deposit", "withdrawal"]) -> web.Response:
    caller = await _caller(request)
    body = await _read_json(request)
    _fields(body, ("bank", "account", "amount_cents"))
    account = _account_number(body["account"])
    amount_cents = _amount(body["amount_cents"])
    bank = _bank(request, body["bank"])
    if bank != request.app[BANK_ID]:
        return await cross_bank(request, operation, caller, body)
    idempotency = idempotency_of(request, caller, body)
    ledger = _ledger(request)
    if operation == "deposit":
        answer = await ledger.deposit(
            account, amount_cents, document=caller, idempotency=idempotency
        )
    else:
        answer = await ledger.withdraw(
            account, amount_cents, document=caller, idempotency=idempotency
        )
        if answer.replayed and idempotency is not None and "withdrawal_at" in answer.body:
            # The key was taken first by a withdrawal from this account paid at a bank (this
            # one or another) in cash: that one's answer, from where it was paid.
            from bank import interbank  # imported late: it imports us

            return await interbank.replayed_local_withdrawal(
                request, account, amount_cents, caller, idempotency, answer
            )
    return answer_response(answer)


def _digits(raw: str, name: str, low: int, high: int) -> int:
    """A number in a URL: ASCII digits, from ``low`` to ``high`` (one too long for ``int()``
    is refused like any other), else 400."""
    if not (raw.isascii() and raw.isdigit() and len(raw) <= len(str(high))) or not low <= int(raw) <= high:
        raise ApiError("invalid_request", f"{name} must be an integer from {low} to {high}")
    return int(raw)


def _query_int(request: web.Request, name: str, low: int, high: int, default: int) -> int:
    """The query parameter ``name`` (:func:`_digits`), ``default`` when absent."""
    raw = request.query.get(name)
    return default if raw is None else _digits(raw, name, low, high)


def wait_ms(request: web.Request) -> int:
    """The transfer request's ``?wait_ms=`` (0 when absent), at most :data:`TRANSFER_WAIT_MS_MAX`."""
    return _query_int(request, "wait_ms", 0, TRANSFER_WAIT_MS_MAX, 0)


async def _create_transfer(request: web.Request) -> web.Response:
    caller = await _caller(request)
    wait_ms(request)  # refused before the body is read
    body = await _read_json(request)
    sources, destination_bank, destination_account = transfer_request(request, body)
    if not transfer_is_local(request, sources, destination_bank):
        return await cross_bank(request, "transfer", caller, body)
    idempotency = idempotency_of(request, caller, body)
    return answer_response(await local_transfer(request, caller, body, sources, destination_account, idempotency))


def transfer_is_local(request: web.Request, sources: list[tuple[str, int, int]], destination_bank: str) -> bool:
    """Whether every leg of a checked transfer (:func:`transfer_request`) is at this bank."""
    here = request.app[BANK_ID]
    return destination_bank == here and all(bank == here for bank, _, _ in sources)


async def local_transfer(
    request: web.Request,
    caller: str,
    body: dict[str, Any],
    sources: list[tuple[str, int, int]],
    destination_account: int,
    idempotency: Idempotency | None,
) -> Answer:
    """A transfer whose every leg is here, in one ledger write (no token): asked here, or
    forwarded by another bank (``bank.interbank``)."""
    return await _ledger(request).transfer_local(
        [(account, amount) for _, account, amount in sources],
        destination_account,
        document=caller,
        request={"sources": body["sources"], "destination": body["destination"]},
        idempotency=idempotency,
    )


def transfer_request(
    request: web.Request, body: dict[str, Any]
) -> tuple[list[tuple[str, int, int]], str, int]:
    """A transfer's body checked (``ApiError`` on the first problem): its sources as
    ``(bank, account, amount_cents)``, and its destination's bank and account. Also what a
    bank checks of a transfer another bank forwards to it (``bank.interbank``)."""
    _fields(body, ("sources", "destination"))
    raw_sources = body["sources"]
    if not isinstance(raw_sources, list) or not 1 <= len(raw_sources) <= TRANSFER_SOURCES_MAX:
        raise ApiError(
            "invalid_request", f"sources must be a list of 1 to {TRANSFER_SOURCES_MAX} sources"
        )
    sources: list[tuple[str, int, int]] = []
    for index, raw in enumerate(raw_sources):
        where = f"sources[{index}]"
        if not isinstance(raw, dict):
            raise ApiError("invalid_request", f"{where} must be an object")
        _fields(raw, ("bank", "account", "amount_cents"), where)
        account = _account_number(raw["account"], f"{where}.account")
        amount = _amount(raw["amount_cents"], f"{where}.amount_cents")
        sources.append((_str(raw["bank"], f"{where}.bank"), account, amount))
    raw_destination = body["destination"]
    if not isinstance(raw_destination, dict):
        raise ApiError("invalid_request", "destination must be an object")
    _fields(raw_destination, ("bank", "account"), "destination")
    destination_account = _account_number(raw_destination["account"], "destination.account")
    destination_bank = _str(raw_destination["bank"], "destination.bank")
    named = [(bank, account) for bank, account, _ in sources]
    if len(set(named)) != len(named):
        raise ApiError("invalid_request", "a source account appears twice")
    if (destination_bank, destination_account) in named:
        raise ApiError("invalid_request", "the destination is also a source")
    for bank, _, _ in sources:
        _bank(request, bank, "sources[].bank")
    _bank(request, destination_bank, "destination.bank")
    return sources, destination_bank, destination_account


async def _get_transfer(request: web.Request) -> web.Response:
    caller = await _caller(request)
    transfer_id = request.match_info["id"]
    if len(transfer_id) > TRANSFER_ID_CHARS_MAX:
        raise ApiError("not_found", "no such transfer")
    transfer = await _ledger(request).transfer(transfer_id)
    home = transfer_id_bank(transfer_id)
    if transfer is None and home != request.app[BANK_ID] and home in request.app[CONFIG].member_ids:
        if RING in request.app and TRANSFERS in request.app:
            # Made at another bank (a transfer with an Idempotency-Key is coordinated by its
            # first source's bank, wherever it was asked for): that bank answers.
            from bank import interbank  # imported late: it imports us

            return await interbank.transfer_elsewhere(request, caller, transfer_id, home)
    # Someone else's transfer is answered like a missing one: ids are not to be probed.
    if transfer is None or transfer.requested_by != caller:
        raise ApiError("not_found", "no such transfer")
    return jsonio.response(transfer_answer(request.app, transfer))


def transfer_answer(app: web.Application, transfer: Transfer) -> dict[str, Any]:
    """What ``GET /api/v1/transfers/{id}`` answers of a transfer recorded here."""
    answer = transfer.to_json()
    # Decided, and every bank that must hear it has applied it: each balance it touched
    # shows it now (until then a destination's credit, or a source's debit, may lag).
    service: Any = app.get(TRANSFERS)
    answer["delivered"] = transfer.status != "pending" and not (
        service is not None and service.delivering(transfer.id)
    )
    return answer


async def _audit(request: web.Request) -> web.Response:
    return jsonio.response(await _ledger(request).audit())


async def _openapi(request: web.Request) -> web.Response:
    return jsonio.response(request.app[API_STATE].openapi)


async def _in_hashing(request: web.Request, function: Callable[..., Any], *args: Any) -> Any:
    state = request.app[API_STATE]
    if state.hashes_pending >= HASHES_PENDING_MAX:
        # A flood of logins must not queue unbounded scrypt work behind it.
        raise ApiError(
            "unavailable", "too many logins in progress; retry shortly", headers={"Retry-After": "1"}
        )
    state.hashes_pending += 1
    try:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(state.hashing, function, *args)
    finally:
        state.hashes_pending -= 1


# ---------------------------------------------------------------------------------------------
# CROSS-BANK PLUG-IN POINT
#
# Everything that involves another bank of the ring comes through the two functions below and
# nowhere else. The cross-bank transfer work replaces their bodies; the routes above have
# already authenticated the caller and checked every field and bank id of the body.
# ---------------------------------------------------------------------------------------------


async def cross_bank(
    request: web.Request,
    operation: Literal["deposit", "withdrawal", "transfer"],
    caller: str,
    body: dict[str, Any],
) -> web.Response:
    """A deposit, withdrawal or transfer naming another bank of the ring.

    ``body`` is the checked request body; ``caller`` the authenticated document; the
    request's ``Idempotency-Key`` header (if any) is still on ``request``.
    Implemented by ``bank.interbank.cross_bank``.
    """
    assert operation in ("deposit", "withdrawal", "transfer")
    if RING not in request.app or TRANSFERS not in request.app:
        # The client API alone (as its tests build it) has no way to reach other banks.
        raise ApiError(
            "not_implemented", f"a {operation} involving another bank needs the ring to run"
        )
    from bank import interbank  # the cross-bank work (issue 5); imported late: it imports us

    return await interbank.cross_bank(request, operation, caller, body)


async def consortium_accounts(
    request: web.Request, caller: str, local: dict[str, Any]
) -> dict[str, Any]:
    """``GET /api/v1/accounts?scope=consortium``: the caller's accounts at every bank.

    ``local`` is this bank's entry; ``bank.interbank.consortium_accounts`` asks the others.
    """
    if RING not in request.app:
        # Without the ring no other bank can be asked: say so rather than leave them out.
        here = request.app[BANK_ID]
        others = [bank for bank in request.app[CONFIG].member_ids if bank != here]
        return {"banks": [local], "unavailable": others}
    from bank import interbank

    return await interbank.consortium_accounts(request, caller, local)


_ACCOUNT_KINDS = frozenset({"individual", "joint", "corporate"})


def _payee_accounts(bank: str, listing: Any) -> list[dict[str, Any]]:
    """The accounts of a listing (an answer shaped like ``/interbank/accounts``), each cut down
    to what names it as a destination -- ``bank``, ``account``, ``kind`` -- and nothing more;
    an entry that does not name an account of a known kind is left out."""
    accounts = listing.get("accounts") if isinstance(listing, dict) else None
    out = []
    for account in accounts if isinstance(accounts, list) else []:
        if not isinstance(account, dict):
            continue
        number, kind = account.get("account"), account.get("kind")
        if type(number) is int and kind in _ACCOUNT_KINDS:
            out.append({"bank": bank, "account": number, "kind": kind})
    return out


async def directory(request: web.Request, document: str) -> dict[str, Any]:
    """``GET /api/v1/directory``: the accounts ``document`` owns at every bank of the ring, as
    ``{"document", "banks": [{"bank", "name", "accounts": [{"bank", "account", "kind"}]}],
    "unavailable": [bank ids]}``. A bank appears in ``banks`` only where the document has an
    account; one that did not answer in time is in ``unavailable``, never silently left out.

    Balances, holds and owners are stripped HERE, at the asking bank, not at the answering
    ones: the other banks answer the same signed ``/interbank/accounts`` that the caller's own
    statement (``scope=consortium``) and cross-bank withdrawals read, so a redacted variant
    would be a new inter-bank message every member must deploy first; and the bank that
    answers the customer is the one place where a whitelist (:func:`_payee_accounts`) holds
    whatever a peer of any version sends. The full listings only travel on the signed
    bank-to-bank link, which carries them for statements already."""
    here = request.app[BANK_ID]
    config = request.app[CONFIG]
    local = {"accounts": [a.to_json() for a in await _ledger(request).accounts_of(document)]}
    if RING in request.app:
        from bank import interbank  # imported late: it imports us

        elsewhere, unavailable = await interbank.listings_elsewhere(request, document)
    else:
        # Without the ring no other bank can be asked: say so rather than leave them out.
        elsewhere, unavailable = {}, [bank for bank in config.member_ids if bank != here]
    listings = {here: local, **elsewhere}
    banks = []
    for bank in config.member_ids:
        accounts = _payee_accounts(bank, listings.get(bank))
        if accounts:
            banks.append({"bank": bank, "name": config.bank(bank).name, "accounts": accounts})
    return {"document": document, "banks": banks, "unavailable": unavailable}


assert set(_CODE_BY_HTTP_STATUS.values()) <= set(STATUS_BY_CODE)
