"""The ``consortium scenario`` subcommand: its options and its entry point.

``bank/cli.py`` owns the ``consortium`` parser; it hands the ``scenario`` subparser to
:func:`add_arguments` and the parsed namespace to :func:`run`, so every scenario option lives
here, next to the code that reads it.
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``consortium scenario`` to ``parser``."""
    parser.add_argument("name", nargs="?", help="the scenario to run (--list names them)")
    parser.add_argument("--list", action="store_true", help="name the scenarios and stop")
    parser.add_argument("--seed", type=int, default=1, help="makes the workload reproducible (default: 1)")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON to FILE")
    parser.add_argument(
        "--plot", metavar="FILE.png", help="draw throughput, latency and audited total (matplotlib)"
    )
    parser.add_argument(
        "--attach",
        action="store_true",
        help="use the running ring of -c ring.toml instead of starting one",
    )
    parser.add_argument(
        "-c",
        "--config",
        default="ring.toml",
        help="the ring file for --attach (default: ring.toml)",
    )
    parser.add_argument(
        "--banks", type=int, default=None, help="banks in the ring it starts (default: the scenario's, see --list)"
    )
    parser.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help="how long the load runs, in seconds (default: the scenario's, see --list)",
    )
    parser.add_argument(
        "--clients", type=int, default=None, help="concurrent clients (default: the scenario's, see --list)"
    )
    parser.add_argument(
        "--sizes", default=None, help="scale only: ring sizes to measure, comma-separated (default: 3,5,9,16)"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar (the report is still printed)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the scenario ``args`` names; 0 when every invariant held, 1 when one did not."""
    from scenarios.runner import main

    return main(args)
