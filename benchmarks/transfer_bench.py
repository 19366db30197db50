"""Cross-bank transfer throughput and latency on real bank processes (prints figures).

For each ring size and each concurrency: committed cross-bank transfers per second and the
p50/p99 latency from submit to outcome (``POST /api/v1/transfers?wait_ms=...``), printed beside
the request rate of a bare aiohttp JSON endpoint measured in the same run on the same machine
with the same client and the same event loop, and the ratio of the two. The two are measured
in turns (``--slices``, 4 by default: bare, transfers, bare, transfers...), so that a machine
whose speed drifts meanwhile slows both alike; after each slice of transfers the banks get
DRAIN_S to deliver what it decided, counted in their CPU. Also the CPU time each
committed transfer cost the banks (all of them together) and the load generator, beside what
one bare request cost its server and the client: where the machine's two cores go; and the
transfers a token visit carried, and the commits the banks made, the messages they sent each
other and the bytes they wrote per transfer; how long a visit lasted, the ring's demand messages
it set off, and how long the visits
kept the token for the next bank's vote (``successor_wait_ms`` of the banks' round log lines).
Not a test: it asserts nothing.

    .venv/bin/python benchmarks/transfer_bench.py                 # 3 and 5 banks, 1/16/64/256
    .venv/bin/python benchmarks/transfer_bench.py --banks 3 --concurrency 64 --seconds 10
    .venv/bin/python benchmarks/transfer_bench.py --loop asyncio  # everything on asyncio's loop
    .venv/bin/python benchmarks/transfer_bench.py --banks 3 --concurrency 64 --one-way

``--account`` runs the banks on asyncio's own event loop with ``benchmarks/loop_account`` loaded
(see its module) and prints, for each concurrency, where their event loops' CPU went during
the transfers: per activity (a route's requests, a kind of task, a kind of callback), µs per
committed transfer and steps per token visit, all banks together.

``--one-way`` sends every transfer from the first bank to the second, so one bank does only
the terminal's work, one only the participant's and the others only pass the token; with it
(and always under ``--per-bank``) each bank's CPU per transfer is printed, its event loop's
thread apart from its other threads (the ledger's writer, mostly).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bank.cli import EVENT_LOOPS, loop_factory  # noqa: E402
from bank.documents import complete_cpf  # noqa: E402
from bank.process import Consortium, free_ports, write_ring_file  # noqa: E402
from bank.server import watch_parent  # noqa: E402

REQUEST_TIMEOUT_S = 30.0
SLICES_MAX = 20
DRAIN_S = 0.5
"""After each slice of transfers, the banks finish what it left them (decisions delivered at
most DECISION_DEFER_MS later) before the bare endpoint is measured again; their CPU meanwhile
counts for the transfers."""
WAIT_MS = 10_000
OPENING_CENTS = 10**10
CONNECTIONS_MAX = 512
CUSTOMERS_MAX = 16
"""Clients share this many customers (each customer costs a password hash per bank to set up)."""


def _bare_server(port: int, loop: str, parent_pid: int) -> None:
    async def answer(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"id": "x", "status": "committed", "echo": len(body)})

    async def stop_with_parent(app: web.Application) -> AsyncIterator[None]:
        # Should the benchmark be killed, this server stops too (as the banks do, by the same
        # watch), instead of keeping its port for good.
        gone = asyncio.Event()

        def stop(_: object) -> None:
            if gone.is_set():  # not when the watch is cancelled at the server's own stop
                os.kill(os.getpid(), signal.SIGTERM)

        watcher = asyncio.get_running_loop().create_task(watch_parent(parent_pid, gone))
        watcher.add_done_callback(stop)
        yield
        watcher.cancel()

    app = web.Application()
    app.router.add_post("/bare", answer)
    app.cleanup_ctx.append(stop_with_parent)
    factory = loop_factory(loop)
    event_loop = factory() if factory is not None else asyncio.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=event_loop)


CALIBRATION_LOOPS = 5_000_000


def _calibration() -> float:
    """Millions of plain CPython loop iterations per second on one core, now: shared and
    virtual machines change speed over minutes, so every run prints it beside its figures."""
    started = time.process_time()
    total = 0
    for index in range(CALIBRATION_LOOPS):
        total += index
    return CALIBRATION_LOOPS / 1e6 / max(time.process_time() - started, 1e-9)


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc (Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _threads_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds of a process's main thread (a bank's event loop) and of its other threads
    together, from /proc (Linux)."""
    main = others = 0.0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return float("nan"), float("nan")
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a thread that just ended
        spent = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if tid == str(pid):
            main += spent
        else:
            others += spent
    return main, others


