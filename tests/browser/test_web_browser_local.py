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
    # The same answer as for a customer of another bank only (registration is per bank,
    # which the message says: the API tells neither case apart).
    await expect(login.locator("[data-error]")).to_have_text(
        "Documento ou senha incorretos. (O cadastro é de cada banco: cadastre-se neste também.)"
    )

    await sign_in(page, ANA, PASSWORD)
    individual = await open_account(page, "individual")
    joint = await open_account(page, "joint", [BRUNO])
    assert individual != joint

    deposit = await move_money(page, "deposit", "alfa", individual, "1.234,56")
    await expect(deposit.locator("[data-success]")).to_contain_text("R$ 1.234,56")
    # Enter pressed again (the amount is cleared): nothing new, and the message stays.
    await deposit.get_by_label("Valor (R$)").press("Enter")
    await expect(deposit.locator("[data-success]")).to_contain_text("R$ 1.234,56")
    await expect(deposit.locator("[data-error]")).to_have_text("")
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
    # Above the bank's bound: said before sending, with the bound, not the bank's field name.
    big = await move_money(page, "deposit", "alfa", individual, "2.000.000.000,00")
    await expect(big.locator("[data-error]")).to_have_text(
        "Valor grande demais: o máximo é R$ 1.000.000.000,00."
    )
    await move_money(page, "deposit", "alfa", individual, "0,01")
    await move_money(page, "withdraw", "alfa", individual, "0,01")
    await expect(withdraw.locator("[data-success]")).to_contain_text("R$ 1.200,00")

    # A transfer to the joint account: built, reviewed, confirmed, followed to committed.
    await page.goto("/#/transfer")
    builder = page.locator('form[data-form="transfer"]')
    row = builder.locator("[data-sources] > li").first
    await row.get_by_label("Origem 1").select_option(
        label=account_option("alfa", individual, "R$ 1.200,00")
    )
    await row.get_by_label("Valor (R$)").fill("200")
    await builder.get_by_label("Uma das minhas contas").select_option(
        label=account_option("alfa", joint, "R$ 0,00")
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
        label=account_option("alfa", joint, "R$ 200,00")
    )
    await row.get_by_label("Valor (R$)").fill("200,01")
    await builder.get_by_label("Uma das minhas contas").select_option(
        label=account_option("alfa", individual, "R$ 1.000,00")
    )
    await builder.get_by_role("button", name="Revisar").click()
    await confirm.get_by_role("button", name="Confirmar e enviar").click()
    await expect(follow).to_have_attribute("data-status", "aborted")
    await expect(follow.locator('[data-step="outcome"]')).to_have_text("Recusada")
    # In plain words; the code stays in data-code, not in the sentence.
    reason = follow.locator("[data-follow-reason]")
    await expect(reason).to_have_text("Motivo: Saldo insuficiente.")
    await expect(reason).to_have_attribute("data-code", "insufficient_funds")
    await screenshot(page, "transfer-aborted")
    await page.get_by_role("button", name="Mudar o idioma para inglês").click()
    await expect(follow.locator('[data-step="outcome"]')).to_have_text("Declined")
    await expect(reason).to_have_text("Reason: Insufficient funds.")
    await page.get_by_role("button", name="Switch the language to Portuguese").click()
    await expect(reason).to_have_text("Motivo: Saldo insuficiente.")

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

    # A request made again with its Idempotency-Key gets the first answer, marked as such
    # (the terminal then says it had been done, and reads the balances again).
    replayed = await page.evaluate(
        """async (account) => {
            const api = await import('/static/api.js');
            const first = await api.deposit('alfa', account, 5, 'the-same-deposit');
            const again = await api.deposit('alfa', account, 5, 'the-same-deposit');
            return [Boolean(first[api.REPLAYED]), Boolean(again[api.REPLAYED]), again.balance_cents];
        }""",
        int(individual),
    )
    assert replayed == [False, True, 100005], replayed

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator('section[data-view="login"]')).to_be_visible()
    await page.goto("/#/accounts")  # signed out, the dashboard is not shown
    await expect(page.locator('section[data-view="login"]')).to_be_visible()

    # The next customer at this terminal sees nothing of Ana's: no message of her last
    # withdrawal, no account of hers in a form.
    await page.get_by_role("button", name="switch the language to Portuguese").click()
    await sign_in(page, BRUNO, PASSWORD)
    await page.goto("/#/money")
    money = page.locator('form[data-form="money"]')
    await expect(money.locator("[data-success]")).to_have_text("")
    await expect(money.get_by_label("Número da conta")).to_have_value("")
    await expect(money.get_by_label("Valor (R$)")).to_have_value("")
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
    # A view opened from the keyboard (Enter on a link of the menu) takes the focus at its
    # heading, so that it is announced and the next Tab starts inside it.
    await page.get_by_role("link", name="Transfer", exact=True).focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Transfer", exact=True)).to_be_focused()
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.closest('[data-view]')?.dataset.view") == (
        "transfer"
    )
    # The skip link goes to the content without leaving the view it is used in.
    await page.get_by_role("link", name="Skip to content").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("main")).to_be_focused()
    await expect(page.get_by_role("heading", name="Transfer", exact=True)).to_be_visible()
    await page.get_by_role("link", name="Accounts", exact=True).focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name=ACCOUNTS_HEADING_EN)).to_be_focused()
    # A form the bank answered keeps the focus at its button, not the top of the page (the
    # button is disabled while the request runs, which drops the focus).
    open_form = page.locator('form[data-form="open"]')
    submit = open_form.get_by_role("button", name="Open account")
    await submit.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("[data-notice]")).to_contain_text("opened")
    await expect(submit).to_be_focused()
    assert page.script_errors == []


