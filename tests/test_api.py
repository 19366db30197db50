"""The client API, route by route: what each answers, who may call it, and that idempotent
retries, logout, expiry and login throttling behave as CONTRACT.md says."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from bank.api import TRANSFER_SOURCES_MAX
from bank.auth import LOGIN_FAILURES_MAX, SESSION_TTL_S
from bank.keys import LEDGER
from test_api_support import (
    PASSWORD,
    audit,
    customer,
    deposit,
    log_in,
    make_app,
    new_cnpj,
    new_cpf,
    open_account,
    sign_up,
)

Client = TestClient[Any, Any]


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> Client:
    result: Client = await aiohttp_client(make_app(tmp_path))
    return result


def assert_error(body: Any, code: str) -> None:
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code and body["error"]["message"]


async def test_sign_up_answers_the_customer_and_refuses_a_second_time(client: Client) -> None:
    document = new_cpf()
    response = await client.post(
        "/api/v1/customers", json={"document": document, "name": "  Ana  ", "password": PASSWORD}
    )
    assert response.status == 201
    assert await response.json() == {"document": document, "name": "Ana"}
    again = await client.post(
        "/api/v1/customers", json={"document": document, "name": "Ana", "password": PASSWORD}
    )
    assert again.status == 409
    assert_error(await again.json(), "customer_exists")
    assert (await audit(client))["customers"] == 1


async def test_sign_up_with_a_key_is_applied_once(client: Client) -> None:
    body = {"document": new_cnpj(), "name": "Firma", "password": PASSWORD}
    headers = {"Idempotency-Key": "signup-1"}
    first = await client.post("/api/v1/customers", json=body, headers=headers)
    second = await client.post("/api/v1/customers", json=body, headers=headers)
    assert first.status == second.status == 201
    assert await first.json() == await second.json()
    assert second.headers["Idempotent-Replayed"] == "true"


async def test_a_sign_up_key_keeps_nothing_quick_to_test_a_password_against(client: Client) -> None:
    """A sign-up sent with a key (the web terminal sends one with every write) stores its
    first answer for retries; what tells a retry from another request must not be a SHA-256
    over the password (a copy of the database would test guesses at that speed, not
    scrypt's). A retry with another password is another request all the same."""
    import sqlite3

    from bank.ledger import request_fingerprint

    body = {"document": new_cpf(), "name": "Ana", "password": PASSWORD}
    headers = {"Idempotency-Key": "signup-2"}
    first = await client.post("/api/v1/customers", json=body, headers=headers)
    assert first.status == 201
    path = client.app[LEDGER].path
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        stored = {row[0] for row in conn.execute("SELECT fingerprint FROM idempotency")}
    assert request_fingerprint("POST", "/api/v1/customers", body) not in stored
    again = await client.post("/api/v1/customers", json=body, headers=headers)
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
    other = await client.post("/api/v1/customers", json={**body, "password": "another password"}, headers=headers)
    assert other.status == 422
    assert_error(await other.json(), "idempotency_key_reused")


async def test_login_logout_and_a_token_that_no_longer_works(client: Client) -> None:
    document, headers = await customer(client)
    listed = await client.get("/api/v1/accounts", headers=headers)
    assert listed.status == 200
    assert await listed.json() == {"bank": "alfa", "name": "Banco Alfa", "accounts": []}
    logout = await client.delete("/api/v1/sessions", headers=headers)
    assert logout.status == 204
    after = await client.get("/api/v1/accounts", headers=headers)
    assert after.status == 401
    assert after.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(await after.json(), "unauthorized")
    # Another session of the same customer is unaffected by that logout.
    other = await log_in(client, document)
    assert (await client.get("/api/v1/accounts", headers=other)).status == 200


async def test_a_session_expires(client: Client) -> None:
    _, headers = await customer(client)
    ledger = client.app[LEDGER]
    assert (await client.get("/api/v1/accounts", headers=headers)).status == 200
    real_clock = ledger.clock
    ledger.clock = lambda: real_clock() + SESSION_TTL_S + 1
    expired = await client.get("/api/v1/accounts", headers=headers)
    assert expired.status == 401
    assert_error(await expired.json(), "unauthorized")


async def test_login_answers_the_token_and_its_expiry(client: Client) -> None:
    document = await sign_up(client)
    response = await client.post("/api/v1/sessions", json={"document": document, "password": PASSWORD})
    body = await response.json()
    assert response.status == 201 and set(body) == {"token", "expires_at"}
    assert body["expires_at"].endswith("Z") and len(body["token"]) >= 32


async def test_repeated_failed_logins_are_refused_for_a_while(client: Client) -> None:
    document = await sign_up(client)
    wrong = {"document": document, "password": "not the password"}
    for _ in range(LOGIN_FAILURES_MAX):
        response = await client.post("/api/v1/sessions", json=wrong)
        assert response.status == 401
        assert_error(await response.json(), "unauthorized")
    refused = await client.post("/api/v1/sessions", json={"document": document, "password": PASSWORD})
    assert refused.status == 429 and int(refused.headers["Retry-After"]) > 0
    assert_error(await refused.json(), "too_many_attempts")
    # Another customer is not slowed down by it.
    other = await sign_up(client)
    await log_in(client, other)


async def test_failed_logins_sent_at_once_are_braked_like_one_after_another(client: Client) -> None:
    # Guesses sent at once must not all be checked before the first failure is counted.
    document = await sign_up(client)
    guesses = [{"document": document, "password": f"guess number {i}"} for i in range(4 * LOGIN_FAILURES_MAX)]
    answers = await asyncio.gather(*(client.post("/api/v1/sessions", json=guess) for guess in guesses))
    statuses = [answer.status for answer in answers]
    assert statuses.count(401) <= LOGIN_FAILURES_MAX and set(statuses) <= {401, 429}, statuses
    refused = await client.post("/api/v1/sessions", json={"document": document, "password": PASSWORD})
    assert refused.status == 429


async def test_unknown_customer_login_is_unauthorized(client: Client) -> None:
    response = await client.post("/api/v1/sessions", json={"document": new_cpf(), "password": PASSWORD})
    assert response.status == 401


async def test_accounts_of_each_kind_and_their_owners(client: Client) -> None:
    ana, ana_headers = await customer(client)
    bruno = await sign_up(client)
    firma, firma_headers = await customer(client, new_cnpj())
    individual = await client.post(
        "/api/v1/accounts", json={"kind": "individual", "owners": [ana]}, headers=ana_headers
    )
    assert individual.status == 201
    assert await individual.json() == {
        "bank": "alfa",
        "account": 1,
        "kind": "individual",
        "owners": [ana],
        "balance_cents": 0,
        "held_cents": 0,
    }
    joint = await open_account(client, ana_headers, [bruno, ana], "joint")
    corporate = await open_account(client, firma_headers, [firma], "corporate")
    assert len({1, joint, corporate}) == 3
    listed = await (await client.get("/api/v1/accounts", headers=ana_headers)).json()
    assert [(a["account"], a["kind"], a["owners"]) for a in listed["accounts"]] == [
        (1, "individual", [ana]),
        (joint, "joint", sorted([ana, bruno])),
    ]
    consortium = await client.get("/api/v1/accounts?scope=consortium", headers=ana_headers)
    assert consortium.status == 200
    # Without a ring to ask, the other banks are listed as unavailable, never left out.
    assert await consortium.json() == {"banks": [listed], "unavailable": ["beta"]}
    # Bruno owns the joint account and can operate it without having opened it.
    bruno_headers = await log_in(client, bruno)
    assert (await deposit(client, bruno_headers, joint, 10))["balance_cents"] == 10


async def test_account_rules_are_enforced(client: Client) -> None:
    ana, headers = await customer(client)
    bruno = await sign_up(client)
    stranger = new_cpf()
    cases = [
        ({"kind": "individual", "owners": [bruno]}, 403, "forbidden"),
        ({"kind": "joint", "owners": [ana, stranger]}, 422, "unknown_customer"),
        ({"kind": "joint", "owners": [ana]}, 400, "invalid_request"),
        ({"kind": "individual", "owners": [ana, bruno]}, 400, "invalid_request"),
        ({"kind": "corporate", "owners": [ana]}, 400, "invalid_request"),
        ({"kind": "joint", "owners": [ana, ana]}, 400, "invalid_request"),
        ({"kind": "savings", "owners": [ana]}, 400, "invalid_request"),
    ]
    for body, status, code in cases:
        response = await client.post("/api/v1/accounts", json=body, headers=headers)
        assert response.status == status, body
        assert_error(await response.json(), code)
    assert (await audit(client))["accounts"] == 0


async def test_deposit_and_withdrawal_answer_the_new_balance(client: Client) -> None:
    ana, headers = await customer(client)
    account = await open_account(client, headers, [ana])
    assert (await deposit(client, headers, account, 1_500))["balance_cents"] == 1_500
    response = await client.post(
        "/api/v1/withdrawals", json={"bank": "alfa", "account": account, "amount_cents": 500}, headers=headers
    )
    assert response.status == 201 and (await response.json())["balance_cents"] == 1_000
    too_much = await client.post(
        "/api/v1/withdrawals", json={"bank": "alfa", "account": account, "amount_cents": 1_001}, headers=headers
    )
    assert too_much.status == 409
    assert_error(await too_much.json(), "insufficient_funds")
    totals = await audit(client)
    assert totals["balance_cents"] == 1_000 and totals["deposited_net_cents"] == 1_000


async def test_money_at_another_bank_goes_to_the_cross_bank_path(client: Client) -> None:
    ana, headers = await customer(client)
    account = await open_account(client, headers, [ana])
    elsewhere = {"bank": "beta", "account": account, "amount_cents": 5}
    for path in ("/api/v1/deposits", "/api/v1/withdrawals"):
        response = await client.post(path, json=elsewhere, headers=headers)
        assert response.status == 501
        assert_error(await response.json(), "not_implemented")
        unknown = await client.post(path, json={**elsewhere, "bank": "zeta"}, headers=headers)
        assert unknown.status == 422
        assert_error(await unknown.json(), "unknown_bank")
    transfer = {
        "sources": [{"bank": "alfa", "account": account, "amount_cents": 5}],
        "destination": {"bank": "beta", "account": 1},
    }
    assert (await client.post("/api/v1/transfers", json=transfer, headers=headers)).status == 501
    transfer["destination"] = {"bank": "zeta", "account": 1}
    assert (await client.post("/api/v1/transfers", json=transfer, headers=headers)).status == 422


async def test_a_local_transfer_is_committed_at_once_and_can_be_read(client: Client) -> None:
    ana, ana_headers = await customer(client)
    bruno, bruno_headers = await customer(client)
    first = await open_account(client, ana_headers, [ana])
    second = await open_account(client, ana_headers, [ana])
    target = await open_account(client, bruno_headers, [bruno])
    await deposit(client, ana_headers, first, 300)
    await deposit(client, ana_headers, second, 200)
    request = {
        "sources": [
            {"bank": "alfa", "account": first, "amount_cents": 250},
            {"bank": "alfa", "account": second, "amount_cents": 150},
        ],
        "destination": {"bank": "alfa", "account": target},
    }
    response = await client.post("/api/v1/transfers", json=request, headers=ana_headers)
    assert response.status == 202
    accepted = await response.json()
    assert accepted["status"] == "committed"
    shown = await client.get(f"/api/v1/transfers/{accepted['id']}", headers=ana_headers)
    body = await shown.json()
    assert shown.status == 200 and body["status"] == "committed" and body["reason"] is None
    assert body["delivered"] is True  # local: every balance it touched shows it already
    assert body["sources"] == request["sources"] and body["destination"] == request["destination"]
    balances = [a["balance_cents"] for a in (await (await client.get("/api/v1/accounts", headers=ana_headers)).json())["accounts"]]
    assert balances == [50, 50]
    # Not Bruno's to read, and a missing id is the same answer.
    assert (await client.get(f"/api/v1/transfers/{accepted['id']}", headers=bruno_headers)).status == 404
    assert (await client.get("/api/v1/transfers/alfa-nothing", headers=ana_headers)).status == 404
    # Not enough money: aborted with a reason, recorded, and nothing moved.
    request["sources"] = [{"bank": "alfa", "account": first, "amount_cents": 51}]
    aborted = await (await client.post("/api/v1/transfers", json=request, headers=ana_headers)).json()
    assert aborted["status"] == "aborted" and aborted["reason"] == "insufficient_funds"
    shown = await (await client.get(f"/api/v1/transfers/{aborted['id']}", headers=ana_headers)).json()
    assert shown["status"] == "aborted" and shown["reason"] == "insufficient_funds"
    assert (await audit(client))["balance_cents"] == 500


async def test_a_transfer_may_name_as_many_sources_as_the_bound_allows(client: Client) -> None:
    """TRANSFER_SOURCES_MAX sources is a transfer (one more is refused: test_api_bad_inputs)."""
    ana, headers = await customer(client)
    sources = []
    for _ in range(TRANSFER_SOURCES_MAX):
        account = await open_account(client, headers, [ana])
        await deposit(client, headers, account, 10)
        sources.append({"bank": "alfa", "account": account, "amount_cents": 10})
    target = await open_account(client, headers, [ana])
    request = {"sources": sources, "destination": {"bank": "alfa", "account": target}}
    response = await client.post("/api/v1/transfers", json=request, headers=headers)
    body = await response.json()
    assert response.status == 202 and body["status"] == "committed", body
    assert (await audit(client))["balance_cents"] == 10 * TRANSFER_SOURCES_MAX


async def test_a_retry_with_the_same_key_gets_the_first_answer(client: Client) -> None:
    ana, headers = await customer(client)
    account = await open_account(client, headers, [ana])
    keyed = {**headers, "Idempotency-Key": "deposit-42"}
    body = {"bank": "alfa", "account": account, "amount_cents": 42}
    first = await client.post("/api/v1/deposits", json=body, headers=keyed)
    retry = await client.post("/api/v1/deposits", json=body, headers=keyed)
    assert (first.status, await first.json()) == (retry.status, await retry.json())
    assert "Idempotent-Replayed" not in first.headers and retry.headers["Idempotent-Replayed"] == "true"
    other = await client.post("/api/v1/deposits", json={**body, "amount_cents": 43}, headers=keyed)
    assert other.status == 422
    assert_error(await other.json(), "idempotency_key_reused")
    assert (await audit(client))["balance_cents"] == 42


async def test_one_thousand_concurrent_one_cent_deposits(client: Client) -> None:
    ana, headers = await customer(client)
    account = await open_account(client, headers, [ana])
    before = (await audit(client))["balance_cents"]
    body = {"bank": "alfa", "account": account, "amount_cents": 1}

    async def one() -> int:
        response = await client.post("/api/v1/deposits", json=body, headers=headers)
        await response.read()
        return response.status

    statuses = await asyncio.gather(*(one() for _ in range(1_000)))
    assert statuses == [201] * 1_000
    assert (await audit(client))["balance_cents"] == before + 1_000
    assert (await client.app[LEDGER].check()).ok


async def test_unknown_routes_and_methods_under_api_answer_in_the_error_shape(client: Client) -> None:
    missing = await client.get("/api/v1/nothing-here")
    assert missing.status == 404 and missing.content_type == "application/json"
    assert_error(await missing.json(), "not_found")
    wrong_method = await client.put("/api/v1/audit")
    assert wrong_method.status == 405 and "GET" in wrong_method.headers["Allow"]
    assert_error(await wrong_method.json(), "method_not_allowed")


async def test_audit_and_openapi_are_served(client: Client) -> None:
    totals = await audit(client)
    assert {"bank", "balance_cents", "held_cents", "accounts"} <= set(totals)
    assert totals["bank"] == "alfa"
    document = await (await client.get("/api/v1/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    routes = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == {
        ("/api/v1/customers", "post"),
        ("/api/v1/sessions", "post"),
        ("/api/v1/sessions", "delete"),
        ("/api/v1/accounts", "post"),
        ("/api/v1/accounts", "get"),
        ("/api/v1/accounts/{bank}/{account}/statement", "get"),
        ("/api/v1/directory", "get"),
        ("/api/v1/deposits", "post"),
        ("/api/v1/withdrawals", "post"),
        ("/api/v1/transfers", "post"),
        ("/api/v1/transfers/{id}", "get"),
        ("/api/v1/audit", "get"),
        ("/api/v1/consortium/audit", "get"),
        ("/api/v1/openapi.json", "get"),
    }
    for path, item in document["paths"].items():
        for method, operation in item.items():
            # Every operation documents its success and its error answers.
            statuses = {int(status) for status in operation["responses"]}
            assert any(status < 300 for status in statuses), (path, method)
            assert 503 in statuses, (path, method)


async def test_each_request_logs_one_canonical_line(client: Client) -> None:
    with capture_logs() as logs:
        response = await client.get("/api/v1/audit", headers={"X-Request-Id": "req-7"})
    assert response.headers["X-Request-Id"] == "req-7"
    lines = [entry for entry in logs if entry["event"] == "request"]
    assert len(lines) == 1
    assert lines[0]["status"] == 200 and lines[0]["path"] == "/api/v1/audit"
    assert lines[0]["method"] == "GET" and lines[0]["duration_ms"] >= 0
    assert lines[0]["request_id"] == "req-7" and lines[0]["bank"] == "alfa"


async def test_the_canonical_line_names_the_error_code(client: Client) -> None:
    with capture_logs() as logs:
        await client.get("/api/v1/accounts")
    (line,) = [entry for entry in logs if entry["event"] == "request"]
    assert line["status"] == 401 and line["code"] == "unauthorized"


async def test_a_flood_of_logins_is_bounded(client: Client) -> None:
    from bank.api import API_STATE, HASHES_PENDING_MAX

    document = await sign_up(client)
    state = client.app[API_STATE]
    state.hashes_pending = HASHES_PENDING_MAX  # as if that many hashes were queued
    try:
        busy = await client.post("/api/v1/sessions", json={"document": document, "password": PASSWORD})
        assert busy.status == 503 and busy.headers["Retry-After"] == "1"
        assert_error(await busy.json(), "unavailable")
    finally:
        state.hashes_pending = 0
    await log_in(client, document)


async def test_a_keyed_retry_after_a_restart_gets_the_first_answer(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    first_client: Client = await aiohttp_client(make_app(tmp_path))
    ana, headers = await customer(first_client)
    account = await open_account(first_client, headers, [ana])
    keyed = {**headers, "Idempotency-Key": "restart-1"}
    body = {"bank": "alfa", "account": account, "amount_cents": 9}
    first = await first_client.post("/api/v1/deposits", json=body, headers=keyed)
    first_body = await first.json()
    await first_client.close()  # the app's cleanup closes the ledger
    second_client: Client = await aiohttp_client(make_app(tmp_path))
    # The session survived too: it is in the database, not only in memory.
    retry = await second_client.post("/api/v1/deposits", json=body, headers=keyed)
    assert retry.status == 201 and await retry.json() == first_body
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert (await audit(second_client))["balance_cents"] == 9


async def test_a_bank_whose_storage_is_full_answers_503_to_retry_and_logs_it_once(client: Client) -> None:
    """SQLite's page limit stands in for a full disk: each write is refused whole with a 503
    and Retry-After (not a 500), the failure is logged once per interval with how many were
    left out, not a trace per request; once there is room, the same request works."""
    owner, headers = await customer(client)
    account = await open_account(client, headers, [owner])
    ledger = client.app[LEDGER]
    pages = await ledger.write(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
    await ledger.write(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages}"))
    statuses: list[int] = []
    with capture_logs() as logged:
        for index in range(300):
            response = await client.post(
                "/api/v1/deposits", json={"bank": "alfa", "account": account, "amount_cents": 1},
                headers={**headers, "Idempotency-Key": f"dep-{index}"},
            )  # fmt: skip
            statuses.append(response.status)
            if response.status == 503:
                assert response.headers["Retry-After"] == "5"
                assert_error(await response.json(), "unavailable")
            if statuses.count(503) == 3:
                break
    assert statuses.count(503) == 3 and set(statuses) == {201, 503}, statuses
    failing = [line for line in logged if line["event"] == "storage_failing"]
    assert len(failing) == 1 and not [line for line in logged if line["event"] == "request_failed"]
    await ledger.write(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
    again = await client.post(
        "/api/v1/deposits", json={"bank": "alfa", "account": account, "amount_cents": 1},
        headers={**headers, "Idempotency-Key": f"dep-{index}"},
    )  # fmt: skip
    assert again.status == 201 and again.headers.get("Idempotent-Replayed") is None


@pytest.mark.parametrize("framing", [b"Content-Length: 60000", b"Transfer-Encoding: chunked"])
async def test_a_body_that_never_arrives_whole_is_refused_and_its_connection_closed(
    client: Client, monkeypatch: pytest.MonkeyPatch, framing: bytes
) -> None:
    """A client that sends its headers, then its body a byte now and then (or not at all),
    is answered 400 within BODY_READ_TIMEOUT_S and its connection closed: it cannot hold a
    connection, and a file descriptor of the bank, for as long as it likes."""
    from bank import api

    monkeypatch.setattr(api, "BODY_READ_TIMEOUT_S", 0.3, raising=False)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b"POST /api/v1/customers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + framing + b"\r\n\r\n")
    writer.write(b'3\r\n{"d' if b"chunked" in framing else b'{"d')
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(), 5)  # the answer, then the bank closes
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 400 ") and b'"invalid_request"' in answer, answer[:300]
    assert (await audit(client))["customers"] == 0
