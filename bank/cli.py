"""The ``consortium`` command line: ``up``, ``bank``, ``status`` and ``scenario``.

Each subcommand is a small function; argument parsing lives in :func:`build_parser` so that
``consortium --help`` describes everything in one place.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tokenring.config import ConfigError, load

__all__ = ["build_parser", "main"]


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
    status = with_config(
        commands.add_parser("status", help="each bank up or down, the token's holder")
    )
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
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
        if args.command in ("up", "bank", "status"):
            load(args.config)
    except ConfigError as error:
        print(f"consortium: {error}", file=sys.stderr)
        return 2
    print(f"consortium {args.command}: not available yet", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
