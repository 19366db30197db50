"""Cross-bank operations on three banks served in this process on 127.0.0.1 (random ports):
the real ring, ledger, client API and signed inter-bank routes, without child processes."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog.testing
from aiohttp import web

from bank.documents import complete_cpf
from bank import ledger as ledger_module
from bank.keys import LEDGER, RING, TRANSFERS
from bank.process import write_ring_file
from bank.server import build_app
from bank.ledger import new_transfer_id, request_fingerprint
from bank.transfers.service import ROUND_MS_MIN
from tokenring import jsonio
from tokenring.signing import SignedClient

SECRET = b"test-secret-for-interbank"
DEADLINE_S = 15.0


class Banks:
    def __init__(self, config: Any, apps: dict[str, web.Application], session: aiohttp.ClientSession,
                 runners: dict[str, web.AppRunner]):
        self.config = config
        self.apps = apps
        self.session = session
        self.runners = runners
        self.tokens: dict[tuple[str, str], str] = {}

    def url(self, bank: str) -> str:
        return str(self.config.bank(bank).url)

    async def call(
        self, method: str, bank: str, path: str, body: Any = None, *, who: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        all_headers = dict(headers or {})
        if who is not None:
            all_headers["Authorization"] = f"Bearer {self.tokens[(bank, who)]}"
        async with self.session.request(method, self.url(bank) + path, json=body, headers=all_headers) as r:
            return r.status, await r.json()

    async def customer(self, bank: str, document: str) -> None:
        status, _ = await self.call("POST", bank, "/api/v1/customers",
                                    {"document": document, "name": "Ana", "password": "correct horse"})
        assert status == 201
        status, body = await self.call("POST", bank, "/api/v1/sessions",
                                       {"document": document, "password": "correct horse"})
        assert status == 201
        self.tokens[(bank, document)] = body["token"]

    async def account(self, bank: str, document: str, deposit_cents: int) -> int:
        status, body = await self.call("POST", bank, "/api/v1/accounts",
                                       {"kind": "individual", "owners": [document]}, who=document)
        assert status == 201, body
        number = int(body["account"])
        if deposit_cents:
            status, _ = await self.call("POST", bank, "/api/v1/deposits",
                                        {"bank": bank, "account": number, "amount_cents": deposit_cents}, who=document)
            assert status == 201
        return number

    async def balance(self, bank: str, document: str, number: int) -> tuple[int, int]:
        status, body = await self.call("GET", bank, "/api/v1/accounts", who=document)
        assert status == 200
        for account in body["accounts"]:
            if account["account"] == number:
                return account["balance_cents"], account["held_cents"]
        raise AssertionError(f"no account {number} at {bank}")

    async def audit(self) -> dict[str, Any]:
        status, body = await self.call("GET", "b0", "/api/v1/consortium/audit")
        assert status == 200, body
        return body


@pytest.fixture
async def banks(tmp_path: Path) -> AsyncIterator[Banks]:
    config = write_ring_file(tmp_path / "ring.toml", ["b0", "b1", "b2"], hold_max_ms=20,
                             data_dir=str(tmp_path / "var"))
    apps = {bank.id: build_app(config, bank.id, secret=SECRET) for bank in config.banks}
    runners: dict[str, web.AppRunner] = {}
    try:
        for bank in config.banks:
            runner = web.AppRunner(apps[bank.id], access_log=None)
            await runner.setup()
            await web.TCPSite(runner, bank.host, bank.port).start()
            runners[bank.id] = runner
        async with aiohttp.ClientSession() as session:
            yield Banks(config, apps, session, runners)
    finally:
        for runner in reversed(list(runners.values())):
            await runner.cleanup()


async def settle(banks: Banks, expected: dict[tuple[str, int], tuple[int, int]]) -> None:
    """Wait (boundedly) until every named account of ANA shows (balance, held)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        seen = {key: await banks.balance(key[0], ANA, key[1]) for key in expected}
        if seen == expected:
            return
        assert time.monotonic() < deadline, f"never settled: {seen} != {expected}"
        await asyncio.sleep(0.02)


ANA = complete_cpf("529982247")
BIA = complete_cpf("111444777")


async def customer_everywhere(banks: Banks, document: str) -> None:
    """``document`` a customer of every bank, with a session at each."""
    for bank in ("b0", "b1", "b2"):
        await banks.customer(bank, document)


async def funded_pair(banks: Banks) -> tuple[int, int, Any]:
    """ANA's account at b0 with 1,000 cents and an empty one at b1; b0's transfer service."""
    for bank in ("b0", "b1"):
        await banks.customer(bank, ANA)
    source = await banks.account("b0", ANA, 1_000)
    destination = await banks.account("b1", ANA, 0)
    return source, destination, banks.apps["b0"][TRANSFERS]


async def test_a_cross_bank_transfer_commits_and_moves_the_money(banks: Banks) -> None:
    await customer_everywhere(banks, ANA)
    a0 = await banks.account("b0", ANA, 10_000)
    a1 = await banks.account("b1", ANA, 5_000)
    a2 = await banks.account("b2", ANA, 0)
    request = {"sources": [{"bank": "b0", "account": a0, "amount_cents": 3_000},
                           {"bank": "b1", "account": a1, "amount_cents": 2_000}],
               "destination": {"bank": "b2", "account": a2}}
    status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", request, who=ANA)
    assert status == 202 and body["status"] == "committed", body
    status, record = await banks.call("GET", "b0", f"/api/v1/transfers/{body['id']}", who=ANA)
    assert status == 200 and record["status"] == "committed"
    # Decisions travel after the commit point: wait for them to be applied, boundedly.
    await settle(banks, {("b0", a0): (7_000, 0), ("b1", a1): (3_000, 0), ("b2", a2): (5_000, 0)})
    audit = await banks.audit()
    assert audit["total_cents"] == audit["expected_cents"] == 15_000
    assert audit["in_flight_cents"] == 0 and audit["held_cents"] == 0


async def test_the_consortium_audit_is_consistent_while_money_is_held_or_in_flight(banks: Banks) -> None:
    """Read in the middle of a transfer, the audit counts money held at a source and money
    between a source's commit and the destination's credit (in the settlement accounts):
    consistent at any instant, not only once every transfer is over."""
    await customer_everywhere(banks, ANA)
    source = await banks.account("b1", ANA, 1_000)
    destination = await banks.account("b2", ANA, 0)
    decide, credit = asyncio.Event(), asyncio.Event()
    b0, b2 = banks.apps["b0"][TRANSFERS], banks.apps["b2"][TRANSFERS]
    write_b0, write_b2 = b0.book.execute, b2.book.execute

    async def decisions_when_let(batch: Any) -> Any:  # b0 writes its decisions only when let
        if any(type(op).__name__ == "RecordOutcomes" for op in batch):
            await decide.wait()
        return await write_b0(batch)

    async def credits_when_let(batch: Any) -> Any:  # b2 applies its credits only when let
        if any(type(op).__name__ == "Credit" for op in batch):
            await credit.wait()
        return await write_b2(batch)

    b0.book.execute, b2.book.execute = decisions_when_let, credits_when_let
    request = {"sources": [{"bank": "b1", "account": source, "amount_cents": 300}],
               "destination": {"bank": "b2", "account": destination}}
    try:
        status, body = await banks.call("POST", "b0", "/api/v1/transfers", request, who=ANA)
        assert status == 202 and body["status"] == "pending", body
        await settle(banks, {("b1", source): (700, 300)})  # held at b1, undecided
        audit = await banks.audit()
        assert (audit["balance_cents"], audit["held_cents"], audit["in_flight_cents"]) == (700, 300, 0), audit
        assert audit["consistent"] is True and audit["total_cents"] == audit["expected_cents"] == 1_000
        decide.set()
        await settle(banks, {("b1", source): (700, 0), ("b2", destination): (0, 0)})  # left b1, not at b2 yet
        audit = await banks.audit()
        assert (audit["balance_cents"], audit["held_cents"], audit["in_flight_cents"]) == (700, 0, 300), audit
        assert audit["consistent"] is True and audit["total_cents"] == audit["expected_cents"] == 1_000
    finally:  # a failed check leaves no write waiting on a gate
        decide.set()
        credit.set()
    await settle(banks, {("b1", source): (700, 0), ("b2", destination): (300, 0)})
    audit = await banks.audit()
    assert audit["consistent"] is True and audit["in_flight_cents"] == 0 and audit["total_cents"] == 1_000


async def test_a_cross_bank_transfer_may_move_exactly_the_ledgers_largest_amount(banks: Banks) -> None:
    """The total within the ledger's AMOUNT_CENTS_MAX is a transfer; one cent more is refused
    at once."""
    largest = ledger_module.AMOUNT_CENTS_MAX
    await customer_everywhere(banks, ANA)
    rich = await banks.account("b0", ANA, largest)
    other = await banks.account("b0", ANA, 1)
    destination = await banks.account("b1", ANA, 0)
    everything = {"bank": "b0", "account": rich, "amount_cents": largest}
    to = {"bank": "b1", "account": destination}
    too_much = {"sources": [everything, {"bank": "b0", "account": other, "amount_cents": 1}], "destination": to}
    status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", too_much, who=ANA)
    assert status == 400 and body["error"]["code"] == "invalid_request", body
    exactly = {"sources": [everything], "destination": to}
    status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", exactly, who=ANA)
    assert status == 202 and body["status"] == "committed", body
    await settle(banks, {("b0", rich): (0, 0), ("b1", destination): (largest, 0)})


