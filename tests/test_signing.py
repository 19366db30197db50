"""Signed messages: what the verifier accepts and refuses, the middleware, the signed client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tokenring.signing import (
    HEADER_NONCE,
    HEADER_RECEIVER,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    SIGNED_SENDER,
    NonceCache,
    SendFailed,
    SignatureError,
    SignedClient,
    Verifier,
    sign,
    signature_middleware,
)
from tokenring.transport import RING_MESSAGE_PATH

SECRET = b"the-ring-key-0123456789"
MEMBERS = frozenset({"alfa", "beta"})

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def verifier(clock: Clock, **kwargs: Any) -> Verifier:
    return Verifier(SECRET, members=MEMBERS, clock_ms=clock, **kwargs)


def signed(clock: Clock, body: bytes = b'{"x":1}', **kwargs: Any) -> dict[str, str]:
    options: dict[str, Any] = {"sender": "alfa", "timestamp_ms": clock.now_ms}
    options.update(kwargs)
    return sign(SECRET, "POST", "/ring/message", body, **options)


def test_a_correctly_signed_message_names_its_sender() -> None:
    clock = Clock()
    headers = signed(clock)
    assert verifier(clock).verify("POST", "/ring/message", headers, b'{"x":1}') == "alfa"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/ring/message", b'{"x":1}'),
        ("POST", "/ring/other", b'{"x":1}'),
        ("POST", "/ring/message?x=1", b'{"x":1}'),
        ("POST", "/ring/message", b'{"x":2}'),
    ],
)
def test_changing_method_path_or_body_breaks_the_signature(
    method: str, path: str, body: bytes
) -> None:
    clock = Clock()
    with pytest.raises(SignatureError, match="bad signature") as caught:
        verifier(clock).verify(method, path, signed(clock), body)
    assert caught.value.status == 401 and caught.value.code == "unauthorized"


BETA, GAMA = "http://127.0.0.1:8102", "http://127.0.0.1:8103"


def test_a_message_signed_for_one_member_is_refused_by_another() -> None:
    """Each member keeps its own nonces: a message seen on its way to beta, sent to gama
    within the clock bound, is refused there (and the receiver it names cannot be changed)."""
    clock = Clock()
    for_beta = signed(clock, receiver=BETA)
    assert verifier(clock, receiver=BETA).verify("POST", "/ring/message", for_beta, b'{"x":1}') == "alfa"
    with pytest.raises(SignatureError, match="not signed for this member"):
        verifier(clock, receiver=GAMA).verify("POST", "/ring/message", for_beta, b'{"x":1}')
    with pytest.raises(SignatureError, match="bad signature"):
        verifier(clock, receiver=GAMA).verify("POST", "/ring/message", {**for_beta, HEADER_RECEIVER: GAMA}, b'{"x":1}')
    with pytest.raises(SignatureError, match="signed for no receiver"):
        verifier(clock, receiver=GAMA).verify("POST", "/ring/message", signed(clock), b'{"x":1}')


def test_a_message_signed_for_a_member_by_id_is_taken_whatever_url_it_came_through() -> None:
    """A member's client signs for the receiver's id: a proxy standing at another url (the
    partition scenario's) passes it on, and the receiver takes it; its url is a name too."""
    clock = Clock()
    beta = verifier(clock, receiver="beta", receiver_url=BETA + "/")
    assert beta.verify("POST", "/ring/message", signed(clock, receiver="beta"), b'{"x":1}') == "alfa"
    assert beta.verify("POST", "/ring/message", signed(clock, receiver=BETA), b'{"x":1}') == "alfa"
    for other in ("gama", GAMA):
        with pytest.raises(SignatureError, match="not signed for this member"):
            beta.verify("POST", "/ring/message", signed(clock, receiver=other), b'{"x":1}')


async def test_a_members_client_signs_for_the_member_at_the_url() -> None:
    sent: list[dict[str, str]] = []

    async def answer(request: web.Request) -> web.Response:
        sent.append(dict(request.headers))
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/ring/message", answer)
    server = TestServer(app)
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        async with aiohttp.ClientSession() as session:
            for receivers, expected in (({url + "/": "beta"}, "beta"), (None, url)):
                client = SignedClient(session, SECRET, "alfa", receivers=receivers)
                await client.post_json(url, "/ring/message", {"x": 1})
                assert sent[-1][HEADER_RECEIVER] == expected
    finally:
        await server.close()


def test_a_message_stamped_before_the_verifier_started_is_refused() -> None:
    """A member forgets its nonces when it restarts: what it took before is refused after."""
    clock = Clock()
    before = signed(clock)
    clock.now_ms += 1_000
    with pytest.raises(SignatureError, match="before this member started"):
        verifier(clock, not_before_ms=clock.now_ms).verify("POST", "/ring/message", before, b'{"x":1}')
    assert verifier(clock, not_before_ms=clock.now_ms).verify("POST", "/ring/message", signed(clock), b'{"x":1}') == "alfa"


def test_a_message_signed_with_another_key_is_refused() -> None:
    clock = Clock()
    headers = sign(b"another-key", "POST", "/ring/message", b"{}", sender="alfa",
                   timestamp_ms=clock.now_ms)  # fmt: skip
    with pytest.raises(SignatureError, match="bad signature"):
        verifier(clock).verify("POST", "/ring/message", headers, b"{}")


def test_a_claimed_sender_other_than_the_signer_is_refused() -> None:
    clock = Clock()
    headers = signed(clock)
    headers["X-Ring-Sender"] = "beta"
    with pytest.raises(SignatureError, match="bad signature"):
        verifier(clock).verify("POST", "/ring/message", headers, b'{"x":1}')


@pytest.mark.parametrize(
    "missing", ["X-Ring-Sender", HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE]
)
def test_each_missing_header_makes_the_message_unsigned(missing: str) -> None:
    clock = Clock()
    headers = signed(clock)
    del headers[missing]
    with pytest.raises(SignatureError, match="unsigned"):
        verifier(clock).verify("POST", "/ring/message", headers, b'{"x":1}')


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Ring-Sender", "alf\u00e1"),
        (HEADER_TIMESTAMP, "\u0661\u0667\u0660\u0660"),  # digits int() reads, not ASCII
        (HEADER_NONCE, "\udced\udcb1"),  # bytes that were not UTF-8, as aiohttp passes them on
        (HEADER_SIGNATURE, "\udced"),
        (HEADER_SIGNATURE, "\u00e9" * 64),
    ],
)
@pytest.mark.parametrize("members", [MEMBERS, None])
def test_a_header_that_is_not_ascii_is_refused_as_malformed(
    header: str, value: str, members: frozenset[str] | None
) -> None:
    """Not an error inside the verifier (a string that cannot be encoded or compared):
    a refusal, whether or not the verifier knows the members."""
    clock = Clock()
    headers = signed(clock)
    headers[header] = value
    with pytest.raises(SignatureError, match="not ASCII"):
        Verifier(SECRET, members=members, clock_ms=clock).verify("POST", "/ring/message", headers, b'{"x":1}')


