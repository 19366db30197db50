"""What one bank's signed word can do at another: a prepare or a decision names only
transfers its sender coordinates, each source once, with ids a ledger can store; refused
ones change nothing and leave the receiving bank working. Three banks in this process on
127.0.0.1, as in ``test_interbank``."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from bank.keys import RING, TRANSFERS
from bank.server import build_app
from bank.transfers.book import RecordOutcomes
from bank.transfers.protocol import DecisionItem, DecisionQuery, Decisions, Leg, Transfer
from tokenring.signing import SignedClient, wall_clock_ms
from waiting import wait_until

from tests.test_interbank import ANA, BIA, DEADLINE_S, SECRET, Banks, banks, customer_everywhere, settle  # noqa: F401


def _leg(account: int, amount_cents: int, role: str = "source") -> dict[str, Any]:
    return {"bank": "b1", "account": str(account), "amount_cents": amount_cents, "role": role}


async def _post(banks: Banks, sender: str, path: str, message: dict[str, Any]) -> tuple[int, Any]:
    reply = await SignedClient(banks.session, SECRET, sender).post_json(banks.url("b1"), path, message)
    return reply.status, reply.body


async def test_only_a_transfers_coordinator_decides_it(banks: Banks) -> None:
    """b2 telling b1 that b0's transfer aborted is refused and changes nothing: b1 keeps the
    hold, and b0's own decision (commit) then applies everywhere."""
    await customer_everywhere(banks, ANA)
    source = await banks.account("b1", ANA, 1_000)
    destination = await banks.account("b2", ANA, 0)
    b0 = banks.apps["b0"][TRANSFERS]
    decide = asyncio.Event()
    execute = b0.book.execute

    async def gated(batch: Any) -> Any:  # b0 writes its decisions only when let
        if any(isinstance(op, RecordOutcomes) for op in batch):
            await decide.wait()
        return await execute(batch)

    b0.book.execute = gated
    legs = (Leg("b1", str(source), 300, "source"), Leg("b2", str(destination), 300, "destination"))
    transfer_id = "b0-" + "0" * 27
    decided = b0.watch(transfer_id)
    await b0.submit(Transfer(transfer_id, "b0", ANA, legs))
    await settle(banks, {("b1", source): (700, 300)})
    forged = {"transfer_id": transfer_id, "outcome": "aborted", "legs": []}
    status, body = await _post(banks, "b2", "/interbank/decisions", {"type": "decisions", "sender": "b2", "items": [forged]})
    assert (status, body["error"]["code"]) == (403, "forbidden")
    fence = banks.apps["b1"][TRANSFERS].participant.fence.to_dict()
    status, _ = await _post(banks, "b2", "/interbank/prepare",
                            {"type": "prepare", "sender": "b2", "fence": fence, "items": [], "decisions": [forged]})
    assert status == 403
    assert await banks.balance("b1", ANA, source) == (700, 300)
    decide.set()
    assert (await asyncio.wait_for(decided, DEADLINE_S)).outcome == "committed"
    await settle(banks, {("b1", source): (700, 0), ("b2", destination): (300, 0)})
    audit = await banks.audit()
    assert audit["consistent"] and audit["total_cents"] == 1_000


async def test_a_prepare_naming_a_source_twice_is_refused(banks: Banks) -> None:
    """Held once per transfer and account, a source named twice would be paid out twice."""
    await customer_everywhere(banks, ANA)
    source = await banks.account("b1", ANA, 1_000)
    item = {"transfer_id": "b0-x", "owner_document": ANA, "legs": [_leg(source, 100), _leg(source, 200)]}
    fence = {"epoch": 1, "issuer": "b0", "seq": 1}
    status, body = await _post(banks, "b0", "/interbank/prepare", {"type": "prepare", "sender": "b0", "fence": fence, "items": [item]})
    assert (status, body["error"]["code"]) == (400, "invalid_request")
    assert "source twice" in body["error"]["message"]
    assert await banks.balance("b1", ANA, source) == (1_000, 0)
    assert banks.apps["b1"][TRANSFERS].participant.fence is None


