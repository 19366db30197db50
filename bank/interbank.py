"""The inter-bank API (signed, under ``/interbank/``) and the client API's cross-bank operations.

Place in the design: ``bank.server.build_app`` calls :func:`install` after the client API's
``install``; the ring's signature middleware has already verified every request under
``/interbank/`` (the verified sender is ``request[SIGNED_SENDER]``), and a message whose
``sender`` differs from the signed sender is refused. ``bank.api`` sends every client request
that names another bank through :func:`cross_bank` and the consortium listing through
:func:`consortium_accounts`.

Routes between banks (all ``POST`` with a JSON body unless said otherwise):

- ``/interbank/prepare``: a :class:`Prepare` -> :class:`Votes`;
- ``/interbank/decisions``: :class:`Decisions` -> :class:`Acks`;
- ``/interbank/query``: :class:`DecisionQuery` -> :class:`Decisions` (what is decided);
- ``/interbank/acks``: :class:`Acks` -> ``{}``;
- ``/interbank/accounts``: ``{"document"}`` -> that customer's accounts here;
- ``/interbank/customer``: ``{"document"}`` -> ``{"bank", "password_hash"}`` (null when the
  document is no customer here): what a sign-up of that document at another bank is
  checked against;
- ``/interbank/deposits``: a deposit forwarded with the caller's document and key ->
  ``{"status", "body", "replayed"}``, the answer to pass on;
- ``/interbank/transfers``: a transfer with an Idempotency-Key forwarded to its first
  source's bank (which coordinates it) -> ``{"status", "body", "replayed"}``, the answer to
  pass on;
- ``/interbank/transfer-status``: ``{"document", "id"}`` -> a transfer recorded here, as
  ``GET /api/v1/transfers/{id}`` shows it (404 for anyone else's);
- ``/interbank/statement``: ``{"document", "account", "before", "limit"}`` -> a page of an
  account's statement here, as ``GET /api/v1/accounts/{bank}/{account}/statement`` shows it
  (404 unless the document owns the account);
- ``/interbank/withdrawal-keys``: ``{"document", "idempotency_key", "fingerprint", "id"}`` ->
  the key taken here, for a withdrawal from an account here that the signing bank pays in
  cash as its transfer ``id``, or what the key already names (an envelope as above);
- ``/interbank/withdrawal-status``: ``{"document", "id"}`` -> a withdrawal paid here, its
  first answer for a retry at another bank (an envelope: ``{"status", "body"}``);
- ``GET /interbank/audit``: this bank's figures, from one read transaction.

Client routes added here: ``GET /api/v1/consortium/audit``. The other banks' listings behind
``GET /api/v1/accounts?scope=consortium`` and ``GET /api/v1/directory`` (``bank.api``) come from
:func:`listings_elsewhere`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal, TypeGuard, cast

import structlog
from aiohttp import web

from bank.api import (
    ACCOUNT_NUMBER_MAX,
    IDEMPOTENCY_KEY_CHARS_MAX,
    TRANSFER_ID_CHARS_MAX,
    TRANSFER_WAIT_MS_MAX,
    answer_response,
    idempotency_of,
    local_transfer,
    statement,
    transfer_answer,
    transfer_is_local,
    transfer_request,
)
from bank.api import wait_ms as api_wait_ms
from bank.errors import ApiError, error_response
from bank.keys import BANK_ID, CONFIG, LEDGER, RING, TRANSFERS
from bank.ledger import (
    AMOUNT_CENTS_MAX,
    STATEMENT_LINES_MAX,
    STATEMENT_POSITION_MAX,
    Answer,
    Idempotency,
    Ledger,
    new_transfer_id,
    transfer_id_bank,
)
from bank.transfers.book import KeyReused
from bank.transfers.protocol import (
    Acks,
    DecisionItem,
    DecisionQuery,
    Decisions,
    Leg,
    Prepare,
    PrepareItem,
    Transfer,
    Vote,
    Votes,
    decode_message,
    encode_message,
)
from bank.transfers.service import (
    Backlogged,
    TransferService,
    fence_from_json,
    fence_to_json,
)
from tokenring import jsonio
from tokenring.ring import Ring
from tokenring.signing import SIGNED_SENDER, SendFailed, SignedReply, error_body

__all__ = [
    "ACCOUNTS_TIMEOUT_S",
    "AUDIT_TIMEOUT_S",
    "DEPOSIT_TIMEOUT_S",
    "WITHDRAWAL_DELIVERY_WAIT_MS",
    "WITHDRAWAL_KEY_ATTEMPTS_MAX",
    "WITHDRAWAL_KEY_TIMEOUT_S",
    "WITHDRAWAL_WAIT_MS",
    "TRANSFER_FORWARD_TIMEOUT_S",
    "consortium_accounts",
    "cross_bank",
    "install",
    "listings_elsewhere",
    "password_hashes_elsewhere",
    "replayed_local_withdrawal",
    "replayed_withdrawal",
    "statement_elsewhere",
    "transfer_elsewhere",
]

log = structlog.get_logger("bank.interbank")

ACCOUNTS_TIMEOUT_S = 1.0
"""How long ``scope=consortium`` and the payee directory wait for each other bank before
listing it unavailable."""
AUDIT_TIMEOUT_S = 2.0
"""How long the consortium audit waits for each other bank."""
DEPOSIT_TIMEOUT_S = 5.0
"""How long a forwarded deposit waits for the account's bank."""
TRANSFER_FORWARD_TIMEOUT_S = 5.0
"""How long a transfer forwarded to its first source's bank may take beyond its ``wait_ms``."""
WITHDRAWAL_WAIT_MS = 10_000
"""How long a cross-bank withdrawal, or a retry of it at any bank, waits for its outcome before
answering 202 pending."""
WITHDRAWAL_DELIVERY_WAIT_MS = 1_000
"""How long a committed cross-bank withdrawal waits for the account's bank to apply the commit
(sent at once: bank.transfers.coordinator) before it reads the account for its answer."""
WITHDRAWAL_KEY_TIMEOUT_S = 5.0
"""How long a cross-bank withdrawal with a key waits for the account's bank to take the key."""
WITHDRAWAL_KEY_ATTEMPTS_MAX = 3
"""How many times one request takes its withdrawal's key anew after finding it named a
withdrawal that was never made (each time, another request may have taken it first)."""