def test_an_unknown_sender_is_refused_even_with_the_key() -> None:
    clock = Clock()
    with pytest.raises(SignatureError, match="unknown sender"):
        verifier(clock).verify("POST", "/ring/message", signed(clock, sender="zulu"),
                               b'{"x":1}')  # fmt: skip


@pytest.mark.parametrize("skew_ms", [-30_001, 30_001, -10**9])
def test_a_timestamp_beyond_the_skew_bound_is_stale(skew_ms: int) -> None:
    clock = Clock()
    headers = signed(clock, timestamp_ms=clock.now_ms + skew_ms)
    with pytest.raises(SignatureError, match="stale"):
        verifier(clock, skew_ms_max=30_000).verify("POST", "/ring/message", headers, b'{"x":1}')


@pytest.mark.parametrize("skew_ms", [-30_000, 0, 30_000])
def test_a_timestamp_within_the_skew_bound_is_accepted(skew_ms: int) -> None:
    clock = Clock()
    headers = signed(clock, timestamp_ms=clock.now_ms + skew_ms)
    check = verifier(clock, skew_ms_max=30_000)
    assert check.verify("POST", "/ring/message", headers, b'{"x":1}') == "alfa"


def test_a_replayed_message_is_refused_and_a_fresh_nonce_is_not() -> None:
    clock = Clock()
    check = verifier(clock)
    headers = signed(clock)
    check.verify("POST", "/ring/message", headers, b'{"x":1}')
    clock.now_ms += 5_000
    with pytest.raises(SignatureError, match="replayed"):
        check.verify("POST", "/ring/message", headers, b'{"x":1}')
    assert check.verify("POST", "/ring/message", signed(clock), b'{"x":1}') == "alfa"


