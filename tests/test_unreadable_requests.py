"""Requests aiohttp cannot read are answered in the contract's JSON error shape.

A request line or header over aiohttp's bounds, too many headers, or a malformed method,
version, ``Content-Length`` or chunk size never reach a middleware: aiohttp answers them
itself. A bank (``bank.server.serve``) and a standalone ring member (``Ring.start``) answer them
``{"error": {"code", "message"}}`` like every other error, close the connection, log one line,
and go on serving.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from bank import server
from bank.process import write_ring_file
from tokenring.serving import UNREADABLE_MESSAGE_CHARS_MAX, unreadable_answer
from tokenring.ring import Ring
from waiting import WAIT_S

ANSWER_WAIT_S = 5.0
"""The longest a raw request waits for its whole answer and the connection's close."""

UNREADABLE = {
    "request line over the bound": b"GET /api/v1/accounts?x=" + b"a" * 9_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header over the bound": b"GET /api/v1/accounts HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9_000 + b"\r\n\r\n",
    "too many headers": b"GET /api/v1/accounts HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-%d: 1\r\n" % i for i in range(200))
    + b"\r\n",
    "bad method": b"G(T /api/v1/accounts HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad version": b"GET /api/v1/accounts HTTP/9.9\r\nHost: x\r\n\r\n",
    "bad Content-Length": b"POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "bad chunk size": b"POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}


async def exchange(host: str, port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read until the server closes: status, headers (lower-case) and body."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), ANSWER_WAIT_S)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def assert_json_refusal(status: int, headers: dict[str, str], body: bytes) -> str:
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("the request could not be read as HTTP: ")
    assert len(error["message"]) <= len("the request could not be read as HTTP: ") + UNREADABLE_MESSAGE_CHARS_MAX
    return str(error["message"])


@pytest.fixture
async def bank(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    config = write_ring_file(tmp_path / "ring.toml", ["alfa"], data_dir=str(tmp_path / "data"))
    address = config.bank("alfa")
    stop, ready = asyncio.Event(), asyncio.Event()
    app = server.build_app(config, "alfa", secret=b"a-key")
    serving = asyncio.create_task(server.serve(app, address.host, address.port, stop=stop, on_ready=ready.set))
    await asyncio.wait_for(ready.wait(), WAIT_S)
    try:
        yield address.host, address.port
    finally:
        stop.set()
        await serving


@pytest.mark.parametrize("request_bytes", list(UNREADABLE.values()), ids=list(UNREADABLE))
async def test_a_bank_answers_an_unreadable_request_in_json_and_goes_on_serving(
    bank: tuple[str, int], request_bytes: bytes
) -> None:
    with structlog.testing.capture_logs() as logged:
        # The connection closing is what ends the read: it is not kept for another request.
        status, headers, body = await exchange(*bank, request_bytes)
    assert_json_refusal(status, headers, body)
    (line,) = [entry for entry in logged if entry["event"] == "http.unreadable_request"]
    assert line["log_level"] == "warning" and line["status"] == 400
    assert "exc_info" not in line  # one line, not aiohttp's traceback of the parser
    status, _, body = await exchange(*bank, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200 and json.loads(body)["status"] == "ok"


async def test_the_refusal_quotes_what_could_not_be_read(bank: tuple[str, int]) -> None:
    message = assert_json_refusal(*await exchange(*bank, UNREADABLE["bad method"]))
    assert "Invalid method" in message and "G(T" in message
    message = assert_json_refusal(*await exchange(*bank, UNREADABLE["request line over the bound"]))
    assert "8190 bytes" in message


async def test_a_standalone_ring_member_answers_an_unreadable_request_in_json(tmp_path: Path) -> None:
    config = write_ring_file(tmp_path / "ring.toml", ["alfa", "beta"], hold_max_ms=20, handoff_timeout_ms=50)
    ring = Ring(config, "alfa", secret=b"ring-key")
    await ring.start()
    try:
        address = config.bank("alfa")
        assert_json_refusal(*await exchange(address.host, address.port, UNREADABLE["header over the bound"]))
    finally:
        await ring.stop()


def test_an_answer_names_a_code_of_the_contract_for_each_status() -> None:
    too_large = unreadable_answer(413, "Request Entity Too Large")
    assert too_large.status == 413 and json.loads(too_large.body)["error"]["code"] == "payload_too_large"  # type: ignore[arg-type]
    failed = unreadable_answer(500, "Traceback (most recent call last): secret details")
    # A failure outside the handlers tells the client nothing of the server's insides.
    assert json.loads(failed.body) == {"error": {"code": "internal_error", "message": "internal error"}}  # type: ignore[arg-type]
    slow = unreadable_answer(504, None)
    assert json.loads(slow.body)["error"] == {"code": "unavailable", "message": "Gateway Timeout"}  # type: ignore[arg-type]
    long = unreadable_answer(400, "x" * 10_000)
    assert len(json.loads(long.body)["error"]["message"]) == len("the request could not be read as HTTP: ") + UNREADABLE_MESSAGE_CHARS_MAX  # type: ignore[arg-type]
    assert all(answer.keep_alive is False for answer in (too_large, failed, slow, long))