def _written_bytes(pid: int) -> float:
    """Bytes a process has written through system calls (files and sockets), from /proc."""
    try:
        with open(f"/proc/{pid}/io") as io:
            for line in io:
                if line.startswith("wchar:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


ACCOUNT_DIR = Path(__file__).resolve().parent / "loop_account"
"""The folder whose ``sitecustomize`` accounts a bank's event loop (``--account``)."""
ACCOUNT_WAIT_S = 5.0
"""How long the banks get to write their loop accounts after being asked (SIGUSR1)."""
ACCOUNT_ROWS = 14
"""The most activities printed per measurement (the costliest)."""
NO_ACCOUNT = (0.0, 0.0, 0.0)
"""An activity's account before any of it: CPU ns, steps, first steps."""


async def _loop_accounts(pids: list[int], folder: Path) -> dict[str, list[float]]:
    """Ask each bank for its loop account (``benchmarks/loop_account``) and add them up:
    activity -> [CPU ns, steps, first steps]. Empty when a bank has no account (it did not
    load the module: SIGUSR1 would end it, so it is not sent) or did not answer in time."""
    seen = {}
    for pid in pids:
        path = folder / f"{pid}.json"
        if not path.exists():
            return {}
        seen[pid] = json.loads(path.read_text())["seq"]
    for pid in pids:
        os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + ACCOUNT_WAIT_S
    total: dict[str, list[float]] = {}
    for pid in pids:
        path = folder / f"{pid}.json"
        while True:
            try:
                account = json.loads(path.read_text())
            except (OSError, ValueError):
                account = {"seq": seen[pid]}
            if account["seq"] > seen[pid]:
                break
            if time.monotonic() > deadline:
                return {}
            await asyncio.sleep(0.01)
        for name, spent in account["spent_ns"].items():
            these = (spent, account["steps"][name], account["started"][name])
            total[name] = [a + b for a, b in zip(total.get(name, NO_ACCOUNT), these)]
    return total


COUNTED = (
    "tokenring_token_visits_total",
    "bank_ledger_commits_total",
    "bank_signed_requests_sent_total",
    "tokenring_demands_sent_total",
)
"""Counters of the banks' ``/metrics`` read around each measurement (each summed over its
labels and over the banks)."""


async def _counters(session: aiohttp.ClientSession, config: Any) -> dict[str, float]:
    """The :data:`COUNTED` counters so far, each summed over the banks."""
    totals = dict.fromkeys(COUNTED, 0.0)
    for bank in config.member_ids:
        async with session.get(config.bank(bank).url + "/metrics") as response:
            text = await response.text()
        for line in text.splitlines():
            name = line.split(" ", 1)[0].split("{", 1)[0]
            if name in totals:
                totals[name] += float(line.split()[-1])
    return totals


def _log_sizes(log_dir: Path) -> dict[Path, int]:
    """How far each bank's log file has been written."""
    return {path: path.stat().st_size for path in log_dir.glob("*.log")}


def _successor_waits_ms(since: dict[Path, int]) -> list[float]:
    """``successor_wait_ms`` of the rounds logged since ``since`` (:func:`_log_sizes`): how
    long each visit kept the token for the next bank's vote, where that bank took part."""
    waits = []
    for path, offset in since.items():
        with open(path, "rb") as log:
            log.seek(offset)
            for line in log:
                if b'"transfers.round"' not in line:
                    continue
                try:
                    wait = json.loads(line).get("successor_wait_ms")
                except ValueError:
                    continue  # a line cut short at the end of the file
                if isinstance(wait, (int, float)):
                    waits.append(float(wait))
    return waits


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


async def _measure(
    session: aiohttp.ClientSession, call: Any, concurrency: int, seconds: float, latencies: list[float]
) -> tuple[int, int, float]:
    """``concurrency`` clients call ``call`` until ``seconds`` are over (each finishes the
    request it is in): the calls that succeeded, the others, and the time it all took. Each
    call's latency is appended to ``latencies``."""
    done = {"ok": 0, "other": 0}
    until = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        while time.perf_counter() < until:
            started = time.perf_counter()
            ok = await call(session, index)
            latencies.append((time.perf_counter() - started) * 1000)
            done["ok" if ok else "other"] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done["ok"], done["other"], time.perf_counter() - started


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _setup(config: Any, session: aiohttp.ClientSession, clients: int) -> list[dict[str, Any]]:
    """One customer per client, with an account at every bank and a session at each."""
    banks = list(config.member_ids)
    people = []
    for index in range(clients):
        document = complete_cpf(f"{200000000 + 7919 * index:09d}")
        person: dict[str, Any] = {"document": document, "tokens": {}, "accounts": {}}
        for bank in banks:
            url = config.bank(bank).url
            async with session.post(url + "/api/v1/customers", json={
                "document": document, "name": "Bench", "password": "bench-pass-1"}) as r:
                assert r.status == 201, await r.text()
            async with session.post(url + "/api/v1/sessions", json={
                "document": document, "password": "bench-pass-1"}) as r:
                token = (await r.json())["token"]
            headers = {"Authorization": f"Bearer {token}"}
            async with session.post(url + "/api/v1/accounts", json={
                "kind": "individual", "owners": [document]}, headers=headers) as r:
                number = (await r.json())["account"]
            async with session.post(url + "/api/v1/deposits", json={
                "bank": bank, "account": number, "amount_cents": OPENING_CENTS}, headers=headers) as r:
                assert r.status == 201
            person["tokens"][bank] = token
            person["accounts"][bank] = number
        people.append(person)
    return people


def run_ring(
    banks_count: int,
    concurrencies: list[int],
    seconds: float,
    hold_ms: int,
    loop: str,
    *,
    one_way: bool = False,
    per_bank: bool = False,
    slices: int = 1,
    account: bool = False,
) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ids = [f"bank{i}" for i in range(banks_count)]
        config = write_ring_file(Path(tmp) / "ring.toml", ids, hold_max_ms=hold_ms, data_dir=str(Path(tmp) / "var"))
        bare_port = free_ports(1)[0]
        bare = multiprocessing.Process(target=_bare_server, args=(bare_port, loop, os.getpid()), daemon=True)
        bare.start()
        env = dict(os.environ)
        account_dir = Path(tmp) / "account" if account else None
        if account_dir is not None:
            assert loop == "asyncio", "uvloop's callbacks run in C, out of the account's reach"
            account_dir.mkdir()
            env["LOOP_ACCOUNT_DIR"] = str(account_dir)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ACCOUNT_DIR), env.get("PYTHONPATH")]))
        # parent_watch: should this process be killed, the banks stop by themselves.
        consortium = Consortium(config, secret="bench-secret", log_dir=Path(tmp) / "logs", env=env, parent_watch=True)
        for bank in consortium.banks.values():
            bank.extra_args = ["--loop", loop]
        consortium.start()
        pids = {"bare": bare.pid or 0, "banks": [consortium[b].pid for b in ids]}
        try:
            with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
                rows = runner.run(
                    _run(
                        config, ids, bare_port, concurrencies, seconds, pids, Path(tmp) / "logs",
                        one_way=one_way, per_bank=per_bank, slices=slices, account_dir=account_dir,
                    )
                )
        finally:
            consortium.stop()
            bare.terminate()
            bare.join(5)
    return rows


