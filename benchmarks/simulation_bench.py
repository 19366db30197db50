"""Simulated events per second: how fast the simulator runs the pure cores.

Prints figures, asserts nothing (timing goals live here, not in tests). Times are CPU
seconds of this process (``time.process_time``), so a busy shared machine skews them less
than wall time would. Two workloads:
a fault-free ring of each size, and a sweep of seeded fault schedules (what CI runs).
Run: ``.venv/bin/python benchmarks/simulation_bench.py [--seeds N] [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from tokenring.simulation import (
    NetworkConfig,
    Simulation,
    WorkApplication,
    run_scenario,
    scenario_for_seed,
)

HOLD_MS = 10
HANDOFF_MS = 20
VIRTUAL_MS = 100_000
"""Virtual time each fault-free ring runs for."""
GOAL_EVENTS_PER_S = 200_000


def fault_free(members: int) -> tuple[int, float]:
    sim = Simulation(
        [f"m{i}" for i in range(members)], seed=members, hold_max_ms=HOLD_MS,
        handoff_timeout_ms=HANDOFF_MS, network=NetworkConfig(delay_ms_min=1, delay_ms_max=4),
    )
    started = time.process_time()
    sim.run(VIRTUAL_MS)
    return sim.events_handled, time.process_time() - started


def idle_handoffs_per_s(members: int, delay_ms: int) -> float:
    """Hand-offs per virtual second of a ring whose application has no work (releases at
    once), with ``delay_ms`` each way: what an idle ring costs the transport."""
    sim = Simulation(
        [f"m{i}" for i in range(members)], seed=1, hold_max_ms=25, handoff_timeout_ms=150,
        network=NetworkConfig(delay_ms_min=delay_ms, delay_ms_max=delay_ms),
        application=lambda _m: WorkApplication(work_ms_max=0),
    )
    sim.run(VIRTUAL_MS)
    return len(sim.sections) / (VIRTUAL_MS / 1000)


def sweep(seeds: int) -> tuple[int, float]:
    events = 0
    started = time.process_time()
    for seed in range(seeds):
        events += run_scenario(scenario_for_seed(seed)).events
    return events, time.process_time() - started


def reference_loop_us() -> float:
    """CPU microseconds for ``sum(range(1000))``: a yardstick for how fast this machine runs
    Python right now, so figures from a busy shared box can be compared with others."""
    rounds = 20_000
    started = time.process_time()
    for _ in range(rounds):
        sum(range(1000))
    return (time.process_time() - started) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=500, help="fault schedules in the sweep")
    parser.add_argument("--profile", action="store_true", help="print the sweep's hot spots")
    args = parser.parse_args()
    total_events, total_s = 0, 0.0
    for members in (2, 3, 5, 9):
        events, elapsed = fault_free(members)
        total_events += events
        total_s += elapsed
        print(f"fault-free ring of {members}: {events:>8,} events in {elapsed:5.2f} s "
              f"= {events / elapsed:>9,.0f} events/s")
    for delay_ms in (0, 1):
        rate = idle_handoffs_per_s(3, delay_ms)
        print(f"idle ring of 3 (ring.toml timing), {delay_ms} ms delay: {rate:,.0f} hand-offs "
              "per second")
    events, elapsed = sweep(args.seeds)
    total_events += events
    total_s += elapsed
    print(f"{args.seeds} fault schedules: {events:>8,} events in {elapsed:5.2f} s "
          f"= {events / elapsed:>9,.0f} events/s")
    print(f"overall: {total_events / total_s:,.0f} simulated events/s "
          f"(goal {GOAL_EVENTS_PER_S:,}/s)")
    print(f"yardstick: sum(range(1000)) took {reference_loop_us():.1f} µs of CPU here "
          "(scale the figures above by it to compare machines)")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(sweep, min(args.seeds, 100))
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