async def test_a_company_opens_corporate_accounts_one_after_another(
    browser: Any, bank_url: str
) -> None:
    page = await new_page(browser, bank_url)
    await register(page, ACME, "Acme Ltda", PASSWORD)
    await sign_in(page, ACME, PASSWORD)
    form = page.locator('form[data-form="open"]')
    corporate = form.get_by_label("Empresarial", exact=True)
    await expect(corporate).to_be_checked()  # chosen by the view for a CNPJ
    notice = page.locator("[data-notice]")
    await form.get_by_role("button", name="Abrir conta").click()
    await expect(notice).to_contain_text("aberta")
    first = await notice.text_content()
    # After a success the form keeps the kind a company can open: Open again just works.
    await expect(corporate).to_be_checked()
    await form.get_by_role("button", name="Abrir conta").click()
    await expect(notice).not_to_have_text(first or "")
    await expect(notice).to_contain_text("aberta")
    await expect(form.locator("[data-error]")).to_have_text("")
    await expect(page.locator('[data-bank="alfa"] tr[data-account]')).to_have_count(2)
    assert page.script_errors == []


async def test_the_review_names_the_payee_and_an_edited_payee_forgets_the_accounts_found(
    browser: Any, bank_url: str
) -> None:
    page = await new_page(browser, bank_url)
    await register(page, BRUNO, "Bruno Lima", PASSWORD)
    await register(page, ACME, "Acme Ltda", PASSWORD)
    await register(page, ANA, "Ana Souza", PASSWORD)
    payees = {}
    for document in (BRUNO, ACME):
        other = await new_page(browser, bank_url)
        await sign_in(other, document, PASSWORD)
        payees[document] = await open_account(
            other, "corporate" if document == ACME else "individual"
        )
        await other.context.close()
    await sign_in(page, ANA, PASSWORD)
    mine = await open_account(page, "individual")
    await move_money(page, "deposit", "alfa", mine, "100,00")
    await expect_balance(page, "alfa", mine, 10000)

    await page.goto("/#/transfer")
    builder = page.locator('form[data-form="transfer"]')
    row = builder.locator("[data-sources] > li").first
    await row.get_by_label("Origem 1").select_option(
        label=account_option("alfa", mine, "R$ 100,00")
    )
    await row.get_by_label("Valor (R$)").fill("10")
    payee = builder.get_by_label("CPF ou CNPJ do favorecido")
    results = builder.locator("[data-payee-results]")
    await payee.fill(BRUNO)
    await payee.press("Enter")
    await results.get_by_label(f"Conta {payees[BRUNO]} · Individual").check()
    await expect(builder.get_by_label("Número da conta")).to_have_value(payees[BRUNO])

    # Another document typed (not looked up yet): Bruno's accounts and the destination go.
    await payee.fill("")
    await payee.press_sequentially(ACME)
    await expect(results.locator("input[type=radio]")).to_have_count(0)
    await expect(builder.get_by_label("Uma das minhas contas")).to_have_value("")
    await expect(builder.get_by_label("Número da conta")).to_be_hidden()
    await expect(builder.get_by_label("Número da conta")).to_have_value("")
    await builder.get_by_role("button", name="Revisar").click()
    await expect(builder.locator("[data-error]")).to_have_text(
        "Escolha o destino ou informe banco e número da conta (somente dígitos)."
    )

    # Looked up and picked: the review names the payee's document and where the money goes.
    await builder.get_by_role("button", name="Buscar contas").click()
    await results.get_by_label(f"Conta {payees[ACME]} · Empresarial").check()
    await builder.get_by_role("button", name="Revisar").click()
    summary = page.locator("[data-summary]")
    await expect(summary.locator("dt")).to_have_text(["De", "Favorecido", "Para", "Total"])
    await expect(summary.locator("dd")).to_have_text([
        f"Banco Alfa · Conta {mine} · R$ 10,00",
        "CNPJ 11.222.333/0001-81",
        f"Banco Alfa · Conta {payees[ACME]}",
        "R$ 10,00",
    ])  # fmt: skip
    await screenshot(page, "transfer-review-payee")
    await page.get_by_role("button", name="Mudar o idioma para inglês").click()
    await expect(summary.locator("dt")).to_have_text(["From", "Payee", "To", "Total"])
    await page.get_by_role("button", name="Switch the language to Portuguese").click()
    await page.locator("[data-confirm]").get_by_role("button", name="Confirmar e enviar").click()
    follow = page.locator("[data-follow]")
    await expect(follow).to_have_attribute("data-status", "committed")
    await expect(follow.locator("[data-follow-summary] dd").nth(1)).to_have_text(
        "CNPJ 11.222.333/0001-81"
    )

    # A destination of one's own is reviewed without a payee.
    await follow.get_by_role("button", name="Nova transferência").click()
    other = await open_account(page, "individual")
    await page.goto("/#/transfer")
    row = builder.locator("[data-sources] > li").first
    await row.get_by_label("Origem 1").select_option(label=account_option("alfa", mine, "R$ 90,00"))
    await row.get_by_label("Valor (R$)").fill("1")
    await payee.fill(BRUNO)
    await payee.press("Enter")
    await results.get_by_label(f"Conta {payees[BRUNO]} · Individual").check()
    await builder.get_by_label("Uma das minhas contas").select_option(
        label=account_option("alfa", other, "R$ 0,00")
    )
    await builder.get_by_role("button", name="Revisar").click()
    await expect(summary.locator("dt")).to_have_text(["De", "Para", "Total"])
    assert page.script_errors == []


