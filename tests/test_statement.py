"""An account's statement: every movement of its money, newest first, in pages that together
list each journal transaction once; at the ledger and through the client API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bank.documents import complete_cpf
from bank.ledger import STATEMENT_LINES_MAX, Ledger, Statement, new_transfer_id
from test_api_support import customer, deposit, make_app, open_account

ANA = complete_cpf("529982247")
BRUNO = complete_cpf("111444777")

Client = TestClient[Any, Any]


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    opened = await Ledger.open(tmp_path / "alfa.sqlite3")
    yield opened
    await opened.close()


async def _accounts(ledger: Ledger) -> tuple[int, int]:
    for document in (ANA, BRUNO):
        assert (await ledger.create_customer(document, "x", "hash")).status == 201
    mine = (await ledger.create_account("individual", [ANA])).body["account"]
    joint = (await ledger.create_account("joint", [ANA, BRUNO])).body["account"]
    return mine, joint


async def _every_page(ledger: Ledger, number: int, limit: int) -> list[Any]:
    """Every line of the account's statement, read page by page (each page checked)."""
    lines: list[Any] = []
    before = None
    for _ in range(1_000):  # bounded: far more pages than any test writes
        page = await ledger.statement(number, before=before, limit=limit)
        assert page is not None
        # A page is full unless it is the last: no page is empty but a lone one.
        assert len(page.lines) == limit if page.next_before is not None else len(page.lines) <= limit
        assert page.lines or (not lines and page.next_before is None)
        lines += page.lines
        if page.next_before is None:
            return lines
        before = page.next_before
    raise AssertionError("the pages never ended")


async def test_a_statement_shows_each_movement_newest_first(ledger: Ledger) -> None:
    mine, joint = await _accounts(ledger)
    assert (await ledger.deposit(mine, 1_000, document=ANA)).status == 201
    assert (await ledger.withdraw(mine, 150, document=ANA)).status == 201
    local = await ledger.transfer_local([(mine, 250)], joint, document=ANA, request={})
    assert local.body["status"] == "committed"
    # A cross-bank transfer's life at a source: held, then paid out; another one given back.
    sent, given_back = new_transfer_id("beta"), new_transfer_id("beta")
    assert await ledger.place_hold(sent, mine, 100, ANA) == "ok"
    assert await ledger.commit_hold(sent, mine) == "ok"
    assert await ledger.place_hold(given_back, mine, 40, ANA) == "ok"
    assert await ledger.release_hold(given_back, mine) == "ok"
    arrived = new_transfer_id("gama")
    assert await ledger.credit(arrived, mine, 70) == "ok"
    assert await ledger.place_hold(new_transfer_id("beta"), mine, 30, ANA) == "ok"  # still held

    page = await ledger.statement(mine)
    assert isinstance(page, Statement) and page.next_before is None
    assert [(l.kind, l.available_cents, l.held_cents) for l in page.lines] == [
        ("hold", -30, 30),
        ("credit", 70, 0),
        ("release", 40, -40),
        ("hold", -40, 40),
        ("commit", 0, -100),
        ("hold", -100, 100),
        ("transfer", -250, 0),
        ("withdrawal", -150, 0),
        ("deposit", 1_000, 0),
    ]
    assert [l.transfer_id for l in page.lines[1:6]] == [arrived, given_back, given_back, sent, sent]
    assert page.lines[-1].transfer_id is None
    txns = [line.txn for line in page.lines]
    assert txns == sorted(txns, reverse=True)
    # The lines add up to the account as it stands, read with them.
    assert page.account.balance_cents == sum(l.available_cents for l in page.lines) == 540
    assert page.account.held_cents == sum(l.held_cents for l in page.lines) == 30
    # The joint account saw only the local transfer's credit.
    joint_page = await ledger.statement(joint)
    assert joint_page is not None
    assert [(l.kind, l.available_cents, l.transfer_id) for l in joint_page.lines] == [
        ("transfer", 250, local.body["id"])
    ]
    # JSON as the API answers it.
    shown = page.to_json()
    assert shown["account"] == mine and shown["balance_cents"] == 540 and shown["next_before"] is None
    assert shown["lines"][0] == {
        "txn": txns[0], "at_ms": page.lines[0].at_ms, "kind": "hold",
        "transfer_id": page.lines[0].transfer_id, "available_cents": -30, "held_cents": 30,
    }  # fmt: skip


