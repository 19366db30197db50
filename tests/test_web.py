"""The web terminal's server side: the page, its files, and the live feed of the ring."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bank import keys, web as bank_web
from bank.web import MemberView, summarize
from tokenring.config import RingConfig, parse

from ring_fakes import FakeRing, status

WAIT_S_MAX = 5.0
"""The longest any test here waits for a condition; conditions come in tens of ms."""

Server = Callable[[web.Application], Awaitable[TestServer]]
Client = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


def ring_config(urls: dict[str, str]) -> RingConfig:
    return parse(
        {
            "consortium": {"name": "test", "secret_env": "X_SECRET", "data_dir": "/tmp/unused"},
            "token": {"hold_max_ms": 25},
            "banks": [
                {"id": bank_id, "name": f"Banco {bank_id.title()}", "url": url}
                for bank_id, url in urls.items()
            ],
        }
    )


async def status_server(aiohttp_server: Server, document: dict[str, Any]) -> TestServer:
    """A member's public /ring/status on 127.0.0.1; the test changes ``document`` in place."""

    async def ring_status(request: web.Request) -> web.Response:
        return web.json_response(document)

    app = web.Application()
    app.router.add_get("/ring/status", ring_status)
    return await aiohttp_server(app)


def bank_app(
    config: RingConfig | None, bank_id: str | None, ring: FakeRing | None
) -> web.Application:
    app = web.Application()
    if config is not None:
        app[keys.CONFIG] = config
    if bank_id is not None:
        app[keys.BANK_ID] = bank_id
    if ring is not None:
        app[keys.RING] = ring
    bank_web.install(app)
    return app


async def sse_events(response: Any, deadline: float) -> AsyncIterator[dict[str, Any]]:
    """The ``ring`` events of an open stream, until ``deadline`` (monotonic seconds)."""
    kind, data = None, []
    while time.monotonic() < deadline:
        line = await asyncio.wait_for(response.content.readline(), deadline - time.monotonic())
        if not line:
            return
        text = line.decode().rstrip("\n")
        if text.startswith("event:"):
            kind = text[6:].strip()
        elif text.startswith("data:"):
            data.append(text[5:].strip())
        elif text == "":
            if kind == "ring" and data:
                yield json.loads("\n".join(data))
            kind, data = None, []


async def wait_for_event(
    events: AsyncIterator[dict[str, Any]], predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async for event in events:
        if predicate(event):
            return event
    raise AssertionError("the stream ended or timed out before the expected event")


async def eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S_MAX
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# ---- the page and its files ----------------------------------------------------------------


async def test_page_is_served_at_root_with_the_consortium_embedded(aiohttp_client: Client) -> None:
    config = ring_config({"alfa": "http://127.0.0.1:1", "beta": "http://127.0.0.1:2"})
    client = await aiohttp_client(bank_app(config, "beta", None))
    response = await client.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    body = await response.text()
    assert "{{CONSORTIUM_JSON}}" not in body
    start = body.index('<script type="application/json" id="consortium">') + len(
        '<script type="application/json" id="consortium">'
    )
    embedded = json.loads(body[start : body.index("</script>", start)])
    assert embedded == {
        "name": "test",
        "bank": "beta",
        "banks": [{"id": "alfa", "name": "Banco Alfa"}, {"id": "beta", "name": "Banco Beta"}],
    }
    # Every file the page names is one this bank serves.
    for path in ("/static/app.css", "/static/app.js", "/static/favicon.svg"):
        assert path in body


async def test_embedded_names_cannot_close_the_script_element(aiohttp_client: Client) -> None:
    config = parse(
        {
            "consortium": {"name": "x</script><b>", "secret_env": "X_SECRET"},
            "token": {"hold_max_ms": 25},
            "banks": [{"id": "alfa", "name": "A</script>", "url": "http://127.0.0.1:1"}],
        }
    )
    client = await aiohttp_client(bank_app(config, "alfa", None))
    body = await (await client.get("/")).text()
    assert body.count("</script>") == body.count("<script")


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/static/app.js", "text/javascript"),
        ("/static/money.js", "text/javascript"),
        ("/static/ring.js", "text/javascript"),
        ("/static/app.css", "text/css"),
        ("/static/favicon.svg", "image/svg+xml"),
    ],
)
async def test_static_files_have_their_content_types(
    aiohttp_client: Client, path: str, content_type: str
) -> None:
    client = await aiohttp_client(bank_app(None, None, None))
    response = await client.get(path)
    assert response.status == 200
    assert response.content_type == content_type
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    on_disk = (bank_web.STATIC_DIR / path.removeprefix("/static/")).read_bytes()
    assert await response.read() == on_disk