_CLAIMING: web.AppKey[dict[str, asyncio.Event]] = web.AppKey("withdrawals_claiming")
"""Cross-bank withdrawals of this bank whose key the account's bank is being asked to take:
not stored yet, and not lost; each one's event is set once it is stored, or will never be
(see :func:`_withdrawal_status_here`)."""

class _NotMade(ApiError):
    """A cross-bank withdrawal aborted for a reason that is no fault of its request (a bank
    did not answer in time): no cash was paid, and its key may go to a new attempt."""


# A refusal a participant voted, as the client API's error code.
_REASON_CODES = {
    "insufficient_funds": "insufficient_funds",
    "forbidden": "forbidden",
    "unknown_account": "unknown_account",
    "balance_limit": "balance_limit",
}


def install(app: web.Application) -> None:
    """Register the inter-bank routes and the consortium audit, and start the transfer
    service with the application (after the ledger: install ``bank.api`` first). The
    service takes token visits through ``ring.holding()`` whenever transfers are pending."""
    app.router.add_routes(
        [
            web.post("/interbank/prepare", _prepare),
            web.post("/interbank/decisions", _decisions),
            web.post("/interbank/query", _query),
            web.post("/interbank/acks", _acks),
            web.post("/interbank/accounts", _accounts),
            web.post("/interbank/customer", _customer),
            web.post("/interbank/deposits", _forwarded_deposit),
            web.post("/interbank/transfers", _forwarded_transfer),
            web.post("/interbank/transfer-status", _transfer_status),
            web.post("/interbank/statement", _statement),
            web.post("/interbank/withdrawal-keys", _withdrawal_key),
            web.post("/interbank/withdrawal-status", _withdrawal_status),
            web.get("/interbank/audit", _bank_audit),
            web.get("/api/v1/consortium/audit", _consortium_audit),
        ]
    )
    app[_CLAIMING] = {}
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_release_waiters)


async def _release_waiters(app: web.Application) -> None:
    """Before the server waits for open requests to finish (at most SHUTDOWN_TIMEOUT_S):
    clients waiting for an outcome hear their transfer's id now, stored pending."""
    service = cast("TransferService | None", app.get(TRANSFERS))
    if service is not None:
        service.release_waiters()


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    ring = _ring(app)
    service = TransferService(
        app[CONFIG],
        app[BANK_ID],
        _ledger(app),
        client=lambda: ring.client,
        holding=ring.holding,
        fence_seen=ring.fence_seen,
        want=ring.want,
    )
    await service.start()
    app[TRANSFERS] = cast(Any, service)
    try:
        yield
    finally:
        await service.stop()


def _ledger(app: web.Application) -> Ledger:
    return cast(Ledger, app[LEDGER])


def _ring(app: web.Application) -> Ring:
    return app[RING]


def _service(request: web.Request) -> TransferService:
    service = cast("TransferService | None", request.app.get(TRANSFERS))
    if service is None:
        raise web.HTTPServiceUnavailable(text="transfers are starting")
    return service


async def _message(request: web.Request, kind: type) -> Any:
    try:
        message = decode_message(jsonio.loads(await request.read()), fence_from_json)
    except ValueError as error:  # json.JSONDecodeError is a ValueError too
        raise _bad(f"malformed message: {error}") from None
    if not isinstance(message, kind):
        raise _bad(f"expected {kind.__name__}")
    if message.sender != request[SIGNED_SENDER]:
        raise _forbidden("the message's sender is not its signer")
    return message


def _forbidden(message: str) -> web.HTTPForbidden:
    return web.HTTPForbidden(
        text=jsonio.dumps_text(error_body("forbidden", message)), content_type="application/json"
    )


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=jsonio.dumps_text(error_body("invalid_request", message[:200])),
        content_type="application/json",
    )


async def _json(request: web.Request) -> Any:
    try:
        return jsonio.loads(await request.read())
    except ValueError:
        raise _bad("the body is not JSON") from None


