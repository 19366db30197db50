"""Benchmark of real rings: idle rotation, hand-off latency, regeneration, idle CPU share.

For each ring size it starts that many ``consortium bank`` processes on 127.0.0.1 (random free
ports, a temporary ring file), lets the ring settle, and then measures:

- idle rotation: the time between two visits of the token to the same bank, median;
- hand-off latency: from the end of one bank's visit to the start of the next bank's visit
  (the token message on the wire and its handling), p50 and p99, from every bank's recorded
  visits (all on CLOCK_MONOTONIC, which the processes of one machine share);
- idle CPU share: the CPU time of all the bank processes together over wall time, while
  nothing but the token moves (100% is one core);
- token wait, without and with demand: at a random moment while one bank does not hold the
  token, the time until its next visit starts; once as the idle ring paces it, once with a
  signed ``POST /ring/demand`` sent at that moment on that bank's behalf (what its own
  ``holding()`` would send), p50 and max over ``--demand-samples`` moments each;
- regeneration: a bank is stopped while it holds the token and then killed; the time from that
  moment to the first visit of a token of a newer generation (the loss timeout plus the claim).

It prints figures; it asserts nothing. Run it with:

    .venv/bin/python benchmarks/ring_bench.py [--sizes 3,5,9,16] [--handoff-timeout-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bank.process import Consortium, catch_holder, write_ring_file
from tokenring import core
from tokenring.config import HANDOFF_TIMEOUT_MS_DEFAULT
from tokenring.signing import SignedClient

BANK_IDS = tuple(f"b{i:02d}" for i in range(64))
READY_TIMEOUT_S = 120.0
"""Sixteen processes starting at once on two shared cores take a while."""
SETTLE_TIMEOUT_S = 60.0
POLL_S = 0.01


def cpu_seconds(pid: int, *, system_only: bool = False) -> float:
    """utime + stime (or stime alone) of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[12]) if system_only else int(fields[11]) + int(fields[12])
    return ticks / _CLOCK_TICKS


def _clock_ticks() -> int:
    import os

    return os.sysconf("SC_CLK_TCK")


_CLOCK_TICKS = _clock_ticks()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


async def all_holds(
    ring: Consortium, client: SignedClient, bank_ids: list[str]
) -> list[tuple[core.Fence, int, int, str]]:
    found = []
    for bank_id in bank_ids:
        reply = await client.get_json(ring[bank_id].url, "/ring/holds")
        if reply.status != 200:
            continue
        for hold in reply.body["holds"]:
            fence = core.Fence.from_dict(hold["fence"])
            found.append((fence, hold["from_ms"], hold["to_ms"], bank_id))
    return found


async def token_wait_ms(
    ring: Consortium, client: SignedClient, bank_ids: list[str], *, demand: bool
) -> float | None:
    """One sample: from a random moment to the start of ``bank_ids[0]``'s next visit."""
    bank = bank_ids[0]
    url = ring[bank].url
    await asyncio.sleep(random.uniform(0, len(bank_ids) * 0.03))
    status = await client.get_json(url, "/ring/status")
    own = await all_holds(ring, client, [bank])
    if status.status != 200 or status.body["holding"] or not own:
        return None
    last = max(own)[0]
    sent_ms = time.monotonic_ns() // 1_000_000
    if demand:
        body = {"after": last.to_dict()}
        await asyncio.gather(
            *(client.post_json(ring[b].url, "/ring/demand", body) for b in bank_ids[1:])
        )
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        await asyncio.sleep(POLL_S)
        later = [h for h in await all_holds(ring, client, [bank]) if h[0] > last]
        if later:
            first = min(later)
            if first[0].epoch != last.epoch or first[0].seq != last.seq + len(bank_ids):
                return None  # the bank held the token at the moment after all, or a skip
            return float(first[1] - sent_ms)
    return None


async def wait_steady(ring: Consortium, client: SignedClient, bank_ids: list[str]) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        holds = await all_holds(ring, client, bank_ids)
        visited = {bank for _, _, _, bank in holds}
        if visited >= set(bank_ids) and len(holds) >= 2 * len(bank_ids):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the ring did not settle")


