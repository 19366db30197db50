"""``GET /api/v1/directory``: a payee's accounts at every bank, found by document.

Three real banks served in this process on 127.0.0.1 (random ports, as in
tests/test_interbank.py): ring, ledger, client API and signed inter-bank routes. One test uses
the client API alone (no ring), as the OpenAPI test serves it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bank import auth
from bank.documents import complete_cnpj, complete_cpf
from bank.process import write_ring_file
from bank.server import build_app
from test_api_support import PASSWORD, customer, make_app, open_account

SECRET = b"test-secret-for-directory"

ANA = complete_cpf("529982247")  # the payee
BIA = complete_cpf("111444777")  # Ana's co-owner at b1
CAR = complete_cpf("123456789")  # the one looking Ana up
ACME = complete_cnpj("112223330001")


class Banks:
    """Three served banks and a session per (bank, customer)."""

    def __init__(self, config: Any, session: aiohttp.ClientSession, runners: dict[str, web.AppRunner]):
        self.config = config
        self.session = session
        self.runners = runners
        self.tokens: dict[tuple[str, str], str] = {}

    async def call(
        self, method: str, bank: str, path: str, body: Any = None, *, who: str | None = None
    ) -> tuple[int, str]:
        headers = {}
        if who is not None:
            headers["Authorization"] = f"Bearer {self.tokens[(bank, who)]}"
        url = str(self.config.bank(bank).url) + path
        async with self.session.request(method, url, json=body, headers=headers) as response:
            return response.status, await response.text()

    async def customer(self, bank: str, document: str) -> None:
        status, _ = await self.call(
            "POST", bank, "/api/v1/customers", {"document": document, "name": "Ana", "password": PASSWORD}
        )
        assert status == 201
        status, text = await self.call(
            "POST", bank, "/api/v1/sessions", {"document": document, "password": PASSWORD}
        )
        assert status == 201
        self.tokens[(bank, document)] = json.loads(text)["token"]

    async def account(self, bank: str, owners: list[str], kind: str = "individual", deposit_cents: int = 0) -> int:
        status, text = await self.call(
            "POST", bank, "/api/v1/accounts", {"kind": kind, "owners": owners}, who=owners[0]
        )
        assert status == 201, text
        number = int(json.loads(text)["account"])
        if deposit_cents:
            status, text = await self.call(
                "POST", bank, "/api/v1/deposits",
                {"bank": bank, "account": number, "amount_cents": deposit_cents}, who=owners[0],
            )
            assert status == 201, text
        return number

    async def look_up(self, bank: str, who: str, document: str) -> tuple[int, str]:
        return await self.call("GET", bank, f"/api/v1/directory?document={document}", who=who)


@pytest.fixture
async def banks(tmp_path: Path) -> AsyncIterator[Banks]:
    config = write_ring_file(tmp_path / "ring.toml", ["b0", "b1", "b2"], hold_max_ms=20,
                             data_dir=str(tmp_path / "var"))
    runners: dict[str, web.AppRunner] = {}
    try:
        for bank in config.banks:
            runner = web.AppRunner(build_app(config, bank.id, secret=SECRET), access_log=None)
            await runner.setup()
            runners[bank.id] = runner
            await web.TCPSite(runner, bank.host, bank.port).start()
        async with aiohttp.ClientSession() as session:
            yield Banks(config, session, runners)
    finally:
        for runner in reversed(list(runners.values())):
            await runner.cleanup()


async def test_a_payee_is_found_at_every_bank_without_balances_or_co_owners(banks: Banks) -> None:
    for bank in ("b0", "b1", "b2"):
        await banks.customer(bank, ANA)
    await banks.customer("b1", BIA)
    await banks.customer("b1", CAR)
    a0 = await banks.account("b0", [ANA], deposit_cents=12_345)
    joint = await banks.account("b1", [ANA, BIA], kind="joint", deposit_cents=67_891)
    a2 = await banks.account("b2", [ANA], deposit_cents=24_680)
    await banks.account("b1", [CAR], deposit_cents=500)  # someone else's account at b1

    status, text = await banks.look_up("b1", CAR, ANA)

    assert status == 200, text
    assert json.loads(text) == {
        "document": ANA,
        "banks": [
            {"bank": "b0", "name": banks.config.bank("b0").name,
             "accounts": [{"bank": "b0", "account": a0, "kind": "individual"}]},
            {"bank": "b1", "name": banks.config.bank("b1").name,
             "accounts": [{"bank": "b1", "account": joint, "kind": "joint"}]},
            {"bank": "b2", "name": banks.config.bank("b2").name,
             "accounts": [{"bank": "b2", "account": a2, "kind": "individual"}]},
        ],
        "unavailable": [],
    }
    # A payee lookup, not a statement: no figure and no other owner anywhere in the answer.
    for secret in ("_cents", "owners", "12345", "67891", "24680", BIA, CAR):
        assert secret not in text


async def test_a_company_and_an_unknown_document(banks: Banks) -> None:
    await banks.customer("b0", CAR)
    await banks.customer("b2", ACME)
    number = await banks.account("b2", [ACME], kind="corporate")

    status, text = await banks.look_up("b0", CAR, ACME)
    assert status == 200, text
    assert json.loads(text)["banks"] == [
        {"bank": "b2", "name": banks.config.bank("b2").name,
         "accounts": [{"bank": "b2", "account": number, "kind": "corporate"}]}
    ]

    status, text = await banks.look_up("b0", CAR, ANA)  # a valid CPF no bank knows
    assert status == 200, text
    assert json.loads(text) == {"document": ANA, "banks": [], "unavailable": []}


async def test_a_bank_that_does_not_answer_is_listed_unavailable(banks: Banks) -> None:
    for bank in ("b0", "b2"):
        await banks.customer(bank, ANA)
    await banks.customer("b1", CAR)
    a0 = await banks.account("b0", [ANA])
    await banks.account("b2", [ANA])
    await banks.runners.pop("b2").cleanup()  # b2 stops serving: its port refuses connections

    status, text = await banks.look_up("b1", CAR, ANA)

    assert status == 200, text
    answer = json.loads(text)
    assert answer["unavailable"] == ["b2"]
    assert [group["bank"] for group in answer["banks"]] == ["b0"]
    assert answer["banks"][0]["accounts"] == [{"bank": "b0", "account": a0, "kind": "individual"}]


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("?document=52998224700", 400, "invalid_document"),  # check digits wrong
        ("?document=abc", 400, "invalid_document"),
        ("?document=", 400, "invalid_document"),
        ("", 400, "invalid_request"),
        (f"?document={ANA}&scope=consortium", 400, "invalid_request"),
    ],
)
async def test_a_bad_lookup_is_refused_in_the_contract_shape(
    aiohttp_client: Any, tmp_path: Path, query: str, status: int, code: str
) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(make_app(tmp_path))
    _, headers = await customer(client)
    response = await client.get(f"/api/v1/directory{query}", headers=headers)
    assert response.status == status
    body = await response.json()
    assert body["error"]["code"] == code and body["error"]["message"]


async def test_a_lookup_needs_a_session(aiohttp_client: Any, tmp_path: Path) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(make_app(tmp_path))
    response = await client.get(f"/api/v1/directory?document={ANA}")
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "unauthorized"


async def test_without_the_ring_the_other_banks_are_unavailable(aiohttp_client: Any, tmp_path: Path) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(make_app(tmp_path))  # alfa of alfa, beta
    payee, payee_headers = await customer(client)
    number = await open_account(client, payee_headers, [payee])
    _, headers = await customer(client)
    response = await client.get(f"/api/v1/directory?document={payee}", headers=headers)
    assert response.status == 200
    assert await response.json() == {
        "document": payee,
        "banks": [{"bank": "alfa", "name": "Banco Alfa",
                   "accounts": [{"bank": "alfa", "account": number, "kind": "individual"}]}],
        "unavailable": ["beta"],
    }


async def test_a_customer_looks_up_at_most_the_named_number_of_payees_per_window(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(make_app(tmp_path))
    payee, payee_headers = await customer(client)
    await open_account(client, payee_headers, [payee])
    _, headers = await customer(client)
    response = await client.get("/api/v1/directory?document=123", headers=headers)
    assert response.status == 400  # a bad document is refused and not counted
    for _ in range(auth.DIRECTORY_LOOKUPS_MAX):
        response = await client.get(f"/api/v1/directory?document={payee}", headers=headers)
        assert response.status == 200
    response = await client.get(f"/api/v1/directory?document={payee}", headers=headers)
    assert response.status == 429
    assert (await response.json())["error"]["code"] == "too_many_attempts"
    assert 1 <= int(response.headers["Retry-After"]) <= auth.DIRECTORY_WINDOW_S
    # Another customer still has the whole allowance.
    response = await client.get(f"/api/v1/directory?document={payee}", headers=payee_headers)
    assert response.status == 200
