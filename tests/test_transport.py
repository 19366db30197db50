"""The transport alone, around a scripted stand-in for the core: it carries out, decides nothing.

The stand-in answers each event with the actions a test gives it, so these tests pin down the
transport's own duties: a Send becomes a signed POST of the encoded message, everything else is
passed up in order, one timer follows next_deadline_ms(), failed sends are lost and counted,
sends in flight are bounded, and re-entrant events are queued.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bank.process import free_ports
from tokenring import core
from tokenring.signing import SIGNED_SENDER, SignedClient, Verifier, signature_middleware
from tokenring.transport import RING_DEMAND_PATH, RING_MESSAGE_PATH, Transport, monotonic_ms
from waiting import wait_until as wait_within

SECRET = b"transport-test-key"
WAIT_S = 5.0
"""The longest any condition here is waited for (generous: the machine is shared)."""

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


@attrs.frozen
class Note:
    """A message of the stand-in protocol."""

    sender: str
    text: str


@pytest.fixture(autouse=True)
def note_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    # The transport encodes through core.encode_message; the stand-in has its own messages.
    def encode(message: Any) -> dict[str, Any]:
        assert isinstance(message, Note)
        return {"type": "note", "sender": message.sender, "text": message.text}

    def decode(data: Any) -> Note:
        if not isinstance(data, dict) or data.get("type") != "note":
            raise ValueError("not a note")
        return Note(data["sender"], data["text"])

    monkeypatch.setattr(core, "encode_message", encode)
    monkeypatch.setattr(core, "decode_message", decode)


class ScriptedMember:
    """Records every event and answers from a script: event class name -> actions."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, int]] = []
        self.script: dict[str, list[Any]] = {}
        self.deadline_ms: int | None = None

    def handle(self, event: Any, now_ms: int) -> list[Any]:
        self.events.append((event, now_ms))
        return list(self.script.get(type(event).__name__, []))

    def next_deadline_ms(self) -> int | None:
        return self.deadline_ms

    @property
    def status(self) -> Any:
        return attrs.make_class("Status", {"fence": attrs.field(default=None)})()

    def kinds(self) -> list[str]:
        return [type(event).__name__ for event, _ in self.events]


def sample(transport: Transport, name: str, **labels: str) -> float | None:
    return transport.metrics.registry.get_sample_value(name, labels)


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    await wait_within(condition, what, WAIT_S)


