"""A ring member's status document, and a ring that answers one, for the web terminal's tests
(``tests/test_web.py`` and the browser tests alike; ``pyproject.toml`` puts this folder on
the tests' import path)."""

from __future__ import annotations

from typing import Any


class FakeRing:
    """Stands in for the ring object in app[RING]: a status document the test sets."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.document = status

    def status(self) -> dict[str, Any]:
        return dict(self.document)


def status(bank: str, *, holding: bool, generation: int, seq: int, successor: str) -> dict[str, Any]:
    """What ``Ring.status()`` of ``bank`` answers in a three-bank ring (alfa, beta, gama)
    where every member is up."""
    return {
        "bank": bank,
        "holding": holding,
        "generation": generation,
        "seq": seq,
        "successor": successor,
        "members": {"alfa": "up", "beta": "up", "gama": "up"},
        "visits": seq,
    }
