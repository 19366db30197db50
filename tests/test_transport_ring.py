"""The Ring face over real HTTP, several members in one process on random 127.0.0.1 ports.

These drive the real core through the real transport: the token goes round, ``holding()``
blocks of different members never overlap and run under increasing fences, ``on_token`` is
called at each visit, a used visit is released early and an unused one is kept, a graceful
leave hands the token on without a new generation, and the ``/ring/`` routes refuse what they
must.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog.testing

from bank.process import write_ring_file
from tokenring import core
from tokenring.ring import Ring, RingClosed
from tokenring.signing import SignedClient, sign
from tokenring.transport import RING_MESSAGE_PATH
import waiting
from waiting import wait_until

SECRET = b"ring-face-test-key"
WAIT_S = 10.0
"""The longest any condition here is waited for (generous: the machine is shared)."""
IDS = ("alfa", "beta", "gama")


def counter(ring: Ring, name: str) -> float:
    value = ring.metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


class Members:
    def __init__(self, tmp_path: Path, **token: Any) -> None:
        self.config = write_ring_file(tmp_path / "ring.toml", IDS, **token)
        self.rings: dict[str, Ring] = {}

    async def start(self, **kwargs: Any) -> None:
        # The first member bids for the first token as it starts: start it last, when the
        # others can already vote, or the bid fails and the ring waits a loss timeout.
        for member_id in reversed(IDS):
            ring = Ring(self.config, member_id, secret=SECRET, **kwargs)
            await ring.start()
            self.rings[member_id] = ring

    async def stop(self) -> None:
        for ring in self.rings.values():
            await ring.stop()

    def __getitem__(self, member_id: str) -> Ring:
        return self.rings[member_id]


@pytest.fixture
async def ring3(tmp_path: Path) -> AsyncIterator[Members]:
    # hold_max_ms is large next to the blocks below, so that no block can outlive its visit
    # even on a busy machine: an overlap seen here is an exclusion failure, not a slow block.
    members = Members(tmp_path, hold_max_ms=300, handoff_timeout_ms=300)
    await members.start()
    try:
        yield members
    finally:
        await members.stop()


async def test_the_token_visits_every_member(ring3: Members) -> None:
    await wait_until(
        lambda: all(ring3[m].status()["visits"] >= 2 for m in IDS), "two visits each"
    )
    statuses = [ring3[m].status() for m in IDS]
    assert all(s["members"] == {m: "up" for m in IDS} for s in statuses)
    assert {s["successor"] for s in statuses} == set(IDS)


async def test_holding_blocks_of_different_members_never_overlap(ring3: Members) -> None:
    spans: list[tuple[float, float, str, core.Fence]] = []

    async def worker(member_id: str) -> None:
        ring = ring3[member_id]
        for _ in range(3):
            async with ring.holding(timeout_s=WAIT_S) as fence:
                began = time.monotonic()
                assert ring.holds(fence) and ring.current_fence() == fence
                await asyncio.sleep(0.003)  # yield: another member's block could run now
                assert ring.holds(fence)
                spans.append((began, time.monotonic(), member_id, fence))

    await asyncio.gather(*(worker(m) for m in IDS))
    spans.sort()
    assert len(spans) == 9
    for (_, end, who, fence), (begin, _, next_who, next_fence) in zip(spans, spans[1:]):
        assert begin >= end, f"{who} and {next_who} held the token at once"
        if who == next_who and fence == next_fence:
            continue  # two blocks of one member in one visit
        assert next_fence > fence, f"fence went from {fence} to {next_fence}"


async def test_on_token_is_called_at_each_visit_with_a_future_deadline(tmp_path: Path) -> None:
    calls: list[tuple[str, core.Fence, float, float]] = []

    def make_callback(member_id: str) -> Any:
        async def on_token(fence: core.Fence, deadline: float) -> bool:
            calls.append((member_id, fence, deadline, asyncio.get_running_loop().time()))
            return True

        return on_token

    members = Members(tmp_path, hold_max_ms=200, handoff_timeout_ms=200)
    for member_id in reversed(IDS):
        ring = Ring(members.config, member_id, secret=SECRET)
        ring.on_token = make_callback(member_id)
        await ring.start()
        members.rings[member_id] = ring
    try:
        await wait_until(lambda: {c[0] for c in calls} == set(IDS), "every member called")
        await wait_until(lambda: any(r.holds_recent() for r in members.rings.values()), "a hold")
    finally:
        await members.stop()
    for _, _, deadline, called_at in calls:
        assert called_at < deadline <= called_at + 0.2 + 0.05
    fences = [c[1] for c in calls]
    assert fences == sorted(fences) and len(set(fences)) == len(fences)
    # Each visit whose callback did work was released early, not kept to the deadline.
    holds = [h for r in members.rings.values() for h in r.holds_recent()]
    assert holds and all(h.released for h in holds)


async def test_a_visit_nobody_uses_is_kept_and_one_used_is_released(ring3: Members) -> None:
    await wait_until(lambda: len(ring3["beta"].holds_recent()) >= 1, "beta had a visit")
    assert not ring3["beta"].holds_recent()[0].released
    async with ring3["beta"].holding(timeout_s=WAIT_S) as fence:
        pass
    await wait_until(
        lambda: any(h.fence == fence for h in ring3["beta"].holds_recent()), "visit ended"
    )
    (hold,) = [h for h in ring3["beta"].holds_recent() if h.fence == fence]
    assert hold.released


async def test_on_token_returning_false_leaves_the_visit_to_its_deadline(tmp_path: Path) -> None:
    members = Members(tmp_path, hold_max_ms=50, handoff_timeout_ms=200)
    seen: list[core.Fence] = []

    async def idle(fence: core.Fence, deadline: float) -> bool:
        seen.append(fence)
        return False

    await members.start(on_token=idle)
    try:
        await wait_until(lambda: len(seen) >= 4, "four visits")
        await wait_until(lambda: any(r.holds_recent() for r in members.rings.values()), "ended")
    finally:
        await members.stop()
    holds = [h for r in members.rings.values() for h in r.holds_recent()]
    assert holds and not any(h.released for h in holds)


async def test_leave_hands_the_token_on_without_a_new_generation(ring3: Members) -> None:
    async with ring3["alfa"].holding(timeout_s=WAIT_S) as fence:
        generation = fence.epoch
        claims_before = sum(counter(ring3[m], "tokenring_claims_started_total") for m in IDS)
        await ring3["alfa"].leave()
        assert not ring3["alfa"].holds(fence)
    def visited_since(member_id: str) -> bool:
        return any(h.fence > fence for h in ring3[member_id].holds_recent())

    await wait_until(
        lambda: visited_since("beta") and visited_since("gama"), "the others had the token"
    )
    others = [ring3[m].status() for m in ("beta", "gama")]
    assert all(s["generation"] == generation for s in others)
    claims_after = sum(counter(ring3[m], "tokenring_claims_started_total") for m in IDS)
    assert claims_after == claims_before
    with pytest.raises(RingClosed):
        async with ring3["alfa"].holding(timeout_s=1):
            pass


async def test_holding_times_out_when_the_token_does_not_come(tmp_path: Path) -> None:
    # A member alone (the others never start) has no majority: it never gets a token.
    members = Members(tmp_path, hold_max_ms=20, handoff_timeout_ms=50)
    ring = Ring(members.config, "alfa", secret=SECRET)
    await ring.start()
    try:
        with pytest.raises(TimeoutError):
            async with ring.holding(timeout_s=0.3):
                pass
        assert ring.status()["holding"] is False and ring.status()["generation"] == 0
    finally:
        await ring.stop()


async def test_a_standalone_member_closes_a_connection_that_never_finishes_a_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not kept for aiohttp's default hour: enough such connections would leave the member
    no file descriptor to take the token with."""
    from tokenring import ring as ring_module

    monkeypatch.setattr(ring_module, "KEEPALIVE_TIMEOUT_S", 0.5)
    members = Members(tmp_path, hold_max_ms=20, handoff_timeout_ms=50)
    ring = Ring(members.config, "alfa", secret=SECRET)
    await ring.start()
    try:
        assert await waiting.left_by_the_server(ring.bank.host, ring.bank.port) == b""
    finally:
        await ring.stop()


