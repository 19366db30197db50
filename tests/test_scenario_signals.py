"""``consortium scenario`` ended from outside: SIGTERM stops its banks and removes its
temporary folder as Ctrl-C does; killed outright, it leaves banks that stop by themselves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scenarios.runner import EXIT_INTERRUPTED, EXIT_TERMINATED
from waiting import children_of

pytestmark = pytest.mark.processes

BANKS = 2
WAIT_S = 30.0
"""The longest the banks may take to start, or to be gone (generous: the machine is shared)."""
POLL_S = 0.1


def gone(pid: int) -> bool:
    """The process has exited (an orphan's exit may wait a while to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_for(condition: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, condition
        time.sleep(POLL_S)


@pytest.fixture
def scenario(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, list[int]]]:
    """A bank workload far longer than the test, its temporary folder under ``tmp_path``,
    once every bank of its ring serves: the command, the folder, the banks' pids."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bank.cli", "scenario", "bank-workload", "--quiet",
         "--banks", str(BANKS), "--clients", "1", "--duration-s", "600"],
        env=dict(os.environ, TMPDIR=str(tmp_path)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    banks: list[int] = []
    try:
        folders: list[Path] = []

        def serving() -> bool:
            assert process.poll() is None, process.communicate()[1]
            folders[:] = list(tmp_path.glob("consortium-scenario-*"))
            logs = [folder / f"{bank}.log" for folder in folders for bank in ("alfa", "beta")]
            return bool(folders) and all(
                log.exists() and "bank.serving" in log.read_text(errors="replace") for log in logs
            )

        wait_for("the scenario's banks did not start", serving)
        banks[:] = children_of(process.pid)
        assert len(banks) == BANKS, banks
        yield process, folders[0], banks
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in banks:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
        assert process.stderr is not None
        process.stderr.close()


@pytest.mark.parametrize(
    ("signum", "said", "status"),
    [(signal.SIGTERM, "stopped by SIGTERM", EXIT_TERMINATED), (signal.SIGINT, "stopped by Ctrl-C", EXIT_INTERRUPTED)],
    ids=["SIGTERM", "Ctrl-C"],
)
def test_sigterm_or_ctrl_c_stops_the_scenarios_banks_and_removes_its_folder(
    scenario: tuple[subprocess.Popen[str], Path, list[int]], signum: int, said: str, status: int
) -> None:
    process, folder, banks = scenario
    process.send_signal(signum)
    _, error = process.communicate(timeout=WAIT_S)
    assert process.returncode == status, error
    # One line, not a traceback.
    assert said in error and "the banks it started were stopped" in error and "Traceback" not in error, error
    assert all(gone(pid) for pid in banks)
    assert not folder.exists()


def test_banks_of_a_scenario_killed_outright_stop_by_themselves(
    scenario: tuple[subprocess.Popen[str], Path, list[int]],
) -> None:
    process, _, banks = scenario
    process.kill()
    process.wait(timeout=WAIT_S)
    # Reparented, each bank sees its parent gone (bank.server.PARENT_POLL_S) and leaves.
    wait_for("a bank outlived its scenario", lambda: all(gone(pid) for pid in banks))
