"""Bad input to the client API: every case is a 4xx in the contract's error shape, and the
bank's audit (totals, counts, journal size) is exactly the same before and after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from bank.api import ACCOUNT_NUMBER_MAX, BODY_BYTES_MAX, JOINT_OWNERS_MAX, NAME_CHARS_MAX, TRANSFER_SOURCES_MAX
from bank import auth
from bank.auth import PASSWORD_CHARS_MAX, PASSWORD_CHARS_MIN, token_hash
from bank.keys import LEDGER
from bank.ledger import AMOUNT_CENTS_MAX
from test_api_support import PASSWORD, audit, customer, deposit, make_app, new_cpf, open_account

Client = TestClient[Any, Any]
NO_AUTH = "no-auth"
BAD_TOKEN = "bad-token"
RAW = "raw"


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about input checking: a cheap scrypt keeps the table fast."""
    monkeypatch.setattr(auth, "SCRYPT_N", 2**4)


def _cash(amount: Any = 10, account: Any = "ACCOUNT", bank: Any = "alfa", **extra: Any) -> dict[str, Any]:
    body = {"bank": bank, "account": account, "amount_cents": amount}
    body.update(extra)
    return body


def _without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


def _transfer(sources: Any = None, destination: Any = None) -> dict[str, Any]:
    return {
        "sources": sources if sources is not None else [{"bank": "alfa", "account": "ACCOUNT", "amount_cents": 5}],
        "destination": destination if destination is not None else {"bank": "alfa", "account": "OTHER"},
    }


GOOD_SIGNUP = {"document": "NEW", "name": "Ana", "password": PASSWORD}

