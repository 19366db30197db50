"""structlog, configured once for a whole process.

A ring member logs through structlog; :func:`configure` is called once, at the start of a
program (``consortium bank`` calls it), and later calls change nothing unless ``force``.
JSON lines go to a stream that is not a terminal (a container, a file, a test's pipe); a
readable console rendering goes to a terminal. ``merge_contextvars`` comes first, so values
bound with ``structlog.contextvars.bind_contextvars`` (a request id, a transfer id) appear on
every line logged within that context. The ring binds ``bank``, ``generation`` and ``seq``
itself on every line it writes. Debug lines are dropped before they are formatted, so the
per-hand-off lines of an idle ring cost almost nothing at the default level.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO, cast

import structlog

from tokenring import jsonio

__all__ = ["Throttle", "configure", "is_configured", "lines_dropped", "utc_timestamp"]

_configured = False


def is_configured() -> bool:
    """Whether :func:`configure` has run in this process."""
    return _configured


def configure(
    level: str | int = "info",
    *,
    stream: TextIO | None = None,
    json: bool | None = None,
    force: bool = False,
) -> None:
    """Set up structlog for this process (once; ``force`` reconfigures).

    ``level`` is a logging level name or number; ``stream`` defaults to stderr; ``json``
    defaults to "not a terminal".
    """
    global _configured
    if _configured and not force:
        return
    raw = sys.stderr if stream is None else stream
    out = _Unfailing(raw)
    level_number = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    assert isinstance(level_number, int), f"unknown log level {level!r}"
    as_json = (not _isatty(raw)) if json is None else json
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        utc_timestamp,
        structlog.processors.StackInfoRenderer(),
    ]
    if as_json:
        # JSON needs exceptions as text; the console renderer formats them itself.
        processors += [
            structlog.processors.format_exc_info,
            # orjson (tokenring.jsonio): a bank writes a line per request, and the encoding
            # is most of what a line costs.
            structlog.processors.JSONRenderer(serializer=jsonio.dumps_text),
        ]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=_isatty(raw)))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        # WriteLogger: one write and one flush per line, without print()'s machinery.
        logger_factory=structlog.WriteLoggerFactory(file=cast(TextIO, out)),
        cache_logger_on_first_use=True,
    )
    _configured = True


class _Unfailing:
    """A log stream whose writes never raise: a line that cannot be written (a full disk, a
    closed pipe) is dropped and counted (:func:`lines_dropped`). Whoever logs, a request or a
    database's writer thread, must not fail because its line could not be written."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        global _dropped
        try:
            return self._stream.write(text)
        except (OSError, ValueError):  # ValueError: the stream was closed
            _dropped += 1
            return 0

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass


_dropped = 0


def lines_dropped() -> int:
    """How many log lines could not be written since the process started (see
    :func:`configure`)."""
    return _dropped


class Throttle:
    """At most one line per ``interval_s`` for a failure that recurs (a full disk fails every
    write): :meth:`due` says whether to log now, and how many were left out since the last."""

    def __init__(self, interval_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: float | None = None
        self._skipped = 0

    def due(self) -> int | None:
        """None: not now (counted); else log now, with this many left out since the last."""
        now = self._clock()
        if self._last is not None and now - self._last < self.interval_s:
            self._skipped += 1
            return None
        skipped, self._last, self._skipped = self._skipped, now, 0
        return skipped


_second_text: tuple[int, str] = (-1, "")
"""The last whole second :func:`utc_timestamp` formatted, and its text."""


def utc_timestamp(
    _logger: object, _method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Add ``timestamp``: the time now in UTC, ISO 8601 to the microsecond (always six
    digits), e.g. ``2026-11-28T04:49:19.591602Z``.

    structlog's ``TimeStamper(fmt="iso", utc=True)`` builds a timezone-aware datetime and
    formats it whole on every line; a bank writes a line per request, so this formats each
    second once and adds the microseconds.
    """
    global _second_text
    second, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    cached = _second_text  # one read: another thread may replace it meanwhile
    if second != cached[0]:
        cached = _second_text = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    event_dict["timestamp"] = f"{cached[1]}.{nanoseconds // 1000:06d}Z"
    return event_dict


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