async def test_an_overlong_transfer_id_is_refused_and_the_bank_goes_on(banks: Banks) -> None:
    """An id no ledger stores is malformed (400), refused before the fence is looked at: it
    neither fails the request (500) nor raises the floor that honest prepares must pass."""
    await customer_everywhere(banks, ANA)
    source = await banks.account("b1", ANA, 1_000)
    destination = await banks.account("b2", ANA, 0)
    item = {"transfer_id": "b0-" + "x" * 98, "owner_document": ANA, "legs": [_leg(source, 1)]}
    status, body = await _post(banks, "b0", "/interbank/prepare", {
        "type": "prepare", "sender": "b0", "fence": {"epoch": 10**6, "issuer": "b0", "seq": 1}, "items": [item]})
    assert (status, body["error"]["code"]) == (400, "invalid_request")
    assert banks.apps["b1"][TRANSFERS].participant.fence is None
    status, body = await banks.call("POST", "b2", "/api/v1/transfers?wait_ms=15000", {
        "sources": [{"bank": "b1", "account": source, "amount_cents": 100}],
        "destination": {"bank": "b2", "account": destination}}, who=ANA)
    assert (status, body["status"]) == (202, "committed"), body


async def test_a_decided_transfer_holds_no_other_account(banks: Banks) -> None:
    """A committed transfer's id prepared again naming another account: voted ``decided``,
    nothing held (no decision would come again to release it)."""
    await customer_everywhere(banks, ANA)
    first = await banks.account("b1", ANA, 1_000)
    second = await banks.account("b1", ANA, 1_000)
    destination = await banks.account("b2", ANA, 0)
    status, body = await banks.call("POST", "b0", "/api/v1/transfers?wait_ms=15000", {
        "sources": [{"bank": "b1", "account": first, "amount_cents": 100}],
        "destination": {"bank": "b2", "account": destination}}, who=ANA)
    assert body["status"] == "committed", body
    await settle(banks, {("b1", first): (900, 0)})
    b1 = banks.apps["b1"][TRANSFERS]
    item = {"transfer_id": body["id"], "owner_document": ANA, "legs": [_leg(second, 400)]}
    status, votes = await _post(banks, "b0", "/interbank/prepare", {
        "type": "prepare", "sender": "b0", "fence": b1.participant.fence.to_dict(), "items": [item]})
    assert status == 200 and votes["votes"] == [{"transfer_id": body["id"], "ok": False, "reason": "decided"}]
    assert await banks.balance("b1", ANA, second) == (1_000, 0)
    assert b1.participant.outstanding == {}


async def test_a_stale_prepare_still_applies_the_decisions_it_carries(banks: Banks) -> None:
    """A prepare refused because a newer token exists is refused whole, but the decisions of
    earlier rounds that came with it are final: applied and acknowledged in its answer."""
    await customer_everywhere(banks, ANA)
    source = await banks.account("b1", ANA, 1_000)
    fence = {"epoch": 10**6, "issuer": "b0", "seq": 1}
    held = {"transfer_id": "b0-held", "owner_document": ANA, "legs": [_leg(source, 300)]}
    status, _ = await _post(banks, "b0", "/interbank/prepare", {"type": "prepare", "sender": "b0", "fence": fence, "items": [held]})
    assert status == 200 and await banks.balance("b1", ANA, source) == (700, 300)
    service = banks.apps["b1"][TRANSFERS]
    service.refuse_stale = lambda prepare: True  # as when b1's ring has seen a newer token
    late = {"transfer_id": "b0-late", "owner_document": ANA, "legs": [_leg(source, 50)]}
    abort = {"transfer_id": "b0-held", "outcome": "aborted", "legs": [_leg(source, 300)]}
    status, votes = await _post(banks, "b0", "/interbank/prepare", {
        "type": "prepare", "sender": "b0", "fence": fence, "items": [late], "decisions": [abort]})
    assert status == 200
    assert votes["votes"] == [{"transfer_id": "b0-late", "ok": False, "reason": "stale_fence"}]
    assert votes["acked"] == ["b0-held"]
    assert await banks.balance("b1", ANA, source) == (1_000, 0)
    assert service.participant.outstanding == {}