async def measure(size: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    bank_ids = list(BANK_IDS[:size])
    config = write_ring_file(
        work / f"ring-{size}.toml",
        bank_ids,
        hold_max_ms=args.hold_max_ms,
        handoff_timeout_ms=args.handoff_timeout_ms,
        loss_timeout_ms=args.loss_timeout_ms,
        data_dir=str(work / f"data-{size}"),
    )
    secret = secrets.token_hex(16)
    ring = Consortium(config, secret=secret, log_dir=work / f"logs-{size}", parent_watch=True)
    ring.start(timeout_s=READY_TIMEOUT_S)
    try:
        async with aiohttp.ClientSession() as session:
            client = SignedClient(session, secret.encode(), bank_ids[0])
            await wait_steady(ring, client, bank_ids)

            # Idle: nothing but the token moves.
            pids = [ring[b].pid for b in bank_ids]
            cpu_before = sum(cpu_seconds(pid) for pid in pids)
            system_before = sum(cpu_seconds(pid, system_only=True) for pid in pids)
            wall_before = time.monotonic()
            window_from_ms = time.monotonic_ns() // 1_000_000
            await asyncio.sleep(args.idle_s)
            wall_s = time.monotonic() - wall_before
            cpu_share = (sum(cpu_seconds(pid) for pid in pids) - cpu_before) / wall_s
            system_share = (
                sum(cpu_seconds(pid, system_only=True) for pid in pids) - system_before
            ) / wall_s
            holds = [h for h in await all_holds(ring, client, bank_ids) if h[1] >= window_from_ms]

            by_bank: dict[str, list[int]] = {}
            for _, begin, _, bank in holds:
                by_bank.setdefault(bank, []).append(begin)
            rotations = [
                later - earlier
                for begins in by_bank.values()
                for earlier, later in zip(sorted(begins), sorted(begins)[1:])
            ]
            in_order = sorted(holds, key=lambda h: h[0])
            handoffs = [
                float(nxt[1] - prev[2])
                for prev, nxt in zip(in_order, in_order[1:])
                if nxt[0].epoch == prev[0].epoch and nxt[3] != prev[3]
            ]

            # Token wait for one bank, as the idle ring paces it and with a demand.
            waits: dict[bool, list[float]] = {False: [], True: []}
            for demand in [False, True] * args.demand_samples:
                sample = await token_wait_ms(ring, client, bank_ids, demand=demand)
                if sample is not None:
                    waits[demand].append(sample)

            # Regeneration: stop the holder (the token is lost from then on), then kill it.
            victim, fence, stopped_at_s = await catch_holder(session, ring)
            ring[victim].kill()
            survivors = [b for b in bank_ids if b != victim]
            urls = {b: ring[b].url for b in survivors}
            client = SignedClient(session, secret.encode(), survivors[0])
            deadline = time.monotonic() + SETTLE_TIMEOUT_S
            newer: list[tuple[core.Fence, int, int, str]] = []
            while time.monotonic() < deadline and not newer:
                # A visit is recorded when it ends: wait for the first of the new generation.
                await asyncio.sleep(0.05)
                newer = [h for h in await all_holds(ring, client, survivors)
                         if h[0].epoch > fence.epoch]  # fmt: skip
            regeneration_ms = (
                min(h[1] for h in newer) - stopped_at_s * 1000 if newer else float("nan")
            )
    finally:
        ring.stop()
    return {
        "banks": size,
        "loss_timeout_ms": config.token.loss_timeout_ms
        or core.loss_timeout_ms_for(size, args.hold_max_ms, args.handoff_timeout_ms),
        "rotation_ms_p50": statistics.median(rotations) if rotations else float("nan"),
        "handoff_ms_p50": percentile(handoffs, 0.5) if handoffs else float("nan"),
        "handoff_ms_p99": percentile(handoffs, 0.99) if handoffs else float("nan"),
        "handoffs": len(handoffs),
        "idle_cpu_percent": 100 * cpu_share,
        "idle_system_percent": 100 * system_share,
        "regeneration_ms": regeneration_ms,
        "wait_idle": waits[False],
        "wait_demand": waits[True],
    }


def _p50_max(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.0f}/{max(values):.0f} ({len(values)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="3,5,9,16", help="ring sizes (default 3,5,9,16)")
    parser.add_argument("--hold-max-ms", type=int, default=25)
    parser.add_argument("--handoff-timeout-ms", type=int, default=HANDOFF_TIMEOUT_MS_DEFAULT)
    parser.add_argument("--loss-timeout-ms", type=int, default=None,
                        help="default: derived, 2 * n * (hold + handoff timeout)")  # fmt: skip
    parser.add_argument("--idle-s", type=float, default=5.0, help="idle window (default 5 s)")
    parser.add_argument("--demand-samples", type=int, default=20,
                        help="token-wait moments, each without and with demand (default 20)")  # fmt: skip
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    assert all(2 <= s <= len(BANK_IDS) for s in sizes), sizes
    print(
        f"hold_max_ms={args.hold_max_ms} handoff_timeout_ms={args.handoff_timeout_ms} "
        f"loss_timeout_ms={args.loss_timeout_ms or 'derived'} idle window {args.idle_s} s",
        flush=True,
    )
    header = (
        f"{'banks':>5} {'loss ms':>8} {'rotation ms':>11} {'hand-off p50':>12} "
        f"{'p99 ms':>7} {'idle CPU %':>10} {'of it sys %':>11} {'regeneration ms':>15} "
        f"{'wait paced p50/max':>18} {'with demand p50/max':>19}"
    )
    print(header, flush=True)
    with tempfile.TemporaryDirectory(prefix="ring-bench-") as tmp:
        for size in sizes:
            row = asyncio.run(measure(size, args, Path(tmp)))
            print(
                f"{row['banks']:>5} {row['loss_timeout_ms']:>8} {row['rotation_ms_p50']:>11.0f} "
                f"{row['handoff_ms_p50']:>12.1f} {row['handoff_ms_p99']:>7.1f} "
                f"{row['idle_cpu_percent']:>10.1f} {row['idle_system_percent']:>11.1f} "
                f"{row['regeneration_ms']:>15.0f} "
                f"{_p50_max(row['wait_idle']):>18} {_p50_max(row['wait_demand']):>19}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