@pytest.mark.parametrize(
    "path",
    [
        "/static/missing.js",
        "/static/..%2Fweb.py",
        "/static/%2E%2E/web.py",
        "/static/../keys.py",
        "/static/index.html",  # only served at / with the consortium filled in
        "/static/%00.js",  # a NUL byte, which no file name can hold
        "/static/app%00.css",
        "/static/" + "a" * 5_000 + ".js",  # longer than any file name the system allows
        "/static/%ED%B3%AD.js",  # bytes that are not UTF-8
    ],
    ids=lambda path: path[:40],
)
async def test_static_refuses_what_is_not_a_page_file(aiohttp_client: Client, path: str) -> None:
    client = await aiohttp_client(bank_app(None, None, None))
    response = await client.get(path)
    assert response.status == 404
    body = await response.read()
    assert b"__all__" not in body
    if response.url.path.startswith("/static/"):  # the client may have resolved a ".." itself
        assert (await response.json())["error"]["code"] == "not_found" and len(body) < 300


async def test_every_module_the_page_imports_is_served(aiohttp_client: Client) -> None:
    client = await aiohttp_client(bank_app(None, None, None))
    for script in sorted(bank_web.STATIC_DIR.glob("*.js")):
        for line in script.read_text().splitlines():
            if line.startswith("import ") and ' from "./' in line:
                name = line.split(' from "./', 1)[1].split('"', 1)[0]
                response = await client.get(f"/static/{name}")
                assert response.status == 200, f"{script.name} imports {name}, not served"


# ---- summarize: who holds the token, from the members' answers -------------------------------


def views(now_ms: float, **documents: dict[str, Any] | None) -> list[MemberView]:
    out = []
    for bank_id, document in documents.items():
        view = MemberView(id=bank_id, name=bank_id.title(), url=f"http://127.0.0.1/{bank_id}")
        if document is not None:
            view.status, view.answered_ms = document, now_ms
        else:
            view.failed = True
        out.append(view)
    return out


def test_the_member_that_says_it_holds_is_the_holder() -> None:
    event = summarize(
        views(
            1000,
            alfa=status("alfa", holding=False, generation=1, seq=9, successor="beta"),
            beta=status("beta", holding=True, generation=1, seq=8, successor="gama"),
            gama=status("gama", holding=False, generation=1, seq=7, successor="alfa"),
        ),
        self_id="alfa",
        now_ms=1000,
        previous_generation=1,
    )
    assert (event["holder"], event["holder_confirmed"]) == ("beta", True)
    assert event["minted"] is False


def test_without_a_holding_member_the_highest_fence_is_the_last_holder() -> None:
    event = summarize(
        views(
            1000,
            alfa=status("alfa", holding=False, generation=2, seq=4, successor="beta"),
            beta=status("beta", holding=False, generation=2, seq=5, successor="gama"),
            gama=status("gama", holding=False, generation=1, seq=90, successor="alfa"),
        ),
        self_id="alfa",
        now_ms=1000,
        previous_generation=None,
    )
    assert (event["holder"], event["holder_confirmed"]) == ("beta", False)
    assert (event["generation"], event["seq"]) == (2, 5)