async def test_a_block_starts_only_with_the_time_it_asks_for_and_knows_what_is_left(ring3: Members) -> None:
    ring = ring3["beta"]
    for _ in range(3):
        async with ring.holding(timeout_s=WAIT_S, min_remaining_ms=200) as fence:
            left = ring.remaining_ms(fence)
            # 200 ms or more were left when it started; a moment has passed since.
            assert 150 < left <= 300, left
    await wait_until(lambda: not ring.holds(fence), "the visit ends")
    assert ring.remaining_ms(fence) == 0
    with pytest.raises(ValueError, match="min_remaining_ms"):
        async with ring.holding(min_remaining_ms=300):
            pass


async def test_holding_inside_a_block_of_the_same_ring_is_refused_not_a_deadlock(ring3: Members) -> None:
    ring = ring3["alfa"]
    async with ring.holding(timeout_s=WAIT_S) as fence:
        with pytest.raises(RuntimeError, match="wait for itself"):
            async with ring.holding(timeout_s=WAIT_S):
                pass

        async def later() -> core.Fence:  # another task: it takes its turn after this block
            async with ring.holding(timeout_s=WAIT_S) as its_fence:
                return its_fence

        task = asyncio.create_task(later())
        await asyncio.sleep(0)
        assert not task.done()
    assert await task >= fence