async def test_an_answer_to_a_query_decides_only_what_was_asked(banks: Banks) -> None:
    """b1 asks b0 about the transfer it holds money for; what b0's answer adds about other
    transfers is left out (each is decided by the message that concerns it)."""
    await customer_everywhere(banks, ANA)
    source = await banks.account("b1", ANA, 1_000)
    held = {"transfer_id": "b0-held", "owner_document": ANA, "legs": [_leg(source, 300)]}
    status, _ = await _post(banks, "b0", "/interbank/prepare", {
        "type": "prepare", "sender": "b0", "fence": {"epoch": 10**6, "issuer": "b0", "seq": 1}, "items": [held]})
    assert status == 200
    b0 = banks.apps["b0"][TRANSFERS]
    answer = b0.handle_coordinator
    asked: list[tuple[str, ...]] = []

    async def answer_more(message: Any) -> Any:
        reply = await answer(message)
        if isinstance(message, DecisionQuery):
            asked.append(message.transfer_ids)
            reply = Decisions(reply.sender, (*reply.items, DecisionItem("b0-unasked", "aborted", ())))
        return reply

    b0.handle_coordinator = answer_more
    # b0 never stored b0-held: presumed aborted when b1 asks (after QUERY_AFTER_MS).
    await settle(banks, {("b1", source): (1_000, 0)})
    assert asked == [("b0-held",)]
    b1 = banks.apps["b1"][TRANSFERS]
    assert await b1.book.applied_here("b0-held")
    assert not await b1.book.applied_here("b0-unasked")


# ---------------------------------------------------------------------------------------------
# A customer is one document at every bank: who may sign it up at another
# ---------------------------------------------------------------------------------------------


async def _sign_up(banks: Banks, bank: str, document: str, password: str) -> tuple[int, Any]:
    return await banks.call("POST", bank, "/api/v1/customers", {"document": document, "name": "Mallory", "password": password})


async def test_signing_up_with_anothers_document_reaches_none_of_their_accounts(banks: Banks) -> None:
    """Ana keeps an account at b0. Someone signing up at b1 with Ana's CPF and a password of
    their own is refused: else that session lists Ana's b0 account with its balance, reads
    its statement and spends it (every bank finds accounts by document)."""
    await banks.customer("b0", ANA)
    source = await banks.account("b0", ANA, 1_000)
    status, body = await _sign_up(banks, "b1", ANA, "mallory's own pw")
    assert (status, body["error"]["code"]) == (409, "customer_exists"), body
    status, body = await banks.call("POST", "b1", "/api/v1/sessions", {"document": ANA, "password": "mallory's own pw"})
    assert status == 401, body
    assert await banks.balance("b0", ANA, source) == (1_000, 0)


async def test_a_customer_signs_up_at_another_bank_with_the_password_used_where_known(banks: Banks) -> None:
    """Ana herself, with the password she has at b0, becomes a customer of b1 and sees her b0
    account from there; a document no bank knows is signed up as before."""
    await banks.customer("b0", ANA)
    source = await banks.account("b0", ANA, 1_000)
    await banks.customer("b1", ANA)  # "correct horse", as at b0
    status, body = await banks.call("GET", "b1", "/api/v1/accounts?scope=consortium", who=ANA)
    assert status == 200 and [a["account"] for b in body["banks"] if b["bank"] == "b0" for a in b["accounts"]] == [source]
    status, _ = await _sign_up(banks, "b2", BIA, "anything at all")
    assert status == 201


async def test_wrong_passwords_at_sign_up_count_as_failed_logins(banks: Banks) -> None:
    """Signing up at b1 with Ana's document is no way round the login brake:
    after LOGIN_FAILURES_MAX wrong guesses even the right password waits (429)."""
    from bank.auth import LOGIN_FAILURES_MAX

    await banks.customer("b0", ANA)
    for guess in range(LOGIN_FAILURES_MAX):
        status, _ = await _sign_up(banks, "b1", ANA, f"guess number {guess}")
        assert status == 409
    status, body = await _sign_up(banks, "b1", ANA, "correct horse")
    assert (status, body["error"]["code"]) == (429, "too_many_attempts"), body


