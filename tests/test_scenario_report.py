"""What ``consortium scenario`` prints when its output is no terminal (a pipe, a file, CI):
an error stays one line, and the report's invariant names stay whole at 80 columns."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from bank.cli import main
from scenarios.checker import INVARIANTS, Verdict
from scenarios.report import Report, render

NARROW_COLUMNS = 80
"""What rich assumes when the output is not a terminal."""
NAMES = (*INVARIANTS, "token_recovers", "one_token_after_faults", "minority_never_mints")
"""Every verdict a report may hold: the money invariants and the ring's."""


def test_an_error_is_one_line_however_long(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    typo = tmp_path / ("a-folder-with-a-long-name-" * 4) / "typo.toml"
    assert main(["scenario", "bank-workload", "--attach", "-c", str(typo), "--quiet"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"consortium scenario: {typo}: file not found"
    assert len(line) > NARROW_COLUMNS


def test_the_report_shows_every_invariant_name_whole_at_80_columns() -> None:
    example = "alfa/1: " + "moved more than the account held before the burst " * 3
    verdicts = tuple(
        Verdict(name, held=False, checked=3, violations=1, examples=(example,)) for name in NAMES
    )
    report = Report(
        scenario="bank-workload", seed=1, banks=3, attached=False, load_s=1.0, operations=0,
        committed=0, aborted=0, unknown=0, by_kind={}, throughput_ops_s=0.0, latency_ms_p50=None,
        latency_ms_p99=None, token_visits=None, regenerations=None, recoveries=(), verdicts=verdicts,
    )  # fmt: skip
    out = io.StringIO()
    render(report, Console(file=out, width=NARROW_COLUMNS))
    printed = out.getvalue()
    assert max(len(line) for line in printed.splitlines()) <= NARROW_COLUMNS
    for name in NAMES:
        assert name in printed, printed
