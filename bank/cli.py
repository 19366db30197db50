"""The ``consortium`` command line: ``up``, ``bank``, ``status`` and ``scenario``.

Each subcommand is a small function; argument parsing lives in :func:`build_parser` so that
``consortium --help`` describes everything in one place. ``up`` starts every bank of the ring
file as a child process (:mod:`bank.process`) and stops them all on Ctrl-C or SIGTERM; ``bank``
runs one bank in this process (:mod:`bank.server`); ``status`` asks every bank for its
``/ring/status`` twice and prints a table (or JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from tokenring.config import ConfigError, RingConfig, load

__all__ = [
    "STATUS_INTERVAL_S_DEFAULT",
    "STATUS_INTERVAL_S_MAX",
    "STATUS_TIMEOUT_S",
    "UP_POLL_S",
    "build_parser",
    "collect_status",
    "main",
]

STATUS_INTERVAL_S_DEFAULT = 1.0
"""``consortium status`` samples every bank twice, this far apart, for visits per second."""
STATUS_INTERVAL_S_MAX = 60.0
"""The longest ``--interval`` taken: a rate over minutes says little of the ring now."""
STATUS_TIMEOUT_S = 1.0
"""How long ``consortium status`` waits for one bank's answer before calling it down."""
UP_POLL_S = 0.2
"""How often ``consortium up`` looks for a signal or a bank that exited."""

LOG_LEVELS = ("debug", "info", "warning", "error")
"""What ``--log-level`` takes (tokenring.logs.configure would take any name logging knows)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="consortium",
        description="A bank consortium with no central bank, coordinated by a token ring.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument(
            "-c", "--config", default="ring.toml", help="the ring file (default: ring.toml)"
        )
        return sub

    with_config(commands.add_parser("up", help="start every bank of the file on this machine"))
    bank = with_config(commands.add_parser("bank", help="run one bank (what a container runs)"))
    bank.add_argument("id", help="the bank's id in the ring file")
    bank.add_argument(
        "--host",
        default=None,
        help="the address to listen on (default: the host of the bank's url; "
        "a container uses 0.0.0.0)",
    )
    bank.add_argument(
        "--log-level", default="info", choices=LOG_LEVELS, help="debug, info, warning or error (default: info)"
    )
    bank.add_argument(
        "--loop",
        choices=EVENT_LOOPS,
        default=EVENT_LOOPS[0],
        help="the event loop: uvloop (libuv, the default where it is installed) or the "
        "standard library's asyncio",
    )
    status = with_config(
        commands.add_parser("status", help="each bank up or down, the token's holder")
    )
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    status.add_argument(
        "--interval",
        type=float,
        default=STATUS_INTERVAL_S_DEFAULT,
        help="seconds between the two samples that give visits per second, above 0 and at "
        f"most {STATUS_INTERVAL_S_MAX:g} (default: {STATUS_INTERVAL_S_DEFAULT:g})",
    )
    scenario = commands.add_parser("scenario", help="replay load and faults against a ring")
    from scenarios.cli import add_arguments as add_scenario_arguments

    add_scenario_arguments(scenario)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "scenario":
        from scenarios.cli import run as run_scenario

        return run_scenario(args)
    try:
        config = load(args.config)
        if args.command == "bank":
            config.bank(args.id)
            secret = config.secret()
        if args.command in ("bank", "up"):
            check_data_dir(config)
    except ConfigError as error:
        print(f"consortium: {error}", file=sys.stderr)
        return 2
    if args.command == "up":
        return run_up(config)
    if args.command == "bank":
        return run_bank(
            config, args.id, secret, host=args.host, log_level=args.log_level, loop=args.loop
        )
    assert args.command == "status", args.command
    if not 0 < args.interval <= STATUS_INTERVAL_S_MAX:
        print(
            f"consortium: --interval must be above 0 and at most {STATUS_INTERVAL_S_MAX:g} "
            f"seconds, not {args.interval:g}",
            file=sys.stderr,
        )
        return 2
    return run_status(config, as_json=args.json, interval_s=args.interval)


def check_data_dir(config: RingConfig) -> None:
    """:class:`ConfigError` when the file's ``data_dir`` (or a folder above it) is a file: the
    banks could keep neither their databases nor their logs there. A folder that does not
    exist yet is made when a bank starts."""
    for path in (config.data_dir, *config.data_dir.parents):
        if path.exists():
            if not path.is_dir():
                where = "" if path == config.data_dir else f"{config.data_dir}: "
                raise ConfigError(
                    config.path, "consortium.data_dir", f"{where}{path} is a file, not a folder"
                )
            return


# --- consortium bank ID -----------------------------------------------------------------------


EVENT_LOOPS = ("uvloop", "asyncio")
"""The event loops a bank can run on; the first is the default."""


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the named event loop for ``asyncio.Runner`` (None: the standard one).
    uvloop runs the same asyncio programs on libuv with a fraction of the CPU per request;
    where it is not installed (it has no Windows build) the standard loop serves."""
    assert name in EVENT_LOOPS, name
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            return None
        return uvloop.new_event_loop
    return None


