"""What the ledger's Hypothesis state machines share: each runs a real ledger in a folder of its
own, on an event loop of its own (a state machine's rules are plain functions)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bank.ledger import Ledger


class LedgerOnALoop:
    """Mixed into a ``RuleBasedStateMachine``: ``open_ledger`` in ``__init__``, ``run`` to await
    from a rule; the machine's ``teardown`` closes the ledger and removes the folder."""

    loop: asyncio.AbstractEventLoop
    folder: Path
    path: Path
    ledger: Ledger

    def open_ledger(self, prefix: str, name: str, **options: Any) -> Ledger:
        self.loop = asyncio.new_event_loop()
        self.folder = Path(tempfile.mkdtemp(prefix=prefix))
        self.path = self.folder / name
        self.ledger = self.run(Ledger.open(self.path, **options))
        return self.ledger

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def teardown(self) -> None:
        self.run(self.ledger.close())
        self.loop.close()
        shutil.rmtree(self.folder, ignore_errors=True)