async def test_a_bank_refuses_transfers_beyond_its_bound_of_pending_ones(banks: Banks) -> None:
    """At most ``pending_transfers_max`` transfers wait for the token at a bank; the next one
    is refused (503: it moves nothing) until the queue drains."""
    await customer_everywhere(banks, ANA)
    source = await banks.account("b0", ANA, 1_000)
    destination = await banks.account("b1", ANA, 0)
    b0 = banks.apps["b0"][TRANSFERS]
    b0.rounds_paused = True  # the token's visits take nothing: the queue only grows
    b0.pending_transfers_max = 2
    request = {"sources": [{"bank": "b0", "account": source, "amount_cents": 100}],
               "destination": {"bank": "b1", "account": destination}}
    for _ in range(2):
        status, body = await banks.call("POST", "b0", "/api/v1/transfers", request, who=ANA)
        assert status == 202 and body["status"] == "pending", body
    status, body = await banks.call("POST", "b0", "/api/v1/transfers", request, who=ANA)
    assert status == 503 and body["error"]["code"] == "unavailable", body
    assert b0.coordinator.backlog == 2
    b0.resume_rounds()
    await settle(banks, {("b0", source): (800, 0), ("b1", destination): (200, 0)})
    status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", request, who=ANA)
    assert status == 202 and body["status"] == "committed", body


async def test_refused_sources_abort_the_whole_transfer_and_hold_nothing(banks: Banks) -> None:
    for bank in ("b0", "b1"):
        await banks.customer(bank, ANA)
        await banks.customer(bank, BIA)
    mine = await banks.account("b0", ANA, 1_000)
    poor = await banks.account("b1", ANA, 100)
    hers = await banks.account("b1", BIA, 9_000)
    dest = await banks.account("b1", ANA, 0)
    for sources, reason in [
        ([{"bank": "b0", "account": mine, "amount_cents": 500},
          {"bank": "b1", "account": poor, "amount_cents": 500}], "insufficient_funds"),
        ([{"bank": "b0", "account": mine, "amount_cents": 500},
          {"bank": "b1", "account": hers, "amount_cents": 500}], "forbidden"),
    ]:
        status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000",
                                        {"sources": sources, "destination": {"bank": "b1", "account": dest}}, who=ANA)
        assert status == 202 and (body["status"], body.get("reason")) == ("aborted", reason), body
    await settle(banks, {("b0", mine): (1_000, 0), ("b1", poor): (100, 0)})
    assert await banks.balance("b1", BIA, hers) == (9_000, 0)
    assert await banks.balance("b1", ANA, dest) == (0, 0)
    audit = await banks.audit()
    assert audit["total_cents"] == audit["expected_cents"] == 10_100


async def test_a_source_at_the_terminal_bank_is_checked_before_anything_is_recorded(banks: Banks) -> None:
    await banks.customer("b0", ANA)
    await banks.customer("b0", BIA)
    await banks.customer("b1", ANA)
    hers = await banks.account("b0", BIA, 1_000)
    dest = await banks.account("b1", ANA, 0)
    status, body = await banks.call("POST", "b0", "/api/v1/transfers",
                                    {"sources": [{"bank": "b0", "account": hers, "amount_cents": 1}],
                                     "destination": {"bank": "b1", "account": dest}}, who=ANA)
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=999999",
                                    {"sources": [{"bank": "b1", "account": dest, "amount_cents": 1}],
                                     "destination": {"bank": "b0", "account": hers}}, who=ANA)
    assert status == 400 and body["error"]["code"] == "invalid_request"


async def test_cross_bank_deposit_withdrawal_listing_and_idempotency(banks: Banks) -> None:
    await customer_everywhere(banks, ANA)
    a1 = await banks.account("b1", ANA, 0)
    await banks.account("b2", ANA, 0)
    deposit = {"bank": "b1", "account": a1, "amount_cents": 700}
    headers = {"Authorization": f"Bearer {banks.tokens[('b0', ANA)]}", "Idempotency-Key": "dep-1"}
    for replayed in (None, "true"):
        # A retry through the forwarding bank is told it is a replay, as at the account's bank.
        async with banks.session.post(banks.url("b0") + "/api/v1/deposits", json=deposit, headers=headers) as r:
            assert r.status == 201 and (await r.json())["balance_cents"] == 700
            assert r.headers.get("Idempotent-Replayed") == replayed
    status, body = await banks.call("POST", "b0", "/api/v1/deposits", dict(deposit, account=a1 + 999), who=ANA)
    assert status == 404 and body["error"]["code"] == "unknown_account", body  # the other bank's refusal
    status, body = await banks.call("POST", "b0", "/api/v1/deposits", dict(deposit, amount_cents=1), who=ANA,
                                    headers={"Idempotency-Key": "dep-1"})
    assert status == 422 and body["error"]["code"] == "idempotency_key_reused"
    status, body = await banks.call("POST", "b0", "/api/v1/withdrawals",
                                    {"bank": "b1", "account": a1, "amount_cents": 200}, who=ANA)
    assert status == 201 and body["balance_cents"] == 500, body
    # Answered once the cash has left: an audit right after counts the withdrawal.
    audit = await banks.audit()
    assert audit["expected_cents"] == audit["total_cents"] == 500
    status, body = await banks.call("POST", "b0", "/api/v1/withdrawals",
                                    {"bank": "b1", "account": a1, "amount_cents": 10_000}, who=ANA)
    assert status == 409 and body["error"]["code"] == "insufficient_funds"
    status, body = await banks.call("GET", "b0", "/api/v1/accounts?scope=consortium", who=ANA)
    assert status == 200 and body["unavailable"] == []
    assert [entry["bank"] for entry in body["banks"]] == ["b0", "b1", "b2"]
    assert [a["balance_cents"] for a in body["banks"][1]["accounts"]] == [500]
    audit = await banks.audit()
    assert audit["total_cents"] == audit["expected_cents"] == 500
    # A transfer retried with its key is the same transfer.
    a0 = await banks.account("b0", ANA, 100)
    request = {"sources": [{"bank": "b0", "account": a0, "amount_cents": 60}], "destination": {"bank": "b1", "account": a1}}
    ids = set()
    for _ in range(2):
        status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", request, who=ANA,
                                        headers={"Idempotency-Key": "t-1"})
        assert status == 202 and body["status"] == "committed"
        ids.add(body["id"])
    assert len(ids) == 1
    await settle(banks, {("b0", a0): (40, 0), ("b1", a1): (560, 0)})


async def test_interbank_routes_refuse_unsigned_and_impersonated_messages(banks: Banks) -> None:
    prepare = {"type": "prepare", "sender": "b1", "fence": {"epoch": 99, "issuer": "b1", "seq": 1}, "items": []}
    async with banks.session.post(banks.url("b0") + "/interbank/prepare", json=prepare) as response:
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "unauthorized"
    # Signed by b2 but claiming to come from b1.
    client = SignedClient(banks.session, SECRET, "b2")
    reply = await client.post_json(banks.url("b0"), "/interbank/prepare", prepare)
    assert reply.status == 403
    # Nothing was accepted: a prepare under a modest fence still works afterwards.
    assert banks.apps["b0"][TRANSFERS].participant.fence is None


async def test_a_round_late_under_an_old_fence_cannot_hold_where_a_newer_one_was_accepted(
    banks: Banks,
) -> None:
    """A holder whose round runs late (its visit long over) sends its prepare under the old
    fence after a newer holder prepared at the same bank: that bank refuses it and holds
    nothing; the transfer goes into a later round, where it commits. (A holder paused past
    the loss timeout: tests/test_transfer_stale_holder.py.)"""
    from bank.keys import RING
    from bank.transfers.protocol import Leg, Transfer

    await customer_everywhere(banks, ANA)
    destination = await banks.account("b0", ANA, 0)
    source = await banks.account("b1", ANA, 1_000)
    elsewhere = await banks.account("b2", ANA, 0)
    service = banks.apps["b0"][TRANSFERS]
    service.rounds_paused = True  # b0 is "slow": it takes no visit for its transfers
    async with banks.apps["b0"][RING].holding(timeout_s=DEADLINE_S) as old_fence:
        pass
    # A newer holder, b2, prepares at b1 (its visit comes after b0's).
    status, body = await banks.call(
        "POST", "b2", "/api/v1/transfers?wait_ms=10000",
        {"sources": [{"bank": "b1", "account": source, "amount_cents": 100}],
         "destination": {"bank": "b2", "account": elsewhere}}, who=ANA)
    assert status == 202 and body["status"] == "committed", body
    await settle(banks, {("b1", source): (900, 0)})  # its decision reached b1
    transfer = Transfer("b0-late", "b0", ANA, (Leg("b1", str(source), 600, "source"),
                                               Leg("b0", str(destination), 600, "destination")))
    assert await service.submit(transfer) == "b0-late"
    outcome = service.watch("b0-late")
    # b0 finally runs the round of its old visit: b1 refuses it as stale, nothing is held,
    # and the transfer is not decided: it waits for a later round.
    assert await service.run_round(old_fence, asyncio.get_running_loop().time())
    deadline = time.monotonic() + DEADLINE_S
    while service.coordinator.round_open:
        assert time.monotonic() < deadline, "the late round never ended"
        await asyncio.sleep(0.01)
    assert not outcome.done() and "b0-late" in service.coordinator.pending
    assert await banks.balance("b1", ANA, source) == (900, 0)
    # Under a visit of its own, the same transfer goes through.
    service.resume_rounds()
    decided = await asyncio.wait_for(outcome, DEADLINE_S)
    assert (decided.outcome, decided.reason) == ("committed", None)
    await settle(banks, {("b1", source): (300, 0), ("b0", destination): (600, 0), ("b2", elsewhere): (100, 0)})
    audit = await banks.audit()
    assert audit["total_cents"] == audit["expected_cents"] == 1_000


