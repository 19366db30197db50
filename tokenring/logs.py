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
from typing import TextIO

import structlog

from tokenring import jsonio

__all__ = ["configure", "is_configured"]

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
        structlog.processors.TimeStamper(fmt="iso", utc=True),
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


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
