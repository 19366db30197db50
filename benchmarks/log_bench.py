"""What one log line costs a bank (prints figures; not a test).

A bank writes one canonical line per request (``bank.api``'s middleware), so the line is
part of every transfer's CPU. This times that line through the project's structlog
configuration (``tokenring.logs.configure``, JSON to a file), and, apart, the timestamp:
the project's :func:`tokenring.logs.utc_timestamp` beside structlog's
``TimeStamper(fmt="iso", utc=True)``, which it replaces.

    .venv/bin/python benchmarks/log_bench.py
    .venv/bin/python benchmarks/log_bench.py --lines 200000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tokenring import logs  # noqa: E402

LINES_MAX = 10_000_000


def _per_call_us(call: Callable[[], object], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        call()
    return 1e6 * (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000, help="lines (and timestamps) timed")
    args = parser.parse_args()
    if not 0 < args.lines <= LINES_MAX:
        parser.error(f"--lines is 1 to {LINES_MAX}")
    with tempfile.TemporaryDirectory() as folder, open(Path(folder) / "bank.log", "w") as out:
        logs.configure("info", stream=out, json=True, force=True)
        log = structlog.get_logger("bench")

        def line() -> None:
            log.info(
                "request", request_id="0123456789abcdef", bank="bank0", method="POST",
                path="/api/v1/transfers", status=200, code=None, duration_ms=12.345,
            )

        with structlog.contextvars.bound_contextvars(request_id="0123456789abcdef", bank="bank0"):
            line_us = _per_call_us(line, args.lines)
    theirs = structlog.processors.TimeStamper(fmt="iso", utc=True)
    theirs_us = _per_call_us(lambda: theirs(None, "info", {}), args.lines)
    ours_us = _per_call_us(lambda: logs.utc_timestamp(None, "info", {}), args.lines)
    print(f"one canonical request line (JSON, to a file): {line_us:.1f} us")
    print(f"its timestamp: {ours_us:.2f} us (tokenring.logs.utc_timestamp); "
          f"structlog's TimeStamper(fmt='iso', utc=True): {theirs_us:.2f} us")


if __name__ == "__main__":
    main()
