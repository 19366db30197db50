"""The web terminal in a real browser against one bank served in this process.

The bank here is the real client API (``bank.api``) and the real terminal (``bank.web``) on
127.0.0.1 with its own SQLite file; only the ring is absent, which local operations never
need. What crosses banks is in ``test_web_browser_ring.py``, against bank processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
from aiohttp import web
from playwright.async_api import expect

from bank import api, keys
from bank import web as bank_web
from bank.documents import complete_cnpj, complete_cpf
from bank.errors import STATUS_BY_CODE
from bank.ledger import HoldOutcome
from bank.process import free_ports
from bank.transfers.coordinator import ROUND_REASONS
from tokenring.config import parse

from web_steps import (
    account_option,
    expect_balance,
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
ACME = complete_cnpj("112223330001")
ACCOUNTS_HEADING_EN = "Your accounts in the consortium"


@pytest.fixture
async def bank_url(tmp_path: Path, aiohttp_server: Any) -> str:
    (port,) = free_ports(1)
    config = parse(
        {
            "consortium": {"name": "test", "secret_env": "X_SECRET", "data_dir": str(tmp_path)},
            "token": {"hold_max_ms": 25},
            "banks": [{"id": "alfa", "name": "Banco Alfa", "url": f"http://127.0.0.1:{port}"}],
        },
        tmp_path / "ring.toml",
    )
    app = web.Application()
    app[keys.CONFIG] = config
    app[keys.BANK_ID] = "alfa"
    api.install(app)
    bank_web.install(app)
    server = await aiohttp_server(app, host="127.0.0.1", port=port)
    return str(server.make_url("")).rstrip("/")


async def test_money_is_parsed_to_cents_and_formatted_in_both_languages(
    browser: Any, bank_url: str
) -> None:
    page = await new_page(browser, bank_url)
    await page.goto("/")
    results = await page.evaluate(
        """async (cases) => {
            const money = await import('/static/money.js');
            return cases.map(([text, lang]) => money.parseMoney(text, lang));
        }""",
        [
            ["1.234,56", "pt"],
            ["R$ 1.234,56", "pt"],
            ["0,10", "pt"],
            ["0,1", "pt"],
            ["1234", "pt"],
            ["1,234.56", "en"],
            ["0.07", "en"],
            ["12.34", "pt"],
            ["1,234", "pt"],
            ["1.2345", "en"],
            ["0", "en"],
            ["-5", "en"],
            ["", "en"],
            ["abc", "pt"],
            ["90071992547409,92", "pt"],
        ],
    )
    assert results == [
        {"cents": 123456},
        {"cents": 123456},
        {"cents": 10},
        {"cents": 10},
        {"cents": 123400},
        {"cents": 123456},
        {"cents": 7},
        {"error": "money_invalid"},
        {"error": "money_fraction"},
        {"error": "money_fraction"},
        {"error": "money_zero"},
        {"error": "money_invalid"},
        {"error": "money_empty"},
        {"error": "money_invalid"},
        {"error": "money_too_large"},
    ]
    formatted = await page.evaluate(
        """async () => {
            const money = await import('/static/money.js');
            return [money.formatMoney(123456, 'pt'), money.formatMoney(123456, 'en'),
                    money.formatMoney(5, 'pt'), money.formatMoney(100000000, 'en')];
        }"""
    )
    assert formatted == ["R$ 1.234,56", "R$ 1,234.56", "R$ 0,05", "R$ 1,000,000.00"]
    assert page.script_errors == []


async def test_every_label_exists_in_both_languages(browser: Any, bank_url: str) -> None:
    page = await new_page(browser, bank_url)
    await page.goto("/")
    missing = await page.evaluate(
        """async () => {
            const { MESSAGES, ERRORS } = await import('/static/i18n.js');
            const out = [];
            for (const table of [MESSAGES, ERRORS]) {
                for (const [lang, other] of [['pt', 'en'], ['en', 'pt']]) {
                    for (const key of Object.keys(table[lang])) {
                        if (!(key in table[other])) out.push(other + ':' + key);
                    }
                }
            }
            const used = [...document.querySelectorAll('[data-i18n]')].map((e) => e.dataset.i18n)
                .concat([...document.querySelectorAll('[data-i18n-aria-label]')]
                    .map((e) => e.dataset.i18nAriaLabel));
            for (const key of used) if (!(key in MESSAGES.pt)) out.push('page:' + key);
            return out;
        }"""
    )
    assert missing == []
    # Every error code the client API can answer with has a sentence of its own.
    codes = await page.evaluate(
        "async () => Object.keys((await import('/static/i18n.js')).ERRORS.en)"
    )
    assert set(STATUS_BY_CODE) - set(codes) == set()
    # And so does every reason a cross-bank transfer can abort with.
    refusals = set(get_args(HoldOutcome)) - {"ok", "no_hold", "committed", "released"}
    assert (set(ROUND_REASONS) | refusals) - set(codes) == set()


async def test_a_customer_registers_opens_accounts_moves_money_and_signs_out(
    browser: Any, bank_url: str
) -> None:
    page = await new_page(browser, bank_url)
    await page.goto("/")
    await expect(page.locator('section[data-view="login"]')).to_be_visible()
    assert await unlabelled_controls(page) == []
    await screenshot(page, "login")

    # The bank refuses a wrong check digit before anything is sent; a good one registers.
    form = page.locator('form[data-form="register"]')
    await form.get_by_label("CPF ou CNPJ").fill(ANA[:-1] + str((int(ANA[-1]) + 1) % 10))
    await form.get_by_label("Nome completo ou razão social").fill("Ana")
    await form.get_by_label("Senha (mínimo de 8 caracteres)").fill(PASSWORD)
    await form.get_by_role("button", name="Cadastrar").click()
    await expect(form.locator("[data-error]")).to_have_text(
        "CPF ou CNPJ inválido: confira os dígitos."
    )
    await register(page, ANA, "Ana Souza", PASSWORD)
    await register(page, BRUNO, "Bruno Lima", PASSWORD)
    # Registering twice is the bank's customer_exists, said in words.
    await form.get_by_label("CPF ou CNPJ").fill(BRUNO)
    await form.get_by_label("Nome completo ou razão social").fill("Bruno Lima")
    await form.get_by_label("Senha (mínimo de 8 caracteres)").fill(PASSWORD)
    await form.get_by_role("button", name="Cadastrar").click()
    await expect(form.locator("[data-error]")).to_have_attribute("data-code", "customer_exists")

    # A wrong password is refused with a clear message.
    login = page.locator('form[data-form="login"]')
    await login.get_by_label("CPF ou CNPJ").fill(ANA)
    await login.get_by_label("Senha").fill("wrong password")
    await login.get_by_role("button", name="Entrar").click()
    await expect(login.locator("[data-error]")).to_have_text("Documento ou senha incorretos.")

    await sign_in(page, ANA, PASSWORD)
    individual = await open_account(page, "individual")
    joint = await open_account(page, "joint", [BRUNO])
    assert individual != joint

    deposit = await move_money(page, "deposit", "alfa", individual, "1.234,56")
    await expect(deposit.locator("[data-success]")).to_contain_text("R$ 1.234,56")
    assert await unlabelled_controls(page) == []
    await screenshot(page, "deposit-withdraw")
    withdraw = await move_money(page, "withdraw", "alfa", individual, "5.000,00")
    await expect(withdraw.locator("[data-error]")).to_have_text("Saldo insuficiente.")
    await move_money(page, "withdraw", "alfa", individual, "34,56")
    await expect(withdraw.locator("[data-success]")).to_contain_text("R$ 1.200,00")
    bad = await move_money(page, "deposit", "alfa", individual, "12.34")
    await expect(bad.locator("[data-error]")).to_have_text(
        "Valor inválido. Escreva como 1.234,56."
    )

    # A transfer to the joint account: built, reviewed, confirmed, followed to committed.
    await page.goto("/#/transfer")
    builder = page.locator('form[data-form="transfer"]')
    row = builder.locator("[data-sources] > li").first
    await row.get_by_label("Origem 1").select_option(
        label=account_option("Banco Alfa", individual, "R$ 1.200,00")
    )
    await row.get_by_label("Valor (R$)").fill("200")
    await builder.get_by_label("Uma das minhas contas").select_option(
        label=account_option("Banco Alfa", joint, "R$ 0,00")
    )
    await expect(builder.locator("[data-transfer-total]")).to_have_text("R$ 200,00")
    assert await unlabelled_controls(page) == []
    await builder.get_by_role("button", name="Revisar").click()
    confirm = page.locator("[data-confirm]")
    await expect(confirm).to_contain_text("R$ 200,00")
    await screenshot(page, "transfer-confirm")
    await confirm.get_by_role("button", name="Confirmar e enviar").click()
    follow = page.locator("[data-follow]")
    await expect(follow).to_have_attribute("data-status", "committed")
    await expect(follow.locator('[data-step="outcome"]')).to_have_text("Concluída")
    await screenshot(page, "transfer-followed")

    # A transfer the source cannot cover ends aborted, and the reason is said in words.
    await follow.get_by_role("button", name="Nova transferência").click()
    row = builder.locator("[data-sources] > li").first
    await row.get_by_label("Origem 1").select_option(
        label=account_option("Banco Alfa", joint, "R$ 200,00")
    )
    await row.get_by_label("Valor (R$)").fill("200,01")
    await builder.get_by_label("Uma das minhas contas").select_option(
        label=account_option("Banco Alfa", individual, "R$ 1.000,00")
    )
    await builder.get_by_role("button", name="Revisar").click()
    await confirm.get_by_role("button", name="Confirmar e enviar").click()
    await expect(follow).to_have_attribute("data-status", "aborted")
    await expect(follow.locator('[data-step="outcome"]')).to_have_text("Cancelada")
    await expect(follow.locator("[data-follow-reason]")).to_have_text(
        "Motivo: Saldo insuficiente. (insufficient_funds)"
    )
    await screenshot(page, "transfer-aborted")

    # The dashboard shows the new balances; in English the amounts are written the English way.
    await page.goto("/#/accounts")
    rows = page.locator('[data-bank="alfa"] tr[data-account]')
    await expect_balance(page, "alfa", individual, 100000)
    await expect_balance(page, "alfa", joint, 20000)
    await expect(rows).to_have_count(2)
    await expect(page.locator("[data-total-balance]")).to_have_text("R$ 1.200,00")
    await screenshot(page, "accounts-pt")
    await page.get_by_role("button", name="Mudar o idioma para inglês").click()
    await expect(page.get_by_role("heading", name=ACCOUNTS_HEADING_EN)).to_be_visible()
    await expect(page.locator("[data-total-balance]")).to_have_text("R$ 1,200.00")
    await expect(page.locator(f'tr[data-account="{joint}"]')).to_contain_text("Joint")
    await screenshot(page, "accounts-en")

    # An account of another kind than the customer's document is refused before sending.
    open_form = page.locator('form[data-form="open"]')
    await open_form.get_by_label("Corporate", exact=True).check()
    await open_form.get_by_role("button", name="Open account").click()
    await expect(open_form.locator("[data-error]")).to_have_text(
        "Corporate accounts belong to companies (CNPJ)."
    )

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator('section[data-view="login"]')).to_be_visible()
    await page.goto("/#/accounts")  # signed out, the dashboard is not shown
    await expect(page.locator('section[data-view="login"]')).to_be_visible()
    assert page.script_errors == []


async def test_the_terminal_is_usable_by_keyboard_alone(browser: Any, bank_url: str) -> None:
    page = await new_page(browser, bank_url, lang="en")
    await page.goto("/")
    # The language follows the browser's.
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.keyboard.press("Tab")
    focused = await page.evaluate("document.activeElement.textContent")
    assert focused == "Skip to content"
    # Tab through to the register form and fill it without the mouse.
    await page.locator("#register-document").focus()
    await page.keyboard.type(ACME)
    await page.keyboard.press("Tab")
    await page.keyboard.type("Acme Ltda")
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.locator("[data-notice]")).to_contain_text("Acme Ltda is registered")
    # The sign-in password has the focus, the document is filled in: type and press Enter.
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name=ACCOUNTS_HEADING_EN)).to_be_visible()
    assert page.script_errors == []
