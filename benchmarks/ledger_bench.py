"""Benchmark: local deposits and local transfers per second, at concurrency 1 and 64.

Prints throughput and p50/p99 latency for each case, measured two ways: straight on the
ledger's async face (``Ledger``), and through the client API over HTTP on 127.0.0.1 (aiohttp
server and client in one process, so the figures include both sides' CPU). The database is a
fresh one in a temporary folder, with the production settings (WAL, synchronous=FULL).

    .venv/bin/python benchmarks/ledger_bench.py               # both layers
    .venv/bin/python benchmarks/ledger_bench.py --layer ledger --operations 5000

Timing figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import ClientSession, TCPConnector, web  # noqa: E402

from bank import api  # noqa: E402
from bank.documents import complete_cpf  # noqa: E402
from bank.keys import BANK_ID, CONFIG, LEDGER  # noqa: E402
from bank.ledger import Ledger  # noqa: E402
from tokenring.config import parse  # noqa: E402

CONCURRENCIES = (1, 64)
OPERATIONS_DEFAULT = 2_000
DURATION_S_MAX = 30.0
"""Each case stops after this long even if it has not run all its operations."""
ANA = complete_cpf("529982247")
PASSWORD = "benchmark password"


async def measure(
    name: str, concurrency: int, operations: int, one: Callable[[int], Awaitable[None]]
) -> dict[str, Any]:
    """Run ``operations`` calls of ``one`` with ``concurrency`` workers; latencies in ms."""
    latencies_ms: list[float] = []
    next_index = 0
    deadline = time.perf_counter() + DURATION_S_MAX

    async def worker() -> None:
        nonlocal next_index
        while next_index < operations and time.perf_counter() < deadline:
            index = next_index
            next_index += 1
            started = time.perf_counter()
            await one(index)
            latencies_ms.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed_s = time.perf_counter() - started
    latencies_ms.sort()
    quantiles = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    row = {
        "case": name,
        "concurrency": concurrency,
        "operations": len(latencies_ms),
        "per_s": len(latencies_ms) / elapsed_s,
        "latency_ms_p50": quantiles[49],
        "latency_ms_p99": quantiles[98],
    }
    print(
        f"{name:<28} c={concurrency:<3} {row['operations']:>6} ops"
        f" {row['per_s']:>9.0f}/s   p50 {row['latency_ms_p50']:7.2f} ms"
        f"   p99 {row['latency_ms_p99']:7.2f} ms",
        flush=True,
    )
    return row


async def bench_ledger(folder: Path, operations: int) -> None:
    ledger = await Ledger.open(folder / "alfa.sqlite3")
    try:
        await ledger.create_customer(ANA, "Ana", "not-a-real-hash")
        accounts = [
            (await ledger.create_account("individual", [ANA])).body["account"] for _ in range(64)
        ]
        for concurrency in CONCURRENCIES:
            async def deposit(index: int) -> None:
                answer = await ledger.deposit(accounts[index % 64], 100, document=ANA)
                assert answer.status == 201

            batches = ledger.batches
            await measure("ledger deposit", concurrency, operations, deposit)
            print(f"{'':<28}       group commit: {operations / max(1, ledger.batches - batches):.1f} ops per COMMIT")

        for concurrency in CONCURRENCIES:
            async def transfer(index: int) -> None:
                source = accounts[index % 64]
                destination = accounts[(index + 1) % 64]
                answer = await ledger.transfer_local(
                    [(source, 1)], destination, document=ANA, request={}
                )
                assert answer.status == 202 and answer.body["status"] == "committed"

            await measure("ledger local transfer", concurrency, operations, transfer)
        assert (await ledger.check()).ok
    finally:
        await ledger.close()


async def bench_http(folder: Path, operations: int) -> None:
    app = web.Application()
    app[CONFIG] = parse(
        {
            "consortium": {"name": "bench", "secret_env": "CONSORTIUM_SECRET", "data_dir": str(folder)},
            "token": {"hold_max_ms": 25},
            "banks": [{"id": "alfa", "name": "Banco Alfa", "url": "http://127.0.0.1:1"}],
        }
    )
    app[BANK_ID] = "alfa"
    api.install(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with ClientSession(connector=TCPConnector(limit=max(CONCURRENCIES))) as http:
            async def post(path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
                async with http.post(url + path, json=body, headers=headers) as response:
                    answer = await response.json()
                    assert response.status < 300, answer
                    return answer

            await post("/api/v1/customers", {"document": ANA, "name": "Ana", "password": PASSWORD})
            token = (await post("/api/v1/sessions", {"document": ANA, "password": PASSWORD}))["token"]
            auth = {"Authorization": f"Bearer {token}"}
            accounts = [
                (await post("/api/v1/accounts", {"kind": "individual", "owners": [ANA]}, auth))["account"]
                for _ in range(64)
            ]
            for concurrency in CONCURRENCIES:
                async def deposit(index: int) -> None:
                    body = {"bank": "alfa", "account": accounts[index % 64], "amount_cents": 100}
                    await post("/api/v1/deposits", body, auth)

                await measure("http deposit", concurrency, operations, deposit)
            for concurrency in CONCURRENCIES:
                async def transfer(index: int) -> None:
                    body = {
                        "sources": [{"bank": "alfa", "account": accounts[index % 64], "amount_cents": 1}],
                        "destination": {"bank": "alfa", "account": accounts[(index + 1) % 64]},
                    }
                    answer = await post("/api/v1/transfers", body, auth)
                    assert answer["status"] == "committed"

                await measure("http local transfer", concurrency, operations, transfer)
            assert (await app[LEDGER].check()).ok
    finally:
        await runner.cleanup()


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layer", choices=["ledger", "http", "both"], default="both")
    parser.add_argument("--operations", type=int, default=OPERATIONS_DEFAULT)
    args = parser.parse_args(argv)
    # Benchmarks measure the work, not the log lines of every request.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    with tempfile.TemporaryDirectory() as folder:
        if args.layer in ("ledger", "both"):
            await bench_ledger(Path(folder) / "ledger", args.operations)
        if args.layer in ("http", "both"):
            await bench_http(Path(folder) / "http", args.operations)


if __name__ == "__main__":
    asyncio.run(main())