def test_a_stale_holder_of_an_older_generation_is_not_the_holder() -> None:
    event = summarize(
        views(
            1000,
            alfa=status("alfa", holding=True, generation=1, seq=40, successor="beta"),
            beta=status("beta", holding=False, generation=2, seq=3, successor="gama"),
            gama=status("gama", holding=False, generation=2, seq=2, successor="alfa"),
        ),
        self_id="beta",
        now_ms=1000,
        previous_generation=2,
    )
    assert (event["holder"], event["holder_confirmed"]) == ("beta", False)
    assert (event["generation"], event["seq"]) == (2, 3)


def test_a_fence_tie_at_a_hand_off_goes_to_the_receiver() -> None:
    event = summarize(
        views(
            1000,
            alfa=status("alfa", holding=False, generation=3, seq=6, successor="beta"),
            beta=status("beta", holding=False, generation=3, seq=6, successor="gama"),
        ),
        self_id="alfa",
        now_ms=1000,
        previous_generation=3,
    )
    assert event["holder"] == "beta"


def test_silent_or_stale_members_are_down_and_never_the_holder() -> None:
    members = views(
        5000,
        alfa=status("alfa", holding=False, generation=1, seq=3, successor="beta"),
        beta=None,
        gama=status("gama", holding=True, generation=1, seq=99, successor="alfa"),
    )
    members[2].answered_ms = 5000 - bank_web.MEMBER_STALE_MS - 1
    event = summarize(members, self_id="alfa", now_ms=5000, previous_generation=None)
    assert event["members"] == {"alfa": "up", "beta": "down", "gama": "down"}
    assert event["holder"] == "alfa"
    assert [b["answering"] for b in event["banks"]] == [True, False, False]


def test_the_local_rings_opinion_marks_a_member_down() -> None:
    mine = status("alfa", holding=True, generation=1, seq=3, successor="gama")
    mine["members"] = {"alfa": "up", "beta": "down", "gama": "up"}
    event = summarize(
        views(
            1000,
            alfa=mine,
            beta=status("beta", holding=False, generation=1, seq=1, successor="gama"),
        ),
        self_id="alfa",
        now_ms=1000,
        previous_generation=None,
    )
    assert event["members"] == {"alfa": "up", "beta": "down"}


def test_a_higher_generation_is_marked_minted_with_its_issuer() -> None:
    minted = status("alfa", holding=True, generation=4, seq=1, successor="beta")
    minted["issuer"] = "gama"
    members = views(1000, alfa=minted)
    event = summarize(members, self_id="alfa", now_ms=1000, previous_generation=3)
    assert event["minted"] and event["issuer"] == "gama"
    assert not summarize(members, self_id="alfa", now_ms=1000, previous_generation=4)["minted"]
    assert not summarize(members, self_id="alfa", now_ms=1000, previous_generation=None)["minted"]


def test_each_bank_is_marked_by_whether_it_runs_with_this_banks_ring_file() -> None:
    documents = {b: status(b, holding=False, generation=1, seq=1, successor="alfa") for b in ("alfa", "beta", "gama", "zeta")}
    for bank_id, config in (("alfa", "aaaa"), ("beta", "aaaa"), ("gama", "bbbb")):  # zeta says nothing
        documents[bank_id]["config"] = config
    event = summarize(views(1000, **documents), self_id="alfa", now_ms=1000, previous_generation=None)
    assert [(b["id"], b["same_ring_file"]) for b in event["banks"]] == [
        ("alfa", True), ("beta", True), ("gama", False), ("zeta", None)
    ]
    # This bank's own digest unknown: nobody is judged.
    del documents["alfa"]["config"]
    event = summarize(views(1000, **documents), self_id="alfa", now_ms=1000, previous_generation=None)
    assert {b["same_ring_file"] for b in event["banks"]} == {None}


