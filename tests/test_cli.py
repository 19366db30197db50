"""The ``consortium`` command: ``bank`` refuses a missing secret, ``up`` starts and stops every
bank leaving nothing behind, ``status`` reports each bank as a table or JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bank.process import Consortium, free_ports, get_json, write_ring_file
from tokenring.config import RingConfig
import waiting
from waiting import children_of

WAIT_S = 30.0
"""The longest a command here may take (generous: the machine is shared)."""


def consortium(*args: str, env: dict[str, str] | None = None, timeout_s: float = WAIT_S
               ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "bank.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
    )


def env_without_secret() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CONSORTIUM_SECRET", None)
    return env


@pytest.fixture
def ring_file(tmp_path: Path) -> RingConfig:
    return write_ring_file(
        tmp_path / "ring.toml",
        ("alfa", "beta", "gama"),
        hold_max_ms=20,
        handoff_timeout_ms=150,
        loss_timeout_ms=800,
        data_dir=str(tmp_path / "data"),
    )


def test_help_names_every_command() -> None:
    result = consortium("--help")
    assert result.returncode == 0
    for command in ("up", "bank", "status", "scenario"):
        assert command in result.stdout


def test_bank_refuses_an_unset_secret_in_one_line(ring_file: RingConfig) -> None:
    result = consortium("bank", "alfa", "-c", str(ring_file.path), env=env_without_secret())
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(ring_file.path) in lines[0] and "CONSORTIUM_SECRET" in lines[0]


def test_bank_refuses_an_unknown_id_in_one_line(ring_file: RingConfig) -> None:
    env = dict(os.environ, CONSORTIUM_SECRET="k")
    result = consortium("bank", "zulu", "-c", str(ring_file.path), env=env)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "zulu" in result.stderr


@pytest.mark.parametrize("command", ["bank", "up"])
def test_a_data_dir_that_is_a_file_is_refused_in_one_line(tmp_path: Path, command: str) -> None:
    (tmp_path / "notadir").write_text("a file, where the banks' folder should be")
    config = write_ring_file(tmp_path / "ring.toml", ("alfa", "beta"), data_dir=str(tmp_path / "notadir"))
    args = ("bank", "alfa") if command == "bank" else ("up",)
    result = consortium(*args, "-c", str(config.path), env=dict(os.environ, CONSORTIUM_SECRET="k"))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line == (
        f"consortium: {config.path}: consortium.data_dir: {tmp_path / 'notadir'} is a file, not a folder"
    )


def test_status_interval_out_of_range_says_what_is_taken(ring_file: RingConfig) -> None:
    for interval in ("0", "61"):
        result = consortium("status", "-c", str(ring_file.path), "--interval", interval)
        assert result.returncode == 2
        assert result.stderr == (
            f"consortium: --interval must be above 0 and at most 60 seconds, not {interval}\n"
        )


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def read_until(process: subprocess.Popen[bytes], marker: str, timeout_s: float) -> str:
    """The process's output up to the line containing ``marker``."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    os.set_blocking(fd, False)
    seen = b""
    deadline = time.monotonic() + timeout_s
    while marker.encode() not in seen:
        if time.monotonic() > deadline or process.poll() is not None:
            raise AssertionError(f"no {marker!r} in the output: {seen!r}")
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            chunk = b""
        if chunk:
            seen += chunk
        else:
            time.sleep(0.05)
    return seen.decode()


@pytest.mark.processes
def test_up_starts_every_bank_and_sigterm_stops_them_all(ring_file: RingConfig) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "bank.cli", "up", "-c", str(ring_file.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env_without_secret(),
    )
    try:
        output = read_until(process, "Ctrl-C stops every bank.", WAIT_S)
        assert "made a secret for this run" in output
        for bank in ring_file.banks:
            assert bank.url in output
            health = get_json(bank.url + "/healthz")
            assert isinstance(health, dict) and health["status"] == "ok" and health["bank"] == bank.id
        assert "web terminal" in output
        banks = children_of(process.pid)
        assert len(banks) == len(ring_file.banks)
        # /healthz names the process that answers: the children of this command.
        assert sorted(get_json(bank.url + "/healthz")["pid"] for bank in ring_file.banks) == sorted(banks)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=WAIT_S) == 0
        assert process.stdout is not None
        # Every bank left the ring and exited cleanly (none killed by a signal).
        assert process.stdout.read().decode().rstrip().endswith("Stopped.")
        assert all(gone(pid) for pid in banks)
        for bank in ring_file.banks:
            assert get_json(bank.url + "/healthz", timeout_s=0.5) is None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in children_of(process.pid):
            os.kill(pid, signal.SIGKILL)
        assert process.stdout is not None
        process.stdout.close()


