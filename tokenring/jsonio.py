"""JSON on the hot paths: every message between members, every API answer, every log line.

Place in the design: the ring's transport and signed client (``tokenring.signing``), the
banks' APIs and their stored protocol records encode and decode through here. It is orjson
underneath, several times faster than the standard library on the small documents these
paths carry; a few hundred requests a second each pay for it many times over.

The output is compact JSON in UTF-8 (no spaces, non-ASCII characters as themselves), which any
JSON reader accepts. Where orjson and the standard library disagree on what they accept, callers
that must keep the standard library's exact answer to an outside document (the client API
refusing floats with its own message) fall back to it: see :func:`loads_strict_fallback`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

__all__ = ["dumps", "dumps_text", "loads", "loads_strict_fallback", "response"]

_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """``value`` as compact UTF-8 JSON. Integer dict keys become strings, as with the
    standard library; ``default`` turns what JSON cannot carry into what it can, and without
    it such a value (or an integer beyond 64 bits) is a TypeError."""
    return orjson.dumps(value, default=default, option=_OPTIONS)


def dumps_text(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """:func:`dumps`, as text (for a TEXT column, a text stream or a log line)."""
    return dumps(value, default).decode()


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """The JSON value in ``data``; ValueError (``json.JSONDecodeError``) when it is not JSON."""
    return orjson.loads(data)


def loads_strict_fallback(
    data: bytes | bytearray,
    *,
    parse_float: Callable[[str], Any],
    parse_constant: Callable[[str], Any],
) -> Any:
    """``json.loads(data, parse_float=..., parse_constant=...)``, answered by orjson whenever
    that gives the same value: when orjson refuses the document (NaN, a lone surrogate) or
    reads a float in it (a real one, or an integer beyond 64 bits), the standard library reads
    it again with the hooks, so the caller sees exactly what it would have seen. Except for a
    document nested deeper than the standard library's recursion allows: ``ValueError`` (a
    document refused), not ``RecursionError``."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        value = None
        fast = False
    else:
        fast = not _has_float(value)
    if fast:
        return value
    try:
        return json.loads(data, parse_float=parse_float, parse_constant=parse_constant)
    except RecursionError:
        raise ValueError("the document is nested too deeply") from None


def _has_float(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            return True
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
    return False


def response(
    value: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An ``application/json`` response of ``value`` (``web.json_response``, encoded here)."""
    return web.Response(
        body=dumps(value), status=status, headers=headers, content_type="application/json"
    )
