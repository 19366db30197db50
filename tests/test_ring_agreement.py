"""Members tell each other their ring file's digest: one started with another file is noticed,
said once per member, and shown in its status and in ``consortium status``."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import structlog

from bank.cli import _print_table
from bank.process import free_ports, write_ring_file
from tokenring.agreement import ConfigAgreement
from tokenring.ring import Ring
from waiting import wait_until

SECRET = b"the-ring-key"


def test_the_digest_covers_members_order_urls_and_token_timings_only(tmp_path: Path) -> None:
    ports = free_ports(3)
    base = write_ring_file(tmp_path / "a.toml", ("alfa", "beta", "gama"), ports=ports)
    same = write_ring_file(tmp_path / "b.toml", ("alfa", "beta", "gama"), ports=ports,
                           name="another name", data_dir="elsewhere", secret_env="OTHER_KEY")  # fmt: skip
    assert same.digest == base.digest and len(base.digest) == 16
    changed = [
        write_ring_file(tmp_path / "c.toml", ("alfa", "gama", "beta"), ports=ports),  # order
        write_ring_file(tmp_path / "d.toml", ("alfa", "beta", "gama"), ports=[ports[0], ports[2], ports[1]]),
        write_ring_file(tmp_path / "e.toml", ("alfa", "beta"), ports=ports[:2]),  # a member fewer
        write_ring_file(tmp_path / "f.toml", ("alfa", "beta", "gama"), ports=ports, hold_max_ms=26),
        write_ring_file(tmp_path / "g.toml", ("alfa", "beta", "gama"), ports=ports, loss_timeout_ms=900),
        write_ring_file(tmp_path / "h.toml", ("alfa", "beta", "gama"), ports=ports, handoff_timeout_ms=70),
    ]
    digests = {config.digest for config in changed}
    assert base.digest not in digests and len(digests) == len(changed)


def test_a_difference_is_said_once_per_member_and_digest_and_its_end_once() -> None:
    agreement = ConfigAgreement("aaaa", member_id="alfa", members=frozenset({"beta", "gama"}))
    with structlog.testing.capture_logs() as captured:
        agreement.observe("beta", "aaaa")
        agreement.observe("beta", None)  # a sender that says nothing is not judged
        for _ in range(5):
            agreement.observe("gama", "bbbb")
        assert agreement.differing() == {"gama": "bbbb"}
        agreement.observe("gama", "cccc")  # its file changed again: said again
        agreement.observe("zeta", "dddd")  # not a member: never kept (memory is bounded)
        agreement.observe("beta", "x" * 65)  # not a digest
        agreement.observe("beta", "bad value\n")
        assert agreement.status() == {"config": "aaaa", "config_differs": ["gama"]}
        agreement.observe("gama", "aaaa")
        agreement.observe("gama", "aaaa")
    assert agreement.differing() == {}
    said = [(e["event"], e.get("member"), e.get("theirs")) for e in captured]
    assert said == [
        ("ring.config_differs", "gama", "bbbb"),
        ("ring.config_differs", "gama", "cccc"),
        ("ring.config_agrees", "gama", None),
    ]
    assert captured[0]["log_level"] == "warning" and captured[0]["ours"] == "aaaa"
    assert "same banks" in captured[0]["hint"]


async def test_a_member_with_another_ring_file_is_noticed_by_its_neighbours(tmp_path: Path) -> None:
    """gama runs with a file whose hold_max_ms differs: alfa (which gama hands the token to)
    and beta (which hands it to gama, and reads gama's answer) each say so once, gama says it
    of both, and alfa and beta say nothing of each other. The ring still runs."""
    ports = free_ports(3)
    timings = {"handoff_timeout_ms": 100, "loss_timeout_ms": 400, "ports": ports}
    shared = write_ring_file(tmp_path / "ring.toml", ("alfa", "beta", "gama"), hold_max_ms=10, **timings)  # type: ignore[arg-type]
    other = write_ring_file(tmp_path / "other.toml", ("alfa", "beta", "gama"), hold_max_ms=11, **timings)  # type: ignore[arg-type]
    rings = [Ring(shared, "alfa", secret=SECRET), Ring(shared, "beta", secret=SECRET), Ring(other, "gama", secret=SECRET)]
    with structlog.testing.capture_logs() as captured:
        for ring in reversed(rings):
            await ring.start()
        try:
            await wait_until(lambda: all(ring.status()["visits"] >= 3 for ring in rings), "a few rotations")
            statuses = {ring.member_id: ring.status() for ring in rings}
        finally:
            for ring in rings:
                await ring.stop()
    assert statuses["alfa"]["config"] == statuses["beta"]["config"] == shared.digest
    assert statuses["gama"]["config"] == other.digest
    assert statuses["alfa"]["config_differs"] == ["gama"]
    assert statuses["beta"]["config_differs"] == ["gama"]
    assert statuses["gama"]["config_differs"] == ["alfa", "beta"]
    assert rings[2].metrics.registry.get_sample_value("tokenring_members_config_differs") == 2
    assert rings[0].metrics.registry.get_sample_value("tokenring_members_config_differs") == 1
    differs = sorted((e["bank"], e["member"]) for e in captured if e["event"] == "ring.config_differs")
    assert differs == [("alfa", "gama"), ("beta", "gama"), ("gama", "alfa"), ("gama", "beta")], differs


def test_status_table_names_a_bank_with_another_ring_file() -> None:
    def bank(bank_id: str, config: str) -> dict[str, object]:
        return {"bank": bank_id, "url": f"http://127.0.0.1/{bank_id}", "up": True, "holding": False,
                "generation": 1, "seq": 4, "members": {}, "visits_per_s": 10.0,
                "config": config, "config_matches": config == "aaaa"}  # fmt: skip

    report = {"ring": "test", "config": "aaaa", "up": 2, "holders": ["alfa"],
              "banks": [bank("alfa", "aaaa"), bank("beta", "bbbb")]}  # fmt: skip
    out = io.StringIO()
    with redirect_stdout(out):
        _print_table(report)
    notes = [line for line in out.getvalue().splitlines() if "another ring file" in line]
    assert notes == [
        "beta runs with another ring file (digest bbbb; this file's is aaaa): every member needs "
        "the same banks, order, urls and token timings."
    ]
