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
from typing import TextIO

import structlog

from tokenring import jsonio

__all__ = ["configure", "is_configured", "utc_timestamp"]

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
    out = sys.stderr if stream is None else stream
    level_number = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    assert isinstance(level_number, int), f"unknown log level {level!r}"
    as_json = (not _isatty(out)) if json is None else json
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
        processors.append(structlog.dev.ConsoleRenderer(colors=_isatty(out)))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        # WriteLogger: one write and one flush per line, without print()'s machinery.
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    _configured = True


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
