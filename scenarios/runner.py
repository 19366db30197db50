"""``consortium scenario``: picks the scenario, shows progress, prints and saves the report.

Exit status: 0 when every invariant held, 1 when one was violated, 2 when the scenario could
not run (unknown name, --attach where it cannot be used, a ring that would not start).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
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

__all__ = [
    "EXIT_CANNOT_RUN",
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "EXIT_VIOLATED",
    "PLOT_SUFFIXES",
    "check_outputs",
    "main",
    "options_for",
]

EXIT_VIOLATED = 1
EXIT_CANNOT_RUN = 2
EXIT_TERMINATED = 128 + signal.SIGTERM
"""Stopped by SIGTERM, once its ring was stopped and its folder removed (the shell's code for
a command that SIGTERM ended)."""
EXIT_INTERRUPTED = 128 + signal.SIGINT
"""Stopped by Ctrl-C (SIGINT), the same way."""
PLOT_SUFFIXES = (".png", ".svg", ".pdf")
"""What ``--plot`` draws: the file's suffix names the format."""
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
    """The run's options: what the command line gave, else the scenario's defaults. An
    option the run would not use is refused rather than ignored."""
    if args.attach and args.banks is not None:
        raise ScenarioError("--banks sizes a ring the scenario starts; with --attach it uses the running ring of -c")
    if args.sizes is not None and scenario.name != "scale":
        raise ScenarioError(f"--sizes is for the scale scenario only, not {scenario.name}")
    if scenario.load_fixed and (args.clients is not None or args.duration_s is not None):
        raise ScenarioError(f"{scenario.name} takes no --clients or --duration-s: {scenario.load_fixed}")
    banks = args.banks if args.banks is not None else scenario.banks
    if not scenario.banks_min <= banks <= BANKS_MAX:
        raise ScenarioError(
            f"{scenario.name} runs with {scenario.banks_min} to {BANKS_MAX} banks, not {banks}"
        )
    duration_s = args.duration_s if args.duration_s is not None else scenario.duration_s
    if not math.isfinite(duration_s) or duration_s < 0 or duration_s > 3600:
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
        # Off a terminal a bar cannot redraw: it would only leave blank lines on stderr.
        disable=quiet or not console.is_terminal,
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
            result = await run(phase)
            progress.update(task, completed=max(estimate_s, 1.0))  # done, however long it took
            return result
        finally:
            ticker.cancel()
            try:
                await ticker
            except asyncio.CancelledError:
                pass


class _Terminated(Exception):
    """SIGTERM came while the scenario ran; its clean-up has run."""


async def _until_terminated(work: Awaitable[T]) -> T:
    """Await ``work``; SIGTERM cancels it as Ctrl-C does, so that what it started is stopped
    and removed (the banks, the temporary folder) before the command ends. A second SIGTERM
    does not cut that clean-up short (the banks also stop by themselves once this process is
    gone)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    terminated: list[bool] = []

    def on_sigterm() -> None:
        if not terminated:
            terminated.append(True)
            task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        return await work
    except asyncio.CancelledError:
        if terminated:
            raise _Terminated() from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def check_outputs(json_path: str | None, plot_path: str | None) -> None:
    """Refuse, before the run, a ``--json`` or ``--plot`` file that could not be written: in
    a folder that does not exist, a folder itself, or a plot of a format not drawn."""
    for option, path in (("--json", json_path), ("--plot", plot_path)):
        if path is None:
            continue
        target = Path(path)
        if target.is_dir():
            raise ScenarioError(f"{option} {path}: is a folder; name a file")
        if not target.resolve().parent.is_dir():
            raise ScenarioError(f"{option} {path}: the folder {target.parent} does not exist")
    if plot_path is not None and Path(plot_path).suffix.lower() not in PLOT_SUFFIXES:
        raise ScenarioError(f"--plot {plot_path}: name a {', '.join(PLOT_SUFFIXES)} file (the suffix is the format)")


def _error(line: str) -> None:
    """One line on stderr, as written: never wrapped (rich wraps at 80 columns off a
    terminal) nor read as markup (``[plot]`` would vanish)."""
    print(line, file=sys.stderr, flush=True)


def _list(console: Console) -> None:
    table = Table(title="scenarios")
    table.add_column("name", style="bold")
    table.add_column("what it does")
    table.add_column("--attach")
    table.add_column("defaults")
    for scenario in SCENARIOS.values():
        if scenario.load_fixed:
            defaults = f"{scenario.banks} banks; a fixed load"
        elif scenario.name == "scale":
            defaults = f"sizes {','.join(map(str, SCALE_SIZES))}, {scenario.duration_s:g} s, {scenario.clients} clients"
        else:
            defaults = f"{scenario.banks} banks, {scenario.duration_s:g} s, {scenario.clients} clients"
        table.add_row(scenario.name, scenario.summary, "no" if scenario.refuses_attach else "yes", defaults)
    console.print(table)


def main(args: argparse.Namespace) -> int:
    """Run the scenario ``args`` names; the exit status."""
    console = Console()
    if args.list:
        _list(console)
        return 0
    if not args.name:
        _error("consortium scenario: name a scenario (--list names them)")
        return EXIT_CANNOT_RUN
    scenario = SCENARIOS.get(args.name)
    if scenario is None:
        known = ", ".join(SCENARIOS)
        _error(f"consortium scenario: no scenario {args.name!r} (known: {known})")
        return EXIT_CANNOT_RUN
    if args.attach and scenario.refuses_attach:
        _error(
            f"consortium scenario: {scenario.name} cannot use --attach: "
            f"{scenario.refuses_attach}; run it without --attach and it starts its own ring"
        )
        return EXIT_CANNOT_RUN
    phases: list[tuple[str, float]] = []
    # What it started is stopped either way; under --attach it started no bank.
    cleaned = "it started no bank: attached" if args.attach else "the banks it started were stopped"
    try:
        check_outputs(args.json, args.plot)
        options = options_for(scenario, args)
        report: Report = asyncio.run(
            _until_terminated(
                _with_progress(
                    lambda phase: scenario.run(options, phase),
                    scenario.name,
                    scenario.estimate_s(options),
                    args.quiet,
                    phases,
                )
            )
        )
        report = attrs.evolve(report, phases=tuple(phases), options=attrs.asdict(options))
    except (ScenarioError, ConfigError) as error:
        _error(f"consortium scenario: {error}")
        return EXIT_CANNOT_RUN
    except _Terminated:
        _error(f"consortium scenario: {scenario.name} stopped by SIGTERM ({cleaned})")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        _error(f"consortium scenario: {scenario.name} stopped by Ctrl-C ({cleaned})")
        return EXIT_INTERRUPTED
    render(report, console)
    status = EXIT_VIOLATED if report.violated else 0
    try:
        if args.json:
            report.write_json(args.json)
            console.print(f"report written to {args.json}")
        if args.plot:
            plot(report, args.plot)
            console.print(f"plot drawn to {args.plot}")
    except PlotUnavailable as missing:
        _error(f"consortium scenario: {missing}")
    except (OSError, ValueError) as error:
        # Checked before the run; a disk that filled up meanwhile still says it in a line.
        _error(f"consortium scenario: the report was not written: {error}")
        return status or EXIT_CANNOT_RUN
    return status