def test_malformed_status_fields_are_ignored() -> None:
    event = summarize(
        views(1000, alfa={"holding": "yes", "generation": True, "seq": "7"}, beta={}),
        self_id="alfa",
        now_ms=1000,
        previous_generation=None,
    )
    assert event["holder"] is None and event["generation"] is None


# ---- the live feed ---------------------------------------------------------------------------


async def test_ring_events_follow_the_token_and_mark_a_new_generation(
    aiohttp_client: Client, aiohttp_server: Server
) -> None:
    beta = status("beta", holding=False, generation=1, seq=1, successor="gama")
    gama = status("gama", holding=False, generation=1, seq=2, successor="alfa")
    beta_server = await status_server(aiohttp_server, beta)
    gama_server = await status_server(aiohttp_server, gama)
    config = ring_config(
        {
            "alfa": "http://127.0.0.1:1",  # never dialled: alfa's own status is read directly
            "beta": str(beta_server.make_url("")).rstrip("/"),
            "gama": str(gama_server.make_url("")).rstrip("/"),
        }
    )
    ring = FakeRing(status("alfa", holding=True, generation=1, seq=3, successor="beta"))
    app = bank_app(config, "alfa", ring)
    client = await aiohttp_client(app)
    feed = app[bank_web.FEED]
    assert not feed.running, "nobody listens yet: nothing polls"

    response = await client.get("/api/v1/ring/events")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(response, time.monotonic() + WAIT_S_MAX)

    first = await wait_for_event(events, lambda e: e["holder"] is not None)
    assert (first["holder"], first["holder_confirmed"], first["seq"]) == ("alfa", True, 3)
    assert [b["id"] for b in first["banks"]] == ["alfa", "beta", "gama"]
    assert first["members"] == {"alfa": "up", "beta": "up", "gama": "up"}
    assert feed.running

    # The token moves on to beta, then gama: each answer is learnt by polling over HTTP.
    ring.document = status("alfa", holding=False, generation=1, seq=3, successor="beta")
    beta.update(holding=True, seq=4)
    moved = await wait_for_event(events, lambda e: e["holder"] == "beta")
    assert moved["holder_confirmed"] and moved["seq"] == 4
    beta.update(holding=False)
    gama.update(holding=True, seq=5)
    await wait_for_event(events, lambda e: e["holder"] == "gama")

    # gama dies; alfa claims and mints generation 2.
    await gama_server.close()
    ring.document = status("alfa", holding=True, generation=2, seq=1, successor="beta")
    minted = await wait_for_event(events, lambda e: e["generation"] == 2)
    assert minted["minted"] is True
    assert minted["holder"] == "alfa"
    if minted["members"]["gama"] != "down":
        minted = await wait_for_event(events, lambda e: e["members"]["gama"] == "down")
        assert minted["minted"] is False, "a generation is marked minted once"
    assert minted["members"] == {"alfa": "up", "beta": "up", "gama": "down"}

    response.close()
    await eventually(lambda: not feed.running)
    assert not feed.listeners


async def test_one_poller_serves_every_listener_and_late_joiners_get_the_picture(
    aiohttp_client: Client, aiohttp_server: Server
) -> None:
    beta = status("beta", holding=True, generation=7, seq=70, successor="alfa")
    beta_server = await status_server(aiohttp_server, beta)
    config = ring_config(
        {"alfa": "http://127.0.0.1:1", "beta": str(beta_server.make_url("")).rstrip("/")}
    )
    ring = FakeRing(status("alfa", holding=False, generation=7, seq=69, successor="beta"))
    app = bank_app(config, "alfa", ring)
    client = await aiohttp_client(app)
    feed = app[bank_web.FEED]

    first = await client.get("/api/v1/ring/events")
    first_events = sse_events(first, time.monotonic() + WAIT_S_MAX)
    await wait_for_event(first_events, lambda e: e["holder"] == "beta")
    assert feed.starts == 1
    # The picture does not change any more, so the second listener relies on the latest event.
    second = await client.get("/api/v1/ring/events")
    late = await wait_for_event(sse_events(second, time.monotonic() + WAIT_S_MAX), lambda e: True)
    assert late["holder"] == "beta" and late["generation"] == 7
    assert feed.starts == 1, "the second listener shares the running poller"
    assert len(feed.listeners) == 2

    first.close()
    await eventually(lambda: len(feed.listeners) == 1)
    assert feed.running, "one listener is left"
    second.close()
    await eventually(lambda: not feed.running)
    # A listener coming back after everyone left starts the polling again.
    third = await client.get("/api/v1/ring/events")
    await wait_for_event(sse_events(third, time.monotonic() + WAIT_S_MAX), lambda e: True)
    assert feed.starts == 2 and feed.running
    third.close()
    await eventually(lambda: not feed.running)


