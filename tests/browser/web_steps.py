"""Steps a customer takes in the web terminal, written once for every browser test."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect


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


def account_option(bank_name: str, account: str, balance: str) -> str:
    """The label of one of the customer's accounts in the page's account pickers."""
    return f"{bank_name} · Conta {account} · {balance}"
