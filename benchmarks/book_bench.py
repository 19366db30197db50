"""The storage side of cross-bank transfers alone: the transfer book's operations replayed on two
real ledgers, with no network and no ring (prints figures).

Each round is what a token visit does to the books of a coordinator (``bank0``, also the
source) and of a destination (``bank1``), for ``--batch`` transfers (plus 0 to 10, varying
by round, so batch sizes move as they do under load): the prepare at the destination, the
outcomes (which store the transfers, as for clients that wait for the outcome, and debit the
coordinator's own sources in the same write; with ``--record-at-submit``, one writer job
per transfer stores it first, as clients submit them), the decision at the destination, its
acknowledgement. The ledgers are the production ones (WAL,
``synchronous=FULL``) in a temporary folder.

Printed: CPU per transfer (the process: event loop and both writer threads) and wall time per
transfer, which move with the machine's speed; and two counts that do not: commits per
transfer, and SQLite virtual-machine steps per transfer (counted by a progress handler on the
ledgers' connections), a measure of the SQL work that two runs on a noisy machine can compare.

    .venv/bin/python benchmarks/book_bench.py
    .venv/bin/python benchmarks/book_bench.py --batch 50 --rounds 100
    .venv/bin/python benchmarks/book_bench.py --record-at-submit
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bank import ledger as ledger_module  # noqa: E402
from bank.documents import complete_cpf  # noqa: E402
from bank.ledger import Ledger, new_transfer_id  # noqa: E402
from bank.transfers.book import (  # noqa: E402
    AcceptFence,
    CheckAccount,
    Credit,
    RecordAcks,
    RecordDecision,
    RecordOutcomes,
    RecordPending,
    Unstored,
)
from bank.transfers.protocol import Leg, Transfer  # noqa: E402
from bank.transfers.store import LedgerBook  # noqa: E402
from tokenring.core import Fence  # noqa: E402

STEPS_PER_TICK = 100
"""The progress handler counts SQLite's virtual-machine steps in units of this many."""
ROUNDS_MAX = 10_000
BATCH_MAX = 500


def _counting_connections(ticks: list[int]) -> None:
    """Every ledger connection opened from now on counts its steps into ``ticks``."""
    connect = ledger_module._connect

    def counted(path: Path, synchronous: str) -> sqlite3.Connection:
        conn = connect(path, synchronous)

        def tick() -> int:
            ticks[0] += 1
            return 0  # go on

        conn.set_progress_handler(tick, STEPS_PER_TICK)
        return conn

    ledger_module._connect = counted


async def run(batch: int, rounds: int, record_at_submit: bool = False) -> dict[str, float]:
    ticks = [0]
    _counting_connections(ticks)
    with tempfile.TemporaryDirectory() as folder:
        coordinator = await Ledger.open(Path(folder) / "bank0.sqlite3", bank_id="bank0")
        destination = await Ledger.open(Path(folder) / "bank1.sqlite3", bank_id="bank1")
        try:
            here, there = LedgerBook(coordinator), LedgerBook(destination)
            await here.open()
            await there.open()
            document = complete_cpf("200000000")
            numbers = {}
            for ledger in (coordinator, destination):
                await ledger.create_customer(document, "Bench", "not-a-hash")
                numbers[ledger.bank_id] = (await ledger.create_account("individual", [document])).body["account"]
            await coordinator.deposit(numbers["bank0"], ledger_module.AMOUNT_CENTS_MAX, document=document)
            source, target = str(numbers["bank0"]), str(numbers["bank1"])
            commits_before = coordinator.batches + destination.batches
            ticks[0] = 0
            count = 0
            cpu_started, wall_started = time.process_time(), time.perf_counter()
            for round_index in range(rounds):
                size = batch + (round_index * 7) % 11
                count += size
                legs = (Leg("bank0", source, 1, "source"), Leg("bank1", target, 1, "destination"))
                transfers = [Transfer(new_transfer_id("bank0"), "bank0", document, legs) for _ in range(size)]
                ids = tuple(t.id for t in transfers)
                if record_at_submit:
                    await asyncio.gather(*(here.execute([RecordPending(t, None, {})]) for t in transfers))
                fence = Fence(1, "bank0", round_index + 1)
                # The coordinator's own source is not prepared: it moves with the decision. The
                # destination holds nothing, so it keeps no record of its yes either.
                await there.execute([AcceptFence(fence), *(CheckAccount(target) for _ in ids)])
                decisions = tuple((i, "committed", None, ("bank1",)) for i in ids)
                unrecorded = () if record_at_submit else tuple(Unstored(t, {}) for t in transfers)
                own = tuple((t.id, document, t.legs_at("bank0")) for t in transfers)
                assert await here.execute([RecordOutcomes(decisions, unrecorded, own)]) == [{}]
                await there.execute([*(RecordDecision(i, "committed") for i in ids), *(Credit(i, target, 1) for i in ids)])
                await here.execute([RecordAcks("bank1", ids)])
            cpu = time.process_time() - cpu_started
            wall = time.perf_counter() - wall_started
            commits = coordinator.batches + destination.batches - commits_before
            balance = (await coordinator.account(numbers["bank0"]))
            assert balance is not None and balance.balance_cents == ledger_module.AMOUNT_CENTS_MAX - count
        finally:
            await coordinator.close()
            await destination.close()
    return {
        "transfers": count,
        "cpu_us": 1e6 * cpu / count,
        "wall_us": 1e6 * wall / count,
        "commits": commits / count,
        "steps": ticks[0] * STEPS_PER_TICK / count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=17, help="transfers per round, before the 0-10 added")
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument(
        "--record-at-submit",
        action="store_true",
        help="store each transfer when it is submitted (clients that hear the id at once), "
        "not with its decision (clients that wait for the outcome, as the transfer benchmark's)",
    )
    args = parser.parse_args()
    if not (0 < args.batch <= BATCH_MAX and 0 < args.rounds <= ROUNDS_MAX):
        parser.error(f"--batch is 1 to {BATCH_MAX}, --rounds 1 to {ROUNDS_MAX}")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings and up
    row = asyncio.run(run(args.batch, args.rounds, args.record_at_submit))
    print(
        f"book replay: {row['transfers']} transfers in rounds of {args.batch}-{args.batch + 10}, "
        f"two ledgers, stored {'at submission' if args.record_at_submit else 'with the decision'}, "
        f"{os.cpu_count()} CPUs\n"
        f"  CPU {row['cpu_us']:.0f} us and wall {row['wall_us']:.0f} us per transfer (machine-dependent)\n"
        f"  {row['commits']:.2f} commits and {row['steps']:.0f} SQLite steps per transfer (counts)"
    )


if __name__ == "__main__":
    main()