def test_a_replay_after_the_window_is_refused_as_stale() -> None:
    # The nonce may be forgotten only once its timestamp can no longer be accepted.
    clock = Clock()
    check = verifier(clock, skew_ms_max=1_000)
    headers = signed(clock, timestamp_ms=clock.now_ms + 1_000)
    check.verify("POST", "/ring/message", headers, b'{"x":1}')
    clock.now_ms += 1_999
    with pytest.raises(SignatureError, match="replayed"):
        check.verify("POST", "/ring/message", headers, b'{"x":1}')
    clock.now_ms += 2
    with pytest.raises(SignatureError, match="stale"):
        check.verify("POST", "/ring/message", headers, b'{"x":1}')


def test_a_badly_signed_message_does_not_use_up_its_nonce() -> None:
    clock = Clock()
    check = verifier(clock)
    headers = signed(clock)
    forged = dict(headers, **{HEADER_SIGNATURE: "0" * 64})
    with pytest.raises(SignatureError):
        check.verify("POST", "/ring/message", forged, b'{"x":1}')
    assert len(check.nonces) == 0
    assert check.verify("POST", "/ring/message", headers, b'{"x":1}') == "alfa"


def test_the_nonce_cache_forgets_expired_nonces_and_refuses_when_full() -> None:
    cache = NonceCache(keep_ms=100, nonces_max=2)
    cache.add("a", now_ms=0)
    cache.add("b", now_ms=50)
    with pytest.raises(SignatureError) as caught:
        cache.add("c", now_ms=60)
    assert caught.value.status == 503 and caught.value.code == "busy"
    cache.add("c", now_ms=100)  # "a" expired at 100
    assert len(cache) == 2
    with pytest.raises(SignatureError, match="replayed"):
        cache.add("b", now_ms=120)


def test_the_key_appears_in_no_repr_and_no_error() -> None:
    clock = Clock()
    check = verifier(clock)
    messages = []
    for headers, body in [
        ({}, b""),
        (signed(clock, timestamp_ms=0), b'{"x":1}'),
        (dict(signed(clock), **{HEADER_SIGNATURE: "f" * 64}), b'{"x":1}'),
    ]:
        with pytest.raises(SignatureError) as caught:
            check.verify("POST", "/ring/message", headers, body)
        messages.append(str(caught.value))
    text = " ".join(messages) + repr(check)
    assert SECRET.decode() not in text and repr(SECRET) not in text
    assert "unsigned" in messages[0] and "stale" in messages[1] and "bad signature" in messages[2]


# --- the middleware and the signed client over real HTTP -----------------------------------


