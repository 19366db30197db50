"""A fake consortium in one process: the contract's client API over in-memory books.

A test double for the scenario machinery, not a bank: it serves just enough of CONTRACT.md
(customers, sessions, accounts, deposits, withdrawals, transfers decided at once, the
consortium audit, ``/ring/status`` with a token that goes round on a timer, ``/healthz``) for a
scenario to run with ``--attach``. With ``double_credit=True`` every deposit credits twice
while the consortium still counts it once: the broken participant the checker must catch.
A bank put in ``stopped`` answers nothing until it is taken out again, as a bank stopped with
SIGSTOP, and holds up what another bank would forward to it (a deposit or withdrawal for one of
its accounts, a transfer whose first source is one). The tests start it with :func:`serve` on
random free 127.0.0.1 ports.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from aiohttp import web

__all__ = ["FakeConsortium", "serve"]

TOKEN_STEP_MS = 20
"""How long the fake token stays at each bank."""
STOPPED_POLL_MS = 10
"""How often a request to a stopped fake bank looks whether the bank was resumed."""


@attrs.define
class _Account:
    """An account of a fake bank."""

    bank: str
    """The fake bank that keeps it."""
    number: int
    """Unique over the whole fake consortium (so also within its bank)."""
    kind: str
    """As asked: individual, joint or corporate (not checked)."""
    owners: tuple[str, ...]
    """The documents that may use it."""
    balance_cents: int = 0
    """Available money (a fake bank never holds any)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "bank": self.bank,
            "account": self.number,
            "kind": self.kind,
            "owners": list(self.owners),
            "balance_cents": self.balance_cents,
            "held_cents": 0,
        }