async def test_the_total_says_which_amounts_it_leaves_out_in_either_language(
    browser: Any, bank_url: str
) -> None:
    page = await new_page(browser, bank_url)
    await register(page, ANA, "Ana Souza", PASSWORD)
    await sign_in(page, ANA, PASSWORD)
    first = await open_account(page, "individual")
    second = await open_account(page, "individual")
    await page.goto("/#/transfer")
    builder = page.locator('form[data-form="transfer"]')
    rows = builder.locator("[data-sources] > li")
    await rows.nth(0).get_by_label("Origem 1").select_option(
        label=account_option("alfa", first, "R$ 0,00")
    )
    await rows.nth(0).get_by_label("Valor (R$)").fill("1.000")
    await builder.get_by_role("button", name="Adicionar origem").click()
    await rows.nth(1).get_by_label("Origem 2").select_option(
        label=account_option("alfa", second, "R$ 0,00")
    )
    amount = rows.nth(1).locator("input[data-money]")
    await amount.fill("12.5")
    total = builder.locator("[data-transfer-total]")
    note = builder.locator("[data-total-note]")
    await expect(total).to_have_text("R$ 1.000,00")
    await expect(amount).to_have_attribute("aria-invalid", "true")
    await expect(rows.nth(1).locator("[data-amount-error]")).to_have_text(
        "Valor inválido. Escreva como 1.234,56."
    )
    await expect(note).to_have_text("O total não inclui a origem 2: o valor dela não é válido.")
    await expect(rows.nth(0).locator("input[data-money]")).not_to_have_attribute(
        "aria-invalid", "true"
    )
    await screenshot(page, "transfer-invalid-row")

    # In English the amounts typed mean what they meant: "1.000" was a thousand reais, and
    # "12.5", refused in Portuguese, now reads as an amount.
    await page.get_by_role("button", name="Mudar o idioma para inglês").click()
    await expect(rows.nth(0).get_by_label("Amount (R$)")).to_have_value("1,000.00")
    await expect(total).to_have_text("R$ 1,012.50")
    await expect(note).to_have_text("")
    await expect(amount).not_to_have_attribute("aria-invalid", "true")
    await amount.fill("12,5")
    await expect(note).to_have_text("The total leaves out source 2: its amount is not valid.")
    await page.get_by_role("button", name="Switch the language to Portuguese").click()
    await expect(rows.nth(0).get_by_label("Valor (R$)")).to_have_value("1.000,00")
    await expect(total).to_have_text("R$ 1.012,50")
    await expect(note).to_have_text("")
    assert page.script_errors == []


