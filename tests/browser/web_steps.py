"""Steps a customer takes in the web terminal, and the browser helpers every test uses.

Kept out of ``conftest.py`` so that tests import them by a name no other folder uses.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from playwright.async_api import expect

CHROMIUM_PATH = os.environ.get("CONSORTIUM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT_DIR = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
EXPECT_TIMEOUT_MS = 15_000
"""The longest one expectation waits; generous because the machine is shared."""

_COMPLETE = re.compile(r"[^a-z0-9-]+")


async def new_page(browser: Any, base_url: str, *, lang: str = "pt") -> Any:
    """A fresh browser context (its own storage: one customer) on ``base_url``."""
    context = await browser.new_context(
        base_url=base_url,
        locale="pt-BR" if lang == "pt" else "en-US",
        viewport={"width": 1280, "height": 900},
    )
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Chromium logs every 4xx answer as "Failed to load resource"; the tests provoke those
    # on purpose, so only script errors count.
    page.on(
        "console",
        lambda message: errors.append(message.text)
        if message.type == "error" and not message.text.startswith("Failed to load resource")
        else None,
    )
    page.script_errors = errors  # read by the tests: the page must not throw
    return page


async def screenshot(page: Any, name: str) -> None:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{_COMPLETE.sub('-', name)}.png"
    await page.screenshot(path=str(path), full_page=True)


async def unlabelled_controls(page: Any) -> list[str]:
    """Visible inputs, selects and textareas with no label: must stay empty."""
    return await page.evaluate(
        """() => Array.from(document.querySelectorAll('input, select, textarea'))
            .filter((e) => e.offsetParent !== null && e.type !== 'hidden')
            .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
            .map((e) => e.outerHTML)"""
    )


async def register(page: Any, document: str, name: str, password: str) -> None:
    await page.goto("/#/login")
    form = page.locator('form[data-form="register"]')
    await form.get_by_label("CPF ou CNPJ").fill(document)
    await form.get_by_label("Nome completo ou razão social").fill(name)
    await form.get_by_label("Senha (mínimo de 8 caracteres)").fill(password)
    await form.get_by_role("button", name="Cadastrar").click()
    await expect(page.locator("[data-notice]")).to_contain_text(name)


async def sign_in(page: Any, document: str, password: str) -> None:
    await page.goto("/#/login")
    form = page.locator('form[data-form="login"]')
    await form.get_by_label("CPF ou CNPJ").fill(document)
    await form.get_by_label("Senha").fill(password)
    await form.get_by_role("button", name="Entrar").click()
    await expect(page.locator('section[data-view="accounts"]')).to_be_visible()


async def open_account(page: Any, kind: str, co_owners: list[str] = ()) -> str:
    """Open an account at the bank the page came from; its number."""
    await page.goto("/#/accounts")
    form = page.locator('form[data-form="open"]')
    label = {"individual": "Individual", "joint": "Conjunta", "corporate": "Empresarial"}[kind]
    await form.get_by_label(label, exact=True).check()
    if co_owners:
        await form.get_by_label("Outros titulares (CPFs, um por linha)").fill("\n".join(co_owners))
    await form.get_by_role("button", name="Abrir conta").click()
    notice = page.locator("[data-notice]")
    await expect(notice).to_contain_text("aberta")
    text = await notice.text_content()
    return text.split("Conta ", 1)[1].split(" ", 1)[0]


async def move_money(page: Any, operation: str, bank: str, account: str, amount: str) -> Any:
    """Deposit or withdraw by typing the bank and account; the form, to read its messages."""
    await page.goto("/#/money")
    form = page.locator('form[data-form="money"]')
    await form.get_by_label("Depositar" if operation == "deposit" else "Sacar").check()
    await form.get_by_label("Minha conta").select_option(label="Outra conta (digitar)")
    await form.get_by_label("Banco").select_option(bank)
    await form.get_by_label("Número da conta").fill(account)
    await form.get_by_label("Valor (R$)").fill(amount)
    await form.get_by_role("button", name="Confirmar").click()
    return form


async def expect_balance(page: Any, bank: str, account: str, cents: int) -> None:
    """Wait until the dashboard shows ``cents`` for the account (the row's data attribute)."""
    cell = page.locator(f'[data-bank="{bank}"] tr[data-account="{account}"] [data-balance]')
    await expect(cell).to_have_attribute("data-balance", str(cents))


def account_option(bank_id: str, account: str, balance: str) -> str:
    """The label of one of the customer's accounts in the page's account pickers (the bank's
    short id, so that the balance fits in a phone's picker)."""
    return f"{bank_id} · Conta {account} · {balance}"


HOLDERS_WAIT_MS = 10_000
"""How long the page may take to show the token at two different banks."""


async def holders_seen(page: Any, count: int) -> list[str]:
    """Watch the ring view until it has drawn the token at ``count`` different banks."""
    return await page.evaluate(
        """([count, waitMs]) => new Promise((resolve, reject) => {
            const root = document.querySelector('[data-ring]');
            const seen = new Set();
            const note = () => {
                if (root.dataset.holder) seen.add(root.dataset.holder);
                if (seen.size >= count) { observer.disconnect(); resolve([...seen]); }
            };
            const observer = new MutationObserver(note);
            observer.observe(root, { attributes: true, attributeFilter: ['data-holder'] });
            note();
            setTimeout(() => {
                observer.disconnect();
                reject(new Error('saw only ' + [...seen]));
            }, waitMs);
        })""",
        [count, HOLDERS_WAIT_MS],
    )