async def test_a_ring_without_a_key_or_not_started_says_so(tmp_path: Path) -> None:
    members = Members(tmp_path)
    for no_key in (b"", "text"):
        with pytest.raises(ValueError, match="signing key"):
            Ring(members.config, "alfa", secret=no_key)  # type: ignore[arg-type]
    ring = Ring(members.config, "alfa", secret=SECRET)
    with pytest.raises(RingClosed, match="has not started"):
        async with ring.holding(timeout_s=1):
            pass


async def test_status_has_the_contract_fields(ring3: Members) -> None:
    await wait_until(lambda: ring3["alfa"].status()["visits"] >= 1, "a visit")
    async with aiohttp.ClientSession() as session:
        async with session.get(ring3.config.bank("alfa").url + "/ring/status") as response:
            assert response.status == 200
            document = await response.json()
    for key, kind in [
        ("bank", str), ("holding", bool), ("generation", int), ("seq", int),
        ("successor", str), ("members", dict), ("visits", int),
    ]:  # fmt: skip
        assert isinstance(document[key], kind), key
    assert document["bank"] == "alfa" and document["generation"] >= 1


async def test_ring_routes_refuse_unsigned_and_malformed_and_stale_fences(
    ring3: Members,
) -> None:
    url = ring3.config.bank("beta").url
    await wait_until(lambda: ring3["beta"].fence_seen() is not None, "beta saw a fence")
    async with aiohttp.ClientSession() as session:
        unsigned = await session.post(url + RING_MESSAGE_PATH, json={"type": "probe"})
        client = SignedClient(session, SECRET, "alfa")
        malformed = await client.post_json(url, RING_MESSAGE_PATH, {"type": "nonsense"})
        # A message claiming another sender than the one who signed it.
        body = core.encode_message(core.Probe("gama", core.Fence(0, "", 0)))
        spoofed = await client.post_json(url, RING_MESSAGE_PATH, body)
        stale = await client.post_json(
            url, "/ring/fence", {"fence": core.Fence(0, "alfa", 1).to_dict()}
        )
        current = ring3["beta"].fence_seen()
        assert current is not None
        fresh = await client.post_json(url, "/ring/fence", {"fence": current.to_dict()})
        holds = await client.get_json(url, "/ring/holds")
        holds_unsigned = await session.get(url + "/ring/holds")
    assert unsigned.status == 401
    assert (await unsigned.json())["error"]["code"] == "unauthorized"
    assert malformed.status == 400 and malformed.body["error"]["code"] == "bad_message"
    assert spoofed.status == 401
    assert stale.status == 409 and stale.body["error"]["code"] == "stale_fence"
    assert fresh.status == 200 and fresh.body["accepted"] is True
    assert holds.status == 200 and holds.body["bank"] == "beta"
    assert holds_unsigned.status == 401