async def _json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; 400 for anything else."""
    body = await _json(request)
    if not isinstance(body, dict):
        raise _bad("expected an object")
    return body


def _reply(message: Any) -> web.Response:
    return jsonio.response(encode_message(message, fence_to_json))


async def _prepare(request: web.Request) -> web.Response:
    service = _service(request)
    prepare: Prepare = await _message(request, Prepare)
    _check_items(service.bank, prepare.sender, [*prepare.items, *prepare.decisions])
    if service.refuse_stale(prepare):
        # The ring here has seen a newer generation: the sender's token was lost and replaced.
        # Its earlier rounds' decisions that came along are final all the same: applied.
        acked: tuple[str, ...] = ()
        if prepare.decisions:
            acks = await service.handle_participant(Decisions(prepare.sender, prepare.decisions))
            assert isinstance(acks, Acks)
            acked = acks.transfer_ids
        votes = tuple(Vote(item.transfer_id, False, "stale_fence") for item in prepare.items)
        return _reply(Votes(service.bank, prepare.fence, votes, acked))
    return _reply(await service.handle_participant(prepare))


async def _decisions(request: web.Request) -> web.Response:
    service = _service(request)
    decisions: Decisions = await _message(request, Decisions)
    _check_items(service.bank, decisions.sender, decisions.items)
    return _reply(await service.handle_participant(decisions))


def _check_items(here: str, sender: str, items: Sequence[PrepareItem | DecisionItem]) -> None:
    """What a prepare or a decision may say: only a transfer's coordinator (the bank that
    made its id) prepares or decides it, and only of its legs at this bank. 403 and 400,
    and nothing is applied: one bank's word cannot release another's holds, nor decide what
    that one will decide otherwise."""
    if any(transfer_id_bank(item.transfer_id) != sender for item in items):
        raise _forbidden("only a transfer's coordinator prepares or decides it")
    if any(leg.bank != here for item in items for leg in item.legs):
        raise _bad("a prepare or a decision carries only the receiving bank's legs")


async def _query(request: web.Request) -> web.Response:
    service = _service(request)
    query: DecisionQuery = await _message(request, DecisionQuery)
    answer = await service.handle_coordinator(query)
    return _reply(answer)


async def _acks(request: web.Request) -> web.Response:
    service = _service(request)
    acks: Acks = await _message(request, Acks)
    await service.handle_coordinator(acks)
    return jsonio.response({})


async def _accounts(request: web.Request) -> web.Response:
    body = await _json(request)
    document = body.get("document") if isinstance(body, dict) else None
    if not isinstance(document, str) or not 0 < len(document) <= 14:
        raise _bad("document: expected a CPF or CNPJ")
    ledger = _ledger(request.app)
    bank_id = request.app[BANK_ID]
    accounts = await ledger.accounts_of(document)
    return jsonio.response(
        {
            "bank": bank_id,
            "name": request.app[CONFIG].bank(bank_id).name,
            "accounts": [a.to_json() for a in accounts],
        }
    )


async def _customer(request: web.Request) -> web.Response:
    """Whether ``document`` is a customer here, and its password's salted hash: what another
    bank checks a sign-up of the same document against (``bank.api``)."""
    body = await _json(request)
    document = body.get("document") if isinstance(body, dict) else None
    if not isinstance(document, str) or not 0 < len(document) <= 14:
        raise _bad("document: expected a CPF or CNPJ")
    found = await _ledger(request.app).customer(document)
    return jsonio.response({"bank": request.app[BANK_ID], "password_hash": None if found is None else found.password_hash})


async def password_hashes_elsewhere(request: web.Request, document: str) -> tuple[list[str], list[str]]:
    """The password hashes of ``document`` at the other banks that keep it as a customer
    (signed ``/interbank/customer``, each bounded by ``ACCOUNTS_TIMEOUT_S``), and the ids of
    the banks that did not answer, in ring order."""
    answers, unavailable = await _ask_others(
        request, "/interbank/customer", {"document": document}, timeout_s=ACCOUNTS_TIMEOUT_S
    )
    hashes = [a["password_hash"] for a in answers.values() if isinstance(a.get("password_hash"), str)]
    return hashes, unavailable


async def _forwarded_deposit(request: web.Request) -> web.Response:
    body = await _json_object(request)
    document, account, amount = body.get("document"), body.get("account"), body.get("amount_cents")
    key, fingerprint = body.get("idempotency_key"), body.get("fingerprint")
    if not isinstance(document, str) or not document:
        raise _bad("document")
    if not isinstance(account, int) or isinstance(account, bool) or account <= 0:
        raise _bad("account")
    if not _whole(amount, 1, AMOUNT_CENTS_MAX):
        raise _bad("amount_cents")
    idempotency = None if key is None else _forwarded_key(document, key, fingerprint)
    ledger = _ledger(request.app)
    answer = await ledger.deposit(account, amount, document=document, idempotency=idempotency)
    # In an envelope, like a forwarded transfer's: the asking bank passes on the answer and
    # whether it was a replay (its client sees ``Idempotent-Replayed`` as if asked here).
    return jsonio.response({"status": answer.status, "body": answer.body, "replayed": answer.replayed})


async def _ask(app: web.Application, bank: str, path: str, payload: Any, *, timeout_s: float, unanswered: str) -> SignedReply:
    """A signed request to ``bank`` for a client's request here: a bank that does not answer
    makes the client's answer 503, saying ``unanswered``."""
    try:
        return await _ring(app).client.post_json(app[CONFIG].bank(bank).url, path, payload, timeout_s=timeout_s)
    except SendFailed:
        raise ApiError("unavailable", unanswered) from None


def _forwarded_key(document: str, key: Any, fingerprint: Any) -> Idempotency:
    """A client's ``Idempotency-Key`` and request fingerprint, as another bank forwarded them."""
    if not isinstance(key, str) or not 0 < len(key) <= IDEMPOTENCY_KEY_CHARS_MAX or not isinstance(fingerprint, str):
        raise _bad("idempotency_key")
    return Idempotency(scope=document, key=key, fingerprint=fingerprint)


async def _bank_audit(request: web.Request) -> web.Response:
    ledger = _ledger(request.app)
    return jsonio.response(await ledger.audit())


def _figures(audit: dict[str, Any]) -> dict[str, int]:
    return {
        "balance_cents": int(audit["balance_cents"]),
        "held_cents": int(audit["held_cents"]),
        "settlement_cents": int(audit["settlement_cents"]),
        "cash_cents": int(audit["deposited_net_cents"]),
    }


async def _consortium_audit(request: web.Request) -> web.Response:
    """Every bank's figures; each from one read transaction at that bank.

    Each bank's journal sums to zero, so at any instant ``balance + held + settlement`` of one
    bank equals its cash (deposits minus withdrawals); money between a source's commit and the
    destination's credit sits in settlement accounts. The sum over banks therefore equals the
    consortium's cash whatever the instants the banks were read at: the cut need not be
    coordinated, and the audit never waits for the token.
    """
    app = request.app
    here = app[BANK_ID]
    ledger = _ledger(app)

    async def ask(bank: str) -> dict[str, Any] | None:
        if bank == here:
            return await ledger.audit()
        try:
            reply = await _ring(app).client.get_json(
                app[CONFIG].bank(bank).url, "/interbank/audit", timeout_s=AUDIT_TIMEOUT_S
            )
        except SendFailed:
            return None
        return reply.body if reply.status == 200 and isinstance(reply.body, dict) else None

    banks = list(app[CONFIG].member_ids)
    answers = await asyncio.gather(*(ask(bank) for bank in banks))
    missing = [bank for bank, answer in zip(banks, answers) if answer is None]
    if missing:
        raise ApiError("unavailable", f"banks did not answer: {', '.join(missing)}")
    figures = {bank: _figures(answer) for bank, answer in zip(banks, answers) if answer is not None}
    balance = sum(f["balance_cents"] for f in figures.values())
    held = sum(f["held_cents"] for f in figures.values())
    in_flight = sum(f["settlement_cents"] for f in figures.values())
    expected = sum(f["cash_cents"] for f in figures.values())
    return jsonio.response(
        {
            "total_cents": balance + held + in_flight,
            "balance_cents": balance,
            "held_cents": held,
            "in_flight_cents": in_flight,
            "expected_cents": expected,
            "consistent": balance + held + in_flight == expected,
            "banks": figures,
        }
    )


