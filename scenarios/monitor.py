"""Watches the token from outside: polls every bank's ``GET /ring/status``.

From the samples it tells how many token visits happened, how many times a new generation
was minted (regenerations), and when the token moves again after a fault; scenarios measure
recovery times with :meth:`RingMonitor.wait_for`, which waits for a condition on the latest
samples with a bounded deadline. The generation is compared only for equality, so its shape
(a number, an ``[epoch, bank]`` pair) does not matter here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from scenarios.client import ApiClient

__all__ = ["POLL_INTERVAL_MS", "RingMonitor", "StatusSample"]

POLL_INTERVAL_MS = 40
"""How often every bank is asked for its ring status."""
STATUS_TIMEOUT_S = 0.5
"""How long one status call may take; a paused or cut bank simply has no sample."""
SAMPLES_MAX = 200_000
"""Samples kept at most; later ones are not kept (the counts stay right)."""
POLLS_MAX = 200_000
"""Polls of one monitor at most (over two hours at the default interval); then it stops."""


@attrs.frozen
class StatusSample:
    """One answer of ``GET /ring/status`` (or its absence)."""

    at_ms: float
    """When the answer (or its absence) was seen, on the scenario clock."""
    bank: str
    """The bank asked."""
    up: bool
    """The bank answered."""
    holding: bool = False
    """It said it holds the token."""
    generation: str | None = None
    """The generation, as canonical JSON text (compared for equality only)."""
    seq: int | None = None
    """The token's sequence number as it last saw it."""
    visits: int | None = None
    """Token visits it counted since it started."""
    members: dict[str, str] = attrs.field(factory=dict)
    """Each member up or down, as it sees them."""


class RingMonitor:
    """Polls the ring in the background while a scenario runs."""

    def __init__(
        self,
        client: ApiClient,
        urls: dict[str, str],
        clock: Callable[[], float],
        *,
        poll_interval_ms: int = POLL_INTERVAL_MS,
    ) -> None:
        self.client = client
        self.urls = dict(urls)
        self.clock = clock
        self.poll_interval_ms = poll_interval_ms
        self.latest: dict[str, StatusSample] = {}
        self.samples: list[StatusSample] = []
        self.generations_seen: list[str] = []
        """Every distinct generation, in the order first seen."""
        self.visits_first: dict[str, int] = {}
        self.visits_last: dict[str, int] = {}
        self.visits_lost: int = 0
        """Visits counted before a restart reset a bank's counter."""
        self.last_visit: dict[str, tuple[float, float]] = {}
        """Per bank, the two sample times between which its visits last went up."""
        self._previous_at: dict[str, float] = {}
        self.listeners: list[Callable[[StatusSample], None]] = []
        """Called with every sample as it is taken (the load learns from them which banks do
        not answer)."""
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stop = False

    async def start(self) -> None:
        await self.poll_once()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        for _ in range(POLLS_MAX):
            if self._stop:
                return
            started = time.monotonic()
            await self.poll_once()
            spent_s = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.poll_interval_ms / 1000 - spent_s))

    async def poll_once(self) -> None:
        answers = await asyncio.gather(
            *(
                self.client.call("GET", url + "/ring/status", timeout_s=STATUS_TIMEOUT_S)
                for url in self.urls.values()
            )
        )
        now_ms = self.clock()
        for bank, answer in zip(self.urls, answers, strict=True):
            self._record(_sample(now_ms, bank, answer.body if answer.ok else None))
        self._changed.set()

    def _record(self, sample: StatusSample) -> None:
        for listener in self.listeners:
            listener(sample)
        previous_at = self._previous_at.get(sample.bank)
        self._previous_at[sample.bank] = sample.at_ms
        self.latest[sample.bank] = sample
        if len(self.samples) < SAMPLES_MAX:
            self.samples.append(sample)
        if sample.generation is not None and sample.generation not in self.generations_seen:
            self.generations_seen.append(sample.generation)
        if sample.visits is not None:
            self.visits_first.setdefault(sample.bank, sample.visits)
            last = self.visits_last.get(sample.bank)
            if last is not None and sample.visits < last:
                # The bank restarted and counts from zero again.
                self.visits_lost += last - self.visits_first[sample.bank]
                self.visits_first[sample.bank] = 0
                last = 0
            if last is not None and sample.visits > last and previous_at is not None:
                self.last_visit[sample.bank] = (previous_at, sample.at_ms)
            self.visits_last[sample.bank] = sample.visits

    @property
    def token_visits(self) -> int:
        """Token visits at every bank since monitoring began."""
        counted = sum(self.visits_last[b] - self.visits_first[b] for b in self.visits_last)
        return counted + self.visits_lost

    @property
    def regenerations(self) -> int:
        """New generations minted since monitoring began."""
        return max(0, len(self.generations_seen) - 1)

    def visits_now(self, banks: Iterable[str]) -> int:
        return sum(self.visits_last.get(bank, 0) for bank in banks)

    def visited_after(self, banks: Iterable[str], at_ms: float) -> bool:
        """Whether one of ``banks`` was seen getting a token visit that surely happened after
        ``at_ms`` (its counter went up between two samples both taken after it)."""
        return any(
            bank in self.last_visit and self.last_visit[bank][0] >= at_ms for bank in banks
        )

    def all_visited_after(self, banks: Iterable[str], at_ms: float) -> bool:
        """Whether every one of ``banks`` got a visit after ``at_ms``."""
        return all(self.visited_after((bank,), at_ms) for bank in banks)

    def current_generation(self, banks: Iterable[str]) -> str | None:
        """The generation the given banks agree on, or ``None`` when they do not."""
        seen = {self.latest[b].generation for b in banks if b in self.latest}
        if len(seen) == 1:
            return seen.pop()
        return None

    async def wait_for(
        self, condition: Callable[[RingMonitor], bool], *, timeout_s: float
    ) -> float | None:
        """Wait until ``condition(self)`` holds after a poll; the time it held (ms on the
        scenario clock), or ``None`` when ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        while True:
            if condition(self):
                return self.clock()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._changed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                return None

    def series(self) -> list[dict[str, Any]]:
        """Samples as JSON-ready rows (for the report)."""
        return [attrs.asdict(sample) for sample in self.samples]


def _sample(at_ms: float, bank: str, body: Any) -> StatusSample:
    if not isinstance(body, dict):
        return StatusSample(at_ms=at_ms, bank=bank, up=False)
    generation = body.get("generation")
    members = body.get("members")
    visits = body.get("visits")
    seq = body.get("seq")
    return StatusSample(
        at_ms=at_ms,
        bank=bank,
        up=True,
        holding=bool(body.get("holding")),
        generation=None if generation is None else json.dumps(generation, sort_keys=True),
        seq=seq if isinstance(seq, int) else None,
        visits=visits if isinstance(visits, int) else None,
        members=dict(members) if isinstance(members, dict) else {},
    )