async def test_pages_list_every_line_once_and_a_missing_account_has_none(ledger: Ledger) -> None:
    mine, joint = await _accounts(ledger)
    for amount in range(1, 8):
        assert (await ledger.deposit(mine, amount, document=ANA)).status == 201
        assert (await ledger.deposit(joint, 100 * amount, document=BRUNO)).status == 201
    for index in range(3):  # two entries each (available and held) in one transaction
        assert await ledger.place_hold(new_transfer_id("beta"), mine, 1 + index, ANA) == "ok"
    whole = await ledger.statement(mine)
    assert whole is not None and len(whole.lines) == 10
    for limit in (1, 2, 3, 9, 10, 11):
        assert await _every_page(ledger, mine, limit) == list(whole.lines), limit
    first = await ledger.statement(mine, limit=4)
    assert first is not None and first.next_before is not None
    second = await ledger.statement(mine, before=first.next_before, limit=4)
    assert second is not None and second.lines[0].txn < first.lines[-1].txn
    assert await ledger.statement(mine + joint + 1) is None
    assert await ledger.statement(-1) is None  # the bank's own accounts are nobody's to read
    empty = await ledger.statement((await ledger.create_account("individual", [ANA])).body["account"])
    assert empty is not None and empty.lines == () and empty.next_before is None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    moves=st.lists(
        st.tuples(st.sampled_from(["deposit", "withdraw", "transfer", "hold", "commit", "release", "credit"]),
                  st.integers(1, 500), st.booleans()),
        max_size=40,
    ),
    limit=st.integers(1, 12),
)
def test_any_history_reads_back_whole_in_pages_of_any_size(
    tmp_path_factory: pytest.TempPathFactory, moves: list[tuple[str, int, bool]], limit: int
) -> None:
    asyncio.run(_read_back(tmp_path_factory.mktemp("statement"), moves, limit))


async def _read_back(folder: Path, moves: list[tuple[str, int, bool]], limit: int) -> None:
    ledger = await Ledger.open(folder / "alfa.sqlite3")
    try:
        mine, joint = await _accounts(ledger)
        held: list[tuple[str, int]] = []
        for kind, amount, to_joint in moves:
            account = joint if to_joint else mine
            other = mine if to_joint else joint
            if kind == "deposit":
                await ledger.deposit(account, amount, document=ANA)
            elif kind == "withdraw":
                await ledger.withdraw(account, amount, document=ANA)
            elif kind == "transfer":
                await ledger.transfer_local([(account, amount)], other, document=ANA, request={})
            elif kind == "hold":
                transfer_id = new_transfer_id("beta")
                if await ledger.place_hold(transfer_id, account, amount, ANA) == "ok":
                    held.append((transfer_id, account))
            elif kind == "credit":
                await ledger.credit(new_transfer_id("gama"), account, amount)
            elif held:
                transfer_id, where = held.pop(0)
                if kind == "commit":
                    assert await ledger.commit_hold(transfer_id, where) == "ok"
                else:
                    assert await ledger.release_hold(transfer_id, where) == "ok"
        for number in (mine, joint):
            lines = await _every_page(ledger, number, limit)
            whole = await ledger.statement(number, limit=STATEMENT_LINES_MAX)
            assert whole is not None
            if whole.next_before is None:
                assert lines == list(whole.lines)
            txns = [line.txn for line in lines]
            assert txns == sorted(set(txns), reverse=True)  # each once, newest first
            assert sum(l.available_cents for l in lines) == whole.account.balance_cents
            assert sum(l.held_cents for l in lines) == whole.account.held_cents
            assert all(l.available_cents or l.held_cents for l in lines)
    finally:
        await ledger.close()


# -- through the client API ---------------------------------------------------------------------


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> Client:
    result: Client = await aiohttp_client(make_app(tmp_path))
    return result


