"""Logging: configured once, JSON lines off a terminal, and every ring line names its bank,
generation and seq."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from bank.process import write_ring_file
from tokenring import logs
from tokenring.ring import Ring


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    was_configured = logs._configured
    try:
        yield
    finally:
        structlog.configure(**saved)
        logs._configured = was_configured


def test_json_lines_off_a_terminal_with_context_vars(restore_structlog: None) -> None:
    stream = io.StringIO()
    logs.configure("info", stream=stream, force=True)
    log = structlog.get_logger("test")
    with structlog.contextvars.bound_contextvars(request_id="r-1"):
        log.info("ring.something", bank="alfa")
    log.debug("dropped at info")
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "ring.something" and record["level"] == "info"
    assert record["request_id"] == "r-1" and record["bank"] == "alfa"
    assert "timestamp" in record


def test_configure_runs_once_unless_forced(restore_structlog: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.configure("info", stream=first, force=True)
    logs.configure("info", stream=second)
    structlog.get_logger("test").info("hello")
    assert "hello" in first.getvalue() and second.getvalue() == ""
    assert logs.is_configured()


class _FullDisk(io.StringIO):
    """A stream whose writes fail as on a full disk, until told there is room."""

    full = True

    def write(self, text: str) -> int:
        if self.full:
            raise OSError(28, "No space left on device")
        return super().write(text)


def test_a_line_that_cannot_be_written_is_dropped_and_counted_not_raised(restore_structlog: None) -> None:
    """Whoever logs (a request, a database's writer thread) must not fail because its line
    could not be written."""
    stream = _FullDisk()
    logs.configure("info", stream=stream, force=True)
    log = structlog.get_logger("test")
    before = logs.lines_dropped()
    log.error("ledger_batch_failed", jobs=3)
    log.info("request", status=503)
    assert logs.lines_dropped() == before + 2 and stream.getvalue() == ""
    stream.full = False
    log.info("room again")
    assert json.loads(stream.getvalue())["event"] == "room again"


def test_a_throttle_lets_one_line_through_per_interval_and_counts_the_rest() -> None:
    now = [100.0]
    throttle = logs.Throttle(10.0, clock=lambda: now[0])
    assert throttle.due() == 0  # the first one is logged
    assert [throttle.due() for _ in range(3)] == [None, None, None]
    now[0] += 10.0
    assert throttle.due() == 3  # logged, saying how many were left out
    now[0] += 9.9
    assert throttle.due() is None


async def test_every_ring_line_carries_bank_generation_and_seq(tmp_path: Path) -> None:
    # A ring of one member: it is its own majority and mints the first token at once.
    config = write_ring_file(tmp_path / "ring.toml", ("solo",), hold_max_ms=10)
    ring = Ring(config, "solo", secret=b"log-test-key")
    with structlog.testing.capture_logs() as captured:
        await ring.start()
        try:
            deadline = asyncio.get_running_loop().time() + 5
            while ring.status()["visits"] < 3:
                assert asyncio.get_running_loop().time() < deadline, "no visits"
                await asyncio.sleep(0.01)
        finally:
            await ring.stop()
    ring_lines = [c for c in captured if str(c["event"]).startswith("ring.")]
    assert {"ring.started", "ring.token_minted", "ring.left"} <= {c["event"] for c in ring_lines}
    for line in ring_lines:
        assert line["bank"] == "solo"
        assert isinstance(line["generation"], int) and isinstance(line["seq"], int), line
    minted = next(c for c in ring_lines if c["event"] == "ring.token_minted")
    assert minted["generation"] >= 1 and minted["issuer"] == "solo"



def test_timestamp_is_utc_iso_to_the_microsecond_and_now() -> None:
    before = datetime.datetime.now(datetime.timezone.utc)
    stamp = logs.utc_timestamp(None, "info", {})["timestamp"]
    after = datetime.datetime.now(datetime.timezone.utc)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp), stamp
    parsed = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    # The clock's microseconds are cut, never rounded up: the stamp lies within the interval.
    assert before - datetime.timedelta(microseconds=1) <= parsed <= after, (before, stamp, after)


def test_timestamp_text_of_each_second_is_formatted_again_when_the_second_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter([1_764_305_359_000_000_999, 1_764_305_359_591_602_123, 1_764_305_360_000_001_000, 86_400_000_000_000])
    monkeypatch.setattr(logs.time, "time_ns", lambda: next(clock))
    stamps = [logs.utc_timestamp(None, "info", {})["timestamp"] for _ in range(4)]
    assert stamps == [
        "2025-11-28T04:49:19.000000Z",
        "2025-11-28T04:49:19.591602Z",
        "2025-11-28T04:49:20.000001Z",
        "1970-01-02T00:00:00.000000Z",
    ]


async def test_a_member_with_another_secret_is_told_once_per_member(tmp_path: Path) -> None:
    """gama was started with another secret: the others refuse its messages (401). It says so
    once per member that refused it, as a warning with what to check, not at every message."""
    from waiting import wait_until

    config = write_ring_file(tmp_path / "ring.toml", ("alfa", "beta", "gama"), hold_max_ms=10,
                             handoff_timeout_ms=100, loss_timeout_ms=400)  # fmt: skip
    rings = [Ring(config, "alfa", secret=b"the-ring-key"), Ring(config, "beta", secret=b"the-ring-key"),
             Ring(config, "gama", secret=b"another-key")]  # fmt: skip
    with structlog.testing.capture_logs() as captured:
        for ring in reversed(rings):
            await ring.start()
        try:
            gama = rings[2]
            await wait_until(
                lambda: (gama.metrics.registry.get_sample_value("tokenring_sends_failed_total") or 0) >= 6,
                "gama's messages refused a few times",
            )
        finally:
            for ring in rings:
                await ring.stop()
    warned = [e for e in captured if e["event"] == "ring.signature_refused"]
    assert sorted(e["to"] for e in warned if e["bank"] == "gama") == ["alfa", "beta"], warned
    assert all(e["log_level"] == "warning" and "same secret" in e["hint"] for e in warned)
    # The good members' own messages to each other are taken: none of them is told anything.
    assert not [e for e in warned if e["bank"] != "gama" and e["to"] != "gama"]