async def test_a_bank_that_does_not_answer_is_listed_unavailable_and_stops_the_audit(banks: Banks) -> None:
    for bank in ("b0", "b1"):
        await banks.customer(bank, ANA)
    await banks.account("b1", ANA, 250)
    await banks.runners["b2"].cleanup()  # b2 is gone
    status, body = await banks.call("GET", "b0", "/api/v1/accounts?scope=consortium", who=ANA)
    assert status == 200
    assert body["unavailable"] == ["b2"]
    assert [entry["bank"] for entry in body["banks"]] == ["b0", "b1"]
    status, body = await banks.call("GET", "b0", "/api/v1/consortium/audit")
    assert status == 503 and body["error"]["code"] == "unavailable" and "b2" in body["error"]["message"]


async def test_a_statement_is_read_through_any_bank_and_shows_each_banks_part_of_a_transfer(
    banks: Banks,
) -> None:
    await customer_everywhere(banks, ANA)
    a0 = await banks.account("b0", ANA, 1_000)
    a1 = await banks.account("b1", ANA, 1_000)
    a2 = await banks.account("b2", ANA, 0)
    request = {"sources": [{"bank": "b0", "account": a0, "amount_cents": 200},
                           {"bank": "b1", "account": a1, "amount_cents": 300}],
               "destination": {"bank": "b2", "account": a2}}
    status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", request, who=ANA)
    assert status == 202 and body["status"] == "committed", body
    moved = body["id"]
    # Cash paid at b0 from b1's account: b1 holds it, then its journal says withdrawal.
    status, cash = await banks.call("POST", "b0", "/api/v1/withdrawals",
                                    {"bank": "b1", "account": a1, "amount_cents": 50}, who=ANA)  # fmt: skip
    assert status == 201 and cash["transfer_id"], cash
    await settle(banks, {("b0", a0): (800, 0), ("b1", a1): (650, 0), ("b2", a2): (500, 0)})

    async def lines(terminal: str, bank: str, number: int) -> list[tuple[Any, ...]]:
        status, page = await banks.call("GET", terminal, f"/api/v1/accounts/{bank}/{number}/statement", who=ANA)
        assert status == 200, page
        return [(l["kind"], l["available_cents"], l["held_cents"], l["transfer_id"]) for l in page["lines"]]

    # The coordinator's own source moves with its decision; another bank's is held, then
    # paid out; the destination is credited.
    expected = {
        ("b0", a0): [("debit", -200, 0, moved), ("deposit", 1_000, 0, None)],
        ("b1", a1): [
            ("withdrawal", 0, -50, cash["transfer_id"]), ("hold", -50, 50, cash["transfer_id"]),
            ("commit", 0, -300, moved), ("hold", -300, 300, moved), ("deposit", 1_000, 0, None),
        ],
        ("b2", a2): [("credit", 500, 0, moved)],
    }
    for (bank, number), shown in expected.items():
        for terminal in ("b0", "b1", "b2"):  # the same lines wherever they are asked for
            assert await lines(terminal, bank, number) == shown, (terminal, bank)
    # Pages pass through: the next one starts where the first ended.
    status, first = await banks.call("GET", "b0", f"/api/v1/accounts/b1/{a1}/statement?limit=3", who=ANA)
    assert status == 200 and len(first["lines"]) == 3
    status, rest = await banks.call(
        "GET", "b0", f"/api/v1/accounts/b1/{a1}/statement?limit=3&before={first['next_before']}", who=ANA
    )
    assert status == 200 and [l["kind"] for l in rest["lines"]] == ["hold", "deposit"] and rest["next_before"] is None
    # Someone else asking through another bank hears what that bank would say: no such account.
    await banks.customer("b0", BIA)
    status, refused = await banks.call("GET", "b0", f"/api/v1/accounts/b1/{a1}/statement", who=BIA)
    assert status == 404 and refused["error"]["code"] == "unknown_account", refused
    # The account's bank down: 503, said plainly.
    await banks.runners["b2"].cleanup()
    status, down = await banks.call("GET", "b0", f"/api/v1/accounts/b2/{a2}/statement", who=ANA)
    assert status == 503 and down["error"]["code"] == "unavailable" and "b2" in down["error"]["message"]


async def test_malformed_signed_messages_are_refused_and_change_nothing(banks: Banks) -> None:
    client = SignedClient(banks.session, SECRET, "b1")
    for path, payload in [
        ("/interbank/prepare", {"type": "prepare", "sender": "b1", "fence": "high", "items": []}),
        ("/interbank/decisions", {"type": "decisions", "sender": "b1", "items": [{"transfer_id": "x"}]}),
        ("/interbank/acks", {"type": "votes", "sender": "b1", "fence": None, "votes": []}),
        ("/interbank/deposits", {"document": "1", "account": 1, "amount_cents": 1.5}),
        ("/interbank/accounts", ["not", "an", "object"]),
        ("/interbank/transfers", {"document": "1", "request": [], "idempotency_key": "k", "fingerprint": "f",
                                  "wait_ms": 0}),
        ("/interbank/transfers", {"document": "1", "request": {}, "idempotency_key": "k", "fingerprint": "f",
                                  "wait_ms": 10**9}),
        ("/interbank/transfer-status", {"document": "1"}),
        ("/interbank/deposits", {"document": "1", "account": 1, "amount_cents": 1, "idempotency_key": "k" * 256,
                                 "fingerprint": "f"}),
        ("/interbank/withdrawal-keys", {"document": "1", "idempotency_key": "", "fingerprint": "f",
                                        "id": new_transfer_id("b1")}),
        ("/interbank/withdrawal-keys", {"document": "1", "idempotency_key": "k", "fingerprint": "f", "id": 7}),
        ("/interbank/withdrawal-status", {"document": "1", "id": "x" * 500}),
        ("/interbank/statement", {"document": "1", "account": 0, "before": None, "limit": 5}),
        ("/interbank/statement", {"document": "1", "account": 1, "before": None, "limit": 101}),
        ("/interbank/statement", {"document": "1", "account": 1, "before": True, "limit": 5}),
        ("/interbank/statement", {"document": "", "account": 1, "before": None, "limit": 5}),
    ]:
        reply = await client.post_json(banks.url("b0"), path, payload)
        assert reply.status == 400, (path, reply)
        assert reply.body["error"]["code"] == "invalid_request"
    # A forwarded transfer whose body is wrong is refused as the client API refuses it.
    forwarded = {"document": ANA, "request": {"sources": [], "destination": {}}, "idempotency_key": "k",
                 "fingerprint": "f", "wait_ms": 0}
    reply = await client.post_json(banks.url("b0"), "/interbank/transfers", forwarded)
    assert reply.status == 200 and reply.body["status"] == 400, reply
    assert reply.body["body"]["error"]["code"] == "invalid_request"
    audit = await banks.audit()
    assert audit["total_cents"] == audit["expected_cents"] == 0


async def test_a_cross_bank_withdrawal_is_answered_once_its_cash_has_left(
    banks: Banks, monkeypatch: pytest.MonkeyPatch
) -> None:
    for bank in ("b0", "b1"):
        await banks.customer(bank, ANA)
    account = await banks.account("b1", ANA, 1_000)
    service = banks.apps["b0"][TRANSFERS]
    deliver = service._deliver

    async def slow_to_itself(to: str, message: Any) -> None:
        # A busy terminal bank: its own participant gets the decision late.
        from bank.transfers.protocol import Decisions

        if to == "b0" and isinstance(message, Decisions):
            await asyncio.sleep(0.3)
        await deliver(to, message)

    monkeypatch.setattr(service, "_deliver", slow_to_itself)
    status, body = await banks.call("POST", "b0", "/api/v1/withdrawals",
                                    {"bank": "b1", "account": account, "amount_cents": 400}, who=ANA)
    assert status == 201, body
    audit = await banks.audit()
    assert audit["expected_cents"] == audit["total_cents"] == 600