async def _run(
    config: Any,
    ids: list[str],
    bare_port: int,
    concurrencies: list[int],
    seconds: float,
    pids: dict[str, Any],
    log_dir: Path,
    *,
    one_way: bool = False,
    per_bank: bool = False,
    slices: int = 1,
    account_dir: Path | None = None,
) -> list[dict[str, Any]]:
    assert 1 <= slices <= SLICES_MAX
    rows = []
    connector = aiohttp.TCPConnector(limit=CONNECTIONS_MAX)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        people = await _setup(config, session, min(max(concurrencies), CUSTOMERS_MAX))
        rng = random.Random(1)
        reasons: dict[str, int] = {}
        payload = {"sources": [{"bank": "b", "account": 1, "amount_cents": 1}], "destination": {"bank": "c", "account": 2}}

        async def bare(session: aiohttp.ClientSession, index: int) -> bool:
            async with session.post(f"http://127.0.0.1:{bare_port}/bare", json=payload) as r:
                await r.json()
                return r.status == 200

        async def transfer(session: aiohttp.ClientSession, index: int) -> bool:
            person = people[index % len(people)]
            source, destination = (ids[0], ids[1]) if one_way else rng.sample(ids, 2)
            body = {"sources": [{"bank": source, "account": person["accounts"][source], "amount_cents": 1}],
                    "destination": {"bank": destination, "account": person["accounts"][destination]}}
            url = config.bank(source).url + f"/api/v1/transfers?wait_ms={WAIT_MS}"
            try:
                async with session.post(url, json=body, headers={"Authorization": f"Bearer {person['tokens'][source]}"}) as r:
                    answer = await r.json()
            except (aiohttp.ClientError, TimeoutError):
                reasons["no answer"] = reasons.get("no answer", 0) + 1
                return False
            if answer.get("status") != "committed":
                reason = str(answer.get("reason") or answer.get("status") or answer.get("error"))
                reasons[reason] = reasons.get(reason, 0) + 1
            return answer.get("status") == "committed"

        def cpu_now() -> tuple[float, float, float]:
            banks = sum(_cpu_s(pid) for pid in pids["banks"])
            return _cpu_s(pids["bare"]), banks, _own_cpu_s()

        for concurrency in concurrencies:
            reasons.clear()
            # The two are measured in turns, slice by slice, so that a machine that changes
            # speed meanwhile slows both alike: their ratio is what the goal names.
            bare_ok = ok = failed = 0
            bare_s = transfer_s = 0.0
            bare_cpu = [0.0, 0.0]  # the bare server's, the client's
            transfer_cpu = [0.0, 0.0]  # the banks', the client's
            counted = dict.fromkeys(COUNTED, 0.0)
            written = 0.0
            threads_spent = [[0.0, 0.0] for _ in pids["banks"]]
            latencies: list[float] = []
            loop_spent: dict[str, list[float]] = {}
            logged_before = _log_sizes(log_dir)
            for _ in range(slices):
                before = cpu_now()
                done, _, elapsed = await _measure(session, bare, concurrency, seconds / slices, [])
                middle = cpu_now()
                bare_ok, bare_s = bare_ok + done, bare_s + elapsed
                bare_cpu = [bare_cpu[0] + middle[0] - before[0], bare_cpu[1] + middle[2] - before[2]]
                counted_before = await _counters(session, config)
                written_before = sum(_written_bytes(pid) for pid in pids["banks"])
                threads_before = [_threads_cpu_s(pid) for pid in pids["banks"]]
                accounted_before = await _loop_accounts(pids["banks"], account_dir) if account_dir else {}
                middle = cpu_now()
                done, other, elapsed = await _measure(session, transfer, concurrency, seconds / slices, latencies)
                ok, failed, transfer_s = ok + done, failed + other, transfer_s + elapsed
                await asyncio.sleep(DRAIN_S)
                after = cpu_now()
                if account_dir is not None:
                    # Asked after the CPU figures are read: writing the accounts costs them.
                    for name, now in (await _loop_accounts(pids["banks"], account_dir)).items():
                        was = accounted_before.get(name, NO_ACCOUNT)
                        so_far = loop_spent.get(name, NO_ACCOUNT)
                        loop_spent[name] = [a + b - c for a, b, c in zip(so_far, now, was)]
                transfer_cpu = [transfer_cpu[0] + after[1] - middle[1], transfer_cpu[1] + after[2] - middle[2]]
                for spent, was, now in zip(threads_spent, threads_before, [_threads_cpu_s(pid) for pid in pids["banks"]]):
                    spent[0] += now[0] - was[0]
                    spent[1] += now[1] - was[1]
                written += sum(_written_bytes(pid) for pid in pids["banks"]) - written_before
                counted_after = await _counters(session, config)
                for name in COUNTED:
                    counted[name] += counted_after[name] - counted_before[name]
            bare_rate, rate = int(bare_ok / bare_s), int(ok / transfer_s)
            visits, commits, messages, demands = (counted[name] for name in COUNTED)
            waits = _successor_waits_ms(logged_before)
            bare_count = max(1, bare_ok)
            count = max(1, ok)
            row = {
                "banks": len(ids),
                "concurrency": concurrency,
                "committed_per_s": rate,
                "not_committed": failed,
                "latency_ms_p50": _percentile(latencies, 0.50),
                "latency_ms_p99": _percentile(latencies, 0.99),
                "bare_per_s": bare_rate,
                "ratio": rate / bare_rate if bare_rate else float("nan"),
                "bare_server_cpu_ms": 1000 * bare_cpu[0] / bare_count,
                "bare_client_cpu_ms": 1000 * bare_cpu[1] / bare_count,
                "banks_cpu_ms": 1000 * transfer_cpu[0] / count,
                "client_cpu_ms": 1000 * transfer_cpu[1] / count,
                "transfers_per_visit": ok / visits if visits else float("nan"),
                "written_kb_per_transfer": written / 1000 / count,
                "commits_per_transfer": commits / count,
                "messages_per_transfer": messages / count,
                "visit_ms": 1000 * transfer_s / visits if visits else float("nan"),
                "demands_per_visit": demands / visits if visits else float("nan"),
                "successor_wait_ms_p50": _percentile(waits, 0.50),
                "successor_wait_ms_p90": _percentile(waits, 0.90),
            }
            print(
                f"{row['banks']} banks  c={concurrency:<4} committed/s {rate:>6}  "
                f"p50 {row['latency_ms_p50']:7.1f} ms  p99 {row['latency_ms_p99']:7.1f} ms  "
                f"bare/s {bare_rate:>6}  ratio {row['ratio']:.2f}  not committed {failed} {reasons or ''}",
                flush=True,
            )
            row["bare_requests_per_transfer"] = (
                row["banks_cpu_ms"] / row["bare_server_cpu_ms"] if row["bare_server_cpu_ms"] else float("nan")
            )
            print(
                f"{'':17}CPU per transfer: banks {row['banks_cpu_ms']:.2f} ms, client "
                f"{row['client_cpu_ms']:.2f} ms; per bare request: server "
                f"{row['bare_server_cpu_ms']:.2f} ms, client {row['bare_client_cpu_ms']:.2f} ms; "
                f"a transfer costs the banks {row['bare_requests_per_transfer']:.1f} bare requests",
                flush=True,
            )
            print(
                f"{'':17}{row['transfers_per_visit']:.1f} transfers per token visit; per transfer the "
                f"banks made {row['commits_per_transfer']:.2f} commits, sent each other "
                f"{row['messages_per_transfer']:.2f} messages and wrote "
                f"{row['written_kb_per_transfer']:.0f} KB (files and sockets)",
                flush=True,
            )
            print(
                f"{'':17}a token visit lasted {row['visit_ms']:.1f} ms on average and set off "
                f"{row['demands_per_visit']:.2f} demand messages; the rounds that "
                f"prepared at the next bank kept the token for its vote {row['successor_wait_ms_p50']:.1f} ms "
                f"(p50), {row['successor_wait_ms_p90']:.1f} ms (p90)",
                flush=True,
            )
            if one_way or per_bank:
                parts = []
                for bank, spent in zip(ids, threads_spent):
                    loop_us, other_us = (1e6 * seconds_spent / count for seconds_spent in spent)
                    parts.append(f"{bank} {loop_us:.0f} + {other_us:.0f}")
                    row[f"{bank}_loop_us"], row[f"{bank}_other_us"] = loop_us, other_us
                print(f"{'':17}per bank, µs of CPU per transfer (event loop + other threads): " + "; ".join(parts),
                      flush=True)
            if account_dir is not None:
                _print_account(loop_spent, count, visits)
            rows.append(row)
    return rows


