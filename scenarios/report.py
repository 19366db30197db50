"""The report of one scenario run: figures, recovery times, one verdict per invariant.

Built from a history (``scenarios.history``), the checker's verdicts (``scenarios.checker``)
and what the ring monitor saw (``scenarios.monitor``); shown as rich tables, written as JSON
(``--json``) and drawn with matplotlib (``--plot``, an optional dependency).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console
from rich.table import Table

from scenarios.checker import Verdict, audited_money_cents, unaccounted_cents
from scenarios.history import History, Kind, Outcome

__all__ = [
    "PlotUnavailable",
    "Recovery",
    "Report",
    "ReportTable",
    "merge_verdicts",
    "percentile",
    "plot",
    "render",
    "summarize",
]

PLOT_BUCKET_MS = 500
REASONS_SHOWN_MAX = 8
"""The report table lists this many refusal reasons, the most frequent first."""
"""The width of one throughput bar in the plot."""


class PlotUnavailable(Exception):
    """``--plot`` was asked for but matplotlib is not installed."""


@attrs.frozen
class Recovery:
    """How long the ring took to get over one fault."""

    fault: str
    """What was done (``kill``, ``pause``, ``partition``, ``heal``, ``restart``...)."""
    target: str
    """The bank(s) it was done to."""
    at_ms: float
    """When, on the scenario clock."""
    measure: str
    """What "recovered" means here, in words."""
    recovery_ms: float | None
    """How long until it held; ``None`` when it did not within the scenario's bound."""
    detail: str = ""
    """What else is worth knowing (``while it held the token``)."""


@attrs.frozen
class ReportTable:
    """A scenario's own table (seed-replay's transfers, scale's ring sizes)."""

    title: str
    """Shown above it."""
    columns: tuple[str, ...]
    """Column headings."""
    rows: tuple[tuple[Any, ...], ...]
    """One tuple per row, one cell per column."""