async def test_listeners_beyond_the_bound_are_refused_with_the_error_shape(
    aiohttp_client: Client,
) -> None:
    config = ring_config({"alfa": "http://127.0.0.1:1"})
    ring = FakeRing(status("alfa", holding=True, generation=1, seq=1, successor="alfa"))
    app = bank_app(config, "alfa", ring)
    client = await aiohttp_client(app)
    app[bank_web.FEED].clients_max = 1
    first = await client.get("/api/v1/ring/events")
    await wait_for_event(sse_events(first, time.monotonic() + WAIT_S_MAX), lambda e: True)
    refused = await client.get("/api/v1/ring/events")
    assert refused.status == 503
    body = await refused.json()
    assert body["error"]["code"] == "too_many_listeners"
    assert body["error"]["message"]
    first.close()


async def test_a_bank_without_a_ring_object_polls_itself_over_http(
    aiohttp_client: Client, aiohttp_server: Server
) -> None:
    alfa = status("alfa", holding=True, generation=1, seq=1, successor="alfa")
    alfa_server = await status_server(aiohttp_server, alfa)
    config = ring_config({"alfa": str(alfa_server.make_url("")).rstrip("/")})
    client = await aiohttp_client(bank_app(config, "alfa", None))
    response = await client.get("/api/v1/ring/events")
    event = await wait_for_event(
        sse_events(response, time.monotonic() + WAIT_S_MAX), lambda e: e["holder"] is not None
    )
    assert event["holder"] == "alfa"
    response.close()


async def test_shutdown_ends_open_streams(aiohttp_server: Server) -> None:
    config = ring_config({"alfa": "http://127.0.0.1:1"})
    ring = FakeRing(status("alfa", holding=True, generation=1, seq=1, successor="alfa"))
    app = bank_app(config, "alfa", ring)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        response = await session.get(server.make_url("/api/v1/ring/events"))
        await wait_for_event(sse_events(response, time.monotonic() + WAIT_S_MAX), lambda e: True)
        started = time.monotonic()
        await server.close()
        assert time.monotonic() - started < WAIT_S_MAX
        assert not app[bank_web.FEED].running
        response.close()


async def test_the_feed_stops_whenever_it_is_stopped_even_as_a_read_finishes() -> None:
    """A stop that comes as this bank's own status read finishes must still end the poller.
    (With asyncio.wait_for around the read, Python 3.11 swallowed such a cancellation and the
    stop waited forever: a browser test hung once in a while on it.)"""
    calls = 0

    def local_status() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"bank": "alfa", "holding": False}

    feed = bank_web.RingFeed(
        views=[bank_web.MemberView("alfa", "Alfa", "http://127.0.0.1:9")],
        self_id="alfa",
        local_status=local_status,
        poll_interval_ms=0,
    )
    rng = random.Random(7)
    for _ in range(300):
        queue = await feed.subscribe()
        assert queue is not None and feed.running
        for _ in range(rng.randrange(0, 6)):
            await asyncio.sleep(0)
        stopping = asyncio.ensure_future(feed.unsubscribe(queue))
        done, _ = await asyncio.wait([stopping], timeout=5)
        assert done, "the feed's stop hangs"
        assert not feed.running
    assert calls > 0
