"""Runs one scenario's load and faults against a ring and turns what it saw into a report.

The pieces meet here and nowhere else: a ring (``scenarios.cluster``), the ring monitor
(``scenarios.monitor``), the bank workload and its recorder (``scenarios.workload``), a
fault script, the checker (``scenarios.checker``) and the report (``scenarios.report``).
A fault script gets a :class:`FaultKit`: it finds the token holder, does things to banks,
measures how long the ring took to recover, and must leave every bank running and every
link healed when it returns (the checker judges the history once the faults stopped).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs

from scenarios.checker import Verdict, check, load_during_faults
from scenarios.client import ApiClient
from scenarios.cluster import Ring
from scenarios.history import History
from scenarios.monitor import RingMonitor
from scenarios.report import Recovery, Report, ReportTable, summarize
from scenarios.workload import (
    Customer,
    MoneyApiMissing,
    Recorder,
    Teller,
    WorkloadOptions,
    run_bank_workload,
)

__all__ = [
    "FaultKit",
    "FaultScript",
    "LoadScript",
    "Phase",
    "RunResult",
    "recovery_bound_ms",
    "run_under_load",
]

Phase = Callable[[str], None]
"""Tells the progress bar what the scenario is doing now."""

READY_TIMEOUT_S = 20.0
"""How long a new ring may take until its token is seen moving."""
HOLDER_POLL_MS = 5
"""How often every bank is asked whether it holds the token while a holder is looked for."""
HOLDER_SEARCH_S = 5.0
"""How long a fault script looks for the token holder."""
STATUS_CALL_TIMEOUT_S = 0.5
"""How long a fault script waits for one bank's ``/ring/status`` answer."""
CATCH_ATTEMPTS_MAX = 10
"""Tries to stop the holder before the token leaves it (see :meth:`FaultKit.catch_holder`)."""
LIVENESS_SLACK = 4
"""Recovery may take this many times the protocol's stated bound (plus
:data:`LIVENESS_SLACK_S`) before the scenario calls the ring stuck: timing goals are figures
to report, this is only a liveness check, robust on a busy machine."""
LIVENESS_SLACK_S = 5.0


def recovery_bound_ms(
    members: int, hold_max_ms: int, handoff_timeout_ms: int, loss_timeout_ms: int | None
) -> int:
    """The bound the protocol states (README): one token circulates ``3 L + 2 R`` after the
    last fault, with ``R = n (hold + handoff)`` and ``L`` the loss timeout (``2 R`` when not
    configured). Restated here because scenarios only use the ring's public surfaces."""
    rotation_ms = members * (hold_max_ms + handoff_timeout_ms)
    loss_ms = loss_timeout_ms if loss_timeout_ms is not None else 2 * rotation_ms
    return 3 * loss_ms + 2 * rotation_ms


