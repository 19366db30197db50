"""The workload reads each account's statement whole, page by page, and leaves out one it
cannot read or that is not a statement (the checker then does not judge it)."""

from __future__ import annotations

import asyncio
from typing import Any

from scenarios.client import Answer
from scenarios.history import AccountRef, StatementLine
from scenarios.workload import Recorder, Teller

ACCOUNT = AccountRef("alfa", "7")


class ScriptedClient:
    """Answers each call with the next scripted answer, and keeps the URLs asked."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.urls: list[str] = []

    async def call(self, method: str, url: str, **_: Any) -> Answer:
        assert method == "GET"
        self.urls.append(url)
        return self.answers.pop(0)


def line(kind: str, transfer_id: str | None, available: Any, held: int = 0) -> dict[str, Any]:
    return {"txn": 1, "at_ms": 0, "kind": kind, "transfer_id": transfer_id,
            "available_cents": available, "held_cents": held}  # fmt: skip


def read(client: ScriptedClient) -> tuple[StatementLine, ...] | None:
    teller = Teller(client, {"alfa": "http://127.0.0.1:1"}, Recorder(), prefix="t")  # type: ignore[arg-type]
    return asyncio.run(teller._statement(ACCOUNT, "token"))


def test_every_page_is_read_in_order() -> None:
    client = ScriptedClient(
        Answer(200, {"lines": [line("commit", "b-1", 0, -5), line("hold", "b-1", -5, 5)], "next_before": 40}),
        Answer(200, {"lines": [line("deposit", None, 100)], "next_before": None}),
    )
    assert read(client) == (
        StatementLine("commit", "b-1", 0, -5), StatementLine("hold", "b-1", -5, 5), StatementLine("deposit", None, 100, 0),
    )  # fmt: skip
    assert client.urls == [
        "http://127.0.0.1:1/api/v1/accounts/alfa/7/statement?limit=100",
        "http://127.0.0.1:1/api/v1/accounts/alfa/7/statement?limit=100&before=40",
    ]


def test_a_statement_that_cannot_be_read_whole_is_left_out() -> None:
    assert read(ScriptedClient(Answer(404, {"error": {"code": "not_found"}}))) is None
    assert read(ScriptedClient(Answer(None, problem="timeout"))) is None
    assert read(ScriptedClient(Answer(200, {"lines": [{"kind": "deposit"}], "next_before": None}))) is None
    assert read(ScriptedClient(Answer(200, {"lines": [line("deposit", None, "lots")], "next_before": None}))) is None
    # A first page read, the second not: nothing of it is kept.
    assert read(ScriptedClient(
        Answer(200, {"lines": [line("deposit", None, 1)], "next_before": 3}), Answer(503, None),
    )) is None  # fmt: skip