# (name, method, path, body or RAW bytes, auth, status, code)
CASES: list[tuple[str, str, str, Any, str, int, str]] = [
    # customers
    ("signup missing name", "POST", "/api/v1/customers", _without(GOOD_SIGNUP, "name"), NO_AUTH, 400, "invalid_request"),
    ("signup unknown field", "POST", "/api/v1/customers", {**GOOD_SIGNUP, "admin": True}, NO_AUTH, 400, "invalid_request"),
    ("signup bad check digit", "POST", "/api/v1/customers", {**GOOD_SIGNUP, "document": "52998224724"}, NO_AUTH, 400, "invalid_document"),
    ("signup punctuated cpf", "POST", "/api/v1/customers", {**GOOD_SIGNUP, "document": "529.982.247-25"}, NO_AUTH, 400, "invalid_document"),
    ("signup numeric document", "POST", "/api/v1/customers", {**GOOD_SIGNUP, "document": 52998224725}, NO_AUTH, 400, "invalid_request"),
    ("signup repeated digits", "POST", "/api/v1/customers", {**GOOD_SIGNUP, "document": "11111111111"}, NO_AUTH, 400, "invalid_document"),
    ("signup empty name", "POST", "/api/v1/customers", {**GOOD_SIGNUP, "name": "   "}, NO_AUTH, 400, "invalid_request"),
    ("signup long name", "POST", "/api/v1/customers", {**GOOD_SIGNUP, "name": "a" * (NAME_CHARS_MAX + 1)}, NO_AUTH, 400, "invalid_request"),
    ("signup control char name", "POST", "/api/v1/customers", {**GOOD_SIGNUP, "name": "An\na"}, NO_AUTH, 400, "invalid_request"),
    ("signup short password", "POST", "/api/v1/customers", {**GOOD_SIGNUP, "password": "x" * (PASSWORD_CHARS_MIN - 1)}, NO_AUTH, 400, "invalid_request"),
    ("signup long password", "POST", "/api/v1/customers", {**GOOD_SIGNUP, "password": "x" * (PASSWORD_CHARS_MAX + 1)}, NO_AUTH, 400, "invalid_request"),
    ("signup array body", "POST", "/api/v1/customers", [GOOD_SIGNUP], NO_AUTH, 400, "invalid_request"),
    # A JSON string may hold a lone surrogate, which no password hash or stored row can (a 500 once).
    ("signup password lone surrogate", "POST", "/api/v1/customers", {**GOOD_SIGNUP, "password": "correct\ud800horse"}, NO_AUTH, 400, "invalid_request"),
    ("signup name lone surrogate", "POST", "/api/v1/customers", {**GOOD_SIGNUP, "name": "Ana \udc80"}, NO_AUTH, 400, "invalid_request"),
    ("signup existing", "POST", "/api/v1/customers", {**GOOD_SIGNUP, "document": "OWNER"}, NO_AUTH, 409, "customer_exists"),
    # sessions
    ("login missing password", "POST", "/api/v1/sessions", {"document": "OWNER"}, NO_AUTH, 400, "invalid_request"),
    ("login invalid document", "POST", "/api/v1/sessions", {"document": "123", "password": PASSWORD}, NO_AUTH, 400, "invalid_document"),
    ("login password lone surrogate", "POST", "/api/v1/sessions", {"document": "OWNER", "password": "correct\ud800horse"}, NO_AUTH, 400, "invalid_request"),
    ("logout without token", "DELETE", "/api/v1/sessions", None, NO_AUTH, 401, "unauthorized"),
    ("logout bad token", "DELETE", "/api/v1/sessions", None, BAD_TOKEN, 401, "unauthorized"),
    # accounts
    ("account without token", "POST", "/api/v1/accounts", {"kind": "individual", "owners": ["OWNER"]}, NO_AUTH, 401, "unauthorized"),
    ("account bad token", "POST", "/api/v1/accounts", {"kind": "individual", "owners": ["OWNER"]}, BAD_TOKEN, 401, "unauthorized"),
    ("account invalid owner", "POST", "/api/v1/accounts", {"kind": "individual", "owners": ["00000000001"]}, "owner", 400, "invalid_document"),
    ("account owners not a list", "POST", "/api/v1/accounts", {"kind": "individual", "owners": "OWNER"}, "owner", 400, "invalid_request"),
    ("account too many owners", "POST", "/api/v1/accounts", {"kind": "joint", "owners": ["OWNER"] * (JOINT_OWNERS_MAX + 1)}, "owner", 400, "invalid_request"),
    ("account kind int", "POST", "/api/v1/accounts", {"kind": 1, "owners": ["OWNER"]}, "owner", 400, "invalid_request"),
    ("account someone else", "POST", "/api/v1/accounts", {"kind": "individual", "owners": ["STRANGER"]}, "owner", 403, "forbidden"),
    ("accounts list bad scope", "GET", "/api/v1/accounts?scope=galaxy", None, "owner", 400, "invalid_request"),
    ("accounts list bad token", "GET", "/api/v1/accounts", None, BAD_TOKEN, 401, "unauthorized"),
    # deposits and withdrawals
    ("deposit without token", "POST", "/api/v1/deposits", _cash(), NO_AUTH, 401, "unauthorized"),
    ("deposit bad token", "POST", "/api/v1/deposits", _cash(), BAD_TOKEN, 401, "unauthorized"),
    ("deposit expired token", "POST", "/api/v1/deposits", _cash(), "expired", 401, "unauthorized"),
    ("deposit missing amount", "POST", "/api/v1/deposits", _without(_cash(), "amount_cents"), "owner", 400, "invalid_request"),
    ("deposit missing bank", "POST", "/api/v1/deposits", _without(_cash(), "bank"), "owner", 400, "invalid_request"),
    ("deposit float amount", "POST", "/api/v1/deposits", RAW + '{"bank": "alfa", "account": ACCOUNT, "amount_cents": 10.0}', "owner", 400, "invalid_request"),
    ("deposit exponent amount", "POST", "/api/v1/deposits", RAW + '{"bank": "alfa", "account": ACCOUNT, "amount_cents": 1e3}', "owner", 400, "invalid_request"),
    ("deposit NaN amount", "POST", "/api/v1/deposits", RAW + '{"bank": "alfa", "account": ACCOUNT, "amount_cents": NaN}', "owner", 400, "invalid_request"),
    ("deposit string amount", "POST", "/api/v1/deposits", _cash(amount="10"), "owner", 400, "invalid_request"),
    ("deposit bool amount", "POST", "/api/v1/deposits", _cash(amount=True), "owner", 400, "invalid_request"),
    ("deposit null amount", "POST", "/api/v1/deposits", _cash(amount=None), "owner", 400, "invalid_request"),
    ("deposit zero", "POST", "/api/v1/deposits", _cash(amount=0), "owner", 400, "invalid_request"),
    ("deposit negative", "POST", "/api/v1/deposits", _cash(amount=-5), "owner", 400, "invalid_request"),
    ("deposit over maximum", "POST", "/api/v1/deposits", _cash(amount=AMOUNT_CENTS_MAX + 1), "owner", 400, "invalid_request"),
    ("deposit huge", "POST", "/api/v1/deposits", _cash(amount=10**40), "owner", 400, "invalid_request"),
    ("deposit string account", "POST", "/api/v1/deposits", _cash(account="1"), "owner", 400, "invalid_request"),
    ("deposit account zero", "POST", "/api/v1/deposits", _cash(account=0), "owner", 400, "invalid_request"),
    ("deposit account too big", "POST", "/api/v1/deposits", _cash(account=ACCOUNT_NUMBER_MAX + 1), "owner", 400, "invalid_request"),
    ("deposit unknown account", "POST", "/api/v1/deposits", _cash(account=999_999), "owner", 404, "unknown_account"),
    ("deposit someone else's account", "POST", "/api/v1/deposits", _cash(), "stranger", 403, "forbidden"),
    ("deposit unknown bank", "POST", "/api/v1/deposits", _cash(bank="zeta"), "owner", 422, "unknown_bank"),
    ("deposit bank not a string", "POST", "/api/v1/deposits", _cash(bank=1), "owner", 400, "invalid_request"),
    ("deposit extra field", "POST", "/api/v1/deposits", _cash(note="hi"), "owner", 400, "invalid_request"),
    ("deposit not json", "POST", "/api/v1/deposits", RAW + "amount=10", "owner", 400, "invalid_request"),
    # Deeper than the JSON readers' recursion allows (a 500 once): refused like any bad body.
    ("deposit nested too deeply", "POST", "/api/v1/deposits", RAW + '{"a":' * 3000 + "1" + "}" * 3000, "owner", 400, "invalid_request"),
    ("transfer nested too deeply", "POST", "/api/v1/transfers", RAW + "[" * 20_000 + "]" * 20_000, "owner", 400, "invalid_request"),
    ("deposit empty body", "POST", "/api/v1/deposits", RAW, "owner", 400, "invalid_request"),
    ("deposit invalid utf-8", "POST", "/api/v1/deposits", b"\xff\xfe{}", "owner", 400, "invalid_request"),
    ("deposit oversized", "POST", "/api/v1/deposits", RAW + " " * (BODY_BYTES_MAX + 1), "owner", 413, "payload_too_large"),
    ("deposit bad idempotency key", "POST", "/api/v1/deposits", _cash(), "owner-badkey", 400, "invalid_request"),
    ("withdrawal too much", "POST", "/api/v1/withdrawals", _cash(amount=10_000), "owner", 409, "insufficient_funds"),
    ("withdrawal someone else's", "POST", "/api/v1/withdrawals", _cash(), "stranger", 403, "forbidden"),
    ("withdrawal float", "POST", "/api/v1/withdrawals", RAW + '{"bank": "alfa", "account": ACCOUNT, "amount_cents": 0.5}', "owner", 400, "invalid_request"),
    ("withdrawal without token", "POST", "/api/v1/withdrawals", _cash(), NO_AUTH, 401, "unauthorized"),
    # transfers
    ("transfer without token", "POST", "/api/v1/transfers", _transfer(), NO_AUTH, 401, "unauthorized"),
    ("transfer no sources", "POST", "/api/v1/transfers", _transfer(sources=[]), "owner", 400, "invalid_request"),
    ("transfer too many sources", "POST", "/api/v1/transfers", _transfer(sources=[{"bank": "alfa", "account": n, "amount_cents": 1} for n in range(1, TRANSFER_SOURCES_MAX + 2)]), "owner", 400, "invalid_request"),
    ("transfer source not object", "POST", "/api/v1/transfers", _transfer(sources=[1]), "owner", 400, "invalid_request"),
    ("transfer float amount", "POST", "/api/v1/transfers", _transfer(sources=[{"bank": "alfa", "account": "ACCOUNT", "amount_cents": 1.5}]), "owner", 400, "invalid_request"),
    ("transfer zero amount", "POST", "/api/v1/transfers", _transfer(sources=[{"bank": "alfa", "account": "ACCOUNT", "amount_cents": 0}]), "owner", 400, "invalid_request"),
    ("transfer duplicate source", "POST", "/api/v1/transfers", _transfer(sources=[{"bank": "alfa", "account": "ACCOUNT", "amount_cents": 1}] * 2), "owner", 400, "invalid_request"),
    ("transfer to itself", "POST", "/api/v1/transfers", _transfer(destination={"bank": "alfa", "account": "ACCOUNT"}), "owner", 400, "invalid_request"),
    ("transfer destination missing account", "POST", "/api/v1/transfers", _transfer(destination={"bank": "alfa"}), "owner", 400, "invalid_request"),
    ("transfer from someone else's", "POST", "/api/v1/transfers", _transfer(), "stranger", 403, "forbidden"),
    ("transfer to unknown account", "POST", "/api/v1/transfers", _transfer(destination={"bank": "alfa", "account": 999_999}), "owner", 404, "unknown_account"),
    ("transfer unknown bank", "POST", "/api/v1/transfers", _transfer(destination={"bank": "zeta", "account": 1}), "owner", 422, "unknown_bank"),
    ("transfer read without token", "GET", "/api/v1/transfers/alfa-x", None, NO_AUTH, 401, "unauthorized"),
    ("transfer read unknown", "GET", "/api/v1/transfers/alfa-x", None, "owner", 404, "not_found"),
    ("transfer read huge id", "GET", "/api/v1/transfers/" + "x" * 500, None, "owner", 404, "not_found"),
    ("transfer bad wait_ms", "POST", "/api/v1/transfers?wait_ms=-1", _transfer(), "owner", 400, "invalid_request"),
    ("transfer wait_ms too long for int()", "POST", "/api/v1/transfers?wait_ms=" + "9" * 5_000, _transfer(), "owner", 400, "invalid_request"),
    ("transfer wait_ms in other digits", "POST", "/api/v1/transfers?wait_ms=%D9%A1%D9%A2", _transfer(), "owner", 400, "invalid_request"),
    ("transfer unknown query parameter", "POST", "/api/v1/transfers?force=1", _transfer(), "owner", 400, "invalid_request"),
    ("audit unknown query parameter", "GET", "/api/v1/audit?all=1", None, NO_AUTH, 400, "invalid_request"),
    ("transfer query parameter twice", "POST", "/api/v1/transfers?wait_ms=1&wait_ms=2", _transfer(), "owner", 400, "invalid_request"),
    # ambiguous or unreadable bodies and headers
    ("deposit amount named twice", "POST", "/api/v1/deposits", RAW + '{"bank": "alfa", "account": ACCOUNT, "amount_cents": 100, "amount_cents": 5}', "owner", 400, "invalid_request"),
    ("transfer source amount named twice", "POST", "/api/v1/transfers", RAW + '{"sources": [{"bank": "alfa", "account": ACCOUNT, "amount_cents": 5, "amount_cents": 6}], "destination": {"bank": "alfa", "account": OTHER}}', "owner", 400, "invalid_request"),
    ("deposit body not in its content encoding", "POST", "/api/v1/deposits", RAW + '{"bank": "alfa", "account": ACCOUNT, "amount_cents": 10}', "owner-gzip", 400, "invalid_request"),
    ("deposit two idempotency keys", "POST", "/api/v1/deposits", _cash(), "owner-twokeys", 400, "invalid_request"),
    # routes
    ("unknown route", "GET", "/api/v1/vault", None, NO_AUTH, 404, "not_found"),
    ("wrong method", "PATCH", "/api/v1/deposits", None, "owner", 405, "method_not_allowed"),
    ("unknown route outside the api", "GET", "/vault", None, NO_AUTH, 404, "not_found"),
]


