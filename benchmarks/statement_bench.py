"""What a page of an account's statement costs on a long journal (prints figures).

A ledger in a temporary folder gets two accounts whose movements alternate, ``--entries`` in
all, written straight into its tables (a deposit each, one cent); then ``Ledger.statement``
reads pages of ``--limit`` lines from the newest movement, from the middle and from the
oldest. A page is read through the entries' index from where the previous one ended, so the
three should cost about the same, whatever the length of the journal.

    .venv/bin/python benchmarks/statement_bench.py
    .venv/bin/python benchmarks/statement_bench.py --entries 100000 --limit 20
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bank.documents import complete_cpf  # noqa: E402
from bank.ledger import CASH_ACCOUNT, STATEMENT_LINES_MAX, Ledger  # noqa: E402

OWNER = complete_cpf("529982247")
READS_PER_FIGURE = 50


def _fill(path: Path, mine: int, other: int, entries: int) -> None:
    """``entries`` one-cent deposits, alternately into ``other`` and ``mine``."""
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO journal (txn, kind, transfer_id, at_ms) VALUES (?, 'deposit', NULL, 0)",
            ((txn,) for txn in range(1, entries + 1)),
        )
        conn.executemany(
            "INSERT INTO entries (txn, account, bucket, amount_cents) VALUES (?, ?, 'available', ?)",
            (row for txn in range(1, entries + 1)
             for row in ((txn, mine if txn % 2 == 0 else other, 1), (txn, CASH_ACCOUNT, -1))),
        )  # fmt: skip
        for number, count in ((mine, entries // 2), (other, entries - entries // 2), (CASH_ACCOUNT, -entries)):
            conn.execute("UPDATE accounts SET balance_cents = ? WHERE number = ?", (count, number))
    conn.close()


async def run(entries: int, limit: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "alfa.sqlite3"
        ledger = await Ledger.open(path)
        await ledger.create_customer(OWNER, "Bench", "not a hash")
        mine = (await ledger.create_account("individual", [OWNER])).body["account"]
        other = (await ledger.create_account("individual", [OWNER])).body["account"]
        await ledger.close()
        started = time.perf_counter()
        _fill(path, mine, other, entries)
        print(f"{entries:,} movements written in {time.perf_counter() - started:.1f} s "
              f"({entries // 2:,} of them in the account read)")  # fmt: skip
        ledger = await Ledger.open(path)
        try:
            # Positions are entry ids: two per movement, the account's at every fourth.
            for label, before in (("newest", None), ("middle", entries), ("oldest", 8 * limit)):
                started = time.perf_counter()
                for _ in range(READS_PER_FIGURE):
                    page = await ledger.statement(mine, before=before, limit=limit)
                elapsed_ms = 1000 * (time.perf_counter() - started) / READS_PER_FIGURE
                assert page is not None
                print(f"  {label:<7} page: {elapsed_ms:6.2f} ms for {len(page.lines)} lines")
        finally:
            await ledger.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000, help="movements written (two accounts)")
    parser.add_argument("--limit", type=int, default=STATEMENT_LINES_MAX, help="lines per page")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings and above
    asyncio.run(run(args.entries, args.limit))


if __name__ == "__main__":
    main()
