"""The named scenarios of ``consortium scenario``: what each does to the ring, and its load.

Each entry of :data:`SCENARIOS` starts (or attaches to) a ring, runs a load through
``scenarios.driver`` with a fault script alongside it, and returns a report. Fault moments are
placed as fractions of the load's duration, so ``--duration-s`` stretches or shrinks a
scenario without changing its shape.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence

import attrs

from scenarios.checker import Verdict
from scenarios.client import make_cpf
from scenarios.cluster import AttachedRing, LocalRing, Ring, ScenarioError
from scenarios.driver import FaultKit, FaultScript, LoadScript, Phase, RunResult, run_under_load
from scenarios.history import AccountRef, History, Kind, Movement, Outcome
from scenarios.monitor import StatusSample
from scenarios.report import Report, ReportTable, merge_verdicts, percentile
from scenarios.workload import Customer, Teller, WorkloadOptions

__all__ = ["SCENARIOS", "RunOptions", "Scenario"]

SCALE_SIZES = (3, 5, 9, 16)
"""The ring sizes ``scale`` measures by default."""
SEED_TRANSFERS = 10
"""How many simultaneous transfers ``seed-replay`` sends."""
PARTICIPANT_SEARCH_S = 3.0
"""How long ``kill-participant`` looks for a batch in progress before it kills any bank."""
TOKEN_FREE_CUT_TRIES_MAX = 3
"""Tries at cutting off a minority without the token (``partition``'s second cut): a cut that
lands while a hand-off from the minority is unacknowledged leaves it a copy of the token (its
sender skips the cut-off target and keeps it), and such a cut exercises nothing; it is healed
and made again."""


@attrs.frozen
class RunOptions:
    """The options of one ``consortium scenario`` run (already defaulted per scenario)."""

    seed: int
    """Makes the workload (and fault choices) reproducible."""
    banks: int
    """Banks in the ring the scenario starts."""
    duration_s: float
    """How long the load runs (per ring size, for ``scale``)."""
    clients: int
    """Concurrent clients."""
    sizes: tuple[int, ...] = SCALE_SIZES
    """``scale`` only: the ring sizes to measure."""
    attach: str | None = None
    """The ring file of a running ring to use instead of starting one."""


@attrs.frozen
class Scenario:
    """One entry of ``consortium scenario --list``."""

    name: str
    """What ``consortium scenario NAME`` calls it."""
    summary: str
    """One line for ``--list``."""
    run: Callable[[RunOptions, Phase], Awaitable[Report]]
    """Runs it and returns its report."""
    refuses_attach: str | None = None
    """Why it cannot run against a ring it did not start (it kills, pauses or partitions
    banks, or starts rings of its own); ``None`` when ``--attach`` is fine."""
    banks: int = 3
    """Banks in the ring it starts, unless ``--banks`` says otherwise."""
    duration_s: float = 8.0
    """Seconds of load, unless ``--duration-s`` says otherwise."""
    clients: int = 4
    """Concurrent clients, unless ``--clients`` says otherwise."""
    banks_min: int = 1
    """The smallest ring it makes sense on."""
    load_fixed: str | None = None
    """Why ``--clients`` and ``--duration-s`` do not apply (its load is written out); ``None``
    when they do."""

    def estimate_s(self, options: RunOptions) -> float:
        """Roughly how long a run takes (for the progress bar)."""
        per_ring = options.duration_s + 6.0
        if self.name == "scale":
            return per_ring * len(options.sizes)
        return per_ring


async def _with_ring(
    options: RunOptions,
    body: Callable[[Ring], Awaitable[RunResult]],
    phase: Phase,
    *,
    banks: int | None = None,
    proxies: bool = False,
) -> RunResult:
    if options.attach is not None:
        attached = AttachedRing(options.attach)
        await attached.check_running()
        return await body(attached)
    ring = LocalRing(banks or options.banks, proxies=proxies)
    phase(f"starting {len(ring.ids)} banks")
    try:
        await ring.start()
        return await body(ring)
    finally:
        phase("stopping the ring")
        await ring.close()


def _workload(options: RunOptions, *, keep_going: bool = False) -> WorkloadOptions:
    return WorkloadOptions(
        clients=options.clients, duration_s=options.duration_s, keep_going=keep_going
    )


def _runner(
    name: str, faults: FaultScript | None = None, *, proxies: bool = False
) -> Callable[[RunOptions, Phase], Awaitable[Report]]:
    async def run(options: RunOptions, phase: Phase) -> Report:
        async def body(ring: Ring) -> RunResult:
            return await run_under_load(
                ring, name, seed=options.seed, phase=phase, faults=faults,
                # A fault scenario's clients go on when a bank does not answer.
                workload=_workload(options, keep_going=faults is not None),
                attached=options.attach is not None,
            )  # fmt: skip

        return (await _with_ring(options, body, phase, proxies=proxies)).report

    return run


# --- fault scripts ---------------------------------------------------------------------------


async def _victim_holder(kit: FaultKit) -> tuple[str, str, float | None]:
    """The holder, caught and left stopped with the token (see ``FaultKit.catch_holder``),
    and when it was stopped; a random running bank (not stopped, ``None``) when no holder
    could be caught."""
    caught = await kit.catch_holder()
    if caught is None:
        victim = kit.rng.choice(kit.running())
        return victim, "no holder caught; a random bank", None
    holder, stopped_ms = caught
    return holder, "while it held the token (stopped with it)", stopped_ms


async def _kill_and_restart(
    kit: FaultKit, victim: str, detail: str, *, stopped_ms: float | None = None
) -> None:
    # A bank caught stopped with the token dies with it: the token was lost when it stopped.
    kill = kit.recorder.fault("kill", victim, detail, at_ms=stopped_ms)
    await kit.ring.kill(victim)
    survivors = kit.running()
    await kit.measure(
        "kill", victim, kill.at_ms, "the token moved among the survivors",
        lambda m: m.visited_after(survivors, kill.at_ms), detail=detail,
    )  # fmt: skip
    await kit.until(kit.duration_s * 0.6)
    restart = kit.recorder.fault("restart", victim)
    kit.phase(f"restarting {victim}")
    await kit.ring.restart(victim)
    serving_ms = kit.recorder.now_ms() - restart.at_ms
    kit.phase("faults")
    await kit.measure(
        "restart", victim, restart.at_ms, "the restarted bank got the token (includes start-up)",
        lambda m: m.visited_after([victim], restart.at_ms),
        detail=f"serving again after {serving_ms:,.0f} ms",
    )  # fmt: skip


async def _kill_holder(kit: FaultKit) -> None:
    await kit.until(kit.duration_s * 0.25)
    victim, detail, stopped_ms = await _victim_holder(kit)
    await _kill_and_restart(kit, victim, detail, stopped_ms=stopped_ms)


async def _kill_participant(kit: FaultKit) -> None:
    await kit.until(kit.duration_s * 0.25)
    deadline = time.monotonic() + PARTICIPANT_SEARCH_S
    victim, detail = None, "no batch in progress seen"
    while victim is None and time.monotonic() < deadline:
        # A participant of a batch in progress: a bank named by a transfer that the bank
        # holding the token coordinates and that has not ended yet.
        holder = await kit.find_holder(timeout_s=1.0)
        pending = [
            op
            for op in kit.recorder.operations.values()
            if op.kind is Kind.TRANSFER
            and op.outcome is Outcome.UNKNOWN
            and op.transfer_id is not None
            and op.bank == holder
        ]
        involved = sorted(
            {m.account.bank for op in pending for m in op.debits + op.credits} - {holder}
        )
        if holder is not None and involved:
            victim = kit.rng.choice(involved)
            detail = f"while {holder} held the token with {len(pending)} of its transfers pending"
    if victim is None:
        victim = kit.rng.choice(kit.running())
    await _kill_and_restart(kit, victim, detail)


async def _pause_holder(kit: FaultKit) -> None:
    await kit.until(kit.duration_s * 0.25)
    victim, detail, stopped_ms = await _victim_holder(kit)
    pause = kit.recorder.fault("pause", victim, f"SIGSTOP {detail}", at_ms=stopped_ms)
    if stopped_ms is None:
        await kit.ring.pause(victim)
    others = kit.running()
    await kit.measure(
        "pause", victim, pause.at_ms, "the token moved among the others",
        lambda m: m.visited_after(others, pause.at_ms), detail=detail,
    )  # fmt: skip
    # Stay stopped well past the loss timeout: the others must have given up on it.
    past_loss_ms = pause.at_ms + 1.5 * kit.loss_timeout_ms
    await asyncio.sleep(max(0.0, past_loss_ms - kit.recorder.now_ms()) / 1000)
    await kit.until(kit.duration_s * 0.6)
    resume = kit.recorder.fault("resume", victim, "SIGCONT")
    await kit.ring.resume(victim)
    everyone = kit.running()
    await kit.measure(
        "resume", victim, resume.at_ms, "the resumed bank got the token under the current "
        "generation", lambda m: m.visited_after([victim], resume.at_ms)
        and m.current_generation(everyone) is not None,
    )  # fmt: skip


@attrs.frozen
class CutWindow:
    """One cut of ``partition``: who was cut off, when, and the generations known before."""

    minority: tuple[str, ...]
    cut_ms: float
    heal_ms: float
    before: frozenset[str]
    """Every generation the monitor had seen before the cut."""


def minority_never_mints(
    samples: Sequence[StatusSample], windows: Sequence[CutWindow], loss_timeout_ms: float
) -> Verdict:
    """No bank of a cut-off minority shows a generation that did not exist before the cut.

    A minority bank is tempted to mint only once it has gone a loss timeout without a token
    visit: a minority that keeps the token it held at the cut (a member alone passes the token
    to itself) never bids, so its samples judge nothing. Only the samples taken after such a
    quiet stretch count as checks; with none, the verdict is 'not exercised', not 'held'."""
    minted: set[str] = set()
    checked = 0
    for window in windows:
        for bank in window.minority:
            quiet_since = window.cut_ms
            last_visits: int | None = None
            for s in samples:
                if s.bank != bank or not window.cut_ms <= s.at_ms < window.heal_ms:
                    continue
                if s.generation is not None and s.generation not in window.before:
                    minted.add(
                        f"{s.bank} showed generation {s.generation} at {s.at_ms / 1000:.2f} s"
                    )
                if not s.up:
                    continue
                if s.visits is not None and last_visits is not None and s.visits > last_visits:
                    quiet_since = s.at_ms  # a visit: it still has a token
                if s.visits is not None:
                    last_visits = s.visits
                if s.at_ms - quiet_since >= loss_timeout_ms:
                    checked += 1
    return Verdict(
        name="minority_never_mints",
        held=not minted,
        checked=checked + len(minted),
        violations=len(minted),
        examples=tuple(sorted(minted)[:5]),
    )


async def _visits(kit: FaultKit, banks: Sequence[str]) -> int | None:
    """The token visits ``banks`` counted together (``/ring/status``); None when one did not
    say."""
    counts = [body.get("visits") for body in await kit.statuses(banks)]
    return sum(c for c in counts if isinstance(c, int)) if all(isinstance(c, int) for c in counts) else None


async def _cut(
    kit: FaultKit, minority: list[str], what: str, note: str, heal_at_s: float,
    *, token_free: bool = False,
) -> tuple[CutWindow, bool]:
    """Cut ``minority`` off from the others, keep it past two loss timeouts and ``heal_at_s``,
    heal, and measure the recoveries; the cut's window, and whether it was kept. With
    ``token_free``, a cut after which the minority still gets token visits (it kept a copy
    of the token) is healed as soon as that is seen, and not kept."""
    members = list(kit.ring.member_ids)
    majority = [b for b in members if b not in minority]
    before = frozenset(kit.monitor.generations_seen)
    cut = kit.recorder.fault("partition", "+".join(minority), f"cut from {'+'.join(majority)}")
    kit.ring.partition([set(minority), set(majority)])
    await kit.measure(
        "partition", "+".join(minority), cut.at_ms, what,
        lambda m: m.visited_after(majority, cut.at_ms),
        detail=f"cut from {'+'.join(majority)}" + note,
    )  # fmt: skip
    kept = True
    if token_free:
        # A visit that began after the cut settled (a visit lasts at most hold_max_ms, a
        # hand-off waits at most handoff_timeout_ms) means a token inside the minority.
        token = kit.ring.config.token
        await asyncio.sleep((token.hold_max_ms + 2 * token.handoff_timeout_ms) / 1000)
        settled = await _visits(kit, minority)
        await asyncio.sleep((token.hold_max_ms + token.handoff_timeout_ms) / 1000)
        later = await _visits(kit, minority)
        kept = settled is None or later is None or later == settled
    if kept:
        past_loss_ms = cut.at_ms + 2 * kit.loss_timeout_ms
        await asyncio.sleep(max(0.0, past_loss_ms - kit.recorder.now_ms()) / 1000)
        await kit.until(heal_at_s)
    heal = kit.recorder.fault("heal", "all")
    kit.ring.heal()
    await kit.measure(
        "heal", "all", heal.at_ms, "every bank got the token under one generation",
        lambda m: m.all_visited_after(members, heal.at_ms)
        and m.current_generation(members) is not None,
    )  # fmt: skip
    return CutWindow(tuple(minority), cut.at_ms, heal.at_ms, before), kept


async def _partition(kit: FaultKit) -> None:
    await kit.until(kit.duration_s * 0.25)
    members = list(kit.ring.member_ids)
    size = max(1, (len(members) - 1) // 2)
    holder = await kit.find_holder()
    start = members.index(holder) if holder is not None else 0
    # First cut: the holder goes to the minority, so that the majority must mint a new token.
    first = [members[(start + i) % len(members)] for i in range(size)]
    window, _ = await _cut(
        kit, first, "the token moved in the majority",
        f"; {holder} held the token" if holder else "", kit.duration_s * 0.6,
    )  # fmt: skip
    windows = [window]
    # Second cut: a minority without the token (the banks the token left last), which must
    # not mint one of its own however long it goes without. A cut that left it a copy of
    # the token is healed at once and made again (TOKEN_FREE_CUT_TRIES_MAX).
    await kit.until(kit.duration_s * 0.65)
    for _ in range(TOKEN_FREE_CUT_TRIES_MAX):
        holder = await kit.find_holder()
        start = members.index(holder) if holder is not None else 0
        second = [members[(start - 1 - i) % len(members)] for i in range(size)]
        window, kept = await _cut(
            kit, second, "the token still moved in the majority",
            f"; {holder} (in the majority) held the token" if holder else "", kit.duration_s * 0.9,
            token_free=True,
        )  # fmt: skip
        windows.append(window)
        if kept:
            break
    kit.verdicts.append(minority_never_mints(kit.monitor.samples, windows, kit.loss_timeout_ms))


# --- seed-replay -----------------------------------------------------------------------------


def _seed_load(replay: dict[str, object]) -> LoadScript:
    """The original concurrency script: Ana and Bruno at three banks, one joint account."""

    async def load(
        teller: Teller, banks: Sequence[str], rng: random.Random, phase: Phase
    ) -> dict[int, Customer]:
        if len(banks) < 3:
            raise ScenarioError("seed-replay needs a ring of at least three banks")
        alfa, beta, gama = banks[:3]
        phase("setup")
        ana = Customer(index=0, document=make_cpf(rng), name="Ana", password="senha-ana-1")
        bruno = Customer(index=1, document=make_cpf(rng), name="Bruno", password="senha-bruno-1")
        await asyncio.gather(
            teller.enrol(ana, [alfa, beta, gama]), teller.enrol(bruno, [beta, gama])
        )
        joint = await teller.open_account(ana, gama, "joint", [ana.document, bruno.document])
        baseline = await teller.baseline(ana, alfa)
        teller.recorder.baseline_cents = baseline or 0
        phase("load")
        # Simultaneous deposits (one at another bank, forwarded) and a withdrawal racing them.
        await asyncio.gather(
            teller.deposit(ana, alfa, ana.accounts[alfa], 10_000),
            teller.deposit(ana, alfa, ana.accounts[beta], 8_000),
            teller.deposit(bruno, gama, bruno.accounts[gama], 5_000),
            teller.deposit(bruno, beta, bruno.accounts[beta], 3_000),
            teller.withdraw(ana, alfa, ana.accounts[alfa], 2_000),
        )
        customers = {0: ana, 1: bruno}
        before = await teller.balances(customers, source="before transfers")
        teller.recorder.funds_before = {a: b for a, (b, _) in before.items()}
        teller.recorder.funds_before_ms = teller.recorder.now_ms()
        # Ten transfers at once, each drawing from Ana's accounts at two banks into a third
        # bank: half into Bruno's account there, half into the joint account. Together they
        # ask for more than the two accounts hold.
        sources = [Movement(ana.accounts[alfa], 1_500), Movement(ana.accounts[beta], 1_000)]
        destinations = [bruno.accounts[gama], joint]
        ops = await asyncio.gather(
            *(
                teller.transfer(ana, alfa, sources, destinations[i % 2])
                for i in range(SEED_TRANSFERS)
            )
        )
        replay["transfer_keys"] = [op.key for op in ops]
        labels = {account: "Ana" for account in ana.accounts.values()}
        labels.update({account: "Bruno" for account in bruno.accounts.values()})
        labels[joint] = "Ana + Bruno"
        replay["labels"] = labels
        return customers

    return load


def _seed_tables(replay: dict[str, object]) -> Callable[[History], Sequence[ReportTable]]:
    def tables(history: History) -> Sequence[ReportTable]:
        keys = replay.get("transfer_keys", [])
        labels = replay.get("labels", {})
        assert isinstance(keys, list) and isinstance(labels, dict)

        def named(account: AccountRef) -> str:
            return f"{account} ({labels[account]})" if account in labels else str(account)

        by_key = {op.key: op for op in history.operations}
        rows = []
        for number, key in enumerate(keys, start=1):
            op = by_key[key]
            latency = op.latency_ms
            rows.append((
                number, named(op.credits[0].account), f"{op.credits[0].amount_cents / 100:.2f}",
                str(op.outcome), op.reason or "",
                "-" if latency is None else f"{latency:.0f} ms",
            ))  # fmt: skip
        moved_rows = []
        after_ms = history.funds_before_ms or 0.0
        for account, before in sorted(history.funds_before.items()):
            moved = sum(
                m.amount_cents
                for op in history.operations
                if op.outcome is Outcome.OK and op.invoke_ms >= after_ms
                for m in op.debits
                if m.account == account
            )
            final = history.final_balances.get(account)
            moved_rows.append((
                named(account), f"{before / 100:.2f}", f"{moved / 100:.2f}",
                "-" if final is None else f"{final / 100:.2f}",
                "yes" if moved <= before else "NO",
            ))  # fmt: skip
        return (
            ReportTable(
                title="the ten simultaneous transfers",
                columns=("#", "into", "amount", "outcome", "reason", "latency"),
                rows=tuple(rows),
            ),
            ReportTable(
                title="what existed and what moved",
                columns=("account", "before", "moved out", "final", "at most what existed"),
                rows=tuple(moved_rows),
            ),
        )

    return tables


async def _seed_replay(options: RunOptions, phase: Phase) -> Report:
    replay: dict[str, object] = {}

    async def body(ring: Ring) -> RunResult:
        return await run_under_load(
            ring, "seed-replay", seed=options.seed, workload=_workload(options), phase=phase,
            load_script=_seed_load(replay), tables_from=_seed_tables(replay),
            attached=options.attach is not None,
        )  # fmt: skip

    return (await _with_ring(options, body, phase)).report


# --- scale -----------------------------------------------------------------------------------


async def _scale(options: RunOptions, phase: Phase) -> Report:
    results: list[tuple[int, RunResult]] = []
    for size in options.sizes:

        async def body(ring: Ring, size: int = size) -> RunResult:
            def sized(text: str) -> None:
                phase(f"{size} banks: {text}")

            return await run_under_load(
                ring, "scale", seed=options.seed, workload=_workload(options), phase=sized,
            )  # fmt: skip

        results.append((size, await _with_ring(options, body, phase, banks=size)))
    rows = []
    for size, result in results:
        r = result.report
        visits_s = (r.token_visits or 0) / r.load_s if r.load_s else 0.0
        rows.append((
            size, r.operations, r.committed, r.aborted, f"{r.throughput_ops_s:.1f}",
            "-" if r.latency_ms_p50 is None else f"{r.latency_ms_p50:.0f}",
            "-" if r.latency_ms_p99 is None else f"{r.latency_ms_p99:.0f}",
            f"{visits_s:.0f}", r.regenerations if r.regenerations is not None else "-",
        ))  # fmt: skip
    reports = [result.report for _, result in results]
    latencies = [
        op.latency_ms
        for _, result in results
        for op in result.history.operations
        if op.latency_ms is not None and not op.late
    ]
    by_kind: dict[str, dict[str, int]] = {}
    for report in reports:
        for kind, counts in report.by_kind.items():
            into = by_kind.setdefault(kind, {})
            for outcome, count in counts.items():
                into[outcome] = into.get(outcome, 0) + count
    load_s = sum(r.load_s for r in reports)
    return Report(
        scenario="scale",
        seed=options.seed,
        banks=max(options.sizes),
        attached=False,
        load_s=round(load_s, 3),
        operations=sum(r.operations for r in reports),
        committed=sum(r.committed for r in reports),
        aborted=sum(r.aborted for r in reports),
        unknown=sum(r.unknown for r in reports),
        resolved_late=sum(r.resolved_late for r in reports),
        by_kind=by_kind,
        throughput_ops_s=round(
            sum(r.throughput_ops_s * r.load_s for r in reports) / load_s if load_s else 0.0, 2
        ),
        latency_ms_p50=percentile(latencies, 0.5),
        latency_ms_p99=percentile(latencies, 0.99),
        token_visits=sum(r.token_visits or 0 for r in reports),
        regenerations=sum(r.regenerations or 0 for r in reports),
        recoveries=(),
        verdicts=merge_verdicts((f"{size} banks", r.verdicts) for size, r in zip(
            options.sizes, reports, strict=True)),  # fmt: skip
        notes=(f"rings of {', '.join(map(str, options.sizes))} banks, one after the other, "
               f"each under {options.clients} clients for {options.duration_s:g} s",)
        + tuple(note for r in reports for note in r.notes if note.startswith("no money")),
        tables=(
            ReportTable(
                title="throughput and latency per ring size (same load)",
                columns=("banks", "ops", "ok", "refused", "ops/s", "p50 ms", "p99 ms",
                         "visits/s", "regen."),  # fmt: skip
                rows=tuple(rows),
            ),
        ),
        money=any(r.money for r in reports),
        unaccounted_cents=(
            None
            if any(r.unaccounted_cents is None for r in reports)
            else sum(r.unaccounted_cents or 0 for r in reports)
        ),
        series={},
    )


_SIGNALS = "it kills, pauses and restarts banks, which it may do only to banks it started"

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "seed-replay",
            "two people at three banks (one joint account): simultaneous deposits and a "
            "withdrawal, then ten simultaneous transfers asking for more than exists",
            _seed_replay, banks_min=3, duration_s=0.0, clients=2,
            load_fixed="its two people and their operations are written out",
        ),
        Scenario(
            "bank-workload",
            "N clients: random multi-source transfers, deposits, withdrawals and concurrent "
            "consortium audit reads; checks totals, balances and a replayed model",
            _runner("bank-workload"), clients=6,
        ),
        Scenario(
            "kill-holder",
            "the bank workload while the token holder is SIGKILLed, later restarted",
            _runner("kill-holder", _kill_holder),
            refuses_attach=_SIGNALS, duration_s=10.0, banks_min=3,
        ),
        Scenario(
            "kill-participant",
            "the bank workload while a participant is SIGKILLed mid-batch, later restarted",
            _runner("kill-participant", _kill_participant),
            refuses_attach=_SIGNALS, duration_s=10.0, banks_min=3,
        ),
        Scenario(
            "pause-holder",
            "the bank workload while the token holder is SIGSTOPped past the loss timeout, "
            "then SIGCONTed",
            _runner("pause-holder", _pause_holder),
            refuses_attach=_SIGNALS, duration_s=10.0, banks_min=3,
        ),
        Scenario(
            "partition",
            "the bank workload while proxies between banks split the ring in two "
            "(the holder in the minority), then heal it",
            _runner("partition", _partition, proxies=True),
            refuses_attach="it puts proxies between the banks, which only a ring it starts has",
            duration_s=10.0, banks_min=3,
        ),
        Scenario(
            "scale",
            "the same bank workload on rings of 3, 5, 9 and 16 banks: throughput and latency "
            "per size",
            _scale, refuses_attach="it starts rings of each size itself", duration_s=5.0, clients=4,
        ),
    )
}