async def test_a_phone_sized_screen_never_scrolls_sideways(browser: Any, bank_url: str) -> None:
    page = await new_page(browser, bank_url)
    await register(page, BRUNO, "Bruno Lima", PASSWORD)
    await register(page, ANA, "Ana Souza", PASSWORD)
    await sign_in(page, ANA, PASSWORD)
    individual = await open_account(page, "individual")
    joint = await open_account(page, "joint", [BRUNO])
    await move_money(page, "deposit", "alfa", individual, "1.051,00")
    await expect_balance(page, "alfa", individual, 105100)
    await page.goto("/#/transfer")
    builder = page.locator('form[data-form="transfer"]')
    await builder.locator("[data-sources] select").first.select_option(
        label=account_option("alfa", individual, "R$ 1.051,00")
    )
    await builder.locator("[data-sources] input").first.fill("125,53")
    await builder.get_by_label("Uma das minhas contas").select_option(
        label=account_option("alfa", joint, "R$ 0,00")
    )
    await builder.get_by_role("button", name="Revisar").click()
    await page.get_by_role("button", name="Confirmar e enviar").click()
    await expect(page.locator("[data-follow]")).to_have_attribute("data-status", "committed")

    await page.set_viewport_size({"width": 390, "height": 844})
    # How far the page reaches past the window's right edge, and what sticks out (to debug).
    sideways = "document.documentElement.scrollWidth - window.innerWidth"
    sticking_out = """() => [...document.querySelectorAll('body *')]
        .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 0.5)
        .map((e) => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)"""
    broken = """() => [...document.querySelectorAll('section:not([hidden]) .nowrap')]
        .filter((e) => e.getClientRects().length > 1).map((e) => e.textContent)"""
    for lang, statement_amount in (("pt", "Valor"), ("en", "Amount")):
        await page.goto("/#/accounts")
        await expect_balance(page, "alfa", joint, 12553)
        assert await page.evaluate(sideways) <= 0, await page.evaluate(sticking_out)
        owners = page.locator(f'tr[data-account="{joint}"] td.owners .nowrap')
        await expect(owners).to_have_count(2)
        for box in await owners.all():  # each document on one line
            assert len(await box.evaluate("(e) => [...e.getClientRects()]")) == 1
        await screenshot(page, f"phone-accounts-{lang}")

        await page.goto(f"/#/statement/alfa/{individual}")
        statement = page.locator('[data-view="statement"]')
        await expect(statement.locator("[data-statement] tbody tr")).to_have_count(2)
        await expect(statement.locator("th").nth(3)).to_have_text(statement_amount)
        assert await page.evaluate(sideways) <= 0, await page.evaluate(sticking_out)
        assert await page.evaluate(broken) == []
        await screenshot(page, f"phone-statement-{lang}")

        await page.goto("/#/transfer")
        await page.reload()
        await expect(builder.locator("[data-sources] select option").nth(1)).to_be_attached()
        assert await page.evaluate(sideways) <= 0, await page.evaluate(sticking_out)
        # The first source's "Remove" (it cannot be removed) takes no room on a phone.
        remove = builder.locator("[data-sources] > li").first.locator("[data-action=remove-source]")
        await expect(remove).to_be_hidden()
        # Each account's label fits in the closed picker: the balance is never cut.
        cut = await page.evaluate(
            """() => {
                const select = document.querySelector('[data-sources] select');
                const style = getComputedStyle(select);
                const context = document.createElement('canvas').getContext('2d');
                context.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
                const arrow = 24;
                const room = select.clientWidth - parseFloat(style.paddingLeft)
                    - parseFloat(style.paddingRight) - arrow;
                return [...select.options].filter((o) => o.value)
                    .filter((o) => context.measureText(o.text).width > room)
                    .map((o) => [o.text, Math.round(context.measureText(o.text).width), room]);
            }"""
        )
        assert cut == []
        await builder.locator("[data-sources] select").first.select_option(index=1)
        await screenshot(page, f"phone-transfer-{lang}")

        for view in ("money", "ring"):
            await page.goto(f"/#/{view}")
            await expect(page.locator("body")).to_have_attribute("data-current-view", view)
            assert await page.evaluate(sideways) <= 0, (view, await page.evaluate(sticking_out))
        if lang == "pt":
            await page.get_by_role("button", name="Mudar o idioma para inglês").click()
    assert page.script_errors == []
