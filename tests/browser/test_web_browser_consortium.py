"""The whole web terminal against real bank processes: customers at three banks, a joint
account, deposits, one transfer from two banks to a third whose destination is found by the
payee's document, balances on the dashboard, and the ring view showing the token travel.

The banks are ``consortium bank ID`` child processes (``bank.process.Consortium``) on random
free ports of 127.0.0.1, each with its own database in a temporary folder.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from bank.documents import complete_cpf
from bank.process import Consortium, get_json, write_ring_file

from waiting import wait_until
from web_steps import (
    account_option,
    expect_balance,
    holders_seen,
    move_money,
    new_page,
    open_account,
    register,
    screenshot,
    sign_in,
    unlabelled_controls,
)

PASSWORD = "correct horse"
ANA = complete_cpf("529982247")
BRUNO = complete_cpf("111444777")
CARLA = complete_cpf("987654321")
BANK_IDS = ("alfa", "beta", "gama")
SLOW_DELIVERY_S = 5.0
"""Longer than the page's own wait for a decided transfer's delivery (DELIVERY_WAIT_MS_MAX)."""


@pytest.fixture
def consortium(tmp_path: Path) -> Iterator[Consortium]:
    config = write_ring_file(
        tmp_path / "ring.toml", BANK_IDS, data_dir=str(tmp_path / "var"), hold_max_ms=25
    )
    banks = Consortium(config, secret=secrets.token_hex(16), log_dir=tmp_path / "logs", parent_watch=True)
    with banks:
        alfa = config.bank("alfa").url
        assert get_json(f"{alfa}/api/v1/openapi.json") is not None, "banks serve the client API"
        yield banks


@pytest.mark.processes
async def test_customers_at_three_banks_transfer_from_two_banks_to_a_third(
    browser: Any, consortium: Consortium
) -> None:
    alfa, beta, gama = (consortium.config.bank(b).url for b in BANK_IDS)

    # Carla banks at gama; her account is the destination.
    carla = await new_page(browser, gama)
    await register(carla, CARLA, "Carla Dias", PASSWORD)
    await sign_in(carla, CARLA, PASSWORD)
    carla_account = await open_account(carla, "individual")

    # Ana and Bruno are customers of alfa, where they share a joint account; Ana also banks
    # at beta.
    ana_beta = await new_page(browser, beta)
    await register(ana_beta, ANA, "Ana Souza", PASSWORD)
    await sign_in(ana_beta, ANA, PASSWORD)
    at_beta = await open_account(ana_beta, "individual")

    ana = await new_page(browser, alfa)
    await register(ana, BRUNO, "Bruno Lima", PASSWORD)
    await register(ana, ANA, "Ana Souza", PASSWORD)
    await sign_in(ana, ANA, PASSWORD)
    joint = await open_account(ana, "joint", [BRUNO])

    # Deposits from alfa's terminal: into the joint account here and the account at beta.
    done = await move_money(ana, "deposit", "alfa", joint, "1.000,00")
    await expect(done.locator("[data-success]")).to_contain_text("R$ 1.000,00")
    done = await move_money(ana, "deposit", "beta", at_beta, "500,00")
    await expect(done.locator("[data-success]")).to_contain_text("R$ 500,00")

    # The dashboard shows both banks' accounts, by document.
    await ana.goto("/#/accounts")
    await expect_balance(ana, "alfa", joint, 100000)
    await expect_balance(ana, "beta", at_beta, 50000)
    await screenshot(ana, "consortium-accounts-before")

    # One transfer, two sources at two banks, to gama.
    await ana.goto("/#/transfer")
    builder = ana.locator('form[data-form="transfer"]')
    first = builder.locator("[data-sources] > li").nth(0)
    await first.get_by_label("Origem 1").select_option(
        label=account_option("alfa", joint, "R$ 1.000,00")
    )
    await first.get_by_label("Valor (R$)").fill("300,00")
    await builder.get_by_role("button", name="Adicionar origem").click()
    second = builder.locator("[data-sources] > li").nth(1)
    await second.get_by_label("Origem 2").select_option(
        label=account_option("beta", at_beta, "R$ 500,00")
    )
    await second.get_by_label("Valor (R$)").fill("200,00")
    # The destination is found by Carla's document, across the consortium.
    payee = builder.get_by_label("CPF ou CNPJ do favorecido")
    await payee.fill("123.456.789-00")
    await builder.get_by_role("button", name="Buscar contas").click()
    await expect(builder.locator("[data-payee-error]")).to_have_text(
        "CPF ou CNPJ inválido: confira os dígitos."
    )
    await payee.fill(CARLA)
    await payee.press("Enter")  # looks up; does not submit the builder
    results = builder.locator("[data-payee-results]")
    carla_option = results.get_by_label(f"Conta {carla_account} · Individual")
    await expect(carla_option).to_be_visible()
    assert "R$" not in (await results.text_content() or "")  # no balances: a payee lookup
    await expect(builder.locator("[data-payee-unavailable]")).to_have_count(0)
    await expect(results.locator("input[type=radio]")).to_have_count(1)
    await carla_option.check()
    await expect(builder.get_by_label("Banco", exact=True)).to_have_value("gama")
    await expect(builder.get_by_label("Número da conta")).to_have_value(carla_account)
    await expect(builder.locator("[data-transfer-total]")).to_have_text("R$ 500,00")
    await screenshot(ana, "consortium-transfer-builder")
    await builder.get_by_role("button", name="Revisar").click()
    # A bank slow to apply the commit: for a while the transfer says it is not delivered
    # yet, longer than the page's bounded wait for it. The page reads the balances when that
    # wait runs out, and again once the transfer is delivered.
    slow_until = time.monotonic() + SLOW_DELIVERY_S
    balance_reads: list[float] = []

    async def slow_delivery(route: Any) -> None:
        response = await route.fetch()
        body = await response.json()
        if body.get("status") != "pending" and time.monotonic() < slow_until:
            body["delivered"] = False
        await route.fulfill(response=response, json=body)

    await ana.route("**/api/v1/transfers/*", slow_delivery)
    ana.on("request", lambda request: balance_reads.append(time.monotonic()) if "/api/v1/accounts" in request.url else None)
    confirm = ana.locator("[data-confirm]")
    await confirm.get_by_role("button", name="Confirmar e enviar").click()
    follow = ana.locator("[data-follow]")
    await expect(follow).to_have_attribute("data-status", "committed")
    # The page reads the balances again once beta has applied the commit (the transfer is
    # "delivered"), not the moment it is decided: nothing shows held there any more.
    await expect(ana.locator("[data-total-held]")).to_have_text("R$ 0,00")
    await wait_until(lambda: any(at > slow_until for at in balance_reads), "the balances read once delivered", 15)
    await ana.unroute("**/api/v1/transfers/*")
    transfer_id = (await follow.locator("[data-follow-id]").text_content() or "").split()[-1]
    # The followed transfer says what it moved, as it was confirmed.
    summary = follow.locator("[data-follow-summary]")
    await expect(summary.locator("dd")).to_have_text([
        f"Bank alfa · Conta {joint} · R$ 300,00",
        f"Bank beta · Conta {at_beta} · R$ 200,00",
        f"CPF {CARLA[:3]}.{CARLA[3:6]}.{CARLA[6:9]}-{CARLA[9:]}",
        f"Bank gama · Conta {carla_account}",
        "R$ 500,00",
    ])  # fmt: skip
    await screenshot(ana, "consortium-transfer-committed")
    # Read in the other language, the outcome and what it moved are said in it too.
    await ana.get_by_role("button", name="Mudar o idioma para inglês").click()
    await expect(follow.locator('[data-step="outcome"]')).to_have_text("Committed")
    await expect(summary.locator("dt")).to_have_text(["From", "From", "Payee", "To", "Total"])
    await expect(summary.locator("dd").last).to_have_text("R$ 500.00")
    await ana.get_by_role("button", name="Switch the language to Portuguese").click()
    await expect(follow.locator('[data-step="outcome"]')).to_have_text("Concluída")

    await ana.goto("/#/accounts")
    await expect_balance(ana, "alfa", joint, 70000)
    await expect_balance(ana, "beta", at_beta, 30000)
    await expect(ana.locator("[data-total-balance]")).to_have_text("R$ 1.000,00")
    await screenshot(ana, "consortium-accounts-after")

    # Cash from beta at alfa's terminal: once it has left, beta shows it debited, not held.
    done = await move_money(ana, "withdraw", "beta", at_beta, "50,00")
    await expect(done.locator("[data-success]")).to_contain_text("R$ 250,00")
    await expect_balance(ana, "beta", at_beta, 25000)  # the balances read after it
    await expect(ana.locator("[data-total-held]")).to_have_text("R$ 0,00")

    # beta's statement, read at alfa's terminal: each cross-bank debit held, then paid out
    # (the cash as a withdrawal, the transfer as completed).
    await ana.goto("/#/accounts")
    await ana.get_by_role("link", name=f"Extrato da conta {at_beta} no Bank beta").click()
    statement = ana.locator('[data-view="statement"]')
    await expect(statement.locator("[data-statement-account]")).to_have_text(
        f"Bank beta · Conta {at_beta} · Saldo R$ 250,00 · Reservado R$ 0,00"
    )
    rows = statement.locator("[data-statement] tbody tr")
    await expect(rows.locator("td:nth-child(2)")).to_have_text([
        "Saque", "Reservado para operação entre bancos",
        "Transferência concluída", "Reservado para operação entre bancos", "Depósito",
    ])  # fmt: skip
    await expect(rows.locator("td:nth-child(4)")).to_have_text(
        ["—", "-R$ 50,00", "—", "-R$ 200,00", "+R$ 500,00"]
    )
    await expect(rows.locator("td:nth-child(5)")).to_have_text(
        ["-R$ 50,00", "+R$ 50,00", "-R$ 200,00", "+R$ 200,00", "—"]
    )
    await expect(rows.nth(2).locator("td.transfer-id")).to_have_text(transfer_id)
    await expect(statement.get_by_role("button", name="Movimentos mais antigos")).to_be_hidden()
    assert await unlabelled_controls(ana) == []
    await screenshot(ana, "consortium-statement")
    await ana.get_by_role("button", name="Mudar o idioma para inglês").click()
    await expect(rows.first.locator("td:nth-child(2)")).to_have_text("Withdrawal")
    await expect(rows.nth(2).locator("td:nth-child(2)")).to_have_text("Transfer completed")
    await expect(rows.last.locator("td:nth-child(4)")).to_have_text("+R$ 500.00")
    await ana.get_by_role("button", name="Switch the language to Portuguese").click()
    await statement.get_by_role("link", name="Voltar às contas").click()
    await expect_balance(ana, "beta", at_beta, 25000)
    # An address that names no account says so; someone else's account is not shown.
    await ana.goto("/#/statement/zeta/1")
    await expect(statement.locator("[data-error]")).to_contain_text("não aponta para uma conta")
    await expect(rows).to_have_count(0)
    await ana.get_by_role("button", name="Mudar o idioma para inglês").click()
    await expect(statement.locator("[data-error]")).to_contain_text("does not name an account")
    await ana.get_by_role("button", name="Switch the language to Portuguese").click()
    await carla.goto(f"/#/statement/beta/{at_beta}")
    carla_statement = carla.locator('[data-view="statement"]')
    await expect(carla_statement.locator("[data-error]")).to_have_attribute("data-code", "unknown_account")
    await expect(carla_statement.locator("[data-statement] tbody tr")).to_have_count(0)

    await carla.goto("/#/accounts")
    await carla.get_by_role("button", name="Atualizar").click()
    await expect_balance(carla, "gama", carla_account, 50000)

    # The ring view, from any bank, shows the token at more than one bank within seconds.
    await carla.goto("/#/ring")
    assert len(set(await holders_seen(carla, 2))) >= 2
    await screenshot(carla, "consortium-ring")

    # beta crashes: Ana's dashboard says so instead of hiding it, and the ring view marks it.
    consortium["beta"].kill()
    await ana.goto("/#/accounts")
    await ana.get_by_role("button", name="Atualizar").click()
    unavailable = ana.locator('[data-bank="beta"].unavailable')
    await expect(unavailable).to_contain_text("Indisponível")
    await expect(ana.locator(f'[data-bank="alfa"] tr[data-account="{joint}"]')).to_be_visible()
    await screenshot(ana, "consortium-bank-unavailable")
    await expect(carla.locator('g.ring-node[data-bank="beta"]')).to_have_class("ring-node down")
    await expect(carla.locator("[data-ring-down]")).to_have_text("beta")
    await screenshot(carla, "consortium-ring-bank-down")

    # A payee lookup says beta is unavailable rather than leave Ana's account there out.
    await ana.goto("/#/transfer")
    await ana.reload()  # a fresh builder (the last one still shows the committed transfer)
    builder = ana.locator('form[data-form="transfer"]')
    await builder.get_by_label("CPF ou CNPJ do favorecido").fill(ANA)
    await builder.get_by_role("button", name="Buscar contas").click()
    await expect(builder.locator('[data-payee-unavailable="beta"]')).to_contain_text("indisponível")
    await expect(builder.get_by_label(f"Conta {joint} · Conjunta")).to_be_visible()
    await screenshot(ana, "consortium-payee-bank-unavailable")
    for page in (ana, ana_beta, carla):
        assert page.script_errors == []
