"""Trace digests of seeded runs, to prove that a change to the simulator or the core keeps
every run event for event the same.

``record FILE`` writes one line per run: its name, the trace digest (``trace=True``) and a
digest of what the same run records without tracing (sections, claims, mints, assents,
counts, events), so the fast untraced path is checked too. ``check FILE`` runs them again
and prints every run whose line differs or is missing there (exit status 1 if any). Runs: the
sweep's seeds ``--seeds`` from ``--base``, plus a few fixed rings (fault-free, a leave and a
pause, an application that overruns on a lossy, partitioned network).
Run: ``.venv/bin/python benchmarks/simulation_digests.py record /tmp/digests.txt --seeds 300``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterator

from tokenring.simulation import (
    Fault,
    NetworkConfig,
    Simulation,
    WorkApplication,
    run_scenario,
    scenario_for_seed,
)


def _untraced_digest(sim: Simulation) -> str:
    record = repr((
        sim.sections, sim.claims, sim.mints, sorted(sim.assents), sorted(sim.counts.items()),
        sim.events_handled, sim.now_ms,
    ))
    return hashlib.sha256(record.encode()).hexdigest()[:16]


def _fixed_rings() -> Iterator[tuple[str, dict[str, object], int]]:
    lossy = NetworkConfig(delay_ms_min=1, delay_ms_max=40, drop_rate=0.05, duplicate_rate=0.1)
    for n in (1, 2, 3, 5, 9):
        yield f"fault-free-{n}", {
            "members": [f"m{i}" for i in range(n)], "seed": n, "hold_max_ms": 10,
            "handoff_timeout_ms": 20,
            "network": NetworkConfig(delay_ms_min=1, delay_ms_max=4),
        }, 20_000
    yield "leave-4", {
        "members": ["a", "b", "c", "d"], "seed": 9, "hold_max_ms": 10, "handoff_timeout_ms": 20,
        "faults": [Fault(500, "leave", ("c",)), Fault(900, "pause", ("a",)),
                   Fault(1500, "resume", ("a",))],
    }, 5_000
    yield "overrun-lossy-5", {
        "members": [f"m{i}" for i in range(5)], "seed": 77, "hold_max_ms": 25,
        "handoff_timeout_ms": 150, "network": lossy,
        "application": lambda _m: WorkApplication(work_ms_max=30, overrun_rate=0.3),
        "faults": [Fault(3000, "partition", ("m0", "m1")), Fault(9000, "heal")],
    }, 20_000


def digests(seeds: int, base: int) -> Iterator[str]:
    for name, kwargs, until_ms in _fixed_rings():
        lines = []
        for trace in (True, False):
            sim = Simulation(trace=trace, **kwargs)  # type: ignore[arg-type]
            sim.run(until_ms)
            lines.append(sim.digest if trace else _untraced_digest(sim))
        yield f"{name} {lines[0]} {lines[1]}"
    for seed in range(base, base + seeds):
        scenario = scenario_for_seed(seed)
        traced = run_scenario(scenario, trace=True)
        untraced = Simulation(
            scenario.members, seed=scenario.seed, hold_max_ms=scenario.hold_max_ms,
            handoff_timeout_ms=scenario.handoff_timeout_ms, network=scenario.network,
            faults=scenario.faults,
        )
        untraced.run(scenario.end_ms)
        plain = run_scenario(scenario)
        assert plain.events == traced.events and plain.violations == traced.violations
        yield (f"seed-{seed} {traced.digest} {_untraced_digest(untraced)} "
               f"{traced.events} {len(traced.violations)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["record", "check"])
    parser.add_argument("file")
    parser.add_argument("--seeds", type=int, default=300)
    parser.add_argument("--base", type=int, default=0)
    args = parser.parse_args()
    if args.mode == "record":
        with open(args.file, "w") as out:
            for line in digests(args.seeds, args.base):
                out.write(line + "\n")
        print(f"recorded {args.file}")
        return 0
    with open(args.file) as recorded:
        expected = {line.split()[0]: line.rstrip("\n") for line in recorded}
    different = runs = 0
    for got in digests(args.seeds, args.base):
        runs += 1
        want = expected.get(got.split()[0])
        if want != got:
            different += 1
            print(f"DIFFERENT: want {want}\n           got  {got}")
    print(f"{runs} runs checked against {args.file}: {different} different")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