# ---------------------------------------------------------------------------------------------
# The client API's cross-bank operations (called from bank.api's plug-in point)
# ---------------------------------------------------------------------------------------------


async def cross_bank(
    request: web.Request,
    operation: Literal["deposit", "withdrawal", "transfer"],
    caller: str,
    body: dict[str, Any],
) -> web.Response:
    """A deposit, withdrawal or transfer naming another bank (body already checked)."""
    if operation == "deposit":
        return await _deposit_elsewhere(request, caller, body)
    if operation == "withdrawal":
        return await _withdraw_elsewhere(request, caller, body)
    return await _transfer(request, caller, body)


def _key(request: web.Request, caller: str, body: Any) -> tuple[str, str, str] | None:
    """The request's key as the transfer service takes it: ``(scope, key, fingerprint)``."""
    idempotency = idempotency_of(request, caller, body)
    return None if idempotency is None else (idempotency.scope, idempotency.key, idempotency.fingerprint)


async def _deposit_elsewhere(request: web.Request, caller: str, body: dict[str, Any]) -> web.Response:
    app = request.app
    key = _key(request, caller, body)
    payload = {
        "document": caller,
        "account": body["account"],
        "amount_cents": body["amount_cents"],
        "idempotency_key": None if key is None else key[1],
        "fingerprint": None if key is None else key[2],
    }
    reply = await _ask(
        app, body["bank"], "/interbank/deposits", payload, timeout_s=DEPOSIT_TIMEOUT_S,
        unanswered=f"bank {body['bank']} did not answer in time; the deposit may still be made there: "
        + ("retry with the same Idempotency-Key to learn its outcome" if key is not None
           else "look at the account before asking again (with an Idempotency-Key a retry is safe)"),
    )  # fmt: skip
    status, answer, replayed = _envelope(reply, f"bank {body['bank']} could not take the deposit")
    return jsonio.response(answer, status=status, headers=_REPLAYED if replayed else None)


def _service_of(request: web.Request) -> TransferService:
    service = cast("TransferService | None", request.app.get(TRANSFERS))
    if service is None:
        raise ApiError("unavailable", "transfers are starting; retry")
    return service


async def _check_local_legs(request: web.Request, caller: str, legs: list[Leg]) -> None:
    """Refuse at once what this bank can tell: its own sources must be the caller's, and
    a destination here must exist. The banks holding other sources check them themselves."""
    ledger = _ledger(request.app)
    here = request.app[BANK_ID]
    for leg in legs:
        if leg.bank != here or leg.role == "cash_out":
            continue
        owners = await ledger.owners(int(leg.account))
        if owners is None:
            raise ApiError("unknown_account", f"no account {leg.account} at bank {here}")
        if leg.role == "source" and caller not in owners:
            raise ApiError("forbidden", f"account {leg.account} is not yours")


async def _start(
    request: web.Request,
    caller: str,
    legs: list[Leg],
    key: tuple[str, str, str] | None,
    body: Any,
    *,
    record: bool = True,
    transfer_id: str | None = None,
) -> tuple[TransferService, str, bool]:
    service = _service_of(request)
    here = request.app[BANK_ID]
    total = sum(leg.amount_cents for leg in legs if leg.role == "source")
    if total > AMOUNT_CENTS_MAX:
        raise ApiError("invalid_request", f"a transfer moves at most {AMOUNT_CENTS_MAX} cents")
    await _check_local_legs(request, caller, legs)
    transfer = Transfer(transfer_id or new_transfer_id(here), here, caller, tuple(legs))
    try:
        transfer_id = await service.submit(transfer, idempotency=key, request=body, record=record)
    except KeyReused:
        raise ApiError(
            "idempotency_key_reused", "this Idempotency-Key was used for a different request"
        ) from None
    except Backlogged as error:
        raise ApiError("unavailable", str(error)) from None
    return service, transfer_id, transfer_id != transfer.id


async def _outcome(
    request: web.Request, service: TransferService, transfer_id: str, wait_ms: int, *, fresh: bool
) -> dict[str, Any]:
    """The transfer's status, after waiting up to ``wait_ms`` for its decision.

    ``fresh``: the transfer was submitted by this request, so it is pending and its decision
    can only come from this process; no read of the record is needed. It may not be stored
    yet (submitted with ``record=False``): it is, before its id is answered without its
    outcome."""
    ledger = _ledger(request.app)
    if fresh:
        # Watched before any await: the decision cannot slip in between.
        future = service.watch(transfer_id)
        try:
            decided_in_time = await service.wait_watched(future, wait_ms / 1000)
        finally:
            service.unwatch(transfer_id, future)
        if not decided_in_time:
            await _ensure_stored(service, transfer_id)
            return {"id": transfer_id, "status": "pending"}
        decided = future.result()
        fresh_answer: dict[str, Any] = {"id": transfer_id, "status": decided.outcome}
        if decided.reason is not None:
            fresh_answer["reason"] = decided.reason
        return fresh_answer
    if wait_ms > 0:
        future = service.watch(transfer_id)
        try:
            record = await ledger.transfer(transfer_id)
            if record is None or record.status == "pending":
                await service.wait_watched(future, wait_ms / 1000)
        finally:
            service.unwatch(transfer_id, future)
    record = await ledger.transfer(transfer_id)
    if record is None:
        # A retry that found the first request's transfer still in memory, not stored yet.
        await _ensure_stored(service, transfer_id)
        record = await ledger.transfer(transfer_id)
    assert record is not None, "a submitted transfer is recorded"
    answer: dict[str, Any] = {"id": transfer_id, "status": record.status}
    if record.reason is not None:
        answer["reason"] = record.reason
    return answer


