"""Shared helpers for the client API tests: an app per test, customers, sessions, accounts."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from bank import api
from bank.documents import complete_cnpj, complete_cpf
from bank.keys import BANK_ID, CONFIG
from tokenring.config import RingConfig, parse

PASSWORD = "correct horse"
_serial = itertools.count(100_000_001)


def ring_config(data_dir: Path) -> RingConfig:
    return parse(
        {
            "consortium": {"name": "test", "secret_env": "CONSORTIUM_SECRET", "data_dir": str(data_dir)},
            "token": {"hold_max_ms": 25},
            "banks": [
                {"id": "alfa", "name": "Banco Alfa", "url": "http://127.0.0.1:18101"},
                {"id": "beta", "name": "Banco Beta", "url": "http://127.0.0.1:18102"},
            ],
        }
    )


def make_app(data_dir: Path, bank_id: str = "alfa") -> web.Application:
    app = web.Application()
    app[CONFIG] = ring_config(data_dir)
    app[BANK_ID] = bank_id
    api.install(app)
    return app


def new_cpf() -> str:
    return complete_cpf(str(next(_serial)).zfill(9)[-9:])


def new_cnpj() -> str:
    return complete_cnpj(str(next(_serial)).zfill(12))


async def sign_up(client: TestClient[Any, Any], document: str | None = None) -> str:
    document = document or new_cpf()
    response = await client.post(
        "/api/v1/customers", json={"document": document, "name": "Ana", "password": PASSWORD}
    )
    assert response.status == 201, await response.text()
    return document


async def log_in(client: TestClient[Any, Any], document: str) -> dict[str, str]:
    response = await client.post(
        "/api/v1/sessions", json={"document": document, "password": PASSWORD}
    )
    assert response.status == 201, await response.text()
    return {"Authorization": f"Bearer {(await response.json())['token']}"}


async def customer(client: TestClient[Any, Any], document: str | None = None) -> tuple[str, dict[str, str]]:
    """A new customer and a session's headers."""
    document = await sign_up(client, document)
    return document, await log_in(client, document)


async def open_account(
    client: TestClient[Any, Any], headers: dict[str, str], owners: list[str], kind: str = "individual"
) -> int:
    response = await client.post(
        "/api/v1/accounts", json={"kind": kind, "owners": owners}, headers=headers
    )
    assert response.status == 201, await response.text()
    return int((await response.json())["account"])


async def deposit(
    client: TestClient[Any, Any], headers: dict[str, str], account: int, amount_cents: int
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/deposits",
        json={"bank": "alfa", "account": account, "amount_cents": amount_cents},
        headers=headers,
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def audit(client: TestClient[Any, Any]) -> dict[str, Any]:
    response = await client.get("/api/v1/audit")
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body
