"""The scenario machinery end to end against a fake consortium (``scenarios.fake_consortium``):
an honest fake passes every invariant with real checks done; a fake participant that credits
every deposit twice is caught, and ``consortium scenario`` exits 1."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bank.cli import main
from bank.process import free_ports
from scenarios.fake_consortium import FakeConsortium, serve
from scenarios.workload import ENROL_ATTEMPTS_MAX
from tokenring.config import load

BANKS = ["alfa", "beta", "gama"]
START_TIMEOUT_S = 10.0


@contextmanager
def fake_ring(tmp_path: Path, *, double_credit: bool) -> Iterator[Path]:
    """Serve a fake consortium from its own thread; yield the ring file that names it."""
    ports = dict(zip(BANKS, free_ports(len(BANKS)), strict=True))
    consortium = FakeConsortium(BANKS, double_credit=double_credit)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stops: list[Any] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        stops.append(loop.run_until_complete(serve(consortium, ports)))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="fake-consortium", daemon=True)
    thread.start()
    assert ready.wait(START_TIMEOUT_S), "the fake consortium did not start"
    ring = tmp_path / "ring.toml"
    lines = [
        '[consortium]\nname = "fake"\nsecret_env = "FAKE_SECRET"\n',
        "[token]\nhold_max_ms = 20\n",
    ]
    for bank in BANKS:
        url = f"http://127.0.0.1:{ports[bank]}"
        lines.append(f'[[banks]]\nid = "{bank}"\nname = "Fake {bank}"\nurl = "{url}"\n')
    ring.write_text("\n".join(lines), encoding="utf-8")
    consortium.config_digest = load(ring).digest
    try:
        yield ring
    finally:
        asyncio.run_coroutine_threadsafe(stops[0](), loop).result(START_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(START_TIMEOUT_S)
        loop.close()


def run_scenario(ring: Path, out: Path, name: str, *extra: str) -> tuple[int, dict[str, Any]]:
    status = main(
        ["scenario", name, "--attach", "-c", str(ring), "--json", str(out), "--quiet", *extra]
    )
    return status, json.loads(out.read_text(encoding="utf-8"))


def verdicts(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in report["verdicts"]}


def test_an_honest_consortium_passes_every_invariant_with_every_check_done(
    tmp_path: Path,
) -> None:
    with fake_ring(tmp_path, double_credit=False) as ring:
        status, report = run_scenario(
            ring, tmp_path / "r.json", "bank-workload", "--duration-s", "1.5", "--clients", "3"
        )
    assert status == 0, report["verdicts"]
    assert report["money"] and not report["violated"]
    assert report["committed"] > 10 and report["unknown"] == 0
    assert report["unaccounted_cents"] == 0
    assert report["by_kind"]["transfer"]["ok"] > 0
    result = verdicts(report)
    for name in ("audit_total", "no_negative_balance", "final_balances", "operations_settled"):
        assert result[name]["held"] and result[name]["checked"] > 0, result[name]
    assert report["token_visits"] > 0


def test_a_participant_that_credits_twice_is_caught_and_the_command_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with fake_ring(tmp_path, double_credit=True) as ring:
        status, report = run_scenario(
            ring, tmp_path / "r.json", "bank-workload", "--duration-s", "1", "--clients", "2"
        )
    assert status == 1
    assert report["violated"]
    result = verdicts(report)
    assert not result["final_balances"]["held"]
    assert not result["audit_total"]["held"]
    assert "ended with" in result["final_balances"]["examples"][0]
    out = capsys.readouterr().out
    assert "an invariant was violated" in out
    assert report["unaccounted_cents"] > 0 and "created" in out


def test_seed_replay_moves_at_most_what_existed_and_shows_each_transfer(tmp_path: Path) -> None:
    with fake_ring(tmp_path, double_credit=False) as ring:
        status, report = run_scenario(ring, tmp_path / "r.json", "seed-replay")
    assert status == 0, report["verdicts"]
    transfers, moved = report["tables"]
    outcomes = [row[3] for row in transfers["rows"]]
    assert len(outcomes) == 10
    # 10 x 25.00 asked from 80.00 (after the racing withdrawal) + 80.00: some must abort.
    assert 0 < outcomes.count("ok") < 10 and outcomes.count("refused") > 0
    assert all(row[4] == "yes" for row in moved["rows"]), moved["rows"]
    assert verdicts(report)["at_most_existed_moved"]["checked"] > 0


def test_fault_scenarios_refuse_attach_and_say_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ring = tmp_path / "ring.toml"
    for name in ("kill-holder", "kill-participant", "pause-holder", "partition", "scale"):
        assert main(["scenario", name, "--attach", "-c", str(ring), "--quiet"]) == 2
        assert "cannot use --attach" in capsys.readouterr().err


def test_attach_to_a_ring_that_is_not_running_is_refused_at_once_and_says_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ring = tmp_path / "ring.toml"
    lines = ['[consortium]\nname = "gone"\nsecret_env = "FAKE_SECRET"\n', "[token]\nhold_max_ms = 20\n"]
    for bank, port in zip(BANKS, free_ports(len(BANKS)), strict=True):  # ports nobody listens on
        lines.append(f'[[banks]]\nid = "{bank}"\nname = "Gone {bank}"\nurl = "http://127.0.0.1:{port}"\n')
    ring.write_text("\n".join(lines), encoding="utf-8")
    assert main(["scenario", "bank-workload", "--attach", "-c", str(ring), "--quiet", "--duration-s", "1"]) == 2
    (error,) = capsys.readouterr().err.splitlines()  # one line, however long (not a terminal)
    assert "is the ring running?" in error and "make run" in error
    assert all(bank in error for bank in BANKS)


def test_attach_with_another_ring_file_than_the_ring_runs_with_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with fake_ring(tmp_path, double_credit=False) as ring:
        other = tmp_path / "other.toml"
        other.write_text(ring.read_text().replace("hold_max_ms = 20", "hold_max_ms = 21"), encoding="utf-8")
        assert main(["scenario", "bank-workload", "--attach", "-c", str(other), "--quiet", "--duration-s", "1"]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert f"runs with another ring file than {other}" in error, error
    assert load(ring).digest in error and "attach with the file the ring was started with" in error


def test_an_unknown_scenario_is_refused_with_the_known_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["scenario", "nope"]) == 2
    assert "seed-replay" in capsys.readouterr().err
    assert main(["scenario", "--list"]) == 0
    listed = capsys.readouterr().out
    for name in ("seed-replay", "bank-workload", "kill-holder", "partition", "scale"):
        assert name in listed


def test_plot_draws_a_png_and_a_missing_matplotlib_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    picture = tmp_path / "run.png"
    with fake_ring(tmp_path, double_credit=False) as ring:
        status, report = run_scenario(
            ring, tmp_path / "r.json", "bank-workload", "--duration-s", "1", "--clients", "2",
            "--plot", str(picture),
        )  # fmt: skip
        assert status == 0
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert report["series"]["operations"] and report["series"]["audits"]
        # Without matplotlib the run still counts; the plot is refused with a clear line.
        monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
        missing = tmp_path / "missing.png"
        status, _ = run_scenario(
            ring, tmp_path / "r2.json", "bank-workload", "--duration-s", "0.5", "--clients", "1",
            "--plot", str(missing),
        )  # fmt: skip
    assert status == 0 and not missing.exists()
    (error,) = capsys.readouterr().err.splitlines()
    assert "--plot needs matplotlib" in error and ".venv/bin/pip install -e '.[plot]'" in error, error


def test_a_run_with_no_load_time_still_judges_the_audit_of_the_settled_money(tmp_path: Path) -> None:
    """With --duration-s 0 the auditor reads nothing: audit_total used to hold on the one read
    the baseline came from (which cannot disagree with itself), though every opening deposit
    was credited twice. The final reads, once everything settled, are judged too."""
    with fake_ring(tmp_path, double_credit=True) as ring:
        status, report = run_scenario(
            ring, tmp_path / "r.json", "bank-workload", "--duration-s", "0", "--clients", "1"
        )
    assert status == 1
    audit = verdicts(report)["audit_total"]
    assert not audit["held"] and audit["checked"] > 0, audit


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--json", "{tmp}/no-such-folder/r.json"], "does not exist"),
        (["--json", "{tmp}"], "is a folder"),
        (["--plot", "{tmp}/no-such-folder/p.png"], "does not exist"),
        (["--plot", "{tmp}/p.xyz"], ".png"),
        (["--duration-s", "nan"], "between 0 and 3600"),
        (["--banks", "5"], "with --attach it uses the running ring"),
        (["--sizes", "3,5"], "scale scenario only"),
    ],
    ids=[
        "json-folder-missing", "json-is-a-folder", "plot-folder-missing", "plot-format", "duration-nan",
        "banks-with-attach", "sizes-not-scale",
    ],
)
def test_an_output_that_cannot_be_written_or_an_option_the_run_cannot_use_is_refused_before_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], said: str
) -> None:
    """Refused in one line (exit 2) before any load, not with a traceback after the whole
    run: the exit status of a run is its verdict."""
    args = [option.replace("{tmp}", str(tmp_path)) for option in options]
    with fake_ring(tmp_path, double_credit=False) as ring:
        status = main(["scenario", "bank-workload", "--attach", "-c", str(ring), "--quiet", *args])
    (error,) = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and said in error and error.startswith("consortium scenario: "), error
    assert not list(tmp_path.glob("**/*.json"))


def test_the_json_report_appears_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Written beside its file, then renamed: a write that fails leaves the file as it was
    (a reader never sees half a report) and says so in a line."""
    out = tmp_path / "r.json"
    out.write_text('{"earlier": true}', encoding="utf-8")

    def refused(self: Path, target: Any) -> Path:
        raise OSError(28, "No space left on device")

    with fake_ring(tmp_path, double_credit=False) as ring:
        monkeypatch.setattr(Path, "replace", refused)
        status = main(["scenario", "bank-workload", "--attach", "-c", str(ring), "--json", str(out), "--quiet",
                       "--duration-s", "0.5", "--clients", "1"])  # fmt: skip
    assert status == 2
    assert json.loads(out.read_text(encoding="utf-8")) == {"earlier": True}
    (error,) = capsys.readouterr().err.strip().splitlines()
    assert error.startswith("consortium scenario: the report was not written:") and "No space" in error, error


def test_runs_again_with_one_seed_on_one_ring_each_find_new_customers(tmp_path: Path) -> None:
    """Under --attach, a document an earlier run registered is replaced by a new one. The
    new ones are not drawn from the seed: runs with the same seed would try the same ones,
    one more each time, until every one a customer may try is taken ("no free document";
    sooner at a real bank, whose brake on wrong passwords counts each refused sign-up)."""
    with fake_ring(tmp_path, double_credit=False) as ring:
        for run in range(ENROL_ATTEMPTS_MAX + 2):
            status, report = run_scenario(
                ring, tmp_path / f"r{run}.json", "bank-workload", "--seed", "7", "--duration-s", "0", "--clients", "2"
            )
            assert status == 0, (run, report.get("error"))


def test_a_scenario_whose_load_is_written_out_refuses_load_options_and_the_list_shows_defaults(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the table's cells on one line each
    assert main(["scenario", "seed-replay", "--clients", "3"]) == 2
    assert "seed-replay takes no --clients or --duration-s" in capsys.readouterr().err
    assert main(["scenario", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "3 banks, 8 s, 6 clients" in listed and "a fixed load" in listed  # bank-workload, seed-replay
