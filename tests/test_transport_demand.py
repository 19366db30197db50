"""Demand for the token, with three real ``Ring`` members over HTTP on 127.0.0.1.

A member whose ``holding()`` block waits tells the others (``POST /ring/demand``), and a
member holding a visit it does not use hands it on at once instead of at its deadline. The
checks read the recorded visits (``holds_recent``: released early or ended by the deadline)
and the fences, never the wall clock: an unused visit without demand is never released early,
so every released unused visit below is the demand at work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from bank.process import write_ring_file
from tokenring import core
from tokenring.ring import Hold, Ring
from tokenring.signing import SignedClient
from tokenring.transport import RING_DEMAND_PATH
import waiting

SECRET = b"ring-demand-test-key"
WAIT_S = 10.0
"""The longest any condition here is waited for (generous: the machine is shared)."""
IDS = ("alfa", "beta", "gama")
HOLD_MAX_MS = 250
"""Long next to a hand-off and to ``idle_hold_ms`` (5 ms), so that a demand heard during an
unused visit always arrives before that visit's deadline, even on a busy machine."""
ROUNDS = 3


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    await waiting.wait_until(condition, what, timeout_s, poll_s=0.002)


@pytest.fixture
async def rings(tmp_path: Path) -> AsyncIterator[dict[str, Ring]]:
    config = write_ring_file(
        tmp_path / "ring.toml", IDS, hold_max_ms=HOLD_MAX_MS, handoff_timeout_ms=300
    )
    started: dict[str, Ring] = {}
    try:
        # The first member bids as it starts: start it last, when the others can vote.
        for member_id in reversed(IDS):
            ring = Ring(config, member_id, secret=SECRET)
            await ring.start()
            started[member_id] = ring
        yield started
    finally:
        for ring in started.values():
            await ring.stop()


def visits_between(rings: dict[str, Ring], low: core.Fence, high: core.Fence) -> list[Hold]:
    """Every recorded visit strictly between two fences of one generation, in fence order."""
    return sorted(
        (
            h
            for ring in rings.values()
            for h in ring.holds_recent()
            if low < h.fence < high and (h.fence.epoch, h.fence.issuer) == (low.epoch, low.issuer)
        ),
        key=lambda h: h.fence,
    )


async def a_visit_each(rings: dict[str, Ring]) -> None:
    await wait_until(lambda: all(len(r.holds_recent()) >= 1 for r in rings.values()), "a visit each")


async def test_a_waiting_block_gets_the_token_through_released_idle_visits(
    rings: dict[str, Ring],
) -> None:
    alfa = rings["alfa"]
    # The idle ring is paced: visits nobody uses are kept to their deadline.
    await a_visit_each(rings)
    idle = [h for r in rings.values() for h in r.holds_recent()]
    assert idle and not any(h.released for h in idle)

    def demands_sent() -> float:
        return alfa.metrics.registry.get_sample_value("tokenring_demands_sent_total") or 0.0

    for _ in range(ROUNDS):
        posted = demands_sent()
        # Wait just after a visit of alfa ended: the token must now pass both other members
        # before it comes back, and both visits are unused.
        before = len(alfa.holds_recent())
        await wait_until(lambda: len(alfa.holds_recent()) > before, "alfa's visit ended")
        last = alfa.holds_recent()[-1].fence
        async with alfa.holding(timeout_s=WAIT_S) as fence:
            pass
        await wait_until(
            lambda: any(h.fence == fence for h in alfa.holds_recent()), "the used visit ended"
        )
        between = visits_between(rings, last, fence)
        # The next visit of alfa, one round later: every other member once, each visit
        # handed on early because alfa's demand was heard, none kept to its deadline.
        assert fence.seq == last.seq + len(IDS)
        assert [rings_of(rings, h) for h in between] == ["beta", "gama"]
        assert all(h.released for h in between), between
        assert demands_sent() >= posted + len(IDS) - 1  # told each other member (the metric)

    # Once the demand is met the ring is paced again: later unused visits reach their deadline.
    round_end = core.Fence(fence.epoch, fence.issuer, fence.seq + len(IDS))
    await wait_until(
        lambda: len(visits_between(rings, fence, round_end)) == len(IDS) - 1,
        "a round after the demand",
    )
    after = visits_between(rings, fence, round_end)
    assert not any(h.released for h in after), after


def rings_of(rings: dict[str, Ring], hold: Hold) -> str:
    (member_id,) = [m for m, r in rings.items() if hold in r.holds_recent()]
    return member_id


async def test_demand_route_records_the_sender_and_refuses_what_is_malformed(
    rings: dict[str, Ring],
) -> None:
    beta = rings["beta"]
    async with aiohttp.ClientSession() as session:
        client = SignedClient(session, SECRET, "alfa")
        fence = core.Fence(1, "alfa", 4)
        reply = await client.post_json(beta.bank.url, RING_DEMAND_PATH, {"after": fence.to_dict()})
        assert reply.status == 202
        assert beta.demands_heard()["alfa"].after == fence
        bad = await client.post_json(beta.bank.url, RING_DEMAND_PATH, {"after": {"epoch": "x"}})
        assert bad.status == 400
        assert beta.demands_heard()["alfa"].after == fence
        to_itself = SignedClient(session, SECRET, "beta")
        own = await to_itself.post_json(beta.bank.url, RING_DEMAND_PATH, {"after": None})
        assert own.status == 400
        assert "beta" not in beta.demands_heard()
        # Unsigned: refused by the signature middleware before the route.
        async with session.post(beta.bank.url + RING_DEMAND_PATH, json={"after": None}) as r:
            assert r.status == 401


async def test_a_want_left_at_release_rides_the_token_and_posts_nothing(
    rings: dict[str, Ring],
) -> None:
    alfa = rings["alfa"]
    await a_visit_each(rings)
    async with alfa.holding(timeout_s=WAIT_S) as first:
        alfa.want()  # more work will wait for the next visit
    await wait_until(
        lambda: any(h.fence == first for h in alfa.holds_recent()), "the used visit ended"
    )
    nxt = core.Fence(first.epoch, first.issuer, first.seq + len(IDS))
    await wait_until(
        lambda: any(h.fence == nxt for h in alfa.holds_recent()), "alfa's next visit ended"
    )
    # The others learned of the want from the token: each handed its unused visit on at once.
    between = visits_between(rings, first, nxt)
    assert [rings_of(rings, h) for h in between] == ["beta", "gama"]
    assert all(h.released for h in between), between
    # ... and no demand message was sent for it: one would name the visit the want was left
    # at (``after``); what the others heard from alfa, if anything, is the demand its waiting
    # block sent before that visit.
    for member in ("beta", "gama"):
        demand = rings[member].demands_heard().get("alfa")
        assert demand is None or demand.after is None or demand.after < first, (member, demand)
