"""The ring-level verdicts of the fault scenarios, on hand-made monitor samples: a verdict
judges only what the fault really exposed, and says 'not exercised' otherwise."""

from __future__ import annotations

import random

from scenarios.catalog import CutWindow, _victim_holder, minority_never_mints
from scenarios.client import Answer
from scenarios.driver import FaultKit
from scenarios.monitor import StatusSample
from scenarios.workload import Recorder

LOSS_MS = 1_000
OLD = '[1, "alfa", 1]'
NEW = '[2, "gama", 1]'


def samples(bank: str, generation: str, visits: list[int], *, every_ms: float = 100, t0: float = 0) -> list[StatusSample]:
    return [
        StatusSample(at_ms=t0 + i * every_ms, bank=bank, up=True, generation=generation, visits=v)
        for i, v in enumerate(visits)
    ]


def test_a_minority_that_kept_its_token_exercised_nothing() -> None:
    """The holder cut off alone passes the token to itself: it never goes a loss timeout
    without a visit, so it never bids, and a bank that would mint alone goes unseen. The
    verdict used to say 'held' with every sample counted as a check."""
    kept = samples("alfa", OLD, list(range(30)))  # a visit every sample, 3 s long
    verdict = minority_never_mints(kept, [CutWindow(("alfa",), 0, 3_000, frozenset({OLD}))], LOSS_MS)
    assert verdict.held and verdict.checked == 0 and verdict.label == "not exercised"


def test_a_minority_without_a_token_past_the_loss_timeout_is_judged() -> None:
    quiet = samples("beta", OLD, [5] * 30)  # no visit during the whole cut
    window = CutWindow(("beta",), 0, 3_000, frozenset({OLD}))
    verdict = minority_never_mints(quiet, [window], LOSS_MS)
    assert verdict.held and verdict.checked == 20  # the samples from 1 s on
    minted = quiet[:15] + samples("beta", NEW, [1] * 15, t0=1_500)
    verdict = minority_never_mints(minted, [window], LOSS_MS)
    assert not verdict.held and "beta showed generation" in verdict.examples[0]


class _Ring:
    """A ring seen through /ring/status: the token at ``holder`` under ``seq``; stopping a
    bank whose visit already ended lets the token show up at the next bank anyway."""

    member_ids = ("alfa", "beta", "gama")

    class config:  # noqa: N801 (what FaultKit reads of a ring's config)
        class token:  # noqa: N801
            handoff_timeout_ms = 20

    def __init__(self, holder: str, seq: int, *, passed_on: set[str]) -> None:
        self.holder, self.seq, self.passed_on = holder, seq, passed_on
        self.paused: set[str] = set()
        self.resumed: list[str] = []

    def url(self, bank: str) -> str:
        return bank

    def is_running(self, bank: str) -> bool:
        return bank not in self.paused

    async def pause(self, bank: str) -> None:
        self.paused.add(bank)
        if bank in self.passed_on:  # its visit was over: the token had gone on already
            self.passed_on.discard(bank)
            position = self.member_ids.index(bank)
            self.holder, self.seq = self.member_ids[(position + 1) % 3], self.seq + 1

    async def resume(self, bank: str) -> None:
        self.paused.discard(bank)
        self.resumed.append(bank)

    def status(self, bank: str) -> dict[str, object]:
        fence = {"epoch": 1, "issuer": "alfa", "seq": self.seq}
        return {"holding": bank == self.holder, "fence": fence, "fence_seen": fence if bank == self.holder else
                {"epoch": 1, "issuer": "alfa", "seq": self.seq - 1}}  # fmt: skip


class _Client:
    def __init__(self, ring: _Ring) -> None:
        self.ring = ring

    async def call(self, method: str, url: str, **_: object) -> object:
        bank = url.removesuffix("/ring/status")
        if bank in self.ring.paused:
            return Answer(status=None)
        return Answer(status=200, body=self.ring.status(bank))


async def test_a_holder_fault_hits_a_bank_that_still_holds_the_token() -> None:
    """A status answer says alfa holds the token, but its visit ends before the signal lands:
    the token shows up at beta. The scenario used to stop (or kill) alfa anyway and report
    'while it held the token'; the token was never lost (no regeneration followed)."""
    ring = _Ring("alfa", 10, passed_on={"alfa"})
    kit = FaultKit(
        ring=ring, monitor=None, recorder=Recorder(), client=_Client(ring),  # type: ignore[arg-type]
        rng=random.Random(1), duration_s=1.0, phase=lambda _: None,
    )  # fmt: skip
    result = await _victim_holder(kit)
    assert result[0] == "beta" and "held the token" in result[1]
    assert ring.resumed == ["alfa"] and ring.paused == {"beta"}
