"""A bank stopped (SIGTERM) and started again under load (prints figures; not a test).

Clients send cross-bank transfers that wait for their outcome (``?wait_ms=``) to 3 banks.
After ``--stop-after-s`` the second bank gets SIGTERM; the time it takes to exit is printed.
It starts again ``--down-s`` later, the load runs to its end, and then the consortium is given
at most ``SETTLE_S_MAX`` to finish what is in flight. Printed: the decisions the other banks
still owed the stopped one just before it started again, how the clients' calls ended,
what became of the transfers that were answered ``pending``, and the consortium audit
(total against expected, held and in-flight money).

    .venv/bin/python benchmarks/stop_bench.py
    .venv/bin/python benchmarks/stop_bench.py --clients 32 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bank.process import Consortium, write_ring_file  # noqa: E402
from transfer_bench import CUSTOMERS_MAX, _setup  # noqa: E402

BANKS = ("bank0", "bank1", "bank2")
STOPPED = "bank1"
WAIT_MS = 5_000
CALL_TIMEOUT_S = 15.0
CLIENTS_MAX = 256
SECONDS_MAX = 600.0
SETTLE_S_MAX = 30.0
"""The longest the consortium gets, after the load, to decide what is in flight."""
RETRY_PAUSE_S = 0.05
"""A client's pause after a call that failed (the bank is down), before its next one."""


async def _load(config: Any, people: list[dict[str, Any]], clients: int, until: float) -> tuple[dict[str, int], list[tuple[str, str, str]]]:
    """Transfers between random banks until ``until``; how the calls ended, and the
    transfers answered pending (bank, id, token)."""
    ended: dict[str, int] = {}
    pending: list[tuple[str, str, str]] = []
    rng = random.Random(7)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)) as session:

        async def client(index: int) -> None:
            person = people[index % len(people)]
            while time.monotonic() < until:
                source, destination = rng.sample(BANKS, 2)
                body = {"sources": [{"bank": source, "account": person["accounts"][source], "amount_cents": 1}],
                        "destination": {"bank": destination, "account": person["accounts"][destination]}}
                token = person["tokens"][source]
                try:
                    async with session.post(
                        config.bank(source).url + f"/api/v1/transfers?wait_ms={WAIT_MS}",
                        json=body, headers={"Authorization": f"Bearer {token}"},
                    ) as response:
                        answer = await response.json(content_type=None)
                except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                    ended[type(error).__name__] = ended.get(type(error).__name__, 0) + 1
                    await asyncio.sleep(RETRY_PAUSE_S)
                    continue
                status = str(answer.get("status") or answer.get("error", {}).get("code"))
                ended[status] = ended.get(status, 0) + 1
                if status == "pending":
                    pending.append((source, answer["id"], token))

        await asyncio.gather(*(client(i) for i in range(clients)))
    return ended, pending


async def _settled(config: Any, pending: list[tuple[str, str, str]]) -> tuple[dict[str, Any], dict[str, int]]:
    """The audit once nothing is in flight and no pending transfer waits (or the bound is
    up), and what the pending transfers became."""
    deadline = time.monotonic() + SETTLE_S_MAX
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)) as session:
        while True:
            async with session.get(config.bank(BANKS[0]).url + "/api/v1/consortium/audit") as response:
                audit = await response.json()
            became: dict[str, int] = {}
            for bank, transfer_id, token in pending:
                async with session.get(
                    config.bank(bank).url + f"/api/v1/transfers/{transfer_id}",
                    headers={"Authorization": f"Bearer {token}"},
                ) as response:
                    status = str((await response.json()).get("status"))
                became[status] = became.get(status, 0) + 1
            if (not audit.get("in_flight_cents") and "pending" not in became) or time.monotonic() > deadline:
                return audit, became
            await asyncio.sleep(0.2)


async def _owed_to(config: Any, bank: str) -> dict[str, int]:
    """How many decisions each other bank owes ``bank`` (``bank_transfer_decisions_owed``)."""
    owed: dict[str, int] = {}
    name = f'bank_transfer_decisions_owed{{bank="{bank}"}} '
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)) as session:
        for other in BANKS:
            if other == bank:
                continue
            async with session.get(config.bank(other).url + "/metrics") as response:
                text = await response.text()
            owed[other] = sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines() if line.startswith(name))
    return owed


async def run(clients: int, seconds: float, stop_after_s: float, down_s: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = write_ring_file(Path(tmp) / "ring.toml", list(BANKS), data_dir=str(Path(tmp) / "var"))
        consortium = Consortium(config, secret="stop-bench-secret", log_dir=Path(tmp) / "logs", parent_watch=True)
        consortium.start()
        try:
            async with aiohttp.ClientSession() as session:
                people = await _setup(config, session, min(clients, CUSTOMERS_MAX))
            load = asyncio.create_task(_load(config, people, clients, time.monotonic() + seconds))
            await asyncio.sleep(stop_after_s)
            started = time.monotonic()
            code = await asyncio.to_thread(consortium[STOPPED].stop, timeout_s=SECONDS_MAX)
            print(f"{STOPPED} exited {time.monotonic() - started:.2f} s after SIGTERM, exit code {code}")
            await asyncio.sleep(down_s)
            owed = await _owed_to(config, STOPPED)
            print(
                f"decisions owed to {STOPPED} just before it started again (it acknowledges them "
                "when back; an abort is not owed to a bank whose vote never came): "
                + ", ".join(f"{n} by {bank}" for bank, n in owed.items())
            )
            consortium[STOPPED].start()
            await asyncio.to_thread(consortium[STOPPED].wait_ready)
            ended, pending = await load
            print("clients' calls ended:", ", ".join(f"{n} {status}" for status, n in sorted(ended.items())))
            audit, became = await _settled(config, pending)
            print(f"the {len(pending)} answered pending became:", ", ".join(f"{n} {s}" for s, n in sorted(became.items())) or "-")
            print("audit:", ", ".join(f"{key} {audit.get(key)}" for key in ("total_cents", "expected_cents", "held_cents", "in_flight_cents")))
        finally:
            consortium.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=12.0, help="how long the load runs")
    parser.add_argument("--stop-after-s", type=float, default=3.0, help="when the second bank gets SIGTERM")
    parser.add_argument("--down-s", type=float, default=2.0, help="how long it stays down")
    args = parser.parse_args()
    if not (0 < args.clients <= CLIENTS_MAX and 0 < args.seconds <= SECONDS_MAX):
        parser.error(f"--clients is 1 to {CLIENTS_MAX}, --seconds at most {SECONDS_MAX:g}")
    if not 0 <= args.stop_after_s < args.seconds or args.down_s < 0:
        parser.error("--stop-after-s must fall within the load, --down-s must not be negative")
    asyncio.run(run(args.clients, args.seconds, args.stop_after_s, args.down_s))


if __name__ == "__main__":
    main()
