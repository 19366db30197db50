"""Every scenario in its short form against real bank processes on 127.0.0.1, with its
report checked: the money invariants held with real checks done, the faults happened and the
ring recovered from each, and the exit status says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bank.cli import main
from scenarios.catalog import TOKEN_FREE_CUT_TRIES_MAX

pytestmark = pytest.mark.processes

MONEY_INVARIANTS = (
    "audit_total",
    "no_negative_balance",
    "final_balances",
    "at_most_existed_moved",
    "no_hold_outlives_transfer",
    "transfers_all_or_nothing",
)


def run(tmp_path: Path, name: str, *options: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / f"{name}.json"
    status = main(["scenario", name, "--quiet", "--seed", "7", "--json", str(out), *options])
    return status, json.loads(out.read_text(encoding="utf-8"))


def verdicts(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in report["verdicts"]}


def assert_money_held(report: dict[str, Any]) -> None:
    assert report["money"], report["notes"]
    result = verdicts(report)
    for name in MONEY_INVARIANTS:
        assert result[name]["held"], result[name]
    assert result["operations_settled"]["held"], result["operations_settled"]
    # Every outcome is known, so the report can say what was lost: nothing.
    assert report["unaccounted_cents"] == 0
    assert result["audit_total"]["checked"] > 0
    assert result["final_balances"]["checked"] > 0
    # Every account's statement was read: each transfer was judged all or nothing.
    assert result["transfers_all_or_nothing"]["checked"] > 0


def assert_exit_matches(status: int, report: dict[str, Any]) -> None:
    """Every invariant held, and the exit status says so."""
    broken = [(v["name"], v["examples"]) for v in report["verdicts"] if not v["held"]]
    assert not broken, broken
    assert status == 0 and not report["violated"]


def assert_recovered(report: dict[str, Any], faults: list[str]) -> None:
    assert [r["fault"] for r in report["recoveries"]] == faults
    assert all(r["recovery_ms"] is not None for r in report["recoveries"]), report["recoveries"]
    result = verdicts(report)
    assert result["token_recovers"]["held"] and result["token_recovers"]["checked"] == len(faults)
    assert result["one_token_after_faults"]["held"], result["one_token_after_faults"]


def test_seed_replay_moves_at_most_what_existed(tmp_path: Path) -> None:
    status, report = run(tmp_path, "seed-replay")
    assert_exit_matches(status, report)
    assert_money_held(report)
    transfers, moved = report["tables"]
    outcomes = [row[3] for row in transfers["rows"]]
    assert len(outcomes) == 10 and "ok" in outcomes and "refused" in outcomes, outcomes
    assert all(row[4] == "yes" for row in moved["rows"]), moved["rows"]


def test_bank_workload_holds_every_invariant(tmp_path: Path) -> None:
    status, report = run(tmp_path, "bank-workload", "--duration-s", "2", "--clients", "3")
    assert_exit_matches(status, report)
    assert_money_held(report)
    assert report["by_kind"]["transfer"]["ok"] > 0
    assert report["token_visits"] > 0 and report["latency_ms_p50"] is not None


def test_kill_holder_loses_no_money_and_the_ring_recovers(tmp_path: Path) -> None:
    status, report = run(tmp_path, "kill-holder", "--duration-s", "4", "--clients", "2")
    assert_exit_matches(status, report)
    assert_recovered(report, ["kill", "restart"])
    # The bank killed held the token: the survivors had to mint a new one.
    assert report["regenerations"] >= 1, report["recoveries"]
    assert_money_held(report)


def test_kill_participant_loses_no_money_and_the_ring_recovers(tmp_path: Path) -> None:
    status, report = run(tmp_path, "kill-participant", "--duration-s", "4", "--clients", "2")
    assert_exit_matches(status, report)
    assert_recovered(report, ["kill", "restart"])
    assert_money_held(report)


def test_pause_holder_past_the_loss_timeout_regenerates_and_rejoins(tmp_path: Path) -> None:
    status, report = run(tmp_path, "pause-holder", "--duration-s", "4", "--clients", "2")
    assert_exit_matches(status, report)
    assert_recovered(report, ["pause", "resume"])
    # The bank stopped held the token: the others had to mint a new one.
    assert report["regenerations"] >= 1, report["recoveries"]
    assert_money_held(report)


def test_partition_keeps_the_minority_from_minting_and_heals(tmp_path: Path) -> None:
    status, report = run(tmp_path, "partition", "--duration-s", "4", "--clients", "2")
    assert_exit_matches(status, report)
    # First the holder is cut off (the majority mints), then a minority without the token (a
    # cut that left it a copy of the token is healed and made again).
    cuts = len(report["recoveries"]) // 2
    assert 2 <= cuts <= 1 + TOKEN_FREE_CUT_TRIES_MAX, report["recoveries"]
    assert_recovered(report, ["partition", "heal"] * cuts)
    minority = verdicts(report)["minority_never_mints"]
    assert minority["held"] and minority["checked"] > 0, minority
    assert_money_held(report)


def test_scale_reports_each_ring_size(tmp_path: Path) -> None:
    status, report = run(
        tmp_path, "scale", "--sizes", "2,3", "--duration-s", "1.5", "--clients", "2"
    )
    assert_exit_matches(status, report)
    (table,) = report["tables"]
    assert [row[0] for row in table["rows"]] == [2, 3]
    assert all(row[1] > 0 for row in table["rows"]), table["rows"]
    assert_money_held(report)