@pytest.mark.processes
def test_a_second_up_of_a_running_ring_says_why_and_exits_1(ring_file: RingConfig, tmp_path: Path) -> None:
    first = Consortium(ring_file, secret="first-run-key", log_dir=tmp_path / "first", parent_watch=True)
    first.start()
    try:
        before = {bank_id: bank.pid for bank_id, bank in first.banks.items()}
        result = consortium("up", "-c", str(ring_file.path), env=env_without_secret())
        # It finds every address taken before it starts a bank: one line naming them all, and
        # nothing written into the running banks' logs (nor a log of its own opened).
        assert result.returncode == 1, result.stdout + result.stderr
        (line,) = result.stderr.splitlines()
        assert "address already in use" in line.lower(), line
        assert all(f"{bank.id} ({bank.url})" in line for bank in ring_file.banks), line
        assert "web terminal" not in result.stdout
        assert not (ring_file.data_dir / "logs").exists()
        # The running ring was not disturbed: the same processes answer, as one ring.
        for bank_id, bank in first.banks.items():
            assert bank.alive() and get_json(bank.url + "/healthz")["pid"] == before[bank_id]
    finally:
        first.stop()


@pytest.fixture
def running(ring_file: RingConfig) -> Iterator[Consortium]:
    ring = Consortium(ring_file, secret="status-test-key", parent_watch=True)
    ring.start()
    try:
        yield ring
    finally:
        ring.stop()


@pytest.mark.processes
def test_status_reports_each_bank_the_holder_and_visits_per_second(running: Consortium) -> None:
    path = str(running.config.path)
    deadline = time.monotonic() + WAIT_S
    while True:  # the first token may take a loss timeout to be minted
        report = json.loads(consortium("status", "-c", path, "--json", "--interval", "0.5").stdout)
        if all(b["visits_per_s"] for b in report["banks"]) or time.monotonic() > deadline:
            break
    assert report["up"] == 3
    assert [b["bank"] for b in report["banks"]] == ["alfa", "beta", "gama"]
    assert report["config"] == running.config.digest
    for bank in report["banks"]:
        assert bank["up"] is True and bank["generation"] >= 1
        assert bank["visits_per_s"] > 0
        # Every bank runs with this very file, and sees the others do.
        assert bank["config"] == running.config.digest and bank["config_matches"] is True
        assert bank["config_differs"] == []
    assert len(report["holders"]) <= 1

    running["gama"].kill()
    # Said as it is: its log's last lines would explain nothing (it was not asked to stop).
    assert running["gama"].exit_note().startswith("killed by SIGKILL"), running["gama"].exit_note()
    table = consortium("status", "-c", path, "--interval", "0.2")
    assert table.returncode == 0
    rows = {line.split()[1]: line for line in table.stdout.splitlines()
            if line.strip().startswith("│") and len(line.split()) > 2}  # fmt: skip
    assert "down" in rows["gama"] and "up" in rows["alfa"] and "up" in rows["beta"]
    assert "another ring file" not in table.stdout


def test_status_with_no_bank_running_says_so_and_exits_1(ring_file: RingConfig) -> None:
    result = consortium("status", "-c", str(ring_file.path), "--json", "--interval", "0.1")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["up"] == 0 and not any(b["up"] for b in report["banks"])
    table = consortium("status", "-c", str(ring_file.path), "--interval", "0.1")
    assert table.returncode == 1 and "No bank answered" in table.stdout
    assert "held the token" not in table.stdout  # nothing answered: no sample of the token


def test_bank_loop_option_names_the_event_loop_and_refuses_others() -> None:
    from bank.cli import build_parser, loop_factory

    args = build_parser().parse_args(["bank", "alfa", "--loop", "asyncio"])
    assert args.loop == "asyncio" and loop_factory("asyncio") is None
    assert build_parser().parse_args(["bank", "alfa"]).loop == "uvloop"
    import uvloop

    assert loop_factory("uvloop") is uvloop.new_event_loop
    refused = consortium("bank", "alfa", "--loop", "trio")
    assert refused.returncode == 2 and "invalid choice: 'trio'" in refused.stderr


@pytest.mark.processes
def test_banks_on_either_event_loop_share_one_ring(ring_file: RingConfig, tmp_path: Path) -> None:
    ring = Consortium(ring_file, secret="loop-test-key", log_dir=tmp_path / "logs", parent_watch=True)
    ring["beta"].extra_args = ["--loop", "asyncio"]
    ring.start()
    try:
        deadline = time.monotonic() + WAIT_S
        visits: dict[str, int] = {}
        while time.monotonic() < deadline:
            visits = {b: get_json(ring[b].url + "/ring/status")["visits"] for b in ring.banks}
            if all(count >= 2 for count in visits.values()):
                break
            time.sleep(0.1)
        assert all(count >= 2 for count in visits.values()), visits
    finally:
        ring.stop()
    loops = {}
    for bank in ("alfa", "beta", "gama"):
        for line in (tmp_path / "logs" / f"{bank}.log").read_text().splitlines():
            if '"bank.serving"' in line:
                loops[bank] = json.loads(line)["loop"]
    assert loops == {"alfa": "uvloop", "beta": "asyncio", "gama": "uvloop"}