def _print_account(spent: dict[str, list[float]], transfers: int, visits: float) -> None:
    """The banks' event loops' CPU per activity (``--account``): µs per committed transfer,
    steps per token visit, and for a route, µs per request; the costliest first."""
    if not spent:
        print(f"{'':17}(no loop account: the banks did not load benchmarks/loop_account, or did not answer in time)", flush=True)
        return
    total_us = sum(entry[0] for entry in spent.values()) / 1000
    print(
        f"{'':17}the banks' event loops: {total_us / transfers:.0f} µs of CPU per transfer, "
        f"{total_us / max(visits, 1):.0f} µs per token visit; by activity:",
        flush=True,
    )
    ranked = sorted(spent.items(), key=lambda item: -item[1][0])
    for name, (ns, steps, started) in ranked[:ACCOUNT_ROWS]:
        us = ns / 1000
        # Per request (not per task: a connection's task lives as long as the connection).
        each = f"{us / started:7.0f} µs per request" if started and name.startswith("request ") else ""
        print(
            f"{'':19}{us / transfers:7.1f} µs/transfer {steps / max(visits, 1):7.2f} steps/visit "
            f"{each:>20}  {name[:90]}",
            flush=True,
        )
    rest = sum(entry[0] for _, entry in ranked[ACCOUNT_ROWS:]) / 1000
    if rest:
        print(f"{'':19}{rest / transfers:7.1f} µs/transfer in {len(ranked) - ACCOUNT_ROWS} other activities", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--banks", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--hold-ms", type=int, default=50, help="the ring's hold_max_ms (default: ring.toml's 50)")
    parser.add_argument(
        "--loop", choices=EVENT_LOOPS, default=EVENT_LOOPS[0],
        help="the event loop of the banks, the bare endpoint and the load generator alike",
    )
    parser.add_argument(
        "--one-way", action="store_true",
        help="every transfer from the first bank to the second (the terminal's and a participant's work apart)",
    )
    parser.add_argument("--per-bank", action="store_true", help="print each bank's CPU per transfer")
    parser.add_argument(
        "--slices", type=int, default=4, choices=range(1, SLICES_MAX + 1), metavar=f"1..{SLICES_MAX}",
        help="measure the bare endpoint and the transfers in turns, in this many slices each (default 4)",
    )
    parser.add_argument(
        "--account", action="store_true",
        help="run the banks on asyncio's loop and print where their event loops' CPU went, by activity",
    )
    args = parser.parse_args()
    if args.account:
        args.loop = "asyncio"  # uvloop runs its callbacks in C, out of the account's reach
    print(
        f"cross-bank transfers, 1 source{' (all from the first bank to the second)' if args.one_way else ''}, "
        f"submit -> outcome; {args.seconds:g} s per figure in {args.slices} turns; "
        f"hold_max_ms {args.hold_ms}; {args.loop} loop; {os.cpu_count()} CPUs"
    )
    print(f"machine: {_calibration():.1f} M CPython loop iterations/s on one core (before)")
    for banks in args.banks:
        run_ring(
            banks, args.concurrency, args.seconds, args.hold_ms, args.loop,
            one_way=args.one_way, per_bank=args.per_bank, slices=args.slices, account=args.account,
        )  # fmt: skip
    print(f"machine: {_calibration():.1f} M CPython loop iterations/s on one core (after)")


if __name__ == "__main__":
    main()
