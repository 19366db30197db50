"""Two versions of the code under the same load at the same moment (prints figures).

A shared virtual machine changes speed by a factor of two within minutes, so figures of one
version measured at one hour and of another at the next do not compare. This runs
``benchmarks/transfer_bench.py`` from a checkout of ``--against`` (a git revision, checked out
in a temporary worktree) and from this checkout at the same time, with the same arguments,
``--runs`` times, and prints each pair: the banks' and the load generator's CPU per committed
transfer, commits and bytes written per transfer. Each version gets about half of the machine,
so throughput halves; CPU per transfer is what compares.

    .venv/bin/python benchmarks/side_by_side.py --against ab04b39
    .venv/bin/python benchmarks/side_by_side.py --against HEAD~3 --runs 3 -- --concurrency 256
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
RUNS_MAX = 10
RUN_TIMEOUT_S = 900.0
"""The longest one pair of runs may take before both are stopped."""
DEFAULT_BENCH_ARGS = ["--banks", "3", "--concurrency", "64", "--seconds", "8"]

_ROW = re.compile(r"^(?P<banks>\d+) banks\s+c=(?P<clients>\d+)\s+committed/s\s+(?P<rate>\d+)")
_CPU = re.compile(r"CPU per transfer: banks (?P<banks>[\d.]+) ms, client (?P<client>[\d.]+) ms")
_COMMITS = re.compile(r"(?P<commits>[\d.]+) commits")
_WRITTEN = re.compile(r"wrote (?P<kb>[\d.]+) KB")


def parse(output: str) -> list[dict[str, Any]]:
    """The rows of ``transfer_bench.py``'s output (of this version or an earlier one)."""
    rows: list[dict[str, Any]] = []
    for line in output.splitlines():
        if match := _ROW.match(line.strip()):
            rows.append({k: int(v) for k, v in match.groupdict().items()})
        elif rows and (match := _CPU.search(line)):
            rows[-1]["banks_cpu_ms"] = float(match["banks"])
            rows[-1]["client_cpu_ms"] = float(match["client"])
        elif rows and "transfers per token visit" in line:
            if commits := _COMMITS.search(line):
                rows[-1]["commits"] = float(commits["commits"])
            if written := _WRITTEN.search(line):
                rows[-1]["written_kb"] = float(written["kb"])
    return rows


def _start(checkout: Path, bench_args: list[str]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    return subprocess.Popen(
        [sys.executable, str(checkout / "benchmarks" / "transfer_bench.py"), *bench_args],
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _pair(old: Path, bench_args: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    checkouts = [old, HERE]
    runs = [_start(checkout, bench_args) for checkout in checkouts]
    outputs = []
    try:
        for checkout, run in zip(checkouts, runs):
            out, _ = run.communicate(timeout=RUN_TIMEOUT_S)
            if run.returncode != 0:
                raise SystemExit(f"transfer_bench.py failed in {checkout}:\n{out[-2000:]}")
            outputs.append(out)
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()
    return parse(outputs[0]), parse(outputs[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="the git revision to compare this checkout with")
    parser.add_argument("--runs", type=int, default=2, help=f"pairs of runs (at most {RUNS_MAX})")
    parser.add_argument("bench_args", nargs="*", help="arguments for transfer_bench.py (after --)")
    args = parser.parse_args()
    if not 0 < args.runs <= RUNS_MAX:
        parser.error(f"--runs is 1 to {RUNS_MAX}")
    bench_args = args.bench_args or DEFAULT_BENCH_ARGS
    with tempfile.TemporaryDirectory() as folder:
        old = Path(folder) / "against"
        subprocess.run(
            ["git", "-C", str(HERE), "worktree", "add", "--detach", "--quiet", str(old), args.against], check=True
        )
        try:
            print(f"{args.against} (old) against this checkout (new), at the same time: transfer_bench.py {' '.join(bench_args)}")
            for index in range(args.runs):
                olds, news = _pair(old, bench_args)
                for before, after in zip(olds, news):
                    change = after.get("banks_cpu_ms", 0) / before["banks_cpu_ms"] - 1 if before.get("banks_cpu_ms") else float("nan")
                    print(
                        f"run {index + 1}: {before['banks']} banks c={before['clients']:<4} "
                        f"banks' CPU per transfer {before.get('banks_cpu_ms', float('nan')):.2f} -> "
                        f"{after.get('banks_cpu_ms', float('nan')):.2f} ms ({change:+.0%}), "
                        f"client {before.get('client_cpu_ms', float('nan')):.2f} -> {after.get('client_cpu_ms', float('nan')):.2f} ms, "
                        f"commits {before.get('commits', float('nan')):.2f} -> {after.get('commits', float('nan')):.2f}, "
                        f"KB written {before.get('written_kb', float('nan')):.0f} -> {after.get('written_kb', float('nan')):.0f}, "
                        f"committed/s {before['rate']} -> {after['rate']} (each on half the machine)",
                        flush=True,
                    )
        finally:
            subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(old)], check=False)


if __name__ == "__main__":
    main()
