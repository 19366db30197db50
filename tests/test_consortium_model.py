"""Random client operations at random terminals, one at a time, against a model of every
balance: deposits (forwarded when the account is at another bank), withdrawals (cross-bank
debits when it is), transfers from one to three sources at any banks, and retries of earlier
requests with their Idempotency-Key, each retried through any bank.

Each operation starts once the consortium is quiet (nothing held, nothing in flight), so each
outcome must be exactly the model's: the money moved, or the request was refused for the
reason the model gives, and a retry got the first answer again. Three banks served in this
process (the fixture of ``tests/test_interbank.py``)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from bank.keys import TRANSFERS
from test_interbank import ANA, BIA, Banks, banks  # noqa: F401 (banks is the fixture)

OPERATIONS = 90
"""Operations per seed."""
QUIET_WAIT_S = 10.0
"""The longest an operation waits for the consortium to be quiet before it starts."""
DECISION_DEFER_MS = 5
"""Decisions wait this long for a prepare to ride (200 ms in production): quiet sooner."""
BANKS = ("b0", "b1", "b2")
Account = tuple[str, int]


async def quiet(banks: Banks) -> None:
    """Wait (boundedly) until no money is held or in flight anywhere."""
    deadline = time.monotonic() + QUIET_WAIT_S
    while True:
        audit = await banks.audit()
        assert audit["total_cents"] == audit["expected_cents"], audit
        if audit["held_cents"] == 0 and audit["in_flight_cents"] == 0:
            return
        assert time.monotonic() < deadline, f"never quiet: {audit}"
        await asyncio.sleep(0.01)


def refused(status: int, body: dict[str, Any]) -> str | None:
    """The reason a request was refused (an error code, or an aborted transfer's reason)."""
    if status >= 400:
        return str(body["error"]["code"])
    if body.get("status") == "aborted":
        return str(body.get("reason"))
    return None


@pytest.mark.parametrize("seed", [1, 2])
async def test_operations_one_at_a_time_match_a_model_of_every_balance(banks: Banks, seed: int) -> None:
    rng = random.Random(seed)
    for app in banks.apps.values():
        app[TRANSFERS].coordinator.decision_defer_ms = DECISION_DEFER_MS
    owned: dict[str, list[Account]] = {ANA: [], BIA: []}
    model: dict[Account, int] = {}
    for bank in BANKS:
        for who in (ANA, BIA):
            await banks.customer(bank, who)
            for _ in range(2):
                account = (bank, await banks.account(bank, who, 0))
                owned[who].append(account)
                model[account] = 0
    answered: list[tuple[str, str, str, dict[str, Any], str, tuple[int, dict[str, Any]]]] = []
    seen = {"retries": 0, "refused": 0, "moved": 0, "cross-bank": 0}
    for index in range(OPERATIONS):
        await quiet(banks)
        kind = rng.choice(("deposit", "withdrawal", "transfer", "transfer", "retry"))
        if kind == "retry" and answered:
            who, _, path, body, key, first = rng.choice(answered)
            # A deposit's or a withdrawal's key is kept by the account's bank, a transfer's
            # by its first source's bank: a retry through any bank is the same request.
            terminal = rng.choice(BANKS)
            again = await banks.call("POST", terminal, path, body, who=who, headers={"Idempotency-Key": key})
            assert again == first, f"operation {index}: a retry of {path} {body} got {again}, first {first}"
            seen["retries"] += 1
            continue
        if kind == "retry":
            continue
        who = rng.choice((ANA, BIA))
        terminal = rng.choice(BANKS)
        if kind in ("deposit", "withdrawal"):
            account = rng.choice(owned[who])
            amount = rng.randrange(1, 5_000 if kind == "deposit" else 3_000)
            path = f"/api/v1/{kind}s"
            body: dict[str, Any] = {"bank": account[0], "account": account[1], "amount_cents": amount}
            moves = {account: amount if kind == "deposit" else -amount}
        else:
            sources = rng.sample(owned[who], rng.randrange(1, 4))
            destination = rng.choice([a for a in owned[ANA] + owned[BIA] if a not in sources])
            amounts = [rng.randrange(1, 2_000) for _ in sources]
            path = "/api/v1/transfers?wait_ms=10000"
            body = {
                "sources": [{"bank": b, "account": n, "amount_cents": c} for (b, n), c in zip(sources, amounts)],
                "destination": {"bank": destination[0], "account": destination[1]},
            }
            moves = {source: -amount for source, amount in zip(sources, amounts)}
            moves[destination] = sum(amounts)
        key = f"op-{seed}-{index}" if rng.random() < 0.5 else None
        status, answer = await banks.call(
            "POST", terminal, path, body, who=who, headers={"Idempotency-Key": key} if key else None
        )
        short = any(model[account] + change < 0 for account, change in moves.items())
        where = f"operation {index}: {kind} at {terminal} {body} -> {status} {answer}"
        seen["cross-bank"] += any(bank != terminal for bank, _ in moves)
        if short:
            assert refused(status, answer) == "insufficient_funds", where
            seen["refused"] += 1
        else:
            seen["moved"] += 1
            assert refused(status, answer) is None and status in (201, 202), where
            assert kind != "transfer" or answer["status"] == "committed", where
            for account, change in moves.items():
                model[account] += change
        if key is not None:
            answered.append((who, terminal, path, body, key, (status, answer)))
    # Every kind of outcome came up (else this seed tests less than it says).
    assert min(seen.values()) >= 3, seen
    await quiet(banks)
    for who, accounts in owned.items():
        for bank, number in accounts:
            assert await banks.balance(bank, who, number) == (model[(bank, number)], 0), (bank, number)
            # Its statement, read through any bank, adds up to the same: every movement is in it.
            lines = await statement(banks, rng.choice(BANKS), who, bank, number)
            assert sum(line["available_cents"] for line in lines) == model[(bank, number)], (bank, number)
            assert sum(line["held_cents"] for line in lines) == 0, (bank, number)


STATEMENT_PAGES_MAX = 1_000
"""Bound on the pages one statement is read in (far more than any seed writes)."""


async def statement(banks: Banks, terminal: str, who: str, bank: str, number: int) -> list[dict[str, Any]]:
    """Every line of an account's statement, asked at ``terminal``, a small page at a time."""
    lines: list[dict[str, Any]] = []
    before = ""
    for _ in range(STATEMENT_PAGES_MAX):
        status, page = await banks.call("GET", terminal, f"/api/v1/accounts/{bank}/{number}/statement?limit=7{before}", who=who)
        assert status == 200, page
        lines += page["lines"]
        if page["next_before"] is None:
            return lines
        before = f"&before={page['next_before']}"
    raise AssertionError("the statement's pages never ended")
