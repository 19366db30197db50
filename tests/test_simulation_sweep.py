"""Thousands of seeded fault schedules over rings of 2 to 9 members: every property, every seed.

Each seed makes a ring, a short schedule of crashes, restarts, pauses, partitions and a lossy,
duplicating, reordering network, after which the faults stop. ``run_scenario`` then checks:
fences per observer strictly increase; every mint had a strict majority's assent; and from the
recovery bound on (``recovery_ms_for``, docs/protocol.md) exactly one token circulates (one
holder at a time, fences strictly increasing, no claim) and every live member is visited within
one rotation. ``TOKENRING_SIM_SEEDS`` sets how many seeds (default 2000);
``TOKENRING_SIM_SEED_BASE`` where they start. A failure prints each failing seed and the
command that replays it.
"""

from __future__ import annotations

import os
import time

from tokenring.simulation import run_scenario, scenario_for_seed

SEEDS = int(os.environ.get("TOKENRING_SIM_SEEDS", "2000"))
SEED_BASE = int(os.environ.get("TOKENRING_SIM_SEED_BASE", "0"))
FAILURES_SHOWN_MAX = 5


def test_every_seeded_fault_schedule_recovers_to_exactly_one_token() -> None:
    assert SEEDS >= 1
    started = time.perf_counter()
    failures: list[str] = []
    sizes: set[int] = set()
    events = claims = mints = purges = downs = 0
    recovered: list[int] = []
    for seed in range(SEED_BASE, SEED_BASE + SEEDS):
        scenario = scenario_for_seed(seed)
        outcome = run_scenario(scenario)
        sizes.add(len(scenario.members))
        events += outcome.events
        claims += outcome.counts["claims"]
        mints += outcome.counts["mints"]
        purges += outcome.counts["purges"]
        downs += outcome.counts["downs"]
        if outcome.recovered_ms is not None:
            recovered.append(outcome.recovered_ms)
        if outcome.violations:
            failures.append(outcome.report())
    elapsed = time.perf_counter() - started
    print(
        f"\n{SEEDS} schedules, rings of {min(sizes)}..{max(sizes)}: {events} events in "
        f"{elapsed:.1f} s ({events / elapsed:,.0f}/s); {mints} mints, {claims} claims, "
        f"{purges} purges, {downs} members marked down; last claim after faults stopped: "
        f"max {max(recovered, default=0)} ms over {len(recovered)} runs"
    )
    assert not failures, f"{len(failures)} of {SEEDS} seeds failed:\n" + "\n".join(
        failures[:FAILURES_SHOWN_MAX]
    )
    if SEEDS >= 200:
        # The schedules really exercise recovery: tokens lost and re-minted, stale ones purged.
        assert sizes == set(range(2, 10))
        assert mints > SEEDS and purges > 0 and downs > 0