async def test_a_sign_up_waits_for_every_bank_to_say_whether_it_knows_the_document(banks: Banks) -> None:
    """With b2 stopped, b2 may be keeping Ana's accounts: a sign-up of her document at b1 is
    503 and makes nothing (else it could be made while the bank that would refuse it is down)."""
    await banks.customer("b2", ANA)
    await banks.account("b2", ANA, 1_000)
    await banks.runners["b2"].cleanup()
    status, body = await _sign_up(banks, "b1", ANA, "mallory's own pw")
    assert (status, body["error"]["code"]) == (503, "unavailable"), body
    status, _ = await banks.call("POST", "b1", "/api/v1/sessions", {"document": ANA, "password": "mallory's own pw"})
    assert status == 401


def forwarded_deposits(banks: Banks, bank: str) -> list[tuple[dict[str, str], bytes]]:
    """The headers and body of every deposit ``bank`` forwards from now on, as they leave it
    (what anyone watching the link between banks sees)."""
    peers = banks.apps[bank][RING].client.session
    send, seen = peers.request, []

    async def recording(method: str, host: str, port: int, path: str, headers: Any, body: bytes, **options: Any) -> Any:
        if path == "/interbank/deposits":
            seen.append((dict(headers), bytes(body)))
        return await send(method, host, port, path, headers, body, **options)

    peers.request = recording
    return seen


async def test_a_message_seen_on_its_way_to_one_bank_is_refused_by_another(banks: Banks) -> None:
    """b2 forwards Ana's deposit into her b0 account; the same bytes, sent to b1 within the
    clock bound (by anyone who saw them on the plain-HTTP link: no key needed), are refused
    there and credit nothing, though b1 never saw that nonce and Ana has an account of the
    same number at b1."""
    await customer_everywhere(banks, ANA)
    at_b0 = await banks.account("b0", ANA, 0)
    at_b1 = await banks.account("b1", ANA, 0)
    assert at_b0 == at_b1
    seen = forwarded_deposits(banks, "b2")
    status, _ = await banks.call("POST", "b2", "/api/v1/deposits", {"bank": "b0", "account": at_b0, "amount_cents": 500},
                                 who=ANA, headers={"Idempotency-Key": "cash-in-at-b2"})
    assert status == 201 and len(seen) == 1
    headers, body = seen[0]
    async with banks.session.post(banks.url("b1") + "/interbank/deposits", data=body, headers=headers) as replayed:
        assert replayed.status == 401, await replayed.text()
    assert await banks.balance("b1", ANA, at_b1) == (0, 0)
    audit = await banks.audit()
    assert audit["consistent"] and audit["expected_cents"] == 500


async def test_a_message_a_bank_took_before_it_restarted_is_refused_after(banks: Banks) -> None:
    """A restart forgets the nonces a bank took. A deposit b2 forwarded to b0 without a key
    (the client sent none), sent again by whoever saw it once b0 is back within the clock
    bound, is refused: it does not credit Ana twice."""
    await customer_everywhere(banks, ANA)
    at_b0 = await banks.account("b0", ANA, 0)
    seen = forwarded_deposits(banks, "b2")
    status, _ = await banks.call("POST", "b2", "/api/v1/deposits", {"bank": "b0", "account": at_b0, "amount_cents": 500}, who=ANA)
    assert status == 201 and len(seen) == 1
    await banks.runners["b0"].cleanup()  # b0 restarts: its memory (its nonces) is gone
    headers, body = seen[0]
    stamped_ms = int(headers["X-Ring-Timestamp"])
    # Its start comes after the message's timestamp (a clock of whole milliseconds).
    await wait_until(lambda: wall_clock_ms() > stamped_ms, "the wall clock to pass the message's stamp")
    app = build_app(banks.config, "b0", secret=SECRET)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    bank = banks.config.bank("b0")
    await web.TCPSite(runner, bank.host, bank.port).start()
    banks.runners["b0"], banks.apps["b0"] = runner, app
    async with banks.session.post(banks.url("b0") + "/interbank/deposits", data=body, headers=headers) as replayed:
        assert replayed.status == 401, await replayed.text()
    assert await banks.balance("b0", ANA, at_b0) == (500, 0)
