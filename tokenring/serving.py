"""What a member's HTTP server needs beyond aiohttp's defaults: its address taken first, and
errors in the JSON shape for requests that never reach a handler.

Place in the design: a bank's server (``bank.server``) and a standalone ring member
(``tokenring.ring.Ring.start``) use both.

- :func:`bind` takes the listening sockets before anything else starts: a second copy of a
  member (or another program on its port) then fails at once, before its ring member has
  said anything to the others (it would tell them the member is leaving).
- :func:`answer_unreadable_requests_in_json`: every error is ``{"error": {"code",
  "message"}}`` (CONTRACT.md). The middlewares see every request aiohttp could read; this
  covers the ones it could not: a request line or a header over aiohttp's size bounds, too
  many headers, a malformed method, version, ``Content-Length`` or chunk size. aiohttp answers
  those itself, before any middleware, in plain text; with this, a runner's server answers
  them in the contract's shape instead, still closing the connection (a stream that could not
  be parsed cannot be trusted for the next request), and logs one line each rather than
  aiohttp's traceback.
"""

from __future__ import annotations

import socket
from http import HTTPStatus

import structlog
from aiohttp import web

from tokenring import jsonio
from tokenring.signing import error_body

__all__ = ["UNREADABLE_MESSAGE_CHARS_MAX", "answer_unreadable_requests_in_json", "bind", "unreadable_answer"]

log = structlog.get_logger("tokenring.http")

UNREADABLE_MESSAGE_CHARS_MAX = 300
"""How much of aiohttp's account of an unreadable request an answer and its log line quote
(it may echo the request's own bytes: aiohttp cuts those at 100 already)."""

_CODE_BY_STATUS: dict[int, str] = {
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "payload_too_large",
    HTTPStatus.INTERNAL_SERVER_ERROR: "internal_error",
    HTTPStatus.NOT_IMPLEMENTED: "not_implemented",
    HTTPStatus.SERVICE_UNAVAILABLE: "unavailable",
    HTTPStatus.GATEWAY_TIMEOUT: "unavailable",
}


def unreadable_answer(status: int, message: str | None) -> web.Response:
    """The answer to a request that failed before any handler: ``status`` with a code the
    contract names (``invalid_request`` for any other 4xx), and aiohttp's ``message``, cut
    short, after what a client should know. The connection closes after it."""
    code = _CODE_BY_STATUS.get(status, "invalid_request" if status < 500 else "internal_error")
    if code == "internal_error":
        # A 500 from outside the handlers (they answer their own): no details to a client.
        text = "internal error"
    else:
        detail = " ".join((message or _phrase(status)).split())[:UNREADABLE_MESSAGE_CHARS_MAX]
        text = f"the request could not be read as HTTP: {detail}" if status < 500 else detail
    response = jsonio.response(error_body(code, text), status=status)
    response.force_close()
    return response


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"status {status}"


class _JsonErrors(web.RequestHandler):
    """aiohttp's connection handler, with :meth:`handle_error` answering in JSON."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # As aiohttp's own: an answer has begun, so the connection is broken.
            raise ConnectionError("an answer was already sent; the error cannot be")
        if status >= 500:
            log.error("http.request_failed", status=status, error=repr(exc), exc_info=exc)
        else:
            log.warning(
                "http.unreadable_request",
                status=status,
                error=" ".join((message or "").split())[:UNREADABLE_MESSAGE_CHARS_MAX],
            )
        return unreadable_answer(status, message)


class _JsonErrorsServer(web.Server):
    """aiohttp's server, making :class:`_JsonErrors` connection handlers."""

    def __call__(self) -> web.RequestHandler:
        handler = super().__call__()
        # The same object, with the one method overridden: _JsonErrors adds no state.
        handler.__class__ = _JsonErrors
        return handler


def answer_unreadable_requests_in_json(runner: web.BaseRunner) -> None:
    """Make ``runner``'s server (after ``runner.setup()``, before its sites start) answer
    requests it cannot read in the contract's JSON shape."""
    server = runner.server
    assert server is not None, "answer_unreadable_requests_in_json() after runner.setup()"
    assert type(server) in (web.Server, _JsonErrorsServer), f"an unknown server {type(server)!r}"
    # The same object, with the one method overridden: _JsonErrorsServer adds no state.
    server.__class__ = _JsonErrorsServer


def bind(host: str, port: int) -> list[socket.socket]:
    """TCP sockets bound to every address of ``host`` at ``port`` (``localhost`` may be two), as
    aiohttp's own sites bind them, ready for ``web.SockSite``; OSError when one is taken or
    not this machine's (nothing is left open then)."""
    listening: list[socket.socket] = []
    try:
        seen = set()
        for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            listening.append(sock)
            # A restarted member may take its port back at once.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # its own socket has IPv4
            sock.bind(address)
    except BaseException:
        for sock in listening:
            sock.close()
        raise
    return listening