async def _forwarded_to(request: web.Request) -> str | None:
    """The bank a real terminal forwards ``request`` to: the account's bank for a deposit or a
    withdrawal, the first source's bank for a transfer (``None`` for anything else)."""
    forwarded = ("/deposits", "/withdrawals", "/transfers")
    if request.method != "POST" or not request.path.endswith(forwarded):
        return None
    try:
        body = await request.json()
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("sources"), list) and body["sources"]:
        body = body["sources"][0]
    home = body.get("bank") if isinstance(body, dict) else None
    return home if isinstance(home, str) else None


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class FakeConsortium:
    """Shared books of every fake bank; one aiohttp app per bank."""

    def __init__(self, bank_ids: list[str], *, double_credit: bool = False) -> None:
        self.bank_ids = bank_ids
        self.double_credit = double_credit
        self.customers: dict[tuple[str, str], str] = {}
        self.accounts: dict[tuple[str, int], _Account] = {}
        self.transfers: dict[str, dict[str, Any]] = {}
        self.answers: dict[tuple[str, str], tuple[int, Any]] = {}
        self.expected_cents = 0
        self._numbers = itertools.count(1)
        self._transfer_ids = itertools.count(1)
        self._started = time.monotonic()
        self.config_digest: str | None = None
        """The ring file digest its ``/ring/status`` says, when set (a real bank always says)."""
        self.stopped: set[str] = set()
        """Banks that answer nothing: a request to one, or one a real bank would forward to one,
        waits until the bank is taken out."""

    def app(self, bank: str) -> web.Application:
        app = web.Application()
        routes: list[tuple[str, str, Callable[[web.Request, str], Awaitable[web.Response]]]] = [
            ("POST", "/api/v1/customers", self._customer),
            ("POST", "/api/v1/sessions", self._session),
            ("POST", "/api/v1/accounts", self._open),
            ("GET", "/api/v1/accounts", self._list),
            ("POST", "/api/v1/deposits", self._deposit),
            ("POST", "/api/v1/withdrawals", self._withdraw),
            ("POST", "/api/v1/transfers", self._transfer),
            ("GET", "/api/v1/transfers/{id}", self._get_transfer),
            ("GET", "/api/v1/consortium/audit", self._audit),
            ("GET", "/ring/status", self._status),
            ("GET", "/healthz", self._health),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, self._as(bank, handler))
        return app

    def _as(
        self, bank: str, handler: Callable[[web.Request, str], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def run(request: web.Request) -> web.Response:
            home = await _forwarded_to(request)
            while bank in self.stopped or home in self.stopped:
                await asyncio.sleep(STOPPED_POLL_MS / 1000)
            return await handler(request, bank)

        return run

    def _caller(self, request: web.Request, bank: str) -> str | None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        issuer, _, document = token.partition(":")
        if issuer != bank or (bank, document) not in self.customers:
            return None
        return document

    async def _once(
        self,
        request: web.Request,
        bank: str,
        apply: Callable[[str, dict[str, Any]], tuple[int, Any]],
    ) -> web.Response:
        caller = self._caller(request, bank)
        if caller is None:
            return _error(401, "unauthorized", "no session")
        body = await request.json()
        key = request.headers.get("Idempotency-Key")
        if key is not None and (caller, key) in self.answers:
            status, answer = self.answers[(caller, key)]
        else:
            status, answer = apply(caller, body)
            if key is not None:
                self.answers[(caller, key)] = (status, answer)
        return web.json_response(answer, status=status)

    async def _customer(self, request: web.Request, bank: str) -> web.Response:
        body = await request.json()
        key = (bank, body["document"])
        if key in self.customers:
            return _error(409, "customer_exists", "already a customer")
        self.customers[key] = body["password"]
        return web.json_response({"document": body["document"], "name": body["name"]}, status=201)

    async def _session(self, request: web.Request, bank: str) -> web.Response:
        body = await request.json()
        if self.customers.get((bank, body["document"])) != body["password"]:
            return _error(401, "bad_credentials", "wrong document or password")
        token = f"{bank}:{body['document']}"
        return web.json_response({"token": token, "expires_at": "2100-01-01T00:00:00Z"}, status=201)

    async def _open(self, request: web.Request, bank: str) -> web.Response:
        caller = self._caller(request, bank)
        if caller is None:
            return _error(401, "unauthorized", "no session")
        body = await request.json()
        account = _Account(bank, next(self._numbers), body["kind"], tuple(body["owners"]))
        self.accounts[(account.bank, account.number)] = account
        return web.json_response(account.to_json(), status=201)

    async def _list(self, request: web.Request, bank: str) -> web.Response:
        caller = self._caller(request, bank)
        if caller is None:
            return _error(401, "unauthorized", "no session")
        mine = [
            a.to_json()
            for a in self.accounts.values()
            if a.bank == bank and caller in a.owners
        ]
        return web.json_response({"bank": bank, "accounts": mine})

    def _find(self, caller: str, body: dict[str, Any]) -> _Account | None:
        account = self.accounts.get((body["bank"], int(body["account"])))
        if account is None or caller not in account.owners:
            return None
        return account

    async def _deposit(self, request: web.Request, bank: str) -> web.Response:
        def apply(caller: str, body: dict[str, Any]) -> tuple[int, Any]:
            account = self._find(caller, body)
            if account is None:
                return 404, {"error": {"code": "not_found", "message": "no such account"}}
            amount = int(body["amount_cents"])
            self.expected_cents += amount
            # The broken participant: the money lands twice, the books count it once.
            account.balance_cents += 2 * amount if self.double_credit else amount
            return 201, account.to_json()

        return await self._once(request, bank, apply)

    async def _withdraw(self, request: web.Request, bank: str) -> web.Response:
        def apply(caller: str, body: dict[str, Any]) -> tuple[int, Any]:
            account = self._find(caller, body)
            if account is None:
                return 404, {"error": {"code": "not_found", "message": "no such account"}}
            amount = int(body["amount_cents"])
            if account.balance_cents < amount:
                return 409, {"error": {"code": "insufficient_funds", "message": "not enough"}}
            account.balance_cents -= amount
            self.expected_cents -= amount
            return 201, account.to_json()

        return await self._once(request, bank, apply)

    async def _transfer(self, request: web.Request, bank: str) -> web.Response:
        def apply(caller: str, body: dict[str, Any]) -> tuple[int, Any]:
            sources = [(self._find(caller, s), int(s["amount_cents"])) for s in body["sources"]]
            destination = self.accounts.get(
                (body["destination"]["bank"], int(body["destination"]["account"]))
            )
            transfer_id = f"t{next(self._transfer_ids)}"
            if destination is None or any(a is None for a, _ in sources):
                return 404, {"error": {"code": "not_found", "message": "no such account"}}
            record: dict[str, Any]
            if any(a is not None and a.balance_cents < amount for a, amount in sources):
                record = {"id": transfer_id, "status": "aborted", "reason": "insufficient_funds"}
            else:
                for account, amount in sources:
                    assert account is not None
                    account.balance_cents -= amount
                    destination.balance_cents += amount
                record = {"id": transfer_id, "status": "committed", "reason": None}
            self.transfers[transfer_id] = record
            return 202, record

        return await self._once(request, bank, apply)

    async def _get_transfer(self, request: web.Request, bank: str) -> web.Response:
        record = self.transfers.get(request.match_info["id"])
        if record is None:
            return _error(404, "not_found", "no such transfer")
        return web.json_response(record)

    async def _audit(self, request: web.Request, bank: str) -> web.Response:
        total = sum(a.balance_cents for a in self.accounts.values())
        return web.json_response(
            {"total_cents": total, "held_cents": 0, "banks": {}, "unavailable": [],
             "expected_cents": self.expected_cents}  # fmt: skip
        )

    async def _status(self, request: web.Request, bank: str) -> web.Response:
        steps = int((time.monotonic() - self._started) * 1000 / TOKEN_STEP_MS)
        index = self.bank_ids.index(bank)
        count = len(self.bank_ids)
        return web.json_response(
            {
                "bank": bank,
                "holding": steps % count == index,
                "generation": 1,
                "seq": steps,
                "successor": self.bank_ids[(index + 1) % count],
                "members": {b: "up" for b in self.bank_ids},
                "visits": (steps + count - 1 - index) // count,
                **({"config": self.config_digest} if self.config_digest is not None else {}),
            }
        )

    async def _health(self, request: web.Request, bank: str) -> web.Response:
        return web.json_response({"ok": True})


async def serve(
    consortium: FakeConsortium, ports: dict[str, int]
) -> Callable[[], Awaitable[None]]:
    """Serve every fake bank on 127.0.0.1 at its port; returns the function that stops them."""
    runners = []
    for bank in consortium.bank_ids:
        runner = web.AppRunner(consortium.app(bank), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", ports[bank]).start()
        runners.append(runner)

    async def stop() -> None:
        await asyncio.gather(*(runner.cleanup() for runner in runners))

    return stop