async def _ensure_stored(service: TransferService, transfer_id: str) -> None:
    """Store a transfer kept in memory before its id is answered without its outcome."""
    if not await service.ensure_recorded(transfer_id):
        # Unknown to this bank (it is stopping): never stored, so presumed aborted.
        raise ApiError("unavailable", "the transfer was lost before it was stored; nothing moved")


async def _transfer(request: web.Request, caller: str, body: dict[str, Any]) -> web.Response:
    wait_ms = api_wait_ms(request)
    key = _key(request, caller, body)
    home = body["sources"][0]["bank"]
    if key is not None and home != request.app[BANK_ID]:
        # A transfer with a key is coordinated by its first source's bank, wherever it is
        # asked for: a retry through any bank finds the key there (the first answer again,
        # never a second transfer).
        return await _forward_transfer(request, caller, body, key, home, wait_ms)
    status, answer, replayed = await _run_transfer(request, caller, body, key, wait_ms)
    return jsonio.response(answer, status=status, headers=_REPLAYED if replayed else None)


async def _forward_transfer(
    request: web.Request,
    caller: str,
    body: dict[str, Any],
    key: tuple[str, str, str],
    home: str,
    wait_ms: int,
) -> web.Response:
    app = request.app
    payload = {"document": caller, "request": body, "idempotency_key": key[1], "fingerprint": key[2], "wait_ms": wait_ms}
    reply = await _ask(
        app, home, "/interbank/transfers", payload, timeout_s=wait_ms / 1000 + TRANSFER_FORWARD_TIMEOUT_S,
        unanswered=f"bank {home}, where this transfer's first source is, did not answer in time; the transfer may still"
        " be made there: retry with the same Idempotency-Key to learn its id and outcome",
    )  # fmt: skip
    status, body, replayed = _envelope(reply, f"bank {home} could not take the transfer; retry with the same Idempotency-Key")
    return jsonio.response(body, status=status, headers=_REPLAYED if replayed else None)


_REPLAYED = {"Idempotent-Replayed": "true"}


def _envelope(reply: Any, failure: str) -> tuple[int, dict[str, Any], bool]:
    """Another bank's answer to pass on to a client, from its envelope (``status``,
    ``body``, ``replayed``); ``failure`` is the 503's message when there is none."""
    forwarded = reply.body
    if (
        reply.status != 200
        or not isinstance(forwarded, dict)
        or not isinstance(forwarded.get("status"), int)
        or not isinstance(forwarded.get("body"), dict)
    ):
        raise ApiError("unavailable", failure)
    return forwarded["status"], forwarded["body"], forwarded.get("replayed") is True


async def _forwarded_transfer(request: web.Request) -> web.Response:
    """A transfer another bank's client asked for with an Idempotency-Key, whose first
    source is here: run as if asked here; answered in an envelope (``status``, ``body``,
    ``replayed``) that the asking bank passes on."""
    payload = await _json_object(request)
    document, body = payload.get("document"), payload.get("request")
    key, fingerprint, wait_ms = payload.get("idempotency_key"), payload.get("fingerprint"), payload.get("wait_ms")
    if not isinstance(document, str) or not document:
        raise _bad("document")
    if not isinstance(body, dict):
        raise _bad("request")
    idempotency = _forwarded_key(document, key, fingerprint)
    if not _whole(wait_ms, 0, TRANSFER_WAIT_MS_MAX):
        raise _bad("wait_ms")
    here = request.app[BANK_ID]
    try:
        sources, destination_bank, destination_account = transfer_request(request, body)
        if sources[0][0] != here:
            raise ApiError("invalid_request", "this bank holds no first source of that transfer")
        if transfer_is_local(request, sources, destination_bank):
            # Every leg is here: a local transfer, as if its client had asked here.
            local = await local_transfer(request, document, body, sources, destination_account, idempotency)
            status, answer, replayed = local.status, local.body, local.replayed
        else:
            key_as_taken = (idempotency.scope, idempotency.key, idempotency.fingerprint)
            status, answer, replayed = await _run_transfer(request, document, body, key_as_taken, wait_ms)
    except ApiError as error:
        status, answer, replayed = error.refusal.status, error.refusal.body(), False
    return jsonio.response({"status": status, "body": answer, "replayed": replayed})


async def transfer_elsewhere(request: web.Request, caller: str, transfer_id: str, home: str) -> web.Response:
    """``GET /api/v1/transfers/{id}`` of a transfer recorded at bank ``home``."""
    answer = await _read_elsewhere(
        request.app, home, "/interbank/transfer-status", {"document": caller, "id": transfer_id},
        missing=ApiError("not_found", "no such transfer"), keeper="which records this transfer",
    )  # fmt: skip
    return jsonio.response(answer)


async def statement_elsewhere(
    request: web.Request, caller: str, bank: str, account: int, before: int | None, limit: int
) -> dict[str, Any]:
    """``GET /api/v1/accounts/{bank}/{account}/statement`` of an account at another bank."""
    return await _read_elsewhere(
        request.app, bank, "/interbank/statement",
        {"document": caller, "account": account, "before": before, "limit": limit},
        missing=ApiError("unknown_account", f"no account {account} of yours at bank {bank}"),
        keeper="which keeps this account",
    )  # fmt: skip


