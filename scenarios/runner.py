"""``consortium scenario``: picks the scenario, shows progress, prints and saves the report.

Exit status: 0 when every invariant held, 1 when one was violated, 2 when the scenario could
not run (unknown name, --attach where it cannot be used, a ring that would not start).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from scenarios.catalog import SCALE_SIZES, SCENARIOS, RunOptions, Scenario
from scenarios.cluster import ScenarioError
from scenarios.driver import Phase
from scenarios.report import PlotUnavailable, Report, plot, render
from tokenring.config import ConfigError

__all__ = ["EXIT_CANNOT_RUN", "EXIT_VIOLATED", "main", "options_for"]

EXIT_VIOLATED = 1
EXIT_CANNOT_RUN = 2
PROGRESS_TICK_MS = 100
PROGRESS_TICKS_MAX = 100_000
"""The progress bar stops updating after this many ticks (hours), whatever happens."""
BANKS_MAX = 16

T = TypeVar("T")


def _parse_sizes(text: str | None) -> tuple[int, ...]:
    if not text:
        return SCALE_SIZES
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ScenarioError(f"--sizes must be comma-separated numbers, not {text!r}") from None
    if not sizes or any(not 1 <= size <= BANKS_MAX for size in sizes):
        raise ScenarioError(f"--sizes must name ring sizes from 1 to {BANKS_MAX}")
    return sizes


def options_for(scenario: Scenario, args: argparse.Namespace) -> RunOptions:
    """The run's options: what the command line gave, else the scenario's defaults."""
    banks = args.banks if args.banks is not None else scenario.banks
    if not scenario.banks_min <= banks <= BANKS_MAX:
        raise ScenarioError(
            f"{scenario.name} runs with {scenario.banks_min} to {BANKS_MAX} banks, not {banks}"
        )
    duration_s = args.duration_s if args.duration_s is not None else scenario.duration_s
    if duration_s < 0 or duration_s > 3600:
        raise ScenarioError("--duration-s must be between 0 and 3600 seconds")
    clients = args.clients if args.clients is not None else scenario.clients
    if not 1 <= clients <= 1000:
        raise ScenarioError("--clients must be between 1 and 1000")
    sizes = _parse_sizes(args.sizes)
    if args.sizes is None and args.banks is not None:
        sizes = tuple(size for size in SCALE_SIZES if size <= banks) or (banks,)
    return RunOptions(
        seed=args.seed,
        banks=banks,
        duration_s=duration_s,
        clients=clients,
        sizes=sizes,
        attach=args.config if args.attach else None,
    )


async def _with_progress(
    run: Callable[[Phase], Awaitable[T]],
    title: str,
    estimate_s: float,
    quiet: bool,
    phases: list[tuple[str, float]],
) -> T:
    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet,
    ) as progress:
        task = progress.add_task(title, total=max(estimate_s, 1.0))
        started = time.monotonic()

        def phase(text: str) -> None:
            phases.append((text, round(time.monotonic() - started, 3)))
            progress.update(task, description=f"{title}: {text}")

        async def tick() -> None:
            for _ in range(PROGRESS_TICKS_MAX):
                elapsed = time.monotonic() - started
                progress.update(task, completed=min(elapsed, 0.99 * estimate_s))
                await asyncio.sleep(PROGRESS_TICK_MS / 1000)

        ticker = asyncio.create_task(tick())
        try:
            return await run(phase)
        finally:
            ticker.cancel()
            try:
                await ticker
            except asyncio.CancelledError:
                pass


def _list(console: Console) -> None:
    table = Table(title="scenarios")
    table.add_column("name", style="bold")
    table.add_column("what it does")
    table.add_column("--attach")
    for scenario in SCENARIOS.values():
        table.add_row(scenario.name, scenario.summary, "no" if scenario.refuses_attach else "yes")
    console.print(table)


def main(args: argparse.Namespace) -> int:
    """Run the scenario ``args`` names; the exit status."""
    console = Console()
    errors = Console(stderr=True)
    if args.list:
        _list(console)
        return 0
    if not args.name:
        errors.print("consortium scenario: name a scenario (--list names them)")
        return EXIT_CANNOT_RUN
    scenario = SCENARIOS.get(args.name)
    if scenario is None:
        known = ", ".join(SCENARIOS)
        errors.print(f"consortium scenario: no scenario {args.name!r} (known: {known})")
        return EXIT_CANNOT_RUN
    if args.attach and scenario.refuses_attach:
        errors.print(
            f"consortium scenario: {scenario.name} cannot use --attach: "
            f"{scenario.refuses_attach}; run it without --attach and it starts its own ring"
        )
        return EXIT_CANNOT_RUN
    phases: list[tuple[str, float]] = []
    try:
        options = options_for(scenario, args)
        report: Report = asyncio.run(
            _with_progress(
                lambda phase: scenario.run(options, phase),
                scenario.name,
                scenario.estimate_s(options),
                args.quiet,
                phases,
            )
        )
        report = attrs.evolve(report, phases=tuple(phases), options=attrs.asdict(options))
    except (ScenarioError, ConfigError) as error:
        errors.print(f"consortium scenario: {error}", markup=False, highlight=False)
        return EXIT_CANNOT_RUN
    render(report, console)
    if args.json:
        report.write_json(args.json)
        console.print(f"report written to {args.json}")
    if args.plot:
        try:
            plot(report, args.plot)
            console.print(f"plot drawn to {args.plot}")
        except PlotUnavailable as missing:
            errors.print(f"consortium scenario: {missing}")
    return EXIT_VIOLATED if report.violated else 0