@attrs.frozen
class Report:
    """Everything ``consortium scenario`` prints, writes and draws for one run."""

    scenario: str
    """The scenario's name."""
    seed: int
    """The seed it ran with."""
    banks: int
    """Banks in the ring (the largest, for ``scale``)."""
    attached: bool
    """Whether it ran against a ring it did not start."""
    load_s: float
    """How long the load ran, in seconds."""
    operations: int
    """Operations sent (deposits, withdrawals, transfers)."""
    committed: int
    """Operations that took effect (deposits, withdrawals, committed transfers)."""
    aborted: int
    """Operations definitely refused (4xx, aborted transfers)."""
    unknown: int
    """Operations whose outcome stayed unknown."""
    by_kind: dict[str, dict[str, int]]
    """Per kind of operation, how many ended each way."""
    throughput_ops_s: float
    """Operations that ended (either way) per second of load."""
    latency_ms_p50: float | None
    """Median time from sending an operation to its final answer."""
    latency_ms_p99: float | None
    """99th percentile of the same."""
    token_visits: int | None
    """Token visits counted at every bank while it ran (``None``: not observed)."""
    regenerations: int | None
    """New token generations minted while it ran."""
    recoveries: tuple[Recovery, ...]
    """One per fault, in order."""
    verdicts: tuple[Verdict, ...]
    """One per invariant (the checker's, then the ring's)."""
    notes: tuple[str, ...] = ()
    """Lines worth reading under the tables."""
    tables: tuple[ReportTable, ...] = ()
    """The scenario's own tables."""
    money: bool = True
    """Whether money load ran (``False`` when the banks do not serve the client API)."""
    series: dict[str, Any] = attrs.field(factory=dict)
    """Points for the plot: operations, audit totals, fault moments."""
    unaccounted_cents: int | None = None
    """Money the accounts ended with minus what the committed operations put there
    (negative: lost, positive: created; ``None``: not determined)."""
    reasons: dict[str, int] = attrs.field(factory=dict)
    """Why operations were refused or stayed unknown: ``kind: reason`` -> count."""
    options: dict[str, Any] = attrs.field(factory=dict)
    """The options it ran with (seed, banks, duration, clients, sizes, attach)."""
    phases: tuple[tuple[str, float], ...] = ()
    """What the run was doing when: (phase, seconds since the command started)."""
    history: dict[str, Any] = attrs.field(factory=dict)
    """The whole history the checker judged (JSON form), for whoever wants to look again."""
    resolved_late: int = 0
    """Operations whose answer was lost and that ended only when asked again after the load
    (counted in no latency or throughput figure)."""

    @property
    def violated(self) -> bool:
        return any(not v.held for v in self.verdicts)

    def to_json(self) -> dict[str, Any]:
        document = attrs.asdict(self, recurse=True)
        document["violated"] = self.violated
        return document

    def write_json(self, path: str | Path) -> None:
        """The report as JSON at ``path``: written whole beside it, then renamed, so that a
        reader never sees half a report."""
        target = Path(path)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        partial.replace(target)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` in 0..1) of ``values``; ``None`` if empty."""
    assert 0 <= fraction <= 1
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def merge_verdicts(groups: Iterable[tuple[str, Sequence[Verdict]]]) -> tuple[Verdict, ...]:
    """One verdict per invariant over several runs (``scale``); examples name their run."""
    merged: dict[str, Verdict] = {}
    for label, verdicts in groups:
        for verdict in verdicts:
            before = merged.get(verdict.name)
            examples = tuple(f"[{label}] {e}" for e in verdict.examples)
            if before is None:
                merged[verdict.name] = attrs.evolve(verdict, examples=examples)
            else:
                merged[verdict.name] = Verdict(
                    name=verdict.name,
                    held=before.held and verdict.held,
                    checked=before.checked + verdict.checked,
                    violations=before.violations + verdict.violations,
                    examples=(before.examples + examples)[:5],
                )
    return tuple(merged.values())


def summarize(history: History) -> dict[str, Any]:
    """The operation figures of a history: counts, throughput, latency, plot series."""
    ops = history.operations
    by_kind: dict[str, dict[str, int]] = {}
    for op in ops:
        counts = by_kind.setdefault(str(op.kind), {str(o): 0 for o in Outcome})
        counts[str(op.outcome)] += 1
    # Operations that ended only when asked again after the load (their first answer lost)
    # ended then: they would count the scenario's bookkeeping as the banks' latency.
    latencies = [op.latency_ms for op in ops if op.latency_ms is not None and not op.late]
    ended = [op for op in ops if op.complete_ms is not None and not op.late]
    if ended:
        span_ms = max(op.complete_ms or 0 for op in ended) - min(op.invoke_ms for op in ops)
    else:
        span_ms = 0.0
    reasons: dict[str, int] = {}
    for op in ops:
        if op.outcome is not Outcome.OK:
            label = f"{op.kind} {op.outcome}: {op.reason or 'no answer'}"
            reasons[label] = reasons.get(label, 0) + 1
    return {
        "unaccounted_cents": unaccounted_cents(history) if history.accounts else None,
        "reasons": dict(sorted(reasons.items(), key=lambda item: -item[1])),
        "operations": len(ops),
        "committed": sum(op.outcome is Outcome.OK for op in ops),
        "aborted": sum(op.outcome is Outcome.REFUSED for op in ops),
        "unknown": sum(op.outcome is Outcome.UNKNOWN for op in ops),
        "resolved_late": sum(op.late for op in ops),
        "by_kind": by_kind,
        "throughput_ops_s": len(ended) / (span_ms / 1000) if span_ms > 0 else 0.0,
        "latency_ms_p50": percentile(latencies, 0.5),
        "latency_ms_p99": percentile(latencies, 0.99),
        "series": {
            "operations": [
                [round(op.complete_ms, 1), round(op.latency_ms or 0, 1), str(op.kind)]
                for op in ended
                if op.complete_ms is not None
            ],
            "audits": [
                [round(a.complete_ms, 1), audited_money_cents(a), a.expected_cents]
                for a in history.audits
                if a.ok and a.total_cents is not None
            ],
            "faults": [[round(f.at_ms, 1), f"{f.action} {f.target}"] for f in history.faults],
        },
    }


def _cents(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 100:,.2f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _unaccounted(report: Report) -> str:
    if not report.money:
        return "-"
    if report.unaccounted_cents is None:
        return "not determined"
    if report.unaccounted_cents == 0:
        return "nothing"
    verb = "created" if report.unaccounted_cents > 0 else "lost"
    return f"[red]{_cents(abs(report.unaccounted_cents))} {verb}[/red]"


def render(report: Report, console: Console) -> None:
    """Print the report as tables."""
    summary = Table(title=f"scenario {report.scenario} (seed {report.seed})", show_header=False)
    summary.add_column("figure", style="bold")
    summary.add_column("value", justify="right")
    ring = f"{report.banks} banks" + (" (attached)" if report.attached else "")
    rows: list[tuple[str, str]] = [
        ("ring", ring),
        ("load", f"{report.load_s:.1f} s"),
        ("operations", str(report.operations)),
        ("committed", str(report.committed)),
        ("aborted / refused", str(report.aborted)),
        ("unknown", str(report.unknown)),
        ("ended when asked again after the load", str(report.resolved_late)),
        ("throughput", f"{report.throughput_ops_s:,.1f} ops/s"),
        ("latency p50", _ms(report.latency_ms_p50)),
        ("latency p99", _ms(report.latency_ms_p99)),
        ("money lost or created", _unaccounted(report)),
        ("token visits", "-" if report.token_visits is None else str(report.token_visits)),
        ("regenerations", "-" if report.regenerations is None else str(report.regenerations)),
    ]
    for kind in Kind:
        counts = report.by_kind.get(str(kind))
        if counts:
            rows.append(
                (f"  {kind}s", ", ".join(f"{n} {outcome}" for outcome, n in counts.items() if n))
            )
    for name, value in rows:
        summary.add_row(name, value)
    console.print(summary)

    if report.reasons:
        reasons = Table(title="why operations did not commit")
        reasons.add_column("operation, outcome: reason")
        reasons.add_column("count", justify="right")
        for label, count in list(report.reasons.items())[:REASONS_SHOWN_MAX]:
            reasons.add_row(label, str(count))
        console.print(reasons)

    if report.recoveries:
        recoveries = Table(title="faults and recovery")
        for column in ("at", "fault", "target", "detail", "recovered when", "after"):
            recoveries.add_column(column)
        for recovery in report.recoveries:
            after = (
                "[red]not within bound[/red]"
                if recovery.recovery_ms is None
                else f"{recovery.recovery_ms:,.0f} ms"
            )
            recoveries.add_row(
                f"{recovery.at_ms / 1000:.2f} s",
                recovery.fault,
                recovery.target,
                recovery.detail,
                recovery.measure,
                after,
            )
        console.print(recoveries)

    for extra in report.tables:
        table = Table(title=extra.title)
        for column in extra.columns:
            table.add_column(column)
        for row in extra.rows:
            table.add_row(*(str(cell) for cell in row))
        console.print(table)

    verdicts = Table(title="invariants")
    # The names are what a reader looks up (docs/scenarios.md): whole, never cut to fit; the
    # other columns give way (an example wraps), at 80 columns too (off a terminal).
    longest = max((len(verdict.name) for verdict in report.verdicts), default=0)
    verdicts.add_column("invariant", no_wrap=True, min_width=longest)
    for column in ("verdict", "checked", "violations", "first violation"):
        verdicts.add_column(column)
    for verdict in report.verdicts:
        style = "red bold" if not verdict.held else ("green" if verdict.checked else "yellow")
        verdicts.add_row(
            verdict.name,
            f"[{style}]{verdict.label}[/{style}]",
            str(verdict.checked),
            str(verdict.violations),
            verdict.examples[0] if verdict.examples else "",
        )
    console.print(verdicts)
    for note in report.notes:
        console.print(f"note: {note}")
    if report.violated:
        console.print("[red bold]an invariant was violated[/red bold]")
    else:
        console.print("[green]every invariant held[/green]")


def plot(report: Report, path: str | Path) -> None:
    """Draw throughput and latency over time and the audited total over time, with the
    fault moments marked; :class:`PlotUnavailable` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib: .venv/bin/pip install -e '.[plot]' (in a clone of the project)"
        ) from None
    operations = report.series.get("operations", [])
    audits = report.series.get("audits", [])
    faults = report.series.get("faults", [])
    figure, (top, middle, bottom) = plt.subplots(3, 1, sharex=True, figsize=(10, 8))
    if operations:
        last_ms = max(point[0] for point in operations)
        buckets = [0] * (int(last_ms // PLOT_BUCKET_MS) + 1)
        for point in operations:
            buckets[int(point[0] // PLOT_BUCKET_MS)] += 1
        times = [i * PLOT_BUCKET_MS / 1000 for i in range(len(buckets))]
        top.bar(times, [n * 1000 / PLOT_BUCKET_MS for n in buckets],
                width=PLOT_BUCKET_MS / 1000, align="edge")  # fmt: skip
        middle.scatter([p[0] / 1000 for p in operations], [p[1] for p in operations], s=4)
    top.set_ylabel("ops/s")
    middle.set_ylabel("latency (ms)")
    if audits:
        bottom.plot([a[0] / 1000 for a in audits], [a[1] / 100 for a in audits], label="audited")
        expected = [(a[0] / 1000, a[2] / 100) for a in audits if a[2] is not None]
        if expected:
            bottom.plot(*zip(*expected, strict=True), linestyle="--", label="expected")
        bottom.legend()
    bottom.set_ylabel("consortium total")
    bottom.set_xlabel("seconds")
    for at_ms, label in faults:
        for axis in (top, middle, bottom):
            axis.axvline(at_ms / 1000, color="red", linestyle=":")
        top.annotate(label, (at_ms / 1000, 0), rotation=90, fontsize=7, color="red",
                     xycoords=("data", "axes fraction"), va="bottom")  # fmt: skip
    figure.suptitle(f"scenario {report.scenario} (seed {report.seed})")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