async def test_a_cross_bank_withdrawal_answers_the_account_with_its_commit_applied(
    banks: Banks, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The commit goes at once to the account's bank, and the answer waits for it (boundedly;
    # unbounded here, so that a slow machine cannot turn the check into a race): the account
    # shows the money gone, not held.
    from bank import interbank

    monkeypatch.setattr(interbank, "WITHDRAWAL_DELIVERY_WAIT_MS", 60_000)
    for bank in ("b0", "b1"):
        await banks.customer(bank, ANA)
    account = await banks.account("b1", ANA, 1_000)
    for index, amount in enumerate((400, 100)):
        status, body = await banks.call("POST", "b0", "/api/v1/withdrawals",
                                        {"bank": "b1", "account": account, "amount_cents": amount}, who=ANA,
                                        headers={"Idempotency-Key": f"shown-{index}"})
        assert status == 201, body
        assert (body["balance_cents"], body["held_cents"]) == (1_000 - 400 - 100 * index, 0), body
    status, record = await banks.call("GET", "b0", f"/api/v1/transfers/{body['transfer_id']}", who=ANA)
    assert status == 200 and record["delivered"] is True, record


def _metric_values(text: str) -> dict[str, float]:
    """``name{labels} value`` lines of a Prometheus exposition, by name with labels."""
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


async def test_metrics_count_the_coordinated_transfers_and_the_ledger_commits(banks: Banks) -> None:
    for bank in ("b0", "b1"):
        await banks.customer(bank, ANA)
    a0 = await banks.account("b0", ANA, 1_000)
    a1 = await banks.account("b1", ANA, 0)

    async def scrape() -> dict[str, float]:
        async with banks.session.get(banks.url("b0") + "/metrics") as response:
            assert response.status == 200
            return _metric_values(await response.text())

    before = await scrape()
    assert before['bank_transfers_decided_total{outcome="committed"}'] == 0
    for amount in (400, 5_000):  # the second asks for more than the account holds
        request = {"sources": [{"bank": "b0", "account": a0, "amount_cents": amount}],
                   "destination": {"bank": "b1", "account": a1}}
        status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", request, who=ANA)
        assert status == 202 and body["status"] in ("committed", "aborted"), body
    after = await scrape()
    assert after['bank_transfers_decided_total{outcome="committed"}'] == 1
    assert after['bank_transfers_decided_total{outcome="aborted"}'] == 1
    assert after["bank_transfers_pending"] == 0
    assert after["bank_transfer_rounds_total"] - before["bank_transfer_rounds_total"] >= 1
    commits = after["bank_ledger_commits_total"] - before["bank_ledger_commits_total"]
    writes = after["bank_ledger_writes_total"] - before["bank_ledger_writes_total"]
    assert 1 <= commits <= writes  # two pending records and their decisions, at least
    prepares = 'bank_signed_requests_sent_total{path="/interbank/prepare"}'
    assert after[prepares] - before.get(prepares, 0) >= 1  # b1 was asked to check a1


async def test_a_client_whose_wait_runs_out_hears_the_id_of_a_recorded_transfer(banks: Banks) -> None:
    source, destination, service = await funded_pair(banks)
    service.rounds_paused = True  # no round: the wait runs out first
    request = {"sources": [{"bank": "b0", "account": source, "amount_cents": 250}],
               "destination": {"bank": "b1", "account": destination}}
    asked_ms = time.time() * 1000
    status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=30", request, who=ANA)
    answered_ms = time.time() * 1000
    assert status == 202 and body["status"] == "pending", body
    # Recorded before the id was answered: the record outlives this process.
    assert await service.book.transfer_body(body["id"]) is not None
    assert body["id"] not in service.coordinator.unrecorded
    status, record = await banks.call("GET", "b0", f"/api/v1/transfers/{body['id']}", who=ANA)
    assert status == 200 and record["status"] == "pending"
    # Its time is when it was asked for, before the 30 ms wait, not when it was stored.
    assert asked_ms - 1 <= record["created_at_ms"] <= answered_ms - 30
    service.resume_rounds()
    deadline = time.monotonic() + DEADLINE_S
    while record["status"] == "pending":
        assert time.monotonic() < deadline, "never decided"
        await asyncio.sleep(0.02)
        _, record = await banks.call("GET", "b0", f"/api/v1/transfers/{body['id']}", who=ANA)
    assert record["status"] == "committed"
    await settle(banks, {("b0", source): (750, 0), ("b1", destination): (250, 0)})


async def test_a_waiting_transfer_is_stored_with_its_decision_and_survives_a_failed_write(
    banks: Banks,
) -> None:
    """Presumed abort at the terminal bank: a transfer whose client waits is stored at its
    decision. When that write fails, nothing is decided and nothing is forgotten: the
    transfer goes into a later round (its holds stay) and commits there."""
    from bank.transfers.book import RecordOutcomes
    from bank.transfers.protocol import Leg, Transfer

    source, destination, service = await funded_pair(banks)
    legs = (Leg("b0", str(source), 100, "source"), Leg("b1", str(destination), 100, "destination"))
    real_execute = service.book.execute
    failed: list[Any] = []
    stored_before_decision: list[Any] = []

    async def execute(batch: Any) -> Any:
        if any(isinstance(op, RecordOutcomes) for op in batch):
            stored_before_decision.append(await service.book.transfer_body("b0-wait"))
            if not failed:
                failed.append(batch)
                raise OSError("disk full")
        return await real_execute(batch)

    service.book.execute = execute
    outcome = service.watch("b0-wait")
    assert await service.submit(Transfer("b0-wait", "b0", ANA, legs), record=False) == "b0-wait"
    decided = await asyncio.wait_for(outcome, DEADLINE_S)
    assert decided.outcome == "committed" and failed
    # Not stored until its decision (the failed write stored nothing either); stored then.
    assert stored_before_decision and all(body is None for body in stored_before_decision)
    assert await service.book.transfer_body("b0-wait") is not None
    assert not service.coordinator.unrecorded
    await settle(banks, {("b0", source): (900, 0), ("b1", destination): (100, 0)})
    audit = await banks.audit()
    assert audit["total_cents"] == audit["expected_cents"] == 1_000


async def test_a_retry_while_the_first_request_waits_finds_the_same_transfer(banks: Banks) -> None:
    source, destination, service = await funded_pair(banks)
    service.rounds_paused = True
    request = {"sources": [{"bank": "b0", "account": source, "amount_cents": 400}],
               "destination": {"bank": "b1", "account": destination}}
    key = {"Idempotency-Key": "retry-1"}
    first = asyncio.create_task(
        banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", request, who=ANA, headers=key))
    deadline = time.monotonic() + DEADLINE_S
    while not service.coordinator.pending:
        assert time.monotonic() < deadline, "the first request never arrived"
        await asyncio.sleep(0.005)
    # The client gives up waiting and asks again: the same transfer, stored now.
    status, again = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=20", request, who=ANA, headers=key)
    assert status == 202 and again["status"] == "pending" and list(service.coordinator.pending) == [again["id"]]
    assert await service.book.transfer_body(again["id"]) is not None
    other = {**request, "destination": {"bank": "b1", "account": destination + 1}}
    status, refused = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=20", other, who=ANA, headers=key)
    assert status == 422 and refused["error"]["code"] == "idempotency_key_reused"
    service.resume_rounds()
    status, body = await asyncio.wait_for(first, DEADLINE_S)
    assert status == 202 and (body["id"], body["status"]) == (again["id"], "committed")
    await settle(banks, {("b0", source): (600, 0), ("b1", destination): (400, 0)})


async def test_a_participant_gives_back_the_hold_of_a_transfer_its_coordinator_died_before_storing(
    banks: Banks,
) -> None:
    """Presumed abort with real banks: b0 coordinates a waiting client's transfer from b1 to
    b2 and dies (its decision never written) after b1 held the money. Restarted, b0 has no
    record of it; b1 asks, is told "aborted", and gives the money back."""
    from bank.transfers.book import RecordOutcomes
    from bank.transfers.protocol import Leg, Transfer

    for bank in ("b1", "b2"):
        await banks.customer(bank, ANA)
    source = await banks.account("b1", ANA, 1_000)
    destination = await banks.account("b2", ANA, 0)
    service = banks.apps["b0"][TRANSFERS]
    never = asyncio.Event()
    real_execute = service.book.execute

    async def execute(batch: Any) -> Any:
        if any(isinstance(op, RecordOutcomes) for op in batch):
            await never.wait()  # b0 dies before its decision is durable
        return await real_execute(batch)

    service.book.execute = execute
    legs = (Leg("b1", str(source), 300, "source"), Leg("b2", str(destination), 300, "destination"))
    await service.submit(Transfer("b0-lost", "b0", ANA, legs), record=False)
    await settle(banks, {("b1", source): (700, 300)})  # prepared: held at b1
    await banks.runners["b0"].cleanup()  # the crash: b0's memory is gone
    assert await banks.apps["b1"][TRANSFERS].book.applied_here("b0-lost") is False
    apps = {"b0": build_app(banks.config, "b0", secret=SECRET)}
    runner = web.AppRunner(apps["b0"], access_log=None)
    await runner.setup()
    bank = banks.config.bank("b0")
    await web.TCPSite(runner, bank.host, bank.port).start()
    banks.runners["b0"], banks.apps["b0"] = runner, apps["b0"]
    assert await apps["b0"][TRANSFERS].book.transfer_body("b0-lost") is None
    await settle(banks, {("b1", source): (1_000, 0)})  # b1 asked, and gave it back
    assert await banks.apps["b1"][TRANSFERS].book.applied_here("b0-lost")
    audit = await banks.audit()
    assert audit["total_cents"] == audit["expected_cents"] == 1_000
    assert audit["held_cents"] == 0 and audit["in_flight_cents"] == 0


async def test_a_clients_wait_for_a_decision_ends_in_time_and_never_cancels_the_watch(banks: Banks) -> None:
    service = banks.apps["b0"][TRANSFERS]
    watched = service.watch("b0-never")
    started = time.monotonic()
    assert await service.wait_watched(watched, 0.05) is False
    assert time.monotonic() - started >= 0.05 and not watched.done()
    # A client gone meanwhile (its request cancelled) leaves the watch to others.
    waiting = asyncio.get_running_loop().create_task(service.wait_watched(watched, DEADLINE_S))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not watched.done()
    waiting = asyncio.get_running_loop().create_task(service.wait_watched(watched, DEADLINE_S))
    await asyncio.sleep(0)
    watched.set_result(None)  # what a decision does (with its Decided)
    assert await asyncio.wait_for(waiting, DEADLINE_S) is True
    service.unwatch("b0-never", watched)


async def test_money_that_leaves_the_terminals_own_source_before_the_round_aborts_the_transfer(
    banks: Banks,
) -> None:
    """The terminal bank is the last agent: its own source is debited in the write of the
    decision, not held at a prepare. Money withdrawn from it meanwhile (a local operation,
    which never waits for the token) makes the transfer abort there, for that reason, and
    the destination's bank hears the abort: nothing moves anywhere, nothing stays held."""
    source, destination, service = await funded_pair(banks)
    service.rounds_paused = True  # the transfer waits for a visit
    request = {"sources": [{"bank": "b0", "account": source, "amount_cents": 700}],
               "destination": {"bank": "b1", "account": destination}}
    submitted = asyncio.create_task(
        banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", request, who=ANA))
    deadline = time.monotonic() + DEADLINE_S
    while not service.coordinator.pending:
        assert time.monotonic() < deadline, "the transfer never arrived"
        await asyncio.sleep(0.005)
    # Nothing is held at the terminal while its transfer waits: the money is still free.
    assert await banks.balance("b0", ANA, source) == (1_000, 0)
    status, _ = await banks.call("POST", "b0", "/api/v1/withdrawals",
                                 {"bank": "b0", "account": source, "amount_cents": 500}, who=ANA)
    assert status == 201
    service.resume_rounds()
    status, body = await asyncio.wait_for(submitted, DEADLINE_S)
    assert status == 202 and (body["status"], body.get("reason")) == ("aborted", "insufficient_funds"), body
    status, record = await banks.call("GET", "b0", f"/api/v1/transfers/{body['id']}", who=ANA)
    assert (record["status"], record["reason"]) == ("aborted", "insufficient_funds")
    await settle(banks, {("b0", source): (500, 0), ("b1", destination): (0, 0)})
    # b1 voted yes (its account exists) and then heard the abort.
    participant = banks.apps["b1"][TRANSFERS]
    deadline = time.monotonic() + DEADLINE_S
    while not await participant.book.applied_here(body["id"]):
        assert time.monotonic() < deadline, "b1 never heard the abort"
        await asyncio.sleep(0.02)
    audit = await banks.audit()
    assert audit["total_cents"] == audit["expected_cents"] == 500
    assert audit["held_cents"] == 0 and audit["in_flight_cents"] == 0
    # What is left moves, and the terminal never held it: no hold was ever recorded there.
    request["sources"][0]["amount_cents"] = 500
    status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", request, who=ANA)
    assert status == 202 and body["status"] == "committed", body
    assert await banks.apps["b0"][LEDGER].holds(body["id"]) == []
    await settle(banks, {("b0", source): (0, 0), ("b1", destination): (500, 0)})


async def test_each_round_logs_how_long_the_token_stayed_for_its_successors_vote(banks: Banks) -> None:
    # b1 follows b0 in the ring: a round that prepares at b1 keeps the token until b1 votes
    # (at most half a visit); one that prepares only at b2 does not wait.
    source, successor, _ = await funded_pair(banks)
    await banks.customer("b2", ANA)
    further = await banks.account("b2", ANA, 0)
    rounds = []
    for bank, account in (("b1", successor), ("b2", further)):
        request = {"sources": [{"bank": "b0", "account": source, "amount_cents": 10}],
                   "destination": {"bank": bank, "account": account}}
        with structlog.testing.capture_logs() as captured:
            status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", request, who=ANA)
        assert status == 202 and body["status"] == "committed", body
        (line,) = [entry for entry in captured if entry["event"] == "transfers.round"]
        rounds.append(line)
    assert isinstance(rounds[0]["successor_wait_ms"], float)
    # Bounded by half a visit (10 ms here), never by the round's second; the slack is for a
    # busy machine's timers.
    assert 0 <= rounds[0]["successor_wait_ms"] < ROUND_MS_MIN / 2
    assert rounds[1]["successor_wait_ms"] is None


async def test_a_transfer_refused_only_as_stale_is_retried_without_another_submission(banks: Banks) -> None:
    """A transfer that a bank refuses only because it accepted a newer fence first goes back
    into the queue; the runner must take it again by itself (here nothing else is ever
    submitted), until its retries run out and it aborts as stale. The refusing bank is not
    the next in the ring (b0's successor is b1), so the round's visit is over, and the
    runner idle, when the refusal comes."""
    from bank.transfers.protocol import Leg, Prepare, PrepareItem, encode_message
    from bank.transfers.service import fence_to_json
    from tokenring.core import Fence

    for bank in ("b0", "b2"):
        await banks.customer(bank, ANA)
    source = await banks.account("b0", ANA, 1_000)
    destination = await banks.account("b2", ANA, 0)
    # b2 accepts a fence from far ahead of the ring (a newer holder's prepare, as it would
    # look): every prepare b0 sends it under the ring's real fences is stale there.
    ahead = Fence(1_000_000, "b1", 1)  # no generation of this ring's life gets near it
    check = Prepare("b1", ahead, (PrepareItem("b1-ahead", ANA, (Leg("b2", str(destination), 1, "destination"),)),))
    client = SignedClient(banks.session, SECRET, "b1")
    reply = await client.post_json(banks.url("b2"), "/interbank/prepare", encode_message(check, fence_to_json))
    assert reply.status == 200 and [v["ok"] for v in reply.body["votes"]] == [True], reply
    # The runner's own periodic look at the queue (RUNNER_IDLE_S_MAX) is put out of reach:
    # what is tested is that the requeue itself wakes it.
    banks.apps["b0"][TRANSFERS].runner_idle_s = 60.0
    request = {"sources": [{"bank": "b0", "account": source, "amount_cents": 100}],
               "destination": {"bank": "b2", "account": destination}}
    status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", request, who=ANA)
    assert status == 202 and (body["status"], body.get("reason")) == ("aborted", "stale_fence"), body
    assert banks.apps["b0"][TRANSFERS].coordinator.backlog == 0
    await settle(banks, {("b0", source): (1_000, 0)})


async def test_the_runner_looks_at_its_queue_by_itself_even_when_nobody_wakes_it(banks: Banks) -> None:
    """A transfer queued without waking the runner (a wake-up missed by mistake) is still
    taken within the runner's bound on an idle wait (RUNNER_IDLE_S_MAX, 1 s)."""
    from bank.transfers.protocol import Leg, Transfer

    source, destination, service = await funded_pair(banks)
    transfer = Transfer("b0-unannounced", "b0", ANA, (Leg("b0", str(source), 250, "source"),
                                                      Leg("b1", str(destination), 250, "destination")))
    outcome = service.watch(transfer.id)
    # What TransferService.submit does, without its wake-up.
    await service._run(service.coordinator.submit(transfer, submitted_at_ms=service.book.ledger.now_ms()))
    decided = await asyncio.wait_for(outcome, DEADLINE_S)
    assert (decided.outcome, decided.reason) == ("committed", None)
    await settle(banks, {("b0", source): (750, 0), ("b1", destination): (250, 0)})


async def test_the_timer_goes_on_after_a_write_of_acknowledgements_fails(banks: Banks) -> None:
    """The background timer writes acknowledgements and re-sends decisions. A write that
    fails (a full disk, say) is logged and costs that write only: the timer goes on, and a
    later transfer's decision still reaches its destination."""
    from bank.transfers.book import RecordAcks

    source, destination, service = await funded_pair(banks)
    real_execute = service.book.execute
    failed: list[Any] = []

    async def execute(batch: Any) -> Any:
        if not failed and batch and all(isinstance(op, RecordAcks) for op in batch):
            failed.append(batch)
            raise OSError("disk full")
        return await real_execute(batch)

    service.book.execute = execute
    request = {"sources": [{"bank": "b0", "account": source, "amount_cents": 100}],
               "destination": {"bank": "b1", "account": destination}}
    for expected in (100, 200):
        status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", request, who=ANA)
        assert status == 202 and body["status"] == "committed", body
        # The decision reaches b1 from the timer (no later prepare carries it), and b1's
        # acknowledgement is written by the timer too: the first such write fails.
        await settle(banks, {("b1", destination): (expected, 0)})
        deadline = time.monotonic() + DEADLINE_S
        while not failed or service.coordinator.acks_due:
            assert time.monotonic() < deadline, "the acknowledgements were never flushed"
            await asyncio.sleep(0.01)
    assert len(failed) == 1


async def test_a_stopping_bank_answers_its_waiting_clients_at_once_with_stored_pending_transfers(
    banks: Banks,
) -> None:
    """When a bank begins to stop, a client waiting for an outcome (?wait_ms=) is answered
    at once with its transfer's id, stored pending (decided after a restart), instead of
    being held until the server gives up on open requests and cut off."""
    source, destination, service = await funded_pair(banks)
    service.rounds_paused = True  # nothing will be decided while the client waits
    request = {"sources": [{"bank": "b0", "account": source, "amount_cents": 100}],
               "destination": {"bank": "b1", "account": destination}}
    waiting = asyncio.create_task(
        banks.call("POST", "b0", "/api/v1/transfers?wait_ms=30000", request, who=ANA)
    )
    deadline = time.monotonic() + DEADLINE_S
    while not service._waiters:
        assert time.monotonic() < deadline, "the client never began to wait"
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await banks.apps["b0"].shutdown()  # what the server runs first when it stops
    status, body = await asyncio.wait_for(waiting, DEADLINE_S)
    assert time.monotonic() - started < DEADLINE_S / 3  # not the 30 s it asked to wait
    assert status == 202 and body["status"] == "pending", body
    status, record = await banks.call("GET", "b0", f"/api/v1/transfers/{body['id']}", who=ANA)
    assert status == 200 and record["status"] == "pending"  # stored: it survives a restart
    # A client that comes later does not wait either.
    status, later = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=30000", request, who=ANA)
    assert status == 202 and later["status"] == "pending", later
    # This bank did not stop after all: its rounds decide both.
    service.resume_rounds()
    await settle(banks, {("b0", source): (800, 0), ("b1", destination): (200, 0)})


async def test_transfers_that_fail_on_a_bank_that_is_down_leave_it_owed_nothing(banks: Banks) -> None:
    source, destination, service = await funded_pair(banks)
    await banks.runners["b1"].cleanup()  # b1 is gone: its prepares cannot be delivered
    request = {"sources": [{"bank": "b0", "account": source, "amount_cents": 10}],
               "destination": {"bank": "b1", "account": destination}}
    for _ in range(5):
        status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", request, who=ANA)
        assert status == 202 and (body["status"], body.get("reason")) == ("aborted", "unreachable"), body
    # Nothing moved, and b1, which never saw these transfers, is owed no decision: what a bank
    # that is down is owed does not grow with the transfers that fail on it.
    assert await banks.balance("b0", ANA, source) == (1_000, 0)
    assert service.coordinator.owed == {} and service.coordinator.deliveries == {}
    async with banks.session.get(banks.url("b0") + "/metrics") as response:
        metrics = _metric_values(await response.text())
    assert not any(name.startswith("bank_transfer_decisions_owed{") for name in metrics)
    assert metrics["bank_transfer_votes_outstanding"] == 0


async def test_metrics_and_the_transfer_show_a_decision_not_delivered_yet(banks: Banks) -> None:
    source, destination, service = await funded_pair(banks)
    service.coordinator.decision_defer_ms = 60_000  # the decision waits: b1 has not heard it
    request = {"sources": [{"bank": "b0", "account": source, "amount_cents": 10}],
               "destination": {"bank": "b1", "account": destination}}
    status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", request, who=ANA)
    assert status == 202 and body["status"] == "committed", body
    async with banks.session.get(banks.url("b0") + "/metrics") as response:
        metrics = _metric_values(await response.text())
    assert metrics['bank_transfer_decisions_owed{bank="b1"}'] == 1
    # The client can tell: its transfer is decided, not delivered (b1's balance lags it).
    status, record = await banks.call("GET", "b0", f"/api/v1/transfers/{body['id']}", who=ANA)
    assert status == 200 and (record["status"], record["delivered"]) == ("committed", False)
    assert await banks.balance("b1", ANA, destination) == (0, 0)
    service.coordinator.retries["b1"].due_ms = 0  # due now: the timer sends it
    service._wake.set()
    deadline = time.monotonic() + DEADLINE_S
    while not record["delivered"]:
        assert time.monotonic() < deadline, record
        await asyncio.sleep(0.02)
        _, record = await banks.call("GET", "b0", f"/api/v1/transfers/{body['id']}", who=ANA)
    assert await banks.balance("b1", ANA, destination) == (10, 0)  # delivered: b1 shows it


async def test_a_remote_destination_that_would_pass_its_balance_limit_aborts_the_transfer(
    banks: Banks, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, destination, _ = await funded_pair(banks)
    monkeypatch.setattr(ledger_module, "BALANCE_CENTS_MAX", 10_000)
    status, _ = await banks.call("POST", "b1", "/api/v1/deposits",
                                 {"bank": "b1", "account": destination, "amount_cents": 9_990}, who=ANA)
    assert status == 201
    request = {"sources": [{"bank": "b0", "account": source, "amount_cents": 20}],
               "destination": {"bank": "b1", "account": destination}}
    status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", request, who=ANA)
    # Refused by b1's vote, while the transfer could still abort: a credit refused after the
    # decision would have left the 20 cents in settlement, debited and never credited.
    assert status == 202 and (body["status"], body.get("reason")) == ("aborted", "balance_limit"), body
    await settle(banks, {("b0", source): (1_000, 0), ("b1", destination): (9_990, 0)})
    audit = await banks.audit()
    assert audit["in_flight_cents"] == 0 and audit["total_cents"] == audit["expected_cents"] == 10_990


async def test_an_abort_reaches_a_source_that_holds_money_for_it_with_the_decision(banks: Banks) -> None:
    await customer_everywhere(banks, ANA)
    rich = await banks.account("b1", ANA, 1_000)
    poor = await banks.account("b2", ANA, 100)
    mine = await banks.account("b0", ANA, 0)
    # No later round would carry the abort, and b1 would not ask about it for a minute: only
    # a decision sent at once gives b1's hold back.
    banks.apps["b0"][TRANSFERS].coordinator.decision_defer_ms = 60_000
    banks.apps["b1"][TRANSFERS].participant.query_after_ms = 60_000
    request = {"sources": [{"bank": "b1", "account": rich, "amount_cents": 300},
                           {"bank": "b2", "account": poor, "amount_cents": 500}],
               "destination": {"bank": "b0", "account": mine}}
    status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", request, who=ANA)
    assert status == 202 and (body["status"], body.get("reason")) == ("aborted", "insufficient_funds"), body
    await settle(banks, {("b1", rich): (1_000, 0)})


async def test_a_retried_cross_bank_withdrawal_gets_its_first_answer(banks: Banks) -> None:
    for bank in ("b0", "b1"):
        await banks.customer(bank, ANA)
    account = await banks.account("b1", ANA, 1_000)
    request = {"bank": "b1", "account": account, "amount_cents": 300}
    key = {"Idempotency-Key": "cash-1"}
    status, first = await banks.call("POST", "b0", "/api/v1/withdrawals", request, who=ANA, headers=key)
    assert status == 201 and first["transfer_id"], first
    # The account changes afterwards: a retry must not read it anew, nor move money again.
    status, _ = await banks.call("POST", "b1", "/api/v1/deposits",
                                 {"bank": "b1", "account": account, "amount_cents": 50}, who=ANA)
    assert status == 201
    async with banks.session.post(banks.url("b0") + "/api/v1/withdrawals", json=request, headers={
        **key, "Authorization": f"Bearer {banks.tokens[('b0', ANA)]}"}) as response:
        assert (response.status, await response.json()) == (201, first)
        assert response.headers["Idempotent-Replayed"] == "true"
    await settle(banks, {("b1", account): (750, 0)})


async def withdraw(banks: Banks, bank: str, request: dict[str, Any], key: str | None) -> tuple[int, Any, str | None]:
    """A withdrawal asked of ``bank`` (with an Idempotency-Key unless None): status, body,
    Idempotent-Replayed."""
    headers = {"Authorization": f"Bearer {banks.tokens[(bank, ANA)]}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    async with banks.session.post(banks.url(bank) + "/api/v1/withdrawals", json=request, headers=headers) as response:
        return response.status, await response.json(), response.headers.get("Idempotent-Replayed")


async def test_a_withdrawal_with_a_key_is_one_withdrawal_through_any_bank(banks: Banks) -> None:
    # The key is kept by the account's bank (b1), with its local withdrawals' keys: a retry
    # through any bank, b1 included, gets the first answer and pays nothing more.
    await customer_everywhere(banks, ANA)
    account = await banks.account("b1", ANA, 1_000)
    request = {"bank": "b1", "account": account, "amount_cents": 300}
    status, first, replayed = await withdraw(banks, "b0", request, "cash-any")
    assert status == 201 and first["transfer_id"].startswith("b0-") and replayed is None, first
    status, _ = await banks.call("POST", "b1", "/api/v1/deposits",
                                 {"bank": "b1", "account": account, "amount_cents": 50}, who=ANA)
    assert status == 201
    for terminal in ("b2", "b1", "b0", "b2"):
        assert await withdraw(banks, terminal, request, "cash-any") == (201, first, "true"), terminal
    for terminal in ("b1", "b2"):  # the key for another request, anywhere
        status, body, _ = await withdraw(banks, terminal, {**request, "amount_cents": 1}, "cash-any")
        assert status == 422 and body["error"]["code"] == "idempotency_key_reused", body
    # Made first at the account's bank, a local withdrawal is the same one through any bank.
    local = {**request, "amount_cents": 200}
    status, first_local, _ = await withdraw(banks, "b1", local, "cash-here")
    assert status == 201 and first_local["balance_cents"] == 550, first_local
    for terminal in ("b0", "b2"):
        assert await withdraw(banks, terminal, local, "cash-here") == (201, first_local, "true"), terminal
    # Refused the first time (more than the account has), refused the same way after.
    status, refused, _ = await withdraw(banks, "b2", {**request, "amount_cents": 5_000}, "cash-too-much")
    assert status == 409 and refused["error"]["code"] == "insufficient_funds", refused
    for terminal in ("b0", "b1", "b2"):
        assert await withdraw(banks, terminal, {**request, "amount_cents": 5_000}, "cash-too-much") == (409, refused, "true")
    await settle(banks, {("b1", account): (550, 0)})
    audit = await banks.audit()
    assert audit["consistent"] is True and audit["total_cents"] == audit["expected_cents"] == 550, audit


async def test_the_same_keyed_withdrawal_asked_at_every_bank_at_once_is_made_once(banks: Banks) -> None:
    await customer_everywhere(banks, ANA)
    account = await banks.account("b1", ANA, 1_000)
    request = {"bank": "b1", "account": account, "amount_cents": 100}
    for round_index in range(6):
        # Every bank at once; or only the two that pay cash for b1's account (each retry then
        # waits for the first one's outcome at the bank that pays it), then b1 itself.
        terminals = ("b0", "b1", "b2", "b0", "b2") if round_index % 2 else ("b0", "b2", "b0", "b2")
        key = f"race-{round_index}"
        answers = await asyncio.gather(*(withdraw(banks, terminal, request, key) for terminal in terminals))
        if "b1" not in terminals:
            answers.append(await withdraw(banks, "b1", request, key))
        # One of them made it (at b1, a local withdrawal, or at b0 or b2, a cross-bank one);
        # every other one is its replay.
        assert {(status, jsonio.dumps_text(body)) for status, body, _ in answers} == {
            (201, jsonio.dumps_text(answers[0][1]))
        }, answers
        assert sorted(replayed or "" for _, _, replayed in answers) == ["", "true", "true", "true", "true"], answers
    await settle(banks, {("b1", account): (400, 0)})


async def test_a_keyed_withdrawal_waits_for_the_accounts_bank(banks: Banks) -> None:
    await customer_everywhere(banks, ANA)
    account = await banks.account("b1", ANA, 1_000)
    await banks.runners["b1"].cleanup()  # b1, which keeps the key, is gone
    status, body, _ = await withdraw(banks, "b0", {"bank": "b1", "account": account, "amount_cents": 100}, "cash-later")
    assert status == 503 and body["error"]["code"] == "unavailable" and "b1" in body["error"]["message"], body
    audit = await banks.apps["b0"][LEDGER].audit()
    assert audit["settlement_cents"] == 0 and audit["deposited_net_cents"] == 0, audit  # no cash left b0


def not_made(status: int, body: Any) -> str:
    """The transfer id a 503 of a withdrawal that was not made names, with no cash paid."""
    assert status == 503 and body["error"]["code"] == "unavailable", body
    message = body["error"]["message"]
    assert "no cash was paid" in message, message
    (transfer_id,) = re.findall(r"\(transfer (\S+)\)", message)
    return str(transfer_id)


async def test_a_withdrawal_its_accounts_bank_never_voted_on_is_recorded_as_one(banks: Banks) -> None:
    """Without a key the withdrawal's transfer is run, and aborted (its source's bank silent):
    an error (no cash was paid: never a 2xx), naming its transfer, whose record names the
    account it drew on, as a withdrawal."""
    await customer_everywhere(banks, ANA)
    account = await banks.account("b1", ANA, 1_000)
    await banks.runners["b1"].cleanup()  # b1, which keeps the account, is gone
    status, body, _ = await withdraw(banks, "b0", {"bank": "b1", "account": account, "amount_cents": 100}, None)
    transfer_id = not_made(status, body)
    status, record = await banks.call("GET", "b0", f"/api/v1/transfers/{transfer_id}", who=ANA)
    assert record["reason"] == "unreachable", record
    assert status == 200, record
    assert (record["kind"], record["status"], record["destination"]) == ("withdrawal", "aborted", None), record
    assert record["sources"] == [{"bank": "b1", "account": account, "amount_cents": 100}], record
    audit = await banks.apps["b0"][LEDGER].audit()
    assert audit["settlement_cents"] == 0 and audit["deposited_net_cents"] == 0, audit  # no cash left b0


async def test_a_withdrawal_aborted_as_its_accounts_bank_did_not_vote_is_made_by_its_retry_with_the_key(
    banks: Banks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The account's bank took the key, then did not answer the prepare: the withdrawal is
    aborted, nothing moved, and the answer is a 503. Its key does not keep that failure: a
    retry with it, through any bank, makes the withdrawal once."""
    await customer_everywhere(banks, ANA)
    account = await banks.account("b1", ANA, 1_000)
    request = {"bank": "b1", "account": account, "amount_cents": 100}

    async def silent(message: Any) -> Any:
        raise RuntimeError("b1 answers no prepare")

    monkeypatch.setattr(banks.apps["b1"][TRANSFERS], "handle_participant", silent)
    status, body, _ = await withdraw(banks, "b0", request, "cash-silent")
    aborted = not_made(status, body)
    status, record = await banks.call("GET", "b0", f"/api/v1/transfers/{aborted}", who=ANA)
    assert (record["kind"], record["status"]) == ("withdrawal", "aborted"), record
    await settle(banks, {("b1", account): (1_000, 0)})
    monkeypatch.undo()
    status, paid, replayed = await withdraw(banks, "b2", request, "cash-silent")
    assert status == 201 and replayed is None and paid["transfer_id"] != aborted, paid
    for terminal in ("b0", "b1", "b2"):
        assert await withdraw(banks, terminal, request, "cash-silent") == (201, paid, "true"), terminal
    await settle(banks, {("b1", account): (900, 0)})


async def test_a_withdrawal_whose_key_was_taken_but_never_made_is_made_by_its_retry(banks: Banks) -> None:
    # b0 took the key at b1 for a withdrawal, then never stored it (as if it restarted in
    # between): it moved nothing and never will, so the key goes to the next retry, which
    # makes the withdrawal (as a cross-bank one at b2, or as a local one at b1), once.
    await customer_everywhere(banks, ANA)
    account = await banks.account("b1", ANA, 1_000)
    request = {"bank": "b1", "account": account, "amount_cents": 100}
    b0 = SignedClient(banks.session, SECRET, "b0")
    for key, first_at, others in (("cash-lost", "b2", ("b1", "b0", "b2")), ("cash-lost-2", "b1", ("b0", "b2", "b1"))):
        claim = {"document": ANA, "idempotency_key": key, "id": new_transfer_id("b0"),
                 "fingerprint": request_fingerprint("POST", "/api/v1/withdrawals", request)}
        reply = await b0.post_json(banks.url("b1"), "/interbank/withdrawal-keys", claim)
        assert reply.status == 200 and (reply.body["status"], reply.body["replayed"]) == (202, False), reply.body
        status, first, replayed = await withdraw(banks, first_at, request, key)
        assert status == 201 and replayed is None, first
        for terminal in others:
            assert await withdraw(banks, terminal, request, key) == (201, first, "true"), terminal
    await settle(banks, {("b1", account): (800, 0)})
    # Only the bank that pays the cash may take a key for its own transfer id, and a key is
    # given back only in place of a withdrawal another bank was to pay.
    claim = {"document": ANA, "idempotency_key": "cash-forged", "id": new_transfer_id("b0"), "fingerprint": "f"}
    forged = await SignedClient(banks.session, SECRET, "b2").post_json(banks.url("b1"), "/interbank/withdrawal-keys", claim)
    assert forged.status == 400, forged.body
    taken = await b0.post_json(banks.url("b1"), "/interbank/withdrawal-keys", {**claim, "replacing": {"balance_cents": 1}})
    assert taken.status == 400, taken.body


async def transfer_between(banks: Banks, source_bank: str, destination_bank: str) -> tuple[int, int, dict[str, Any]]:
    """ANA, a customer of every bank, with 1,000 cents at ``source_bank`` and an empty account at
    ``destination_bank``; and a request to move 100 cents from one to the other."""
    await customer_everywhere(banks, ANA)
    source = await banks.account(source_bank, ANA, 1_000)
    destination = await banks.account(destination_bank, ANA, 0)
    request = {"sources": [{"bank": source_bank, "account": source, "amount_cents": 100}],
               "destination": {"bank": destination_bank, "account": destination}}
    return source, destination, request


async def test_a_transfer_with_a_key_is_the_same_transfer_through_any_bank(banks: Banks) -> None:
    source, destination, request = await transfer_between(banks, "b0", "b1")
    key = {"Idempotency-Key": "pay-rent"}
    answers = []
    for terminal in ("b1", "b2", "b0", "b2"):  # a client retrying wherever it can
        async with banks.session.post(banks.url(terminal) + "/api/v1/transfers?wait_ms=10000", json=request,
                                      headers={**key, "Authorization": f"Bearer {banks.tokens[(terminal, ANA)]}"}) as r:
            answers.append((r.status, await r.json(), r.headers.get("Idempotent-Replayed")))
    first = answers[0]
    # Coordinated by the first source's bank (b0), wherever it was asked for: one transfer.
    assert first[0] == 202 and first[1]["status"] == "committed" and first[1]["id"].startswith("b0-"), first
    assert first[2] is None
    assert all((status, body, replayed) == (202, first[1], "true") for status, body, replayed in answers[1:]), answers
    await settle(banks, {("b0", source): (900, 0), ("b1", destination): (100, 0)})
    # Any bank shows it to its customer; the same key for another request is refused anywhere.
    for terminal in ("b1", "b2"):
        status, record = await banks.call("GET", terminal, f"/api/v1/transfers/{first[1]['id']}", who=ANA)
        assert status == 200 and record["status"] == "committed" and record["sources"] == request["sources"]
    other = {**request, "sources": [{"bank": "b0", "account": source, "amount_cents": 101}]}
    status, body = await banks.call("POST", "b2", "/api/v1/transfers", other, who=ANA, headers=key)
    assert status == 422 and body["error"]["code"] == "idempotency_key_reused", body
    # Without a key nothing is forwarded: the terminal coordinates.
    status, body = await banks.call("POST", "b2", "/api/v1/transfers?wait_ms=10000", request, who=ANA)
    assert status == 202 and body["id"].startswith("b2-") and body["status"] == "committed", body
    # A client that does not wait hears the id at once and follows it at its own bank.
    status, body = await banks.call("POST", "b2", "/api/v1/transfers", request, who=ANA,
                                    headers={"Idempotency-Key": "no-wait"})
    assert status == 202 and body["id"].startswith("b0-") and body["status"] in ("pending", "committed"), body
    deadline = time.monotonic() + DEADLINE_S
    while body["status"] == "pending":
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.02)
        status, body = await banks.call("GET", "b2", f"/api/v1/transfers/{body['id']}", who=ANA)
    assert status == 200 and body["status"] == "committed", body
    await banks.customer("b1", BIA)
    status, _ = await banks.call("GET", "b1", f"/api/v1/transfers/{first[1]['id']}", who=BIA)
    assert status == 404  # not hers, from any bank


async def test_a_key_names_one_request_whether_its_write_is_local_or_cross_bank(banks: Banks) -> None:
    # A bank keeps its local writes' keys in the ledger and its cross-bank transfers' keys
    # apart; a key taken in one is refused as reused in the other, and nothing moves.
    source, destination, request = await transfer_between(banks, "b0", "b1")
    deposit = {"bank": "b0", "account": source, "amount_cents": 10}
    status, _ = await banks.call("POST", "b0", "/api/v1/deposits", deposit, who=ANA, headers={"Idempotency-Key": "k1"})
    assert status == 201
    status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", request, who=ANA,
                                    headers={"Idempotency-Key": "k1"})
    assert status == 422 and body["error"]["code"] == "idempotency_key_reused", body
    status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", request, who=ANA,
                                    headers={"Idempotency-Key": "k2"})
    assert status == 202 and body["status"] == "committed", body
    local = {"sources": [{"bank": "b0", "account": source, "amount_cents": 5}],
             "destination": {"bank": "b0", "account": await banks.account("b0", ANA, 0)}}
    for terminal, path, other in (("b0", "/api/v1/deposits", deposit), ("b2", "/api/v1/deposits", deposit),
                                  ("b0", "/api/v1/transfers", local), ("b0", "/api/v1/withdrawals", deposit)):
        status, body = await banks.call("POST", terminal, path, other, who=ANA, headers={"Idempotency-Key": "k2"})
        assert status == 422 and body["error"]["code"] == "idempotency_key_reused", (terminal, path, body)
    await settle(banks, {("b0", source): (910, 0), ("b1", destination): (100, 0)})
    # Asked at once, a cross-bank transfer (its key kept in memory until its decision) and a
    # local deposit with one key: whichever comes first keeps it, and the other is refused.
    won = {"transfers": 0, "deposits": 0}
    for index in range(6):
        key = {"Idempotency-Key": f"race-{index}"}
        asked = {"transfer": banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", request, who=ANA, headers=key),
                 "deposit": banks.call("POST", "b0", "/api/v1/deposits", deposit, who=ANA, headers=key)}
        order = ["transfer", "deposit"] if index % 2 else ["deposit", "transfer"]  # either sent first
        answers = dict(zip(order, await asyncio.gather(*(asked[name] for name in order))))
        (transfer_status, transfer), (deposit_status, deposited) = answers["transfer"], answers["deposit"]
        refused = [body for body in (transfer, deposited) if "error" in body]
        assert len(refused) == 1 and refused[0]["error"]["code"] == "idempotency_key_reused", (transfer, deposited)
        assert (transfer_status, deposit_status) in ((202, 422), (422, 201)), (transfer, deposited)
        assert transfer_status == 422 or transfer["status"] == "committed", transfer
        won["transfers" if transfer_status == 202 else "deposits"] += 1
    await settle(banks, {("b0", source): (910 - 100 * won["transfers"] + 10 * won["deposits"], 0),
                         ("b1", destination): (100 + 100 * won["transfers"], 0)})
    assert (await banks.audit())["consistent"] is True


async def test_a_transfer_with_a_key_waits_for_its_first_sources_bank(banks: Banks) -> None:
    _, destination, request = await transfer_between(banks, "b0", "b1")
    await banks.runners["b0"].cleanup()  # b0, which keeps the key, is gone
    status, body = await banks.call("POST", "b1", "/api/v1/transfers?wait_ms=2000", request, who=ANA,
                                    headers={"Idempotency-Key": "later"})
    # Nothing was made anywhere: the client retries with the same key once b0 is back.
    assert status == 503 and body["error"]["code"] == "unavailable" and "b0" in body["error"]["message"], body
    assert await banks.balance("b1", ANA, destination) == (0, 0)


async def test_the_same_keyed_transfer_asked_at_every_bank_at_once_is_made_once(banks: Banks) -> None:
    source, destination, request = await transfer_between(banks, "b1", "b2")
    for round_index in range(5):
        key = {"Idempotency-Key": f"race-{round_index}"}
        answers = await asyncio.gather(*(
            banks.call("POST", terminal, "/api/v1/transfers?wait_ms=10000", request, who=ANA, headers=key)
            for terminal in ("b0", "b1", "b2", "b0", "b2")
        ))
        assert {(status, body["id"], body["status"]) for status, body in answers} == {
            (202, answers[0][1]["id"], "committed")
        }, answers
    # Five keys, five transfers: not one more.
    await settle(banks, {("b1", source): (500, 0), ("b2", destination): (500, 0)})


async def test_retries_of_a_keyed_transfer_asked_at_once_all_name_the_one_transfer(banks: Banks) -> None:
    # Retries of a key whose transfer is stored, asked at once (waiting or not), and first
    # requests asked at once without waiting: every answer names the key's one transfer.
    source, destination, request = await transfer_between(banks, "b0", "b1")
    made = 0
    for round_index, wait_ms in enumerate((10_000, 0, 10_000, 0)):
        key = {"Idempotency-Key": f"again-{round_index}"}
        status, first = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=10000", request, who=ANA, headers=key)
        assert status == 202 and first["status"] == "committed", first
        made += 1
        answers = await asyncio.gather(*(
            banks.call("POST", terminal, f"/api/v1/transfers?wait_ms={wait_ms}", request, who=ANA, headers=key)
            for terminal in ("b0", "b0", "b0", "b0", "b1", "b2")
        ))
        assert {(status, body.get("id"), body.get("status")) for status, body in answers} == {
            (202, first["id"], "committed")
        }, answers
    for round_index in range(4):
        key = {"Idempotency-Key": f"at-once-{round_index}"}
        answers = await asyncio.gather(*(
            banks.call("POST", terminal, "/api/v1/transfers", request, who=ANA, headers=key)
            for terminal in ("b0", "b0", "b0", "b0", "b1", "b2")
        ))
        assert {(status, body.get("id")) for status, body in answers} == {(202, answers[0][1].get("id"))}, answers
        made += 1
    await settle(banks, {("b0", source): (1_000 - 100 * made, 0), ("b1", destination): (100 * made, 0)})


async def test_a_stopped_transfer_service_starts_nothing_and_leaves_no_task_running(
    banks: Banks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopping is final: a decision dispatched afterwards is not sent (the database keeps it
    for the next start), and a task that starts another while it is being cancelled does not
    leave that one running (it would outlive the bank, and its connection the event loop)."""
    from bank.transfers.protocol import DecisionItem, Decisions

    service = banks.apps["b0"][TRANSFERS]
    sent: list[str] = []

    async def deliver(to: str, message: Any) -> None:
        sent.append(to)

    monkeypatch.setattr(service, "_deliver", deliver)
    late: list[asyncio.Task[None]] = []

    async def starts_another_when_cancelled() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            late.append(asyncio.get_running_loop().create_task(asyncio.sleep(60)))
            service._track(late[0])  # noqa: SLF001 - what a round's own tasks do
            raise

    service._track(asyncio.get_running_loop().create_task(starts_another_when_cancelled()))  # noqa: SLF001
    await asyncio.sleep(0)
    await service.stop()
    assert late and late[0].cancelled()
    service._dispatch([("b1", Decisions("b0", (DecisionItem("b0-late", "aborted", ()),)))])  # noqa: SLF001
    await asyncio.sleep(0)
    assert sent == [] and all(task.done() for task in service._tasks)  # noqa: SLF001


async def test_every_route_of_a_bank_answers_errors_in_the_one_shape(banks: Banks) -> None:
    """Outside the client API too (the terminal's files, /healthz, /metrics): an unknown
    path or method is the contract's JSON error, a 405 with its Allow header."""
    for method, path, status, code in [("GET", "/nope", 404, "not_found"), ("POST", "/healthz", 405, "method_not_allowed"),
                                       ("DELETE", "/metrics", 405, "method_not_allowed")]:
        async with banks.session.request(method, banks.url("b0") + path) as response:
            assert response.status == status and response.content_type == "application/json", path
            assert (await response.json())["error"]["code"] == code
            if status == 405:
                assert "GET" in response.headers["Allow"]
    async with banks.session.get(banks.url("b0") + "/") as response:
        assert response.status == 200 and response.content_type == "text/html"


async def test_after_the_whole_consortium_restarts_its_tokens_are_above_every_stored_fence(banks: Banks) -> None:
    """The ring remembers no fence across a restart of every bank; the banks do (the highest
    prepare fence each accepted). Each ring member starts above its bank's, so the first
    token after the restart is not refused as stale by a bank that ran long before."""
    await customer_everywhere(banks, ANA)
    source = await banks.account("b1", ANA, 1_000)
    destination = await banks.account("b2", ANA, 0)
    long_ago = (50, "b0", 10**6)  # as after many generations and hand-offs

    def remember(conn: Any) -> None:
        conn.execute(
            "INSERT INTO transfer_fence (id, epoch, issuer, seq) VALUES (1, ?, ?, ?) ON CONFLICT (id)"
            " DO UPDATE SET epoch = excluded.epoch, issuer = excluded.issuer, seq = excluded.seq", long_ago,
        )

    await banks.apps["b1"][LEDGER].write(remember)
    for runner in reversed(list(banks.runners.values())):
        await runner.cleanup()
    for bank_id in ("b2", "b1", "b0"):  # the first member last: it bids as it starts
        app = build_app(banks.config, bank_id, secret=SECRET)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        bank = banks.config.bank(bank_id)
        await web.TCPSite(runner, bank.host, bank.port).start()
        banks.runners[bank_id], banks.apps[bank_id] = runner, app
    status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=15000", {
        "sources": [{"bank": "b1", "account": source, "amount_cents": 100}],
        "destination": {"bank": "b2", "account": destination}}, who=ANA)
    assert (status, body["status"]) == (202, "committed"), body
    assert banks.apps["b0"][RING].status()["generation"] > long_ago[0]


async def test_healthz_says_unhealthy_when_the_ledgers_writer_has_stopped(banks: Banks) -> None:
    """A bank that serves but cannot write is not healthy: /healthz is what a supervisor
    (and consortium up) asks."""
    async with banks.session.get(banks.url("b0") + "/healthz") as response:
        assert response.status == 200 and (await response.json())["status"] == "ok"
    ledger = banks.apps["b0"][LEDGER]
    ledger._writer.queue.put(ledger_module._STOP)  # the writer ends, as after a crash of its thread
    await asyncio.to_thread(ledger._writer.thread.join, DEADLINE_S)
    async with banks.session.get(banks.url("b0") + "/healthz") as response:
        answer = await response.json()
        assert response.status == 503 and answer["status"] == "unhealthy", answer
