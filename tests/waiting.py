"""Waiting in tests for a condition that other tasks make true, with a bound on the wait (and
the processes a test waits for).

Kept out of ``conftest.py`` so that test modules import it by a name no other folder uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

WAIT_S = 10.0
"""The longest a condition is waited for by default (generous: the machine is shared)."""
POLL_S = 0.005
"""How often the condition is looked at."""


async def wait_until(
    condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S, *, poll_s: float = POLL_S
) -> None:
    """Return once ``condition()`` is true; fail naming ``what`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(poll_s)


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` now (from /proc, Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: fields follow the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


UNFINISHED_REQUEST_WAIT_S = 5.0
"""How long :func:`left_by_the_server` waits for the server to close the connection."""


async def left_by_the_server(host: str, port: int) -> bytes:
    """Open a connection, send a request whose headers never end, and read until the server
    closes it: ``b""`` once it did (within UNFINISHED_REQUEST_WAIT_S; a timeout otherwise)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        await writer.drain()
        return await asyncio.wait_for(reader.read(), UNFINISHED_REQUEST_WAIT_S)
    finally:
        writer.close()
