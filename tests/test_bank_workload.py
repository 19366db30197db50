"""A bank workload on three real bank processes while one is SIGKILLed and restarted and
another is SIGSTOPped and resumed.

Clients run concurrent multi-source cross-bank transfers, deposits and withdrawals (local and
at another bank) and read the consortium audit. Every write carries an Idempotency-Key and is
retried with it until it gets a definite answer, so the outcome of each one is known exactly.
Checked: every audit read (that every bank answered) equals the expected total; no balance
read is ever negative; once the faults are over every transfer is decided, nothing is held or
in flight, and every account's balance equals a model that replays the acknowledged deposits
and withdrawals and the committed transfers.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bank.documents import complete_cpf
from bank.process import Consortium, write_ring_file

pytestmark = pytest.mark.processes

SEED = int(os.environ.get("WORKLOAD_SEED", "5"))
CLIENTS = 12
"""Concurrent clients."""
WORKLOAD_S = 10.0
"""How long the clients issue new operations."""
ANSWER_WAIT_S_MAX = 40.0
"""How long one operation may keep retrying before the test fails."""
SETTLE_S_MAX = 40.0
"""How long, after the faults, every transfer may take to be decided and delivered."""
REQUEST_TIMEOUT_S = 12.0
OPENING_CENTS = 100_000
BANKS = ("b0", "b1", "b2")


class Workload:
    def __init__(self, config: Any, session: aiohttp.ClientSession, rng: random.Random) -> None:
        self.config = config
        self.session = session
        self.rng = rng
        self.tokens: dict[tuple[str, str], str] = {}
        self.accounts: dict[str, list[tuple[str, int]]] = {}
        self.model: dict[tuple[str, int], int] = {}
        self.transfers: dict[tuple[str, str], tuple[str, list[tuple[str, int, int]]]] = {}
        self.audits_ok = 0
        self.audits_unavailable = 0
        self.violations: list[str] = []
        self.keys = 0
        self.counts: dict[str, int] = {}

    def url(self, bank: str) -> str:
        return str(self.config.bank(bank).url)

    async def request(
        self, method: str, bank: str, path: str, body: Any = None, *, who: str | None = None,
        key: str | None = None,
    ) -> tuple[int, Any]:
        """One request, retried (with its key) until it gets a definite answer."""
        headers = {}
        if who is not None:
            headers["Authorization"] = f"Bearer {self.tokens[(bank, who)]}"
        if key is not None:
            headers["Idempotency-Key"] = key
        deadline = time.monotonic() + ANSWER_WAIT_S_MAX
        while True:
            try:
                async with self.session.request(
                    method, self.url(bank) + path, json=body, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
                ) as response:
                    answer = await response.json()
                    if response.status < 500:
                        return response.status, answer
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass
            if method == "GET" and path.endswith("/audit"):
                return 503, None
            assert time.monotonic() < deadline, f"{method} {bank}{path} never answered"
            await asyncio.sleep(0.1)

    def key(self) -> str:
        self.keys += 1
        return f"k{self.keys}"

    async def setup(self, customers: list[str]) -> None:
        for bank in BANKS:
            for document in customers:
                status, _ = await self.request("POST", bank, "/api/v1/customers",
                                               {"document": document, "name": "Client", "password": "pass-word-1"})
                assert status == 201
                status, body = await self.request("POST", bank, "/api/v1/sessions",
                                                  {"document": document, "password": "pass-word-1"})
                assert status == 201
                self.tokens[(bank, document)] = body["token"]
                for _ in range(2):
                    status, body = await self.request("POST", bank, "/api/v1/accounts",
                                                      {"kind": "individual", "owners": [document]}, who=document)
                    assert status == 201
                    number = int(body["account"])
                    self.accounts.setdefault(document, []).append((bank, number))
                    status, _ = await self.request("POST", bank, "/api/v1/deposits",
                                                   {"bank": bank, "account": number, "amount_cents": OPENING_CENTS},
                                                   who=document, key=self.key())
                    assert status == 201
                    self.model[(bank, number)] = OPENING_CENTS

    def note(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    async def transfer(self, who: str) -> None:
        rng = self.rng
        mine = self.accounts[who]
        sources = rng.sample(mine, rng.randrange(1, 4))
        everyone = [a for accounts in self.accounts.values() for a in accounts if a not in sources]
        destination = rng.choice(everyone)
        legs = [(bank, number, rng.randrange(1, 20_000)) for bank, number in sources]
        terminal = rng.choice(BANKS)
        body = {"sources": [{"bank": b, "account": n, "amount_cents": c} for b, n, c in legs],
                "destination": {"bank": destination[0], "account": destination[1]}}
        status, answer = await self.request("POST", terminal, "/api/v1/transfers?wait_ms=2000", body,
                                            who=who, key=self.key())
        if status != 202:
            self.violations.append(f"transfer refused: {status} {answer}")
            return
        legs.append((destination[0], destination[1], -sum(c for _, _, c in legs)))
        self.transfers[(terminal, answer["id"])] = (who, [(b, n, -c) for b, n, c in legs])
        self.note("transfer")

    async def cash(self, who: str) -> None:
        rng = self.rng
        bank, number = rng.choice(self.accounts[who])
        terminal = bank if rng.random() < 0.6 else rng.choice(BANKS)
        amount = rng.randrange(1, 30_000)
        if rng.random() < 0.5:
            status, answer = await self.request("POST", terminal, "/api/v1/deposits",
                                                {"bank": bank, "account": number, "amount_cents": amount},
                                                who=who, key=self.key())
            if status == 201:
                self.model[(bank, number)] += amount
                self.note("deposit")
            else:
                self.violations.append(f"deposit refused: {status} {answer}")
            return
        status, answer = await self.request("POST", terminal, "/api/v1/withdrawals",
                                            {"bank": bank, "account": number, "amount_cents": amount},
                                            who=who, key=self.key())
        if status == 201:
            if terminal == bank:
                self.model[(bank, number)] -= amount
            else:
                self.transfers[(terminal, answer["transfer_id"])] = (who, [(bank, number, -amount)])
            self.note("withdrawal")
        elif status == 202:
            # Pending, or aborted because a bank did not answer: the record tells at the end.
            self.transfers[(terminal, answer["id"])] = (who, [(bank, number, -amount)])
            self.note("withdrawal")
        elif answer["error"]["code"] != "insufficient_funds":
            self.violations.append(f"withdrawal refused: {status} {answer}")

    async def audit(self) -> None:
        status, body = await self.request("GET", self.rng.choice(BANKS), "/api/v1/consortium/audit")
        if status != 200:
            self.audits_unavailable += 1
            return
        self.audits_ok += 1
        if body["total_cents"] != body["expected_cents"] or body["held_cents"] < 0:
            self.violations.append(f"audit inconsistent: {body}")

    async def read_balances(self, who: str) -> None:
        bank = self.rng.choice(BANKS)
        status, body = await self.request("GET", bank, "/api/v1/accounts", who=who)
        if status == 200:
            for account in body["accounts"]:
                if account["balance_cents"] < 0 or account["held_cents"] < 0:
                    self.violations.append(f"negative: {account}")

    async def client(self, who: str, until: float) -> None:
        while time.monotonic() < until:
            roll = self.rng.random()
            if roll < 0.55:
                await self.transfer(who)
            elif roll < 0.8:
                await self.cash(who)
            elif roll < 0.9:
                await self.audit()
            else:
                await self.read_balances(who)


@pytest.fixture
def consortium(tmp_path: Path) -> Iterator[Consortium]:
    config = write_ring_file(tmp_path / "ring.toml", list(BANKS), hold_max_ms=20,
                             data_dir=str(tmp_path / "var"))
    banks = Consortium(config, secret="workload-secret", log_dir=tmp_path / "logs", parent_watch=True)
    banks.start()
    try:
        yield banks
    finally:
        banks.stop()


async def test_workload_with_a_killed_and_a_paused_bank_keeps_every_invariant(consortium: Consortium) -> None:
    rng = random.Random(SEED)
    customers = [complete_cpf(f"{100000000 + 7919 * i:09d}") for i in range(4)]
    async with aiohttp.ClientSession() as session:
        work = Workload(consortium.config, session, rng)
        await work.setup(customers)
        start = time.monotonic()
        until = start + WORKLOAD_S

        async def faults() -> None:
            await asyncio.sleep(2.0)
            consortium["b1"].kill()
            await asyncio.sleep(2.0)
            consortium["b1"].start()
            await asyncio.to_thread(consortium["b1"].wait_ready)
            await asyncio.sleep(1.0)
            consortium["b2"].pause()
            await asyncio.sleep(2.0)
            consortium["b2"].resume()

        clients = [work.client(customers[i % len(customers)], until) for i in range(CLIENTS)]
        await asyncio.gather(faults(), *clients)

        # Faults are over: every transfer must end decided, and every decision delivered.
        deadline = time.monotonic() + SETTLE_S_MAX
        undecided = dict(work.transfers)
        outcomes: dict[tuple[str, str], str] = {}
        while undecided:
            for (terminal, transfer_id), (who, _) in list(undecided.items()):
                status, body = await work.request(
                    "GET", terminal, f"/api/v1/transfers/{transfer_id}", who=who
                )
                assert status == 200, (terminal, transfer_id, body)
                if body["status"] != "pending":
                    outcomes[(terminal, transfer_id)] = body["status"]
                    del undecided[(terminal, transfer_id)]
            assert time.monotonic() < deadline, f"still pending: {sorted(undecided)}"
            if undecided:
                await asyncio.sleep(0.2)
        for key, (_, effects) in work.transfers.items():
            if outcomes[key] == "committed":
                for bank, number, delta in effects:
                    work.model[(bank, number)] += delta
        while True:
            status, audit = await work.request("GET", "b0", "/api/v1/consortium/audit")
            if status == 200 and audit["held_cents"] == 0 and audit["in_flight_cents"] == 0:
                break
            assert time.monotonic() < deadline, f"decisions never all delivered: {audit}"
            await asyncio.sleep(0.2)
        assert audit["total_cents"] == audit["expected_cents"] == sum(work.model.values())
        for document in customers:
            for bank in BANKS:
                status, body = await work.request("GET", bank, "/api/v1/accounts", who=document)
                assert status == 200
                for account in body["accounts"]:
                    assert account["balance_cents"] == work.model[(bank, account["account"])], (bank, account)
                    assert account["held_cents"] == 0
    committed = sum(1 for o in outcomes.values() if o == "committed")
    print(f"\nworkload seed {SEED}: {work.counts}, transfers {len(outcomes)} ({committed} committed),"
          f" audits {work.audits_ok} consistent / {work.audits_unavailable} unavailable")
    assert not work.violations, work.violations[:5]
    assert work.audits_ok > 0 and committed > 0