def make_app(check: Verifier) -> tuple[web.Application, list[tuple[str, str]]]:
    handled: list[tuple[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        handled.append((request.path, request.get(SIGNED_SENDER, "")))
        return web.json_response({"ok": True, "sender": request.get(SIGNED_SENDER)})

    app = web.Application(middlewares=[signature_middleware(check)])
    app.router.add_post(RING_MESSAGE_PATH, record)
    app.router.add_post("/interbank/prepare", record)
    app.router.add_get("/ring/status", record)
    app.router.add_get("/healthz", record)
    return app, handled


async def test_middleware_closes_a_connection_whose_body_never_arrives(
    aiohttp_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The body is read before the signature can be checked: one that trickles in, from
    anyone, is answered 400 within BODY_READ_TIMEOUT_S and its connection closed."""
    from tokenring import signing

    monkeypatch.setattr(signing, "BODY_READ_TIMEOUT_S", 0.3, raising=False)
    app, handled = make_app(Verifier(SECRET, members=MEMBERS))
    client = await aiohttp_client(app)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b"POST /interbank/prepare HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n{")
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(), 5)  # the answer, then the close
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert handled == []


async def test_middleware_refuses_unsigned_bad_and_replayed_with_the_contract_body(
    aiohttp_client: ClientFactory,
) -> None:
    app, handled = make_app(Verifier(SECRET, members=MEMBERS))
    client = await aiohttp_client(app)
    body = b'{"x":1}'
    good = sign(SECRET, "POST", "/interbank/prepare", body, sender="alfa")
    bad = sign(b"wrong-key", "POST", "/interbank/prepare", body, sender="alfa")

    unsigned_reply = await client.post("/interbank/prepare", data=body)
    bad_reply = await client.post("/interbank/prepare", data=body, headers=bad)
    good_reply = await client.post("/interbank/prepare", data=body, headers=good)
    replay_reply = await client.post("/interbank/prepare", data=body, headers=good)

    assert unsigned_reply.status == 401
    error = (await unsigned_reply.json())["error"]
    assert error["code"] == "unauthorized" and "unsigned" in error["message"]
    assert bad_reply.status == 401
    assert (await bad_reply.json())["error"]["code"] == "unauthorized"
    assert good_reply.status == 200 and (await good_reply.json())["sender"] == "alfa"
    assert replay_reply.status == 401
    assert "replayed" in (await replay_reply.json())["error"]["message"]
    # Only the one good message reached its handler.
    assert handled == [("/interbank/prepare", "alfa")]


async def test_middleware_leaves_status_and_other_paths_open(
    aiohttp_client: ClientFactory,
) -> None:
    app, handled = make_app(Verifier(SECRET, members=MEMBERS))
    client = await aiohttp_client(app)
    assert (await client.get("/ring/status")).status == 200
    assert (await client.get("/healthz")).status == 200
    assert (await client.post(RING_MESSAGE_PATH, json={})).status == 401
    assert handled == [("/ring/status", ""), ("/healthz", "")]


async def test_middleware_answers_a_path_or_method_nothing_serves_as_such(
    aiohttp_client: ClientFactory,
) -> None:
    # A mistyped /ring/status is a 404, not a request for signatures.
    app, handled = make_app(Verifier(SECRET, members=MEMBERS))
    client = await aiohttp_client(app)
    for path in ("/ring/stauts", "/ring/status/", "/ring/", "/interbank/nope"):
        assert (await client.get(path)).status == 404, path
    assert (await client.get("/interbank/prepare")).status == 405
    assert (await client.post("/interbank/prepare", data=b"{}")).status == 401  # served: signed only
    assert handled == []


async def test_signed_client_reaches_a_verifying_server(aiohttp_client: ClientFactory) -> None:
    app, handled = make_app(Verifier(SECRET, members=MEMBERS))
    test_client = await aiohttp_client(app)
    base_url = str(test_client.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as session:
        client = SignedClient(session, SECRET, "beta")
        reply = await client.post_json(base_url, "/interbank/prepare", {"amount_cents": 5})
        status_reply = await client.get_json(base_url, "/ring/status")
        wrong = SignedClient(session, b"not-the-key", "beta")
        refused = await wrong.post_json(base_url, "/interbank/prepare", {"amount_cents": 5})
    assert reply.status == 200 and reply.body == {"ok": True, "sender": "beta"}
    assert status_reply.status == 200
    assert refused.status == 401 and refused.body["error"]["code"] == "unauthorized"
    assert handled[0] == ("/interbank/prepare", "beta")
    assert "not-the-key" not in repr(wrong)


@pytest.mark.parametrize("through", ["peer client", "aiohttp"])
async def test_a_reply_whose_signature_headers_are_not_ascii_is_unsigned_not_an_error(through: str) -> None:
    """A peer (or anything at its address) answering with bytes that are not ASCII in the
    reply's signature headers: the reply comes back unsigned, the send does not fail."""
    from tokenring.peers import PeerClient

    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
        b"X-Ring-Sender: alf\xe1\r\nX-Ring-Signature: \xed\xb3\xad\r\n\r\n{}"
    )

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(reply, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            transport: Any = PeerClient() if through == "peer client" else session
            client = SignedClient(transport, SECRET, "beta")
            result = await client.post_json(f"http://127.0.0.1:{port}", "/ring/message", None, timeout_s=5)
            if isinstance(transport, PeerClient):
                await transport.close()
    finally:
        server.close()
        await server.wait_closed()
    assert result.status == 200 and result.body == {} and result.signed_by is None


async def test_signed_client_raises_send_failed_when_nobody_answers() -> None:
    from bank.process import free_ports

    (port,) = free_ports(1)
    async with aiohttp.ClientSession() as session:
        client = SignedClient(session, SECRET, "beta")
        with pytest.raises(SendFailed) as caught:
            await client.post_json(f"http://127.0.0.1:{port}", "/ring/message", {}, timeout_s=2)
    assert SECRET.decode() not in str(caught.value)


def test_the_random_pool_gives_fresh_bytes_across_refills() -> None:
    from tokenring.signing import RandomPool

    pool = RandomPool(pool_bytes=40)  # a refill every few draws
    drawn = [pool.hex(16) for _ in range(300)]
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in drawn)
    assert len(set(drawn)) == len(drawn)
    with pytest.raises(AssertionError):
        pool.hex(41)  # more than one pool holds


def test_every_signature_carries_its_own_nonce() -> None:
    nonces = {sign(b"k", "POST", "/ring/token", b"{}", sender="a")["X-Ring-Nonce"] for _ in range(2000)}
    assert len(nonces) == 2000
