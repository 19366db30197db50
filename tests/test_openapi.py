"""The served OpenAPI document against the served API: schemathesis draws requests from the
document (valid and invalid ones) and checks every answer: no 5xx, only documented statuses,
content types and bodies that match the document, invalid data refused."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi import checks as openapi_checks

from bank import auth, openapi
from bank.documents import complete_cpf
from test_api_support import PASSWORD, make_app

EXAMPLES_PER_OPERATION_MAX = 20
"""Hypothesis examples per route: enough to hit every branch of validation, fast enough for CI."""
SERVER_START_S_MAX = 10.0


class ServedBank:
    """A bank's client API on 127.0.0.1 (random port), served from a background thread."""

    def __init__(self, data_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.data_dir = data_dir
        self.thread = threading.Thread(target=self._serve, name="served-bank", daemon=True)
        self.stopped: asyncio.Event | None = None
        self.thread.start()
        assert self.ready.wait(SERVER_START_S_MAX), "the bank did not start"
        self.url = f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())
        self.loop.close()

    async def _main(self) -> None:
        runner = web.AppRunner(make_app(self.data_dir))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self.stopped = asyncio.Event()
        self.ready.set()
        await self.stopped.wait()
        await runner.cleanup()

    def stop(self) -> None:
        assert self.stopped is not None
        self.loop.call_soon_threadsafe(self.stopped.set)
        self.thread.join(SERVER_START_S_MAX)


@pytest.fixture(scope="module")
def served() -> Iterator[dict[str, Any]]:
    # Hash cost is not under test here; a cheap scrypt keeps hundreds of sign-ups fast.
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        patch.setattr(auth, "SCRYPT_N", 2**4)
        bank = ServedBank(Path(folder))
        try:
            document = complete_cpf("529982247")
            session = requests.Session()
            signed_up = session.post(
                f"{bank.url}/api/v1/customers",
                json={"document": document, "name": "Ana", "password": PASSWORD},
                timeout=10,
            )
            assert signed_up.status_code == 201
            served = {"bank": bank, "document": document, "http": session}
            served["token"] = fresh_token(served)
            yield served
        finally:
            bank.stop()


def fresh_token(served: dict[str, Any]) -> str:
    response = served["http"].post(
        f"{served['bank'].url}/api/v1/sessions",
        json={"document": served["document"], "password": PASSWORD},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


@pytest.fixture(scope="module")
def api_schema(served: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_url(f"{served['bank'].url}/api/v1/openapi.json")


CHECKS = [
    checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.negative_data_rejection,
]

# Every operation of the document, built here without a server, so each gets its own test id.
CROSS_BANK_PATHS = {"/api/v1/consortium/audit"}
_DOCUMENT = openapi.document(bank_id="alfa", bank_name="Banco Alfa")
OPERATIONS = [
    pytest.param(path, method.upper(), mode, id=f"{method.upper()} {path} {mode.value}")
    for path, item in _DOCUMENT["paths"].items()
    for method, operation in item.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # An operation that takes nothing has no invalid request to draw.
    if mode is GenerationMode.POSITIVE or "parameters" in operation or "requestBody" in operation
    # Served by the inter-bank layer, which needs a ring (tests/test_interbank.py covers it).
    if path not in CROSS_BANK_PATHS
]


@pytest.mark.parametrize(("path", "method", "mode"), OPERATIONS)
def test_the_api_answers_as_its_document_says(
    api_schema: Any, served: dict[str, Any], path: str, method: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    token = served["token"]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION_MAX,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: Any) -> None:
        # A logout drawn by schemathesis must not end the session the next example uses.
        headers: dict[str, str] = {}
        # A negative header section may be "Authorization left out": then send none.
        if not case.meta.is_negative_at(ParameterLocation.HEADER):
            bearer = fresh_token(served) if method == "DELETE" else token
            headers["Authorization"] = f"Bearer {bearer}"
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=10)

    check()


def test_every_operation_declares_the_refusals_every_route_may_answer() -> None:
    """Any route refuses an unknown or repeated query parameter with 400 (the API's
    middleware), and may find itself or another bank unavailable (503)."""
    paths = openapi.document(bank_id="alfa", bank_name="Banco Alfa")["paths"]
    operations = [(path, method, op) for path, item in paths.items() for method, op in item.items()]
    assert len(operations) >= 10
    for path, method, operation in operations:
        assert {"400", "503"} <= set(operation["responses"]), (method, path)