def run_bank(
    config: RingConfig,
    bank_id: str,
    secret: bytes,
    *,
    host: str | None,
    log_level: str,
    loop: str = EVENT_LOOPS[0],
) -> int:
    """Serve one bank until SIGTERM or Ctrl-C."""
    from bank.ledger import LedgerUnusable
    from bank.process import ENV_PARENT_PID
    from bank.server import build_app, serve, tune_gc
    from tokenring import logs

    logs.configure(log_level)
    bank = config.bank(bank_id)
    parent = os.environ.get(ENV_PARENT_PID)
    parent_pid = int(parent) if parent and parent.isdigit() else None
    app = build_app(config, bank_id, secret=secret)
    try:
        with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
            runner.run(serve(app, host or bank.host, bank.port, parent_pid=parent_pid, on_ready=tune_gc))
    except LedgerUnusable as error:
        # A database that is damaged, not one, newer than this code, or in a folder that
        # cannot be written: one line naming it, not a trace.
        print(f"consortium: bank {bank_id}: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        # The port is taken, or the address is not this machine's: one line, not a trace.
        print(f"consortium: bank {bank_id}: cannot serve {bank.url}: {error}", file=sys.stderr)
        return 1
    return 0


# --- consortium up ----------------------------------------------------------------------------


def run_up(config: RingConfig) -> int:
    """Start every bank as a child, print where they are, stop them all on a signal."""
    from bank.process import Consortium
    from bank.server import unavailable_addresses

    # Before any bank starts or any log opens: over a ring that already runs, its banks'
    # logs are theirs, and a bank started here would only write its failure into them.
    unavailable = unavailable_addresses(config)
    if unavailable:
        print(f"consortium: {_unavailable_line(config, unavailable)}", file=sys.stderr)
        return 1
    secret = os.environ.get(config.secret_env, "")
    if not secret:
        secret = secrets.token_hex(32)
        print(f"No {config.secret_env} in the environment: made a secret for this run.")
    log_dir = config.data_dir / "logs"
    consortium = Consortium(config, secret=secret, log_dir=log_dir, parent_watch=True)

    stopping: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        stopping.append(signum)

    previous = {
        signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        try:
            consortium.start()
        except RuntimeError as error:
            print(f"consortium: {error}", file=sys.stderr)
            return 1
        print(f"Consortium {config.name!r}: {len(config.banks)} banks (logs in {log_dir})")
        for bank in config.banks:
            print(f"  {bank.id:<12} {bank.name:<24} {bank.url}   web terminal: {bank.url}/")
        print("Ctrl-C stops every bank.", flush=True)
        while not stopping:
            for bank_id, process in consortium.banks.items():
                if process.process is not None and not process.alive():
                    print(f"bank {bank_id} exited ({process.exit_note()}); the ring goes on without it", flush=True)
                    process.process = None
            if all(process.process is None for process in consortium.banks.values()):
                print("consortium: every bank has exited", file=sys.stderr)
                return 1
            time.sleep(UP_POLL_S)
        print("Stopping every bank...", flush=True)
    finally:
        codes = consortium.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    unclean = {bank_id: code for bank_id, code in codes.items() if code not in (None, 0)}
    if unclean:
        print(f"Stopped; exit codes other than 0: {unclean}")
    else:
        print("Stopped.")
    return 0


def _unavailable_line(config: RingConfig, unavailable: dict[str, OSError]) -> str:
    """One line naming every bank that cannot have its address, grouped by why."""
    by_reason: dict[str, list[str]] = {}
    for bank_id, error in unavailable.items():
        reason = error.strerror or str(error)
        reason = reason[:1].lower() + reason[1:]
        by_reason.setdefault(reason, []).append(f"{bank_id} ({config.bank(bank_id).url})")
    where = "; ".join(f"{reason} at {', '.join(banks)}" for reason, banks in by_reason.items())
    line = f"started no bank: {where}"
    if any(error.errno == errno.EADDRINUSE for error in unavailable.values()):
        line += f"; is this ring running already? consortium status -c {config.path} shows it"
    return line


# --- consortium status ------------------------------------------------------------------------


async def _sample(config: RingConfig, timeout_s: float) -> dict[str, Any]:
    import aiohttp

    from bank.process import fetch_statuses

    async with aiohttp.ClientSession() as session:
        urls = {bank.id: bank.url for bank in config.banks}
        return await fetch_statuses(session, urls, timeout_s=timeout_s)


def collect_status(
    config: RingConfig,
    *,
    interval_s: float = STATUS_INTERVAL_S_DEFAULT,
    timeout_s: float = STATUS_TIMEOUT_S,
) -> dict[str, Any]:
    """Sample every bank twice, ``interval_s`` apart; the ``status --json`` document."""
    first_at = time.monotonic()
    first = asyncio.run(_sample(config, timeout_s))
    time.sleep(interval_s)
    second_at = time.monotonic()
    second = asyncio.run(_sample(config, timeout_s))
    elapsed_s = max(second_at - first_at, 1e-3)
    banks = []
    for bank in config.banks:
        now, before = second[bank.id], first[bank.id]
        doc: dict[str, Any] = {"bank": bank.id, "name": bank.name, "url": bank.url}
        if now is None:
            doc.update(
                up=False, holding=False, generation=None, seq=None, visits_per_s=None,
                config=None, config_matches=None, config_differs=[],
            )  # fmt: skip
        else:
            rate = None
            if before is not None and isinstance(before.get("visits"), int):
                rate = round((now["visits"] - before["visits"]) / elapsed_s, 2)
            doc.update(
                up=True,
                holding=bool(now.get("holding")),
                generation=now.get("generation"),
                seq=now.get("seq"),
                successor=now.get("successor"),
                members=now.get("members"),
                visits=now.get("visits"),
                visits_per_s=rate,
                config=now.get("config"),
                # None: a bank that does not say (an older build) is not judged.
                config_matches=None if now.get("config") is None else now.get("config") == config.digest,
                config_differs=now.get("config_differs") or [],
            )
        banks.append(doc)
    holders = [doc["bank"] for doc in banks if doc["holding"]]
    return {
        "ring": config.name,
        "config": config.digest,
        "banks": banks,
        "holders": holders,
        "up": sum(1 for doc in banks if doc["up"]),
        "interval_s": round(elapsed_s, 3),
    }


def run_status(config: RingConfig, *, as_json: bool, interval_s: float) -> int:
    report = collect_status(config, interval_s=interval_s)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)
    # A script can tell "the ring answered" from "nothing is running".
    return 0 if report["up"] else 1


def _print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ring {report['ring']}: {report['up']}/{len(report['banks'])} up")
    for column in ("bank", "url", "state", "token", "generation", "seq", "visits/s", "sees down"):
        table.add_column(column, justify="right" if column in ("generation", "seq") else "left")
    for doc in report["banks"]:
        if not doc["up"]:
            table.add_row(doc["bank"], doc["url"], "[red]down[/red]", "", "", "", "", "")
            continue
        down = [m for m, state in (doc.get("members") or {}).items() if state == "down"]
        rate = doc["visits_per_s"]
        table.add_row(
            doc["bank"],
            doc["url"],
            "[green]up[/green]",
            "[bold yellow]holds[/bold yellow]" if doc["holding"] else "",
            str(doc["generation"]),
            str(doc["seq"]),
            "" if rate is None else f"{rate:.1f}",
            ", ".join(down),
        )
    # Off a terminal rich assumes 80 columns, too few for the urls: give the table room.
    console = Console() if sys.stdout.isatty() else Console(width=120)
    console.print(table)
    if not report["up"]:
        print("No bank answered: is the consortium running (consortium up, or consortium bank ID)?")
    elif not report["holders"]:
        print("No bank held the token at the moment of the sample (it may be in transit).")
    for doc in report["banks"]:
        if doc["up"] and doc["config_matches"] is False:
            print(
                f"{doc['bank']} runs with another ring file (digest {doc['config']}; this file's is "
                f"{report['config']}): every member needs the same banks, order, urls and token timings."
            )


if __name__ == "__main__":
    sys.exit(main())
