"""benchmarks/side_by_side.py reads transfer_bench.py's output, the current and the earlier one."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def _module() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "side_by_side.py"
    spec = importlib.util.spec_from_file_location("side_by_side", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NOW = """cross-bank transfers, 1 source, submit -> outcome; 8 s per figure; hold_max_ms 50; uvloop loop; 2 CPUs
machine: 31.7 M CPython loop iterations/s on one core (before)
3 banks  c=64   committed/s   1450  p50    42.8 ms  p99    79.1 ms  bare/s   7360  ratio 0.20  not committed 0 
                 CPU per transfer: banks 1.01 ms, client 0.21 ms; per bare request: server 0.09 ms, client 0.13 ms; a transfer costs the banks 11.5 bare requests
                 16.4 transfers per token visit; per transfer the banks made 0.41 commits, sent each other 0.22 messages and wrote 34 KB (files and sockets)
3 banks  c=256  committed/s   2021  p50   121.9 ms  p99   212.8 ms  bare/s   6723  ratio 0.30  not committed 0 
                 CPU per transfer: banks 0.74 ms, client 0.21 ms; per bare request: server 0.10 ms, client 0.15 ms; a transfer costs the banks 7.5 bare requests
"""
EARLIER = """3 banks  c=64   committed/s    449  p50   138.8 ms  p99   237.2 ms  bare/s   2936  ratio 0.15  not committed 0 
                 CPU per transfer: banks 1.87 ms, client 0.36 ms; per bare request: server 0.13 ms, client 0.20 ms; a transfer costs the banks 14.6 bare requests
                 11.9 transfers per token visit; the banks made 0.56 commits and wrote 36 KB per transfer (files and sockets)
"""


def test_rows_of_the_current_output() -> None:
    rows = _module().parse(NOW)
    assert rows == [
        {"banks": 3, "clients": 64, "rate": 1450, "banks_cpu_ms": 1.01, "client_cpu_ms": 0.21,
         "commits": 0.41, "written_kb": 34.0},
        {"banks": 3, "clients": 256, "rate": 2021, "banks_cpu_ms": 0.74, "client_cpu_ms": 0.21},
    ]  # fmt: skip


def test_rows_of_an_earlier_output() -> None:
    (row,) = _module().parse(EARLIER)
    assert row == {"banks": 3, "clients": 64, "rate": 449, "banks_cpu_ms": 1.87, "client_cpu_ms": 0.36,
                   "commits": 0.56, "written_kb": 36.0}  # fmt: skip


def test_nothing_to_read() -> None:
    assert _module().parse("machine: 30 M CPython loop iterations/s\n") == []