class Peer:
    """A member's HTTP side: verifies signatures and records each message it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Any]] = []
        self.gate: asyncio.Event | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[signature_middleware(Verifier(SECRET))])
        app.router.add_post(RING_MESSAGE_PATH, self.on_message)
        app.router.add_post(RING_DEMAND_PATH, self.on_message)
        return app

    async def on_message(self, request: web.Request) -> web.Response:
        if self.gate is not None:
            await self.gate.wait()
        self.received.append((request[SIGNED_SENDER], await request.json()))
        return web.json_response({"accepted": True}, status=202)


async def make_transport(
    session: aiohttp.ClientSession,
    member: ScriptedMember,
    peers: dict[str, str],
    passed_up: list[Any],
    **kwargs: Any,
) -> Transport:
    def on_actions(actions: Sequence[Any]) -> None:
        passed_up.extend(actions)

    return Transport(
        member,  # type: ignore[arg-type]
        member_id="alfa",
        peers=peers,
        client=SignedClient(session, SECRET, "alfa"),
        on_actions=on_actions,
        **kwargs,
    )


async def test_a_send_becomes_a_signed_post_of_the_encoded_message(
    aiohttp_server: ServerFactory,
) -> None:
    peer = Peer()
    server = await aiohttp_server(peer.app())
    member = ScriptedMember()
    member.script["Start"] = [core.Send("beta", Note("alfa", "hello"))]
    passed_up: list[Any] = []
    async with aiohttp.ClientSession() as session:
        transport = await make_transport(
            session, member, {"beta": str(server.make_url("")).rstrip("/")}, passed_up
        )
        transport.start()
        await wait_until(lambda: bool(peer.received), "the peer got the message")
        await transport.close()
    assert peer.received == [("alfa", {"type": "note", "sender": "alfa", "text": "hello"})]
    assert passed_up == []
    assert member.kinds() == ["Start"]


async def test_every_other_action_is_passed_up_in_order() -> None:
    member = ScriptedMember()
    first, second = object(), object()
    member.script["Start"] = [first, second]
    passed_up: list[Any] = []
    async with aiohttp.ClientSession() as session:
        transport = await make_transport(session, member, {}, passed_up)
        transport.start()
        await transport.close()
    assert passed_up == [first, second]


async def test_a_received_message_reaches_the_core_as_received() -> None:
    member = ScriptedMember()
    async with aiohttp.ClientSession() as session:
        transport = await make_transport(session, member, {}, [])
        transport.receive(Note("beta", "hi"))
        await transport.close()
    (event, _), = member.events
    assert isinstance(event, core.Received) and event.message == Note("beta", "hi")
    assert sample(transport, "tokenring_messages_received_total", sender="beta") == 1


async def test_the_timer_fires_once_the_deadline_has_passed() -> None:
    member = ScriptedMember()
    async with aiohttp.ClientSession() as session:
        transport = await make_transport(session, member, {}, [])
        deadline_ms = monotonic_ms() + 30
        member.deadline_ms = deadline_ms
        transport.start()
        await wait_until(lambda: "TimerFired" in member.kinds(), "the timer fired")
        member.deadline_ms = None
        await transport.close()
    fired = [now for event, now in member.events if isinstance(event, core.TimerFired)]
    assert fired[0] >= deadline_ms


async def test_the_timer_is_rearmed_from_each_input() -> None:
    member = ScriptedMember()
    async with aiohttp.ClientSession() as session:
        transport = await make_transport(session, member, {}, [])
        member.deadline_ms = monotonic_ms() + 60_000
        transport.start()
        # A message moves the deadline much closer: the timer must follow it.
        near_ms = monotonic_ms() + 20
        member.deadline_ms = near_ms
        transport.receive(Note("beta", "x"))
        await wait_until(lambda: "TimerFired" in member.kinds(), "the re-armed timer fired")
        member.deadline_ms = None
        await transport.close()
    assert member.kinds()[:3] == ["Start", "Received", "TimerFired"]
    assert member.events[2][1] >= near_ms


async def test_a_failed_send_is_lost_and_counted_and_the_member_goes_on() -> None:
    (port,) = free_ports(1)
    member = ScriptedMember()
    member.script["Start"] = [core.Send("beta", Note("alfa", "lost"))]
    async with aiohttp.ClientSession() as session:
        transport = await make_transport(
            session, member, {"beta": f"http://127.0.0.1:{port}"}, []
        )
        transport.start()
        await wait_until(lambda: sample(transport, "tokenring_sends_failed_total") == 1, "counted")
        transport.receive(Note("beta", "still here"))
        await transport.close()
    assert member.kinds() == ["Start", "Received"]


async def test_sends_in_flight_are_bounded_and_the_excess_is_dropped(
    aiohttp_server: ServerFactory,
) -> None:
    peer = Peer()
    peer.gate = asyncio.Event()  # the peer does not answer until the gate opens
    server = await aiohttp_server(peer.app())
    member = ScriptedMember()
    member.script["Start"] = [core.Send("beta", Note("alfa", str(i))) for i in range(5)]
    async with aiohttp.ClientSession() as session:
        transport = await make_transport(
            session,
            member,
            {"beta": str(server.make_url("")).rstrip("/")},
            [],
            sends_in_flight_max=3,
        )
        transport.start()
        assert transport.sends_in_flight == 3
        assert sample(transport, "tokenring_sends_dropped_total") == 2
        peer.gate.set()
        assert await transport.drain(timeout_s=WAIT_S)
        await transport.close()
    assert sorted(body["text"] for _, body in peer.received) == ["0", "1", "2"]


async def test_the_owners_own_post_is_signed_and_shares_the_bound_on_sends(
    aiohttp_server: ServerFactory,
) -> None:
    peer = Peer()
    peer.gate = asyncio.Event()
    server = await aiohttp_server(peer.app())
    member = ScriptedMember()
    member.script["Start"] = [core.Send("beta", Note("alfa", "token"))]
    async with aiohttp.ClientSession() as session:
        transport = await make_transport(
            session,
            member,
            {"beta": str(server.make_url("")).rstrip("/")},
            [],
            sends_in_flight_max=2,
        )
        transport.start()
        assert transport.post("beta", RING_DEMAND_PATH, {"after": None})
        # Two on the wire (the core's send and the owner's): the next one is dropped.
        assert not transport.post("beta", RING_DEMAND_PATH, {"after": None})
        assert sample(transport, "tokenring_sends_dropped_total") == 1
        peer.gate.set()
        assert await transport.drain(timeout_s=WAIT_S)
        await transport.close()
        assert not transport.post("beta", RING_DEMAND_PATH, {"after": None})
    assert sorted(map(str, peer.received)) == sorted(
        map(
            str,
            [
                ("alfa", {"type": "note", "sender": "alfa", "text": "token"}),
                ("alfa", {"after": None}),
            ],
        )
    )
    assert member.kinds() == ["Start"]


async def test_an_event_handed_in_while_handling_is_queued_after_it() -> None:
    member = ScriptedMember()
    marker = object()
    member.script["Start"] = [marker]
    order: list[str] = []
    transport: Transport | None = None

    def on_actions(actions: Sequence[Any]) -> None:
        assert transport is not None
        order.append("actions")
        transport.handle(core.Release(Fence_for_test()))
        order.append("after re-entrant handle")

    async with aiohttp.ClientSession() as session:
        transport = Transport(
            member,  # type: ignore[arg-type]
            member_id="alfa",
            peers={},
            client=SignedClient(session, SECRET, "alfa"),
            on_actions=on_actions,
        )
        transport.start()
        await transport.close()
    # The Release reached the core only after Start's actions were all carried out.
    assert order == ["actions", "after re-entrant handle"]
    assert member.kinds() == ["Start", "Release"]


def Fence_for_test() -> core.Fence:  # noqa: N802 (reads as the value it makes)
    return core.Fence(epoch=1, issuer="alfa", seq=1)


async def test_a_closed_transport_ignores_events_and_cancels_its_sends(
    aiohttp_server: ServerFactory,
) -> None:
    peer = Peer()
    peer.gate = asyncio.Event()
    server = await aiohttp_server(peer.app())
    member = ScriptedMember()
    member.script["Start"] = [core.Send("beta", Note("alfa", "never answered"))]
    async with aiohttp.ClientSession() as session:
        transport = await make_transport(
            session, member, {"beta": str(server.make_url("")).rstrip("/")}, []
        )
        transport.start()
        assert transport.sends_in_flight == 1
        await transport.close()
        assert transport.sends_in_flight == 0
        transport.receive(Note("beta", "late"))
    assert member.kinds() == ["Start"]
    peer.gate.set()


class AnsweringPeer(Peer):
    """Answers each message with messages of its own in the answer, signed or not."""

    def __init__(self, *, signed: bool, secret: bytes = SECRET) -> None:
        super().__init__()
        self.signed = signed
        self.secret = secret

    async def on_message(self, request: web.Request) -> web.Response:
        from tokenring.signing import HEADER_NONCE, sign_reply

        self.received.append((request[SIGNED_SENDER], await request.json()))
        body = json.dumps({"accepted": True, "messages": [
            {"type": "note", "sender": "beta", "text": "ack"},
            {"type": "note", "sender": "gama", "text": "not beta's to say"},
            {"type": "nonsense"},
        ]}).encode()  # fmt: skip
        headers = {}
        if self.signed:
            headers = sign_reply(self.secret, responder="beta",
                                 request_nonce=request.headers[HEADER_NONCE], body=body)  # fmt: skip
        return web.Response(body=body, status=202, content_type="application/json",
                            headers=headers)  # fmt: skip


@pytest.mark.parametrize(
    ("signed", "secret", "delivered"),
    [(True, SECRET, True), (False, SECRET, False), (True, b"another-key", False)],
)
async def test_messages_in_a_signed_answer_reach_the_core_and_others_do_not(
    aiohttp_server: ServerFactory, signed: bool, secret: bytes, delivered: bool
) -> None:
    peer = AnsweringPeer(signed=signed, secret=secret)
    server = await aiohttp_server(peer.app())
    member = ScriptedMember()
    member.script["Start"] = [core.Send("beta", Note("alfa", "token"))]
    async with aiohttp.ClientSession() as session:
        transport = await make_transport(
            session, member, {"beta": str(server.make_url("")).rstrip("/")}, []
        )
        transport.start()
        await wait_until(lambda: bool(peer.received), "the peer got the message")
        assert await transport.drain(timeout_s=WAIT_S)
        await transport.close()
    received = [event.message for event, _ in member.events if isinstance(event, core.Received)]
    # Only beta's own message, and only from an answer signed with the ring key for this
    # request; a message naming another sender or one that does not decode is dropped.
    assert received == ([Note("beta", "ack")] if delivered else [])


async def test_messages_sent_back_while_handling_are_returned_for_the_answer() -> None:
    member = ScriptedMember()
    member.script["Received"] = [
        core.Send("beta", Note("alfa", "ack")),
        core.Send("gama", Note("alfa", "to someone else")),
    ]
    async with aiohttp.ClientSession() as session:
        transport = await make_transport(
            session, member, {"beta": "http://127.0.0.1:9", "gama": "http://127.0.0.1:9"}, []
        )
        replies = transport.receive(Note("beta", "token"), reply=True)
        assert transport.sends_in_flight == 1  # the message to gama is posted
        await transport.close()
    assert replies == [{"type": "note", "sender": "alfa", "text": "ack"}]