async def _read_elsewhere(
    app: web.Application, bank: str, path: str, payload: Any, *, missing: ApiError, keeper: str
) -> dict[str, Any]:
    """What ``bank`` answers a signed read for a client here: ``missing`` when it answers 404,
    503 when it does not answer or not with an object (``keeper`` says what it keeps)."""
    reply = await _ask(
        app, bank, path, payload, timeout_s=ACCOUNTS_TIMEOUT_S, unanswered=f"bank {bank}, {keeper}, did not answer"
    )
    if reply.status == 404:
        raise missing
    if reply.status != 200 or not isinstance(reply.body, dict):
        raise ApiError("unavailable", f"bank {bank}, {keeper}, could not answer")
    return reply.body


async def _document_and_id(request: web.Request) -> tuple[str, str]:
    """A status request's ``{"document", "id"}``: a customer's and a transfer's."""
    payload = await _json_object(request)
    document, transfer_id = payload.get("document"), payload.get("id")
    if not isinstance(document, str) or not isinstance(transfer_id, str) or len(transfer_id) > TRANSFER_ID_CHARS_MAX:
        raise _bad("document and id")
    return document, transfer_id


async def _statement(request: web.Request) -> web.Response:
    """A statement page of an account here, for its owner asking at another bank (404 for
    anyone else, as at the client API)."""
    payload = await _json_object(request)
    document, account = payload.get("document"), payload.get("account")
    before, limit = payload.get("before"), payload.get("limit")
    if not isinstance(document, str) or not document:
        raise _bad("document")
    if not _whole(account, 1, ACCOUNT_NUMBER_MAX):
        raise _bad("account")
    if before is not None and not _whole(before, 1, STATEMENT_POSITION_MAX):
        raise _bad("before")
    if not _whole(limit, 1, STATEMENT_LINES_MAX):
        raise _bad("limit")
    try:
        return jsonio.response(await statement(request.app, document, account, before, limit))
    except ApiError as error:
        return error_response(error.refusal.code, str(error))


