"""The ring view in a real browser: the token drawn where it is, banks down, new generations.

The first test scripts the members' answers (a ring object and status servers the test sets)
so that every picture is certain, including a newly minted generation. The second runs three
real ring members (``bank.server.build_app``) in this process and watches the token travel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import expect

from bank import keys
from bank import web as bank_web
from bank.process import free_ports
from bank.server import build_app
from tokenring.config import parse

from ring_fakes import FakeRing, status
from web_steps import holders_seen, new_page, screenshot


async def test_ring_view_draws_the_holder_banks_down_and_a_new_generation(
    browser: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    beta = status("beta", holding=False, generation=1, seq=1, successor="gama")
    gama = status("gama", holding=False, generation=1, seq=2, successor="alfa")
    servers = {}
    for bank_id, document in (("beta", beta), ("gama", gama)):
        async def ring_status(
            request: web.Request, document: dict[str, Any] = document
        ) -> web.Response:
            return web.json_response(document)

        member = web.Application()
        member.router.add_get("/ring/status", ring_status)
        servers[bank_id] = await aiohttp_server(member, host="127.0.0.1")
    (port,) = free_ports(1)
    config = parse(
        {
            "consortium": {"name": "test", "secret_env": "X_SECRET", "data_dir": str(tmp_path)},
            "token": {"hold_max_ms": 25},
            "banks": [
                {"id": "alfa", "name": "Banco Alfa", "url": f"http://127.0.0.1:{port}"},
                *(
                    {"id": i, "name": f"Banco {i.title()}", "url": str(s.make_url("")).rstrip("/")}
                    for i, s in servers.items()
                ),
            ],
        }
    )
    ring = FakeRing(status("alfa", holding=True, generation=1, seq=3, successor="beta"))
    app = web.Application()
    app[keys.CONFIG], app[keys.BANK_ID], app[keys.RING] = config, "alfa", ring
    bank_web.install(app)
    server = await aiohttp_server(app, host="127.0.0.1", port=port)

    page = await new_page(browser, str(server.make_url("")).rstrip("/"))
    await page.goto("/#/ring")
    view = page.locator("[data-ring]")
    await expect(view).to_have_attribute("data-holder", "alfa")
    await expect(page.locator("[data-ring-holder]")).to_have_text("Banco Alfa (alfa)")
    await expect(page.locator("[data-ring-generation]")).to_have_text("1")
    alfa_node = page.locator('g.ring-node[data-bank="alfa"]')
    await expect(alfa_node).to_have_class("ring-node holder self")
    await expect(page.locator("[data-ring-down]")).to_have_text("nenhum")

    # The token moves to beta: the drawing and the facts follow.
    ring.document = status("alfa", holding=False, generation=1, seq=3, successor="beta")
    beta.update(holding=True, seq=4)
    await expect(view).to_have_attribute("data-holder", "beta")
    await expect(page.locator("[data-ring-seq]")).to_have_text("4")
    # The holders seen, newest first, are samples, not hops: named as such, no arrows.
    trail = page.locator(".trail")
    await expect(trail.locator("[data-ring-trail]")).to_have_text("beta, alfa")
    await expect(trail).to_have_text(
        "Detentores do token observados (o mais recente primeiro): beta, alfa"
    )
    await screenshot(page, "ring")

    # gama answers with another ring file's digest than alfa's: drawn so, and said.
    ring.document["config"] = "aaaa"
    beta.update(config="aaaa")
    gama.update(config="bbbb")
    other_files = page.locator("[data-ring-other-files]")
    await expect(other_files).to_have_text(
        "Com outro ring.toml: gama. Todos os bancos precisam do mesmo arquivo (bancos, ordem, endereços e tempos do token)."
    )
    await expect(page.locator('g.ring-node[data-bank="gama"]')).to_have_class("ring-node other-file")
    await expect(page.locator('g.ring-node[data-bank="gama"] .ring-node-state')).to_have_text("ring.toml ≠")
    await expect(page.locator('g.ring-node[data-bank="beta"]')).to_have_class("ring-node holder")
    await screenshot(page, "ring-other-file")
    gama.update(config="aaaa")
    await expect(other_files).to_be_hidden()
    gama.update(config="bbbb")
    await expect(other_files).to_be_visible()

    # gama stops answering and alfa mints generation 2: both are shown, the mint loudly.
    await servers["gama"].close()
    beta.update(holding=False)
    ring.document = status("alfa", holding=True, generation=2, seq=1, successor="beta")
    ring.document["issuer"] = "alfa"
    minted = page.locator("[data-ring-minted]")
    await expect(minted).to_be_visible()
    await expect(minted).to_have_text("Novo token criado por alfa: geração 2")
    await expect(page.locator('g.ring-node[data-bank="gama"]')).to_have_class("ring-node down")
    await expect(page.locator("[data-ring-down]")).to_have_text("gama")
    await expect(other_files).to_be_hidden()  # a bank down is said as down, not as another file
    await screenshot(page, "ring-new-generation")

    # Labels switch language in place.
    await page.get_by_role("button", name="Mudar o idioma para inglês").click()
    await expect(page.locator("[data-ring-down]")).to_have_text("gama")
    await expect(page.get_by_role("heading", name="The ring, live")).to_be_visible()
    await expect(trail).to_contain_text("Token holders observed (most recent first): alfa, beta")
    assert "←" not in (await trail.text_content() or "")
    assert page.script_errors == []


async def test_ring_view_follows_the_token_of_real_ring_members(
    browser: Any, tmp_path: Path
) -> None:
    ids = ("alfa", "beta", "gama")
    ports = free_ports(len(ids))
    config = parse(
        {
            "consortium": {"name": "test", "secret_env": "X_SECRET", "data_dir": str(tmp_path)},
            "token": {"hold_max_ms": 25},
            "banks": [
                {"id": i, "name": f"Banco {i.title()}", "url": f"http://127.0.0.1:{p}"}
                for i, p in zip(ids, ports, strict=True)
            ],
        },
        tmp_path / "ring.toml",
    )
    runners = []
    try:
        for bank_id in ids:
            app = build_app(config, bank_id, secret=b"browser-test-secret")
            assert "web_page" in app.router.named_resources(), "every bank serves the page"
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", config.bank(bank_id).port).start()
            runners.append(runner)

        page = await new_page(browser, config.bank("beta").url)
        await page.goto("/#/ring")
        seen = await holders_seen(page, 2)
        assert len(set(seen)) >= 2 and set(seen) <= set(ids)
        await expect(page.locator("[data-ring-generation]")).not_to_have_text("—")
        await screenshot(page, "ring-real-members")
        assert page.script_errors == []
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