async def test_an_owner_reads_the_statement_page_by_page(client: Client) -> None:
    ana, ana_headers = await customer(client)
    bruno, bruno_headers = await customer(client)
    joint = await open_account(client, ana_headers, [ana, bruno], kind="joint")
    for amount in (100, 200, 300):
        await deposit(client, bruno_headers, joint, amount)
    path = f"/api/v1/accounts/alfa/{joint}/statement"
    response = await client.get(path + "?limit=2", headers=ana_headers)
    assert response.status == 200
    first = await response.json()
    assert first["bank"] == "alfa" and first["account"] == joint and first["balance_cents"] == 600
    assert [(l["kind"], l["available_cents"]) for l in first["lines"]] == [("deposit", 300), ("deposit", 200)]
    rest = await (await client.get(f"{path}?limit=2&before={first['next_before']}", headers=bruno_headers)).json()
    assert [l["available_cents"] for l in rest["lines"]] == [100] and rest["next_before"] is None
    # Without a limit: the default page, which holds all three here.
    whole = await (await client.get(path, headers=ana_headers)).json()
    assert [l["available_cents"] for l in whole["lines"]] == [300, 200, 100]


async def test_a_statement_is_refused_clearly_and_only_its_owners_read_it(client: Client) -> None:
    ana, ana_headers = await customer(client)
    _, carla_headers = await customer(client)
    mine = await open_account(client, ana_headers, [ana])
    await deposit(client, ana_headers, mine, 500)
    path = f"/api/v1/accounts/alfa/{mine}/statement"
    assert (await client.get(path)).status == 401
    for who, wrong_path, status, code in [
        (carla_headers, path, 404, "unknown_account"),  # not hers: answered like a missing one
        (ana_headers, f"/api/v1/accounts/alfa/{mine + 1}/statement", 404, "unknown_account"),
        (ana_headers, "/api/v1/accounts/alfa/abc/statement", 400, "invalid_request"),
        (ana_headers, "/api/v1/accounts/alfa/0/statement", 400, "invalid_request"),
        (ana_headers, "/api/v1/accounts/alfa/" + "9" * 30 + "/statement", 400, "invalid_request"),
        (ana_headers, path + "?limit=0", 400, "invalid_request"),
        (ana_headers, path + f"?limit={STATEMENT_LINES_MAX + 1}", 400, "invalid_request"),
        (ana_headers, path + "?limit=-1", 400, "invalid_request"),
        (ana_headers, path + "?before=0", 400, "invalid_request"),
        (ana_headers, path + "?before=1.5", 400, "invalid_request"),
        (ana_headers, path + "?page=2", 400, "invalid_request"),
        (ana_headers, f"/api/v1/accounts/zeta/{mine}/statement", 422, "unknown_bank"),
        # Another bank's account needs the ring, which this client API alone does not run.
        (ana_headers, f"/api/v1/accounts/beta/{mine}/statement", 501, "not_implemented"),
    ]:
        response = await client.get(wrong_path, headers=who)
        body = await response.json()
        assert (response.status, body["error"]["code"]) == (status, code), (wrong_path, body)
        assert body["error"]["message"]
    assert [l["kind"] for l in (await (await client.get(path, headers=ana_headers)).json())["lines"]] == ["deposit"]


async def test_a_page_is_read_in_one_snapshot_with_its_account(ledger: Ledger) -> None:
    """Deposits land while pages are read: every whole statement adds up to the balance read
    with it, never to one a deposit earlier or later."""
    mine, _ = await _accounts(ledger)
    deposits = 60

    async def deposit_all() -> None:
        for _ in range(deposits):
            assert (await ledger.deposit(mine, 1, document=ANA)).status == 201

    async def read_all() -> int:
        reads = 0
        while True:
            page = await ledger.statement(mine)
            assert page is not None and page.next_before is None
            assert sum(line.available_cents for line in page.lines) == page.account.balance_cents, page
            reads += 1
            if page.account.balance_cents == deposits:
                return reads

    reads = await asyncio.gather(read_all(), read_all(), deposit_all())
    assert min(reads[:2]) > 1  # the reads overlapped the deposits