def _whole(value: Any, low: int, high: int) -> TypeGuard[int]:
    """Whether ``value`` is a JSON integer (not a boolean) from ``low`` to ``high``."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


async def _transfer_status(request: web.Request) -> web.Response:
    """A transfer recorded here, for its customer asking at another bank (404 for anyone
    else's, as at the client API)."""
    document, transfer_id = await _document_and_id(request)
    transfer = await _ledger(request.app).transfer(transfer_id)
    if transfer is None or transfer.requested_by != document:
        return jsonio.response(error_body("not_found", "no such transfer"), status=404)
    return jsonio.response(transfer_answer(request.app, transfer))


async def _run_transfer(
    request: web.Request, caller: str, body: dict[str, Any], key: tuple[str, str, str] | None, wait_ms: int
) -> tuple[int, dict[str, Any], bool]:
    """A cross-bank transfer coordinated here: ``(status, answer, replayed)``."""
    legs = [
        Leg(source["bank"], str(source["account"]), source["amount_cents"], "source")
        for source in body["sources"]
    ]
    destination = body["destination"]
    legs.append(
        Leg(destination["bank"], str(destination["account"]), sum(l.amount_cents for l in legs), "destination")
    )
    # A client that waits hears the id with the outcome: its transfer (and its idempotency
    # key) is stored with its decision (presumed abort: see bank.transfers.coordinator), or
    # before the id is answered should the wait end first.
    service, transfer_id, replayed = await _start(
        request,
        caller,
        legs,
        key,
        {"sources": body["sources"], "destination": destination},
        record=wait_ms == 0,
    )
    answer = await _outcome(request, service, transfer_id, wait_ms, fresh=not replayed)
    return 202, answer, replayed


async def _withdraw_elsewhere(request: web.Request, caller: str, body: dict[str, Any]) -> web.Response:
    """Cash paid here from an account at another bank: a transfer from that account to a
    cash-out leg here, coordinated here. Its ``Idempotency-Key`` is kept by the account's bank,
    with the keys of that account's withdrawals made there: this bank first asks it to take
    the key for the transfer, and learns instead the first request's answer when the key was
    taken (by a withdrawal there, or by one paid at any bank; see :func:`_withdrawal_key`)."""
    here = request.app[BANK_ID]
    amount = body["amount_cents"]
    legs = [Leg(body["bank"], str(body["account"]), amount, "source"), Leg(here, "", amount, "cash_out")]
    source = (body["bank"], int(body["account"]))
    asked = {"withdrawal": {k: body[k] for k in ("bank", "account", "amount_cents")}}
    key = _key(request, caller, body)
    if key is None:
        _, transfer_id, _ = await _start(request, caller, legs, None, asked)
        status, answer = await _withdrawal_here(
            request, caller, transfer_id, source, WITHDRAWAL_WAIT_MS, fresh=True, keyed=False
        )
        return jsonio.response(answer, status=status)
    try:
        _service_of(request).check_room()  # before the key is taken for a transfer
    except Backlogged as error:
        raise ApiError("unavailable", str(error)) from None
    claiming = request.app[_CLAIMING]
    lost: dict[str, Any] | None = None
    for _ in range(WITHDRAWAL_KEY_ATTEMPTS_MAX):
        transfer_id = new_transfer_id(here)
        claiming[transfer_id] = asyncio.Event()
        try:
            status, answer, replayed = await _claim_withdrawal_key(
                request, caller, body["bank"], key, transfer_id, replacing=lost
            )
            if replayed:
                response = await replayed_withdrawal(request, caller, status, answer)
                if response is not None:
                    return response
                lost = answer  # never made: the next claim gives its key to this request
                continue
            if status != 202:
                return jsonio.response(answer, status=status)  # the key names another request
            await _start(request, caller, legs, None, asked, transfer_id=transfer_id)
        finally:
            claiming.pop(transfer_id).set()
        status, answer = await _withdrawal_here(
            request, caller, transfer_id, source, WITHDRAWAL_WAIT_MS, fresh=True, keyed=True
        )
        return jsonio.response(answer, status=status)
    raise ApiError("unavailable", "this withdrawal's Idempotency-Key is being taken by other requests; retry with it")


async def _claim_withdrawal_key(
    request: web.Request,
    caller: str,
    bank: str,
    key: tuple[str, str, str],
    transfer_id: str,
    *,
    replacing: dict[str, Any] | None,
) -> tuple[int, dict[str, Any], bool]:
    payload = {
        "document": caller, "idempotency_key": key[1], "fingerprint": key[2], "id": transfer_id, "replacing": replacing,
    }  # fmt: skip
    failure = f"bank {bank}, which keeps this withdrawal's Idempotency-Key, did not answer; nothing moved: retry with the same key"
    reply = await _ask(
        request.app, bank, "/interbank/withdrawal-keys", payload, timeout_s=WITHDRAWAL_KEY_TIMEOUT_S, unanswered=failure
    )
    return _envelope(reply, failure)


async def replayed_withdrawal(
    request: web.Request, caller: str, status: int, answer: dict[str, Any]
) -> web.Response | None:
    """A retried withdrawal's first answer, as the bank that keeps its key stored it: a local
    withdrawal's answer as it is; a cross-bank one's, ``{"id", "withdrawal_at"}``, asked of
    the bank that pays its cash (this one or another). None when that one was never made
    (nothing moved, and it never will): the key may be given back, for this request to make."""
    terminal, transfer_id = answer.get("withdrawal_at"), answer.get("id")
    if isinstance(terminal, str) and isinstance(transfer_id, str):
        app = request.app
        if terminal == app[BANK_ID]:
            status, answer, lost = await _withdrawal_status_here(request, caller, transfer_id)
        else:
            failure = f"bank {terminal}, which pays this withdrawal's cash, did not answer; retry with the same Idempotency-Key"
            reply = await _ask(
                app, terminal, "/interbank/withdrawal-status", {"document": caller, "id": transfer_id},
                timeout_s=WITHDRAWAL_WAIT_MS / 1000 + TRANSFER_FORWARD_TIMEOUT_S, unanswered=failure,
            )  # fmt: skip
            status, answer, _ = _envelope(reply, failure)
            lost = isinstance(reply.body, dict) and reply.body.get("lost") is True
        if lost:
            return None
    return jsonio.response(answer, status=status, headers=_REPLAYED)


async def replayed_local_withdrawal(
    request: web.Request, account: int, amount_cents: int, caller: str, idempotency: Idempotency, answer: Answer
) -> web.Response:
    """A withdrawal asked here, from an account here, whose key names a cross-bank
    withdrawal (``answer``, the pointer :func:`_withdrawal_key` stored): that one's answer;
    or, when it was never made, this one, made here once the key is given back."""
    ledger = _ledger(request.app)
    for _ in range(WITHDRAWAL_KEY_ATTEMPTS_MAX):
        response = await replayed_withdrawal(request, caller, answer.status, answer.body)
        if response is not None:
            return response
        await ledger.forget_answer(idempotency, answer.body)
        answer = await ledger.withdraw(account, amount_cents, document=caller, idempotency=idempotency)
        if not (answer.replayed and "withdrawal_at" in answer.body):
            return answer_response(answer)
    raise ApiError("unavailable", "this withdrawal's Idempotency-Key is being taken by other requests; retry with it")


async def _withdrawal_here(
    request: web.Request,
    caller: str,
    transfer_id: str,
    source: tuple[str, int],
    wait_ms: int,
    *,
    fresh: bool,
    keyed: bool,
) -> tuple[int, dict[str, Any]]:
    """A cross-bank withdrawal paid here, after waiting up to ``wait_ms`` for its outcome:
    ``201`` with the account as its bank shows it (``keyed``: the first such answer, kept
    for retries); ``202`` while pending. Raises the refusal a participant voted; or
    :class:`_NotMade` when it was aborted for a reason that is no fault of the request (a
    bank did not answer in time): no cash was paid, and a new attempt may succeed."""
    answer = await _outcome(request, _service_of(request), transfer_id, wait_ms, fresh=fresh)
    if answer["status"] == "aborted":
        reason = answer.get("reason")
        if reason in _REASON_CODES:
            raise ApiError(_REASON_CODES[reason], f"the withdrawal was refused: {reason} (transfer {transfer_id})")
        raise _NotMade(
            "unavailable",
            f"the withdrawal was not made: {reason} (transfer {transfer_id}); no cash was paid and"
            " nothing moved: retry",
            headers={"Retry-After": "1"},
        )
    if answer["status"] != "committed":
        return 202, answer
    # The cash left here in the write of the decision (this bank is the last agent of its
    # transfers), so an audit read after this answer counts it. The account is read once its
    # bank applied the commit too (boundedly): else it would show the money held.
    await _service_of(request).wait_delivered(transfer_id, WITHDRAWAL_DELIVERY_WAIT_MS / 1000)
    account = await _remote_account(request, caller, *source)
    result = dict(account) if account is not None else {"bank": source[0], "account": source[1]}
    result["transfer_id"] = transfer_id
    if not keyed:
        return 201, result
    # The account as read now is no answer to repeat: a retry gets the first one, kept here
    # under the transfer (the account's held money, its later balance, may differ).
    first = await _ledger(request.app).first_answer(
        Idempotency(f"withdrawal:{transfer_id}", "answer", transfer_id), Answer(201, result)
    )
    return 201, first.body


async def _withdrawal_status_here(
    request: web.Request, caller: str, transfer_id: str
) -> tuple[int, dict[str, Any], bool]:
    """The answer of a withdrawal paid here, for a retry of its request (at any bank), and
    whether it is lost. Its key was taken for it before it was stored: meanwhile it is
    pending; stored, it is followed to its outcome; neither, it never will be (this bank
    restarted, or failed to make it, after the key was taken). Lost: it was never made, or
    aborted through no fault of the request (:class:`_NotMade`); it moved nothing, and the
    key may be given back to the request."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WITHDRAWAL_WAIT_MS / 1000  # one wait in all
    claimed = request.app[_CLAIMING].get(transfer_id)
    if claimed is not None:
        try:
            async with asyncio.timeout_at(deadline):
                await claimed.wait()
        except TimeoutError:
            return 202, {"id": transfer_id, "status": "pending"}, False
    record = await _ledger(request.app).transfer(transfer_id)
    if record is None:
        return 503, error_body("unavailable", f"withdrawal {transfer_id} was never made: nothing moved"), True
    asked = record.request.get("withdrawal") if isinstance(record.request, dict) else None
    if record.requested_by != caller or not isinstance(asked, dict):
        return 404, error_body("not_found", "no such withdrawal"), False
    source = (str(asked["bank"]), int(asked["account"]))
    wait_ms = max(0, int((deadline - loop.time()) * 1000))
    try:
        status, answer = await _withdrawal_here(request, caller, transfer_id, source, wait_ms, fresh=False, keyed=True)
    except _NotMade as error:
        # Aborted without moving anything, through no fault of the request: as one never
        # made, its key is given back, and the retry makes the withdrawal.
        return error.refusal.status, error.refusal.body(), True
    except ApiError as error:
        status, answer = error.refusal.status, error.refusal.body()
    return status, answer, False


async def _withdrawal_key(request: web.Request) -> web.Response:
    """Take a client's ``Idempotency-Key`` for a withdrawal from an account here paid in cash
    at the signing bank, as transfer ``id`` of that bank; or answer what the key already
    names: a withdrawal made here (its answer), another bank's (``{"id", "withdrawal_at"}``),
    or another request (422). In an envelope (``status``, ``body``, ``replayed``)."""
    payload = await _json_object(request)
    document, key, fingerprint, transfer_id = (payload.get(name) for name in ("document", "idempotency_key", "fingerprint", "id"))
    if not isinstance(document, str) or not document:
        raise _bad("document")
    idempotency = _forwarded_key(document, key, fingerprint)
    terminal = request[SIGNED_SENDER]
    if not isinstance(transfer_id, str) or len(transfer_id) > TRANSFER_ID_CHARS_MAX or transfer_id_bank(transfer_id) != terminal:
        raise _bad("id: a transfer id of the signing bank")
    replacing = payload.get("replacing")
    if replacing is not None and not (isinstance(replacing, dict) and isinstance(replacing.get("withdrawal_at"), str)):
        raise _bad("replacing: what the key named, a withdrawal another bank was to pay")
    ledger = _ledger(request.app)
    if replacing is not None:
        # The asker learnt from the bank that was to pay it that this withdrawal was never
        # made: the key is given back, unless it names something else by now.
        await ledger.forget_answer(idempotency, replacing)
    taken = Answer(202, {"id": transfer_id, "status": "pending", "withdrawal_at": terminal})
    answer = await ledger.first_answer(idempotency, taken, client_key=True)
    return jsonio.response({"status": answer.status, "body": answer.body, "replayed": answer.replayed})


async def _withdrawal_status(request: web.Request) -> web.Response:
    """A withdrawal paid here, for its customer retrying it at another bank: its first
    answer in an envelope (``status``, ``body``); 404 for anyone else's."""
    document, transfer_id = await _document_and_id(request)
    status, answer, lost = await _withdrawal_status_here(request, document, transfer_id)
    return jsonio.response({"status": status, "body": answer, "lost": lost})


async def _remote_account(request: web.Request, caller: str, bank: str, number: int) -> dict[str, Any] | None:
    listing = await _ask_signed(request, bank, "/interbank/accounts", {"document": caller}, timeout_s=ACCOUNTS_TIMEOUT_S)
    if listing is None:
        return None
    for account in listing.get("accounts", []):
        if isinstance(account, dict) and account.get("account") == number:
            return account
    return None


async def _ask_signed(request: web.Request, bank: str, path: str, payload: Any, *, timeout_s: float) -> dict[str, Any] | None:
    """``bank``'s answer (a JSON object) to a signed ``POST`` of ``payload`` to ``path``, or
    None when it did not answer one in ``timeout_s``."""
    app = request.app
    try:
        reply = await _ring(app).client.post_json(app[CONFIG].bank(bank).url, path, payload, timeout_s=timeout_s)
    except SendFailed:
        return None
    if reply.status != 200 or not isinstance(reply.body, dict):
        return None
    return reply.body


async def _ask_others(
    request: web.Request, path: str, payload: Any, *, timeout_s: float
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """What every other bank of the ring answers to a signed ``POST`` of ``payload`` to
    ``path`` (each asked at once, each bounded by ``timeout_s``): the answers by bank id, and
    the ids of the banks that did not answer in time, in ring order."""
    here = request.app[BANK_ID]
    others = [bank for bank in request.app[CONFIG].member_ids if bank != here]
    answers = await asyncio.gather(*(_ask_signed(request, bank, path, payload, timeout_s=timeout_s) for bank in others))
    by_bank: dict[str, dict[str, Any]] = {}
    unavailable = []
    for bank, answer in zip(others, answers):
        if answer is None:
            unavailable.append(bank)
        else:
            by_bank[bank] = answer
    return by_bank, unavailable


async def listings_elsewhere(request: web.Request, document: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """What every other bank of the ring answers to a signed ``/interbank/accounts`` for
    ``document`` (each asked at once, each bounded by ``ACCOUNTS_TIMEOUT_S``): the answers by
    bank id, and the ids of the banks that did not answer in time, in ring order.

    The shared part of ``scope=consortium`` and of the payee directory (``bank.api``): the
    answers are full listings (balances, holds, owners); each caller decides what to show."""
    return await _ask_others(request, "/interbank/accounts", {"document": document}, timeout_s=ACCOUNTS_TIMEOUT_S)


async def consortium_accounts(request: web.Request, caller: str, local: dict[str, Any]) -> dict[str, Any]:
    """The caller's accounts at every bank; banks that do not answer in time are listed as
    unavailable (never silently left out)."""
    elsewhere, unavailable = await listings_elsewhere(request, caller)
    by_bank = {request.app[BANK_ID]: local, **elsewhere}
    return {
        "banks": [by_bank[b] for b in request.app[CONFIG].member_ids if b in by_bank],
        "unavailable": unavailable,
    }
