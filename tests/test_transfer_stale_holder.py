"""A stale holder cannot place a hold after it resumes (real bank processes on 127.0.0.1).

A bank is SIGSTOPped while it holds the token and stays stopped past the loss timeout, so
the others mint a newer generation. Once resumed, what it would send for the round of its
old visit — a signed prepare under its old fence — is refused by a bank holding the source
account, and nothing is held there; a prepare under the current fence is accepted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bank.documents import complete_cpf
from bank.process import Consortium, catch_holder, write_ring_file
from bank.transfers.protocol import DecisionItem, Decisions, Leg, Prepare, PrepareItem, encode_message
from bank.transfers.service import fence_to_json
from tokenring.core import Fence
from tokenring.signing import SignedClient

pytestmark = pytest.mark.processes

SECRET = "stale-holder-secret"
BANKS = ("b0", "b1", "b2")
LOSS_TIMEOUT_MS = 600
REGENERATION_WAIT_S = 5.0
"""How long the others may take to mint a newer generation once the holder is stopped."""
ANA = complete_cpf("529982247")


@pytest.fixture
def consortium(tmp_path: Path) -> Iterator[Consortium]:
    config = write_ring_file(tmp_path / "ring.toml", list(BANKS), hold_max_ms=20,
                             handoff_timeout_ms=100, loss_timeout_ms=LOSS_TIMEOUT_MS,
                             data_dir=str(tmp_path / "var"))
    banks = Consortium(config, secret=SECRET, log_dir=tmp_path / "logs", parent_watch=True)
    banks.start()
    try:
        yield banks
    finally:
        banks.stop()


async def _json(session: aiohttp.ClientSession, method: str, url: str, body: Any = None,
                token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, url, json=body, headers=headers,
                               timeout=aiohttp.ClientTimeout(total=2)) as response:
        return response.status, await response.json()


async def _status(session: aiohttp.ClientSession, url: str) -> Any:
    try:
        return (await _json(session, "GET", url + "/ring/status"))[1]
    except (aiohttp.ClientError, TimeoutError):
        return None


async def test_a_holder_paused_past_the_loss_timeout_cannot_hold_money_when_it_resumes(
    consortium: Consortium,
) -> None:
    config = consortium.config
    async with aiohttp.ClientSession() as session:
        tokens = {}
        accounts = {}
        for bank in BANKS:
            url = config.bank(bank).url
            status, _ = await _json(session, "POST", url + "/api/v1/customers",
                                    {"document": ANA, "name": "Ana", "password": "pass-word-1"})
            assert status == 201
            status, body = await _json(session, "POST", url + "/api/v1/sessions",
                                       {"document": ANA, "password": "pass-word-1"})
            tokens[bank] = body["token"]
            status, body = await _json(session, "POST", url + "/api/v1/accounts",
                                       {"kind": "individual", "owners": [ANA]}, tokens[bank])
            accounts[bank] = body["account"]
            status, _ = await _json(session, "POST", url + "/api/v1/deposits",
                                    {"bank": bank, "account": accounts[bank], "amount_cents": 1_000},
                                    tokens[bank])
            assert status == 201

        # Stop a bank while it provably holds the token, then let the others regenerate it.
        sleeper, old_fence, _ = await catch_holder(session, consortium)
        others = [b for b in BANKS if b != sleeper]
        deadline = time.monotonic() + REGENERATION_WAIT_S
        while True:
            statuses = [await _status(session, config.bank(b).url) for b in others]
            if all(s and s["generation"] > old_fence.epoch for s in statuses):
                break
            assert time.monotonic() < deadline, f"no newer generation: {statuses}"
            await asyncio.sleep(0.05)
        consortium[sleeper].resume()

        target = next(b for b in BANKS if b != sleeper)
        url = config.bank(target).url
        signer = SignedClient(session, SECRET.encode(), sleeper)

        def prepare(fence: Fence, transfer_id: str) -> dict[str, Any]:
            legs = (Leg(target, str(accounts[target]), 600, "source"),)
            return encode_message(
                Prepare(sleeper, fence, (PrepareItem(transfer_id, ANA, legs),)), fence_to_json
            )

        reply = await signer.post_json(url, "/interbank/prepare", prepare(old_fence, f"{sleeper}-stale"))
        assert reply.status == 200, reply
        assert [(v["ok"], v["reason"]) for v in reply.body["votes"]] == [(False, "stale_fence")]
        status, body = await _json(session, "GET", url + "/api/v1/accounts", token=tokens[target])
        assert [(a["balance_cents"], a["held_cents"]) for a in body["accounts"]] == [(1_000, 0)]

        # The same prepare under the current generation is accepted (the check is the fence).
        current = Fence.from_dict((await _status(session, url))["fence_seen"])
        reply = await signer.post_json(url, "/interbank/prepare", prepare(current, f"{sleeper}-fresh"))
        assert [(v["ok"], v["reason"]) for v in reply.body["votes"]] == [(True, None)]
        abort = Decisions(sleeper, (DecisionItem(f"{sleeper}-fresh", "aborted",
                                                 (Leg(target, str(accounts[target]), 600, "source"),)),))
        reply = await signer.post_json(url, "/interbank/decisions", encode_message(abort, fence_to_json))
        assert reply.status == 200 and reply.body["transfer_ids"] == [f"{sleeper}-fresh"]
        status, body = await _json(session, "GET", url + "/api/v1/accounts", token=tokens[target])
        assert [(a["balance_cents"], a["held_cents"]) for a in body["accounts"]] == [(1_000, 0)]