def test_a_started_bank_freezes_its_start_up_objects_and_collects_young_ones_less_often() -> None:
    """What ``consortium bank`` does once it serves (bank.server.tune_gc), in a process of
    its own: the test process's collector is left alone."""
    code = (
        "import gc; from bank.server import GC_YOUNG_THRESHOLD, tune_gc; tune_gc(); "
        "print(gc.get_threshold()[0] == GC_YOUNG_THRESHOLD, gc.get_freeze_count() > 1000)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT_S)
    assert done.stdout.split() == ["True", "True"], done.stderr


def test_a_bank_that_cannot_have_its_address_starts_nothing(tmp_path: Path) -> None:
    """bank.server.serve takes the address first: when another process serves there, the
    application (its ledger, its ring member) never starts."""
    import asyncio
    import socket
    from collections.abc import AsyncIterator

    from aiohttp import web

    from bank.server import serve

    started: list[str] = []

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        started.append("start-up")
        yield

    app = web.Application()
    app.cleanup_ctx.append(lifecycle)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            asyncio.run(serve(app, "127.0.0.1", port))
    assert started == []


def test_up_names_every_bank_whose_address_is_taken_before_starting_any(tmp_path: Path) -> None:
    """What ``up`` asks before it starts a bank or opens a log: each taken address, not only
    the first, and none that is free."""
    import errno
    import socket

    from bank.cli import main
    from bank.server import unavailable_addresses

    with socket.socket() as alfa, socket.socket() as gama:
        for taken in (alfa, gama):
            taken.bind(("127.0.0.1", 0))
            taken.listen()
        ports = [alfa.getsockname()[1], free_ports(1)[0], gama.getsockname()[1]]
        config = write_ring_file(
            tmp_path / "ring.toml", ("alfa", "beta", "gama"), ports=ports, data_dir=str(tmp_path / "data")
        )
        unavailable = unavailable_addresses(config)
        assert sorted(unavailable) == ["alfa", "gama"]
        assert all(error.errno == errno.EADDRINUSE for error in unavailable.values())
        assert main(["up", "-c", str(config.path)]) == 1
    assert not (tmp_path / "data").exists()  # no log opened, no folder made


def test_a_bank_whose_database_is_in_use_speaks_for_no_one(ring_file: RingConfig) -> None:
    """A second process of a bank, at another address (a second ring file, the same data
    folder): its ledger is refused the database before its ring member starts."""
    import asyncio

    from structlog.testing import capture_logs

    from bank.ledger import Ledger, LedgerInUse
    from bank.server import build_app, serve

    bank = ring_file.bank("alfa")

    async def second_process() -> list[str]:
        running = await Ledger.open(ring_file.data_dir / "alfa.sqlite3")  # the bank that runs
        try:
            with capture_logs() as logged, pytest.raises(LedgerInUse):
                await serve(build_app(ring_file, "alfa", secret=b"same-secret"), bank.host, bank.port)
        finally:
            await running.close()
        return [entry["event"] for entry in logged]

    events = asyncio.run(second_process())
    assert "ring.started" not in events, events


@pytest.mark.parametrize("damage", ["not a database", "newer schema", "a folder where the file goes"])
def test_a_bank_whose_database_cannot_be_used_says_so_in_one_line(ring_file: RingConfig, damage: str) -> None:
    import sqlite3

    path = ring_file.data_dir / "alfa.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    if damage == "not a database":
        path.write_bytes(b"these bytes are no SQLite database " * 200)
        expected = "file is not a database"
    elif damage == "newer schema":
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (99)")
        expected = "schema is at version 99"
    else:
        path.mkdir()
        expected = "unable to open database file"
    env = dict(os.environ, CONSORTIUM_SECRET="s")
    result = consortium("bank", "alfa", "-c", str(ring_file.path), env=env)
    assert result.returncode == 1, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("consortium:")]
    assert line.startswith(f"consortium: bank alfa: database {path}: ") and expected in line, result.stderr
    assert "Traceback" not in result.stderr


def test_a_connection_that_never_finishes_a_request_is_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that opens a connection and never completes its request's headers does not
    keep it (and a file descriptor of the bank) for aiohttp's default hour: enough of those
    left a bank unable to accept any connection, its customers' or the other banks'."""
    import asyncio

    from bank import server

    monkeypatch.setattr(server, "KEEPALIVE_TIMEOUT_S", 0.5, raising=False)
    config = write_ring_file(tmp_path / "ring.toml", ["alfa"], data_dir=str(tmp_path / "data"))
    bank = config.bank("alfa")

    async def held_for() -> bytes:
        stop, ready = asyncio.Event(), asyncio.Event()
        app = server.build_app(config, "alfa", secret=b"a-key")
        serving = asyncio.create_task(server.serve(app, bank.host, bank.port, stop=stop, on_ready=ready.set))
        await asyncio.wait_for(ready.wait(), WAIT_S)
        try:
            return await waiting.left_by_the_server(bank.host, bank.port)
        finally:
            stop.set()
            await serving

    assert asyncio.run(held_for()) == b""
