"""Where a bank's event loop spends its CPU, by activity (for ``transfer_bench.py --account``).

Python imports this module at start-up when its folder is on ``PYTHONPATH``. It does nothing
unless ``LOOP_ACCOUNT_DIR`` names a folder and the process is a bank (``python -m bank.cli``).
Then every callback of asyncio's own event loop (uvloop runs its callbacks in C, out of
reach: the bank must run with ``--loop asyncio``) is timed in CPU time of the loop's thread
and counted under its activity:

- ``request POST /api/v1/transfers`` (and each other route) for the steps of a request's
  handler task, the path's ids (a segment with a digit in it) shown as ``{id}``;
- ``task Coordinator...`` for the steps of any other task, by its coroutine's name;
- ``callback ...`` for plain callbacks (a socket's data arriving, a future's waiter).

On ``SIGUSR1`` the totals so far are written to ``LOOP_ACCOUNT_DIR/<pid>.json`` (written
whole, then renamed), with ``seq`` counting the dumps; the first, empty one is written at
start-up, and only a process that has it is sent the signal. The benchmark reads two dumps and
takes their difference. Nothing is measured in the ledger's threads or in the event loop's wait.
"""

from __future__ import annotations

import os
import sys


def _install(folder: str) -> None:
    import asyncio
    import asyncio.events
    import collections
    import json
    import re
    import signal
    import time

    spent_ns: collections.Counter[str] = collections.Counter()
    steps: collections.Counter[str] = collections.Counter()
    started: collections.Counter[str] = collections.Counter()
    seq = 0
    thread_ns = time.thread_time_ns
    run = asyncio.events.Handle._run
    # A path segment with a digit in it is an id (an account, a document, a transfer), but
    # for the API's version.
    ids = re.compile(r"/(?!v\d+(?:/|$))[^/]*\d[^/]*")

    def activity(handle: asyncio.events.Handle) -> tuple[str, bool]:
        """The handle's activity, and whether it is a task's first step."""
        callback = handle._callback  # type: ignore[attr-defined]
        task = getattr(callback, "__self__", None)
        if not isinstance(task, asyncio.Task):
            return "callback " + getattr(callback, "__qualname__", type(callback).__name__), False
        coro = task.get_coro()
        frame = getattr(coro, "cr_frame", None)
        # Neither running nor suspended, and not finished: about to take its first step.
        first = frame is not None and not coro.cr_running and not getattr(coro, "cr_suspended", True)
        name = getattr(coro, "__qualname__", type(coro).__name__)
        if name == "RequestHandler._handle_request" and frame is not None:
            request = frame.f_locals.get("request")
            if request is not None:
                return f"request {request.method} {ids.sub('/{id}', request.path)}", first
        return "task " + name, first

    def timed(handle: asyncio.events.Handle) -> None:
        name, first = activity(handle)
        before = thread_ns()
        try:
            run(handle)
        finally:
            spent_ns[name] += thread_ns() - before
            steps[name] += 1
            started[name] += first

    def dump(signum: int, frame: object) -> None:
        nonlocal seq
        seq += 1
        path = os.path.join(folder, f"{os.getpid()}.json")
        with open(path + ".tmp", "w") as out:
            json.dump({"seq": seq, "spent_ns": spent_ns, "steps": steps, "started": started}, out)
        os.replace(path + ".tmp", path)

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, dump)
    # A first, empty account says the handler is there: SIGUSR1 would end a process without it.
    dump(signal.SIGUSR1, None)


def _is_bank() -> bool:
    try:
        with open("/proc/self/cmdline", "rb") as cmdline:
            return b"bank.cli" in cmdline.read().split(b"\0")
    except OSError:
        return False


if os.environ.get("LOOP_ACCOUNT_DIR") and sys.platform == "linux" and _is_bank():
    _install(os.environ["LOOP_ACCOUNT_DIR"])
