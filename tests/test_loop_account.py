"""benchmarks/loop_account: a bank's event loop CPU by activity, written on SIGUSR1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

FOLDER = Path(__file__).resolve().parent.parent / "benchmarks" / "loop_account"
WAIT_S = 20.0

# A stand-in for a bank: "bank.cli" is on its command line, so the account is installed. It
# runs a task that burns CPU in steps, tells the test it is done, and waits for the signal.
CHILD = """
import asyncio, sys, time

async def busy_worker():
    for _ in range(5):
        deadline = time.thread_time() + 0.02
        while time.thread_time() < deadline:
            pass
        await asyncio.sleep(0)

async def main():
    await asyncio.get_running_loop().create_task(busy_worker())
    print("ready", flush=True)
    await asyncio.sleep(30)

asyncio.run(main())
"""


def _child(tmp_path: Path, *, account_dir: str | None) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(FOLDER))
    env.pop("LOOP_ACCOUNT_DIR", None)
    if account_dir is not None:
        env["LOOP_ACCOUNT_DIR"] = account_dir
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, "bank.cli"], env=env, stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )


def _ready(child: subprocess.Popen[str]) -> None:
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"


def test_a_bank_writes_its_loop_cpu_by_activity_when_asked(tmp_path: Path) -> None:
    with _child(tmp_path, account_dir=str(tmp_path)) as child:
        try:
            _ready(child)
            path = tmp_path / f"{child.pid}.json"
            # Written at start-up, empty: the handler is there.
            assert json.loads(path.read_text())["seq"] == 1
            child.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + WAIT_S
            while (account := json.loads(path.read_text()))["seq"] < 2:
                assert time.monotonic() < deadline, "no account written"
                time.sleep(0.01)
        finally:
            child.kill()
    assert account["seq"] == 2
    name = "task busy_worker"
    # Five steps that burn 20 ms of CPU each, and a last one that ends the task.
    assert account["steps"][name] == 6
    assert account["started"][name] == 1
    assert 0.1e9 <= account["spent_ns"][name] < 1e9
    assert not list(tmp_path.glob("*.tmp"))


def test_nothing_is_installed_without_the_folder(tmp_path: Path) -> None:
    with _child(tmp_path, account_dir=None) as child:
        try:
            _ready(child)
            child.send_signal(signal.SIGUSR1)  # no handler: the signal ends the process
            assert child.wait(timeout=WAIT_S) == -signal.SIGUSR1
        finally:
            child.kill()
    assert not list(tmp_path.iterdir())