@pytest.fixture
async def setup(aiohttp_client: Any, tmp_path: Path) -> dict[str, Any]:
    client: Client = await aiohttp_client(make_app(tmp_path))
    owner, owner_headers = await customer(client)
    stranger, stranger_headers = await customer(client)
    account = await open_account(client, owner_headers, [owner])
    other = await open_account(client, owner_headers, [owner])
    await deposit(client, owner_headers, account, 1_000)
    expired_document, _ = await customer(client)
    return {
        "client": client,
        "values": {"OWNER": owner, "STRANGER": stranger, "ACCOUNT": account, "OTHER": other},
        "auth": {
            NO_AUTH: {},
            BAD_TOKEN: {"Authorization": "Bearer not-a-real-token"},
            "owner": owner_headers,
            "owner-badkey": {**owner_headers, "Idempotency-Key": "bad key with spaces"},
            "owner-twokeys": CIMultiDict([*owner_headers.items(), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")]),
            "owner-gzip": {**owner_headers, "Content-Encoding": "gzip"},
            "stranger": stranger_headers,
        },
        "expired_document": expired_document,
    }


def _substitute(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, str) and value in values:
        return values[value]
    if isinstance(value, str) and value == "NEW":
        return new_cpf()
    if isinstance(value, list):
        return [_substitute(item, values) for item in value]
    if isinstance(value, dict):
        return {key: _substitute(item, values) for key, item in value.items()}
    return value


@pytest.mark.parametrize(("name", "method", "path", "body", "who", "status", "code"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_refused_and_changes_nothing(
    setup: dict[str, Any], name: str, method: str, path: str, body: Any, who: str, status: int, code: str
) -> None:
    client: Client = setup["client"]
    values = setup["values"]
    if who == "expired":
        # A token whose session exists but has expired: issue one, then move the clock on.
        token = "expired-token"
        ledger = client.app[LEDGER]
        await ledger.create_session(token_hash(token), setup["expired_document"], ledger.now_ms() - 1)
        headers = {"Authorization": f"Bearer {token}"}
    else:
        headers = CIMultiDict(setup["auth"][who])
    kwargs: dict[str, Any] = {"headers": headers}
    if isinstance(body, bytes):
        kwargs["data"] = body
    elif isinstance(body, str) and body.startswith(RAW):
        raw = body[len(RAW):]
        for placeholder, value in values.items():
            raw = raw.replace(placeholder, str(value))
        kwargs["data"] = raw.encode()
        headers["Content-Type"] = "application/json"
    elif body is not None:
        kwargs["json"] = _substitute(body, values)
    before = await audit(client)
    accounts_before = await client.app[LEDGER].all_accounts()
    response = await client.request(method, path, **kwargs)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    answer = await response.json()
    assert set(answer) == {"error"} and set(answer["error"]) == {"code", "message"}
    assert answer["error"]["code"] == code
    assert await audit(client) == before
    assert await client.app[LEDGER].all_accounts() == accounts_before


@pytest.mark.parametrize("token", ["\udced\udcb1", "tok\u00e9n", "\u00f1"])
async def test_a_token_that_is_not_ascii_is_unauthorized_not_an_error(token: str) -> None:
    """aiohttp hands a header's undecodable bytes on as lone surrogates, which cannot even be
    hashed: such a token, like any token that is not ASCII, names no session."""
    from types import SimpleNamespace

    from bank.api import ApiError, _caller

    # Only the headers: the token is refused before anything else of the request is read.
    request = SimpleNamespace(headers=CIMultiDict({"Authorization": f"Bearer {token}"}))
    with pytest.raises(ApiError) as refused:
        await _caller(request)  # type: ignore[arg-type]
    assert refused.value.refusal.code == "unauthorized"


def test_a_punctuated_document_is_refused_saying_digits_only() -> None:
    """A CPF written as people write it (``529.982.247-25``) is refused: the message says
    how to write it, not only what it must be."""
    from bank.api import ApiError, _document

    with pytest.raises(ApiError) as refused:
        _document("529.982.247-25")
    assert refused.value.refusal.code == "invalid_document"
    assert "digits only, no dots, dashes or slashes" in refused.value.refusal.message
    assert _document("52998224725") == "52998224725"


async def test_what_is_wrong_with_a_body_is_said(setup: dict[str, Any]) -> None:
    """A name given twice is named (the last one would win unseen), JSON that is not JSON is
    told apart from JSON that is not an object; colons inside strings are no repeat."""
    client: Client = setup["client"]
    headers = {**setup["auth"]["owner"], "Content-Type": "application/json"}
    account = setup["values"]["ACCOUNT"]
    for raw, message in [
        (f'{{"bank": "alfa", "account": {account}, "amount_cents": 100, "amount_cents": 5}}',
         "the body names 'amount_cents' more than once"),
        ('{"bank": "alfa", "account": ', "the body is not JSON (UTF-8)"),
        ("[1, 2]", "the body must be a JSON object"),
        (f'{{"bank": "alfa", "account": {account}, "amount_cents": 1.0}}',
         "numbers must be whole (money is in cents): 1.0 is not"),
    ]:
        response = await client.post("/api/v1/deposits", data=raw.encode(), headers=headers)
        assert response.status == 400 and (await response.json())["error"]["message"] == message, raw
    response = await client.post(
        "/api/v1/customers",
        data=f'{{"document": "{new_cpf()}", "name": "Ana: a:b", "password": "{PASSWORD}"}}'.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 201, await response.text()