async def test_a_signed_message_for_another_path_does_not_verify(ring3: Members) -> None:
    url = ring3.config.bank("beta").url
    body = b"{}"
    headers = sign(SECRET, "POST", "/ring/fence", body, sender="alfa", receiver=url)
    headers["Content-Type"] = "application/json"
    async with aiohttp.ClientSession() as session:
        async with session.post(url + RING_MESSAGE_PATH, data=body, headers=headers) as reply:
            assert reply.status == 401


async def test_a_member_stopped_during_a_block_hands_the_token_on_only_when_the_block_ends(
    tmp_path: Path,
) -> None:
    """stop() (leave()) while a block runs well inside its visit: the token stays until the
    block ends, so the next member's block never runs beside it."""
    members = Members(tmp_path, hold_max_ms=400, handoff_timeout_ms=300)
    await members.start()
    try:
        alfa, beta = members["alfa"], members["beta"]
        spans: dict[str, tuple[float, float]] = {}
        inside = asyncio.Event()

        async def alfas_block() -> bool:
            async with alfa.holding(timeout_s=WAIT_S, min_remaining_ms=300) as fence:
                began = time.monotonic()
                inside.set()
                await asyncio.sleep(0.15)
                still = alfa.holds(fence)
                spans["alfa"] = (began, time.monotonic())
            return still

        async def betas_block() -> None:
            await inside.wait()
            async with beta.holding(timeout_s=WAIT_S):
                spans["beta"] = (time.monotonic(), time.monotonic())

        block = asyncio.create_task(alfas_block())
        waiter = asyncio.create_task(betas_block())
        await inside.wait()
        await alfa.stop()  # in the middle of alfa's block
        assert await block, "the block kept the ring's exclusion to its end"
        await asyncio.wait_for(waiter, WAIT_S)
        assert spans["beta"][0] >= spans["alfa"][1], spans
        with pytest.raises(RingClosed, match="left"):
            async with alfa.holding(timeout_s=1):
                pass
    finally:
        await members.stop()


async def test_a_ring_takes_part_once_and_says_so(tmp_path: Path) -> None:
    members = Members(tmp_path, hold_max_ms=20, handoff_timeout_ms=50)
    ring = Ring(members.config, "alfa", secret=SECRET)
    await ring.start()
    with pytest.raises(RingClosed, match="takes part once"):
        await ring.start()
    await ring.stop()
    with pytest.raises(RingClosed, match="takes part once"):
        await ring.start()
    never = Ring(members.config, "beta", secret=SECRET)
    await never.stop()  # stopped before it started: it cannot start any more
    with pytest.raises(RingClosed, match="takes part once"):
        await never.start()


async def test_a_second_copy_of_a_member_fails_on_its_address_before_saying_anything(
    ring3: Members,
) -> None:
    """The address is taken first: a copy started where the member already serves fails
    at once, and the others never hear it (the real member is not taken for gone)."""
    copy = Ring(ring3.config, "beta", secret=SECRET)
    with structlog.testing.capture_logs() as logged:
        with pytest.raises(OSError):
            await copy.start()
    assert not [entry for entry in logged if entry["event"] in ("ring.started", "ring.left")], logged
    await wait_until(lambda: ring3["alfa"].status()["visits"] >= 2, "the ring goes on")
    assert ring3["alfa"].status()["members"]["beta"] == "up"


async def test_a_token_that_does_not_come_says_what_the_member_knows(tmp_path: Path) -> None:
    members = Members(tmp_path, hold_max_ms=20, handoff_timeout_ms=50)
    ring = Ring(members.config, "alfa", secret=SECRET)  # alone: no majority, no token
    await ring.start()
    try:
        with pytest.raises(TimeoutError, match=r"alfa: the token did not come within 0\.3 s .*members down"):
            async with ring.holding(timeout_s=0.3):
                pass
    finally:
        await ring.stop()