@attrs.define
class FaultKit:
    """What a fault script may use."""

    ring: Ring
    """The ring under test (a :class:`LocalRing` for every fault scenario)."""
    monitor: RingMonitor
    """What the ring's status endpoints show."""
    recorder: Recorder
    """Where fault moments go (``recorder.fault(...)``)."""
    client: ApiClient
    """For the script's own status calls."""
    rng: random.Random
    """For the script's choices (the victim), seeded from ``--seed``."""
    duration_s: float
    """How long the load runs; faults fit inside it."""
    phase: Phase
    """Tells the progress bar what the script is doing."""
    recoveries: list[Recovery] = attrs.field(factory=list)
    verdicts: list[Verdict] = attrs.field(factory=list)
    """Ring-level verdicts the script decides itself (``partition``: minority never mints)."""
    notes: list[str] = attrs.field(factory=list)
    """Lines for the report."""
    load_started_ms: float = 0.0
    """When the load began, on the scenario clock."""

    @property
    def bound_ms(self) -> int:
        token = self.ring.config.token
        return recovery_bound_ms(
            len(self.ring.member_ids),
            token.hold_max_ms,
            token.handoff_timeout_ms,
            token.loss_timeout_ms,
        )

    @property
    def loss_timeout_ms(self) -> int:
        token = self.ring.config.token
        if token.loss_timeout_ms is not None:
            return token.loss_timeout_ms
        return 2 * len(self.ring.member_ids) * (token.hold_max_ms + token.handoff_timeout_ms)

    @property
    def liveness_timeout_s(self) -> float:
        return LIVENESS_SLACK * self.bound_ms / 1000 + LIVENESS_SLACK_S

    def running(self) -> list[str]:
        return [b for b in self.ring.member_ids if self.ring.is_running(b)]

    async def statuses(self, banks: Sequence[str]) -> list[dict[str, Any]]:
        """Each of ``banks``' ``GET /ring/status`` answer, asked at once (``{}`` from a bank
        that gave none within :data:`STATUS_CALL_TIMEOUT_S`)."""
        answers = await asyncio.gather(
            *(
                self.client.call("GET", self.ring.url(b) + "/ring/status", timeout_s=STATUS_CALL_TIMEOUT_S)
                for b in banks
            )
        )
        return [a.body if a.ok and isinstance(a.body, dict) else {} for a in answers]

    async def find_holder(self, *, timeout_s: float = HOLDER_SEARCH_S) -> str | None:
        """A bank that says it holds the token right now, asked directly and often."""
        found = await self._holder_status(timeout_s)
        return None if found is None else found[0]

    async def _holder_status(self, timeout_s: float = HOLDER_SEARCH_S) -> tuple[str, dict[str, Any]] | None:
        """A bank that says it holds the token right now, and its status answer."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            banks = self.running()
            for bank, body in zip(banks, await self.statuses(banks), strict=True):
                if body.get("holding"):
                    return bank, body
            await asyncio.sleep(HOLDER_POLL_MS / 1000)
        return None

    async def catch_holder(self, *, attempts_max: int = CATCH_ATTEMPTS_MAX) -> tuple[str, float] | None:
        """SIGSTOP a bank while it holds the token, and make sure the token stayed with it:
        the bank and when it was stopped (scenario clock); it is left stopped. ``None`` when
        no bank was caught holding.

        A status answer says "holding", but a visit lasts at most ``hold_max_ms`` (an idle
        holder passes the token at once): by the time the signal lands, the token may have
        moved on, and the fault would hit a bank that has nothing to lose. So the others are
        watched for three hand-off timeouts (well under the loss timeout): one of them taking
        a newer fence of the same generation means the token had moved on, and the bank is
        resumed and the catch tried again (as ``bank.process.catch_holder`` does for tests)."""
        settle_s = 3 * self.ring.config.token.handoff_timeout_ms / 1000
        for _ in range(attempts_max):
            caught = await self._holder_status()
            fence = None if caught is None else caught[1].get("fence")
            if caught is None or not isinstance(fence, dict):
                return None
            holder = caught[0]
            await self.ring.pause(holder)
            stopped_ms = self.recorder.now_ms()
            if not await self._moved_past(holder, fence, settle_s):
                return holder, stopped_ms
            await self.ring.resume(holder)
            await asyncio.sleep(settle_s)  # let it rejoin before the next try
        return None

    async def _moved_past(self, holder: str, fence: dict[str, int], settle_s: float) -> bool:
        """Whether another bank shows a newer fence of ``fence``'s generation within
        ``settle_s``: the token left ``holder`` before it was stopped."""
        deadline = time.monotonic() + settle_s
        others = [b for b in self.running() if b != holder]
        while time.monotonic() < deadline:
            for body in await self.statuses(others):
                seen = body.get("fence_seen")
                if (
                    isinstance(seen, dict)
                    and seen.get("epoch") == fence.get("epoch")
                    and isinstance(seen.get("seq"), int)
                    and seen["seq"] > fence.get("seq", 0)
                ):
                    return True
            await asyncio.sleep(HOLDER_POLL_MS / 1000)
        return False

    async def measure(
        self,
        fault: str,
        target: str,
        at_ms: float,
        measure: str,
        condition: Callable[[RingMonitor], bool],
        *,
        detail: str = "",
    ) -> Recovery:
        """Wait (bounded) until ``condition`` holds; record and return the recovery."""
        held_at = await self.monitor.wait_for(condition, timeout_s=self.liveness_timeout_s)
        recovery = Recovery(
            fault=fault,
            target=target,
            at_ms=at_ms,
            measure=measure,
            recovery_ms=None if held_at is None else held_at - at_ms,
            detail=detail,
        )
        self.recoveries.append(recovery)
        return recovery

    async def until(self, at_s: float) -> None:
        """Sleep until ``at_s`` seconds after the load began."""
        await asyncio.sleep(max(0.0, at_s - self.load_elapsed_s()))

    def load_elapsed_s(self) -> float:
        return (self.recorder.now_ms() - self.load_started_ms) / 1000


FaultScript = Callable[[FaultKit], Awaitable[None]]
LoadScript = Callable[[Teller, Sequence[str], random.Random, Phase], Awaitable[dict[int, Customer]]]
"""Makes the money load: enrols customers, runs operations, returns the customers (their
sessions are used to resolve and read back). Calls ``phase("load")`` when the load begins."""


@attrs.frozen
class RunResult:
    """One run under load: the report and the history it was made from."""

    report: Report
    """What is shown and written."""
    history: History
    """What the checker judged."""


def _ring_verdict(name: str, checked: int, failures: Sequence[str]) -> Verdict:
    return Verdict(
        name=name,
        held=not failures,
        checked=checked,
        violations=len(failures),
        examples=tuple(failures[:5]),
    )


async def run_under_load(
    ring: Ring,
    scenario: str,
    *,
    seed: int,
    workload: WorkloadOptions,
    phase: Phase,
    faults: FaultScript | None = None,
    load_script: LoadScript | None = None,
    tables_from: Callable[[History], Sequence[ReportTable]] | None = None,
    attached: bool = False,
) -> RunResult:
    """Run the bank workload (and ``faults`` alongside it) and judge what happened."""
    rng = random.Random(seed)
    recorder = Recorder()
    notes: list[str] = []
    async with ApiClient() as client:
        urls = {bank: ring.url(bank) for bank in ring.member_ids}
        monitor = RingMonitor(client, urls, recorder.now_ms)
        await monitor.start()
        try:
            phase("waiting for the token")
            ready_ms = recorder.now_ms()
            moving = await monitor.wait_for(
                lambda m: m.visited_after(ring.member_ids, ready_ms), timeout_s=READY_TIMEOUT_S
            )
            if moving is None:
                notes.append(f"the token was not seen moving within {READY_TIMEOUT_S:.0f} s")
            generations_before = len(monitor.generations_seen)
            # Idempotency keys are unique to this run (not only to the seed): a ring used
            # again under --attach answers a reused key with the first run's answer.
            run_id = secrets.token_hex(4)
            teller = Teller(client, urls, recorder, prefix=f"{scenario}-{seed}-{run_id}")
            if workload.keep_going:
                # Clients keep off a bank the watcher finds not answering, and a link one of its
                # banks says is down, as soon as it does.
                monitor.listeners.append(
                    lambda s: teller.unanswered.status(
                        s.bank, s.up, [m for m, state in s.members.items() if state == "down"]
                    )
                )
            kit = FaultKit(
                ring=ring, monitor=monitor, recorder=recorder, client=client,
                rng=random.Random(rng.randrange(2**32)), duration_s=workload.duration_s,
                phase=phase,
            )  # fmt: skip
            load_started = asyncio.Event()
            money = True

            def on_phase(name: str) -> None:
                if name == "load":
                    kit.load_started_ms = recorder.now_ms()
                    load_started.set()
                phase(name)

            async def load() -> dict[int, Customer]:
                nonlocal money
                load_rng = random.Random(rng.randrange(2**32))
                try:
                    if load_script is not None:
                        return await load_script(teller, ring.member_ids, load_rng, on_phase)
                    return await run_bank_workload(
                        teller, list(ring.member_ids), workload, load_rng, progress=on_phase
                    )
                except MoneyApiMissing as missing:
                    money = False
                    notes.append(f"no money load: {missing}")
                    on_phase("load")
                    # Ring-only: the faults still run for the whole duration.
                    await asyncio.sleep(workload.duration_s)
                    return {}

            async def fault_side() -> None:
                if faults is None:
                    return
                await load_started.wait()
                phase("faults")
                await faults(kit)

            load_task = asyncio.create_task(load())
            fault_task = asyncio.create_task(fault_side())
            try:
                customers, _ = await asyncio.gather(load_task, fault_task)
            except BaseException:
                load_task.cancel()
                fault_task.cancel()
                raise
            load_s = kit.load_elapsed_s()

            # After the faults: exactly one token, visiting every member again.
            phase("checking the ring")
            calm_ms = recorder.now_ms()
            running = kit.running()
            one_token = await monitor.wait_for(
                lambda m: m.all_visited_after(running, calm_ms)
                and m.current_generation(running) is not None,
                timeout_s=kit.liveness_timeout_s,
            )
            ring_failures = []
            if one_token is None:
                ring_failures.append(
                    f"{kit.liveness_timeout_s:.0f} s after the faults stopped, the running banks "
                    f"{', '.join(running)} did not all get the token under one generation"
                )
            stuck = [
                f"{r.fault} {r.target} at {r.at_ms / 1000:.2f} s: never {r.measure}"
                for r in kit.recoveries
                if r.recovery_ms is None
            ]

            if money and customers:
                phase("resolving unknown operations")
                await teller.resolve(customers)
                phase("reading final balances")
                recorder.settled = await teller.read_final(customers)
        finally:
            await monitor.stop()
    history = recorder.freeze()
    verdicts = list(check(history)) if money else []
    if money:
        notes.extend(load_during_faults(history))
    verdicts.append(_ring_verdict("token_recovers", len(kit.recoveries), stuck))
    verdicts.append(_ring_verdict("one_token_after_faults", 1, ring_failures))
    verdicts.extend(kit.verdicts)
    figures = summarize(history)
    notes.extend(kit.notes)
    notes.append(
        f"the protocol's stated recovery bound for this ring is {kit.bound_ms} ms "
        f"(3 L + 2 R); 'token_recovers' allows {kit.liveness_timeout_s:.0f} s"
    )
    report = Report(
        scenario=scenario,
        seed=seed,
        banks=len(ring.member_ids),
        attached=attached,
        load_s=round(load_s, 3),
        operations=figures["operations"],
        committed=figures["committed"],
        aborted=figures["aborted"],
        unknown=figures["unknown"],
        resolved_late=figures["resolved_late"],
        by_kind=figures["by_kind"],
        throughput_ops_s=round(figures["throughput_ops_s"], 2),
        latency_ms_p50=figures["latency_ms_p50"],
        latency_ms_p99=figures["latency_ms_p99"],
        token_visits=monitor.token_visits,
        regenerations=len(monitor.generations_seen) - generations_before
        if monitor.generations_seen
        else None,
        recoveries=tuple(kit.recoveries),
        verdicts=tuple(verdicts),
        notes=tuple(notes),
        tables=tuple(tables_from(history)) if tables_from is not None and money else (),
        money=money,
        series=figures["series"],
        reasons=figures["reasons"],
        unaccounted_cents=figures["unaccounted_cents"],
        history=history.to_json(),
    )
    return RunResult(report=report, history=history)
