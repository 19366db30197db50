// The web terminal: views, forms and their wiring to the client API.
//
// One page, one view at a time, chosen by the URL's hash (#/accounts, #/money, #/transfer,
// #/ring, #/login), so that the browser's back button and bookmarks work and the ring view
// can be projected on its own. Everything the customer sees comes from this bank's client
// API; the ring view comes from its server-sent events.

import * as api from "./api.js";
import { digitsOnly, documentKind, formatDocument } from "./documents.js";
import { applyTo, errorKnown, errorText, initialLang, lang, setLang, t } from "./i18n.js";
import { AMOUNT_CENTS_MAX, formatMoney, parseMoney } from "./money.js";
import { RingView } from "./ring.js";

export const SOURCES_MAX = 8; // rows in the transfer builder; the bank enforces its own maximum
const FOLLOW_INTERVAL_MS = 400;
const FOLLOW_MS_MAX = 60_000; // after this the page stops asking; the transfer still ends
// How long the page waits for a decided transfer to be "delivered" (applied at every bank)
// before it reads the balances again anyway (see untilDelivered).
const DELIVERY_WAIT_MS_MAX = 3_000;
const DELIVERY_POLL_MS = 100;
const NOTICE_MS = 6_000;
const PASSWORD_LENGTH_MIN = 8;
const TYPED = "__typed__";

const consortium = JSON.parse(document.getElementById("consortium").textContent || "{}");
const state = {
  listing: null, // the last GET /api/v1/accounts?scope=consortium
  accountNumbersAreNumbers: true, // the API's numbers are integers; the listing confirms it
  review: null, // the transfer being confirmed: {sources, destination, key}
  payee: null, // the last GET /api/v1/directory answer in the transfer builder
  followToken: 0,
  followed: null, // the transfer followed: {transfer, id, status, reason}
  statement: null, // the statement shown: {bank, account, page (the newest), lines, next}
};
const ring = new RingView(document.querySelector("[data-ring]"), { selfId: consortium.bank });

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

function banks() {
  if (consortium.banks?.length) return consortium.banks;
  return (state.listing?.banks || []).map((b) => ({ id: b.bank, name: b.name || b.bank }));
}

function bankName(id) {
  return banks().find((b) => b.id === id)?.name || id;
}

function accountValue(text) {
  const typed = String(text).trim();
  return state.accountNumbersAreNumbers && /^\d+$/.test(typed) ? Number(typed) : typed;
}

function myAccounts() {
  const out = [];
  for (const group of state.listing?.banks || []) {
    for (const account of group.accounts || []) out.push({ ...account, bank: account.bank || group.bank });
  }
  return out;
}

// ---- messages ----------------------------------------------------------------------------

// Amounts ("R$ 1.234,56", "-R$ 5,00") and documents ("123.456.789-09", "11.222.333/0001-81")
// inside a sentence: each kept on one line, never broken at its space or hyphen.
const UNBREAKABLE = /[-+]?R\$ [\d.,]*\d|\d{2,3}\.\d{3}\.\d{3}(?:\/\d{4})?-\d{2}/g;

// Sets node's text to `text` (the same textContent), its amounts and documents unbreakable.
function setText(node, value) {
  const text = String(value);
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(UNBREAKABLE)) {
    if (match.index > last) parts.push(text.slice(last, match.index));
    const span = document.createElement("span");
    span.className = "nowrap";
    span.textContent = match[0];
    parts.push(span);
    last = match.index + match[0].length;
  }
  if (last < text.length) parts.push(text.slice(last));
  node.replaceChildren(...parts);
}

let noticeTimer = null;
let noticeAt = 0;
const NOTICE_KEEP_ON_ROUTE_MS = 1_000; // a notice set while changing view survives the change
function notice(text, kind = "info") {
  noticeAt = performance.now();
  const box = $("[data-notice]");
  setText(box, text);
  box.className = `notice ${kind}`;
  box.hidden = !text;
  clearTimeout(noticeTimer);
  if (text) noticeTimer = setTimeout(clearNotice, NOTICE_MS);
}

function clearNotice() {
  const box = $("[data-notice]");
  box.textContent = "";
  box.hidden = true;
}

function describe(error) {
  if (error instanceof api.ApiError) {
    if (error.status === 0 && error.code === "network") return t("error_network");
    return errorText(error.code, error.message);
  }
  return t("error_unknown", { code: "client", message: String(error) });
}

// A typed amount's problem, in words (the largest amount named).
function moneyError(key) {
  return t(key, { max: formatMoney(AMOUNT_CENTS_MAX, lang()) });
}

// The error of a write: one the bank may not have answered (no answer in time, or it was
// unavailable) says so, and that confirming again, unchanged, learns the outcome.
function writeError(error) {
  const unanswered =
    error instanceof api.ApiError &&
    (error.status === 0 || error.status === 503 || error.status === 504 || error.code === "timeout");
  return unanswered ? t("outcome_unknown") : error;
}

function showError(root, textOrError) {
  const box = $("[data-error]", root);
  const text = typeof textOrError === "string" ? textOrError : describe(textOrError);
  box.textContent = text;
  if (textOrError instanceof api.ApiError) box.dataset.code = textOrError.code;
  else delete box.dataset.code;
}

function clearMessages(root) {
  for (const box of $$("[data-error], [data-success]", root)) {
    box.textContent = "";
    delete box.dataset.code;
  }
}

async function busy(button, work) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    // Disabled, the button lost the focus to the page: it gets it back (when nothing else
    // took it), so that the keyboard and a screen reader stay where the customer was.
    if (document.activeElement === document.body && button.isConnected && button.offsetParent !== null) button.focus();
  }
}

// ---- views -------------------------------------------------------------------------------

const VIEWS = ["login", "accounts", "statement", "money", "transfer", "ring"];
const PUBLIC_VIEWS = new Set(["login", "ring"]);

function route(event = null) {
  if (performance.now() - noticeAt > NOTICE_KEEP_ON_ROUTE_MS) clearNotice();
  // #/view, or #/statement/<bank>/<account>
  const [wanted, ...rest] = (location.hash.replace(/^#\/?/, "") || "").split("?")[0].split("/");
  const signedIn = Boolean(api.session()?.token);
  let view = VIEWS.includes(wanted) ? wanted : signedIn ? "accounts" : "login";
  if (!signedIn && !PUBLIC_VIEWS.has(view)) view = "login";
  if (signedIn && view === "login") view = "accounts";
  for (const section of $$("section[data-view]")) section.hidden = section.dataset.view !== view;
  const navView = view === "statement" ? "accounts" : view; // a statement is read from Contas
  for (const link of $$("[data-nav]")) {
    if (link.dataset.nav === navView) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  for (const node of $$("[data-needs-session]")) node.hidden = !signedIn;
  for (const node of $$("[data-needs-no-session]")) node.hidden = signedIn;
  $("[data-who]").textContent = signedIn ? formatDocument(api.session().document) : "";
  document.body.dataset.currentView = view;
  if (view === "accounts") preselectKind($('[data-form="open"]'));
  if (view === "ring") ring.start();
  else ring.stop();
  if (["accounts", "money", "transfer"].includes(view)) loadAccounts();
  if (view === "statement") openStatement(decodeURIComponent(rest[0] || ""), rest[1] || "");
  const heading = $(`[data-view="${view}"] h1`);
  // Every change of view (a link followed by mouse or keyboard, the back button, a sign-in)
  // moves the focus to the new view's heading, so that it is announced and the next Tab
  // starts there. Not on the first load: there the skip link must stay the first Tab stop.
  if (event !== null && heading) heading.focus();
}

// ---- accounts ----------------------------------------------------------------------------

async function loadAccounts() {
  const section = $('[data-view="accounts"]');
  const list = $("[data-banks]", section);
  list.setAttribute("aria-busy", "true");
  if (!state.listing) list.textContent = t("loading");
  try {
    state.listing = await api.consortiumAccounts();
    const first = myAccounts()[0];
    if (first) state.accountNumbersAreNumbers = typeof first.account === "number";
    showError(section, "");
  } catch (error) {
    showError(section, error);
  } finally {
    list.setAttribute("aria-busy", "false");
  }
  renderAccounts();
  renderPickers();
}

// ---- one account's statement -------------------------------------------------------------

// The statement of #/statement/<bank>/<account>: its newest page, then older ones on request.
async function openStatement(bank, account) {
  const known = banks().some((b) => b.id === bank) && /^[1-9][0-9]{0,15}$/.test(account);
  // error: null, "bad_link", or the API's refusal (said again in a new language on a switch)
  state.statement = { bank, account, page: null, lines: [], next: null, error: known ? null : "bad_link" };
  renderStatement();
  if (known) await loadStatement(null);
}

async function loadStatement(before) {
  const shown = state.statement;
  const section = $('[data-view="statement"]');
  const table = $("[data-statement]", section);
  table.setAttribute("aria-busy", "true");
  try {
    const page = await api.statement(shown.bank, shown.account, before);
    if (state.statement !== shown) return; // another account was opened meanwhile
    if (before === null) shown.page = page;
    shown.lines.push(...(page.lines || []));
    shown.next = page.next_before ?? null;
    shown.error = null;
  } catch (error) {
    shown.error = error;
  } finally {
    table.setAttribute("aria-busy", "false");
  }
  if (state.statement === shown) renderStatement();
}

// A phone shows a table's rows stacked, each cell after its column's name (app.css,
// table.stack): the names ride on the cells as data-label.
const STATEMENT_COLUMNS = ["statement_when", "statement_what", "statement_transfer", "statement_amount", "held"];
const ACCOUNT_COLUMNS = ["account_number", "kind", "owners", "balance", "held", "statement"];

function labelCells(row, keys) {
  [...row.cells].forEach((cell, index) => {
    cell.dataset.label = t(keys[index]);
  });
}

function signedMoney(cents) {
  if (!cents) return "—";
  return `${cents > 0 ? "+" : ""}${formatMoney(cents, lang())}`;
}

function renderStatement() {
  const shown = state.statement;
  if (!shown) return;
  const section = $('[data-view="statement"]');
  const page = shown.page;
  showError(section, shown.error === null ? "" : shown.error === "bad_link" ? t("statement_bad_link") : shown.error);
  setText($("[data-statement-account]", section), page
    ? t("statement_of", {
        bank: bankName(shown.bank),
        account: shown.account,
        balance: formatMoney(page.balance_cents, lang()),
        held: formatMoney(page.held_cents, lang()),
      })
    : "");
  const body = $("[data-statement] tbody", section);
  body.replaceChildren();
  const locale = lang() === "pt" ? "pt-BR" : "en-US";
  for (const line of shown.lines) {
    const row = body.insertRow();
    row.dataset.kind = line.kind;
    row.insertCell().textContent = new Date(line.at_ms).toLocaleString(locale, { dateStyle: "short", timeStyle: "medium" });
    const what = t(`line_${line.kind}`);
    row.insertCell().textContent = what === `line_${line.kind}` ? line.kind : what;
    const id = row.insertCell();
    id.className = "transfer-id";
    id.textContent = line.transfer_id || "";
    for (const cents of [line.available_cents, line.held_cents]) {
      const cell = row.insertCell();
      cell.className = "num";
      cell.textContent = signedMoney(cents);
    }
    labelCells(row, STATEMENT_COLUMNS);
  }
  $("[data-statement-empty]", section).hidden = !page || shown.lines.length > 0;
  $("[data-action=older]", section).hidden = shown.next === null;
}

function kindLabel(kind) {
  return t(`kind_${kind}`) === `kind_${kind}` ? kind : t(`kind_${kind}`);
}

function renderAccounts() {
  const list = $("[data-banks]");
  const listing = state.listing;
  if (!listing) return;
  list.replaceChildren();
  let balance = 0n;
  let held = 0n;
  const groups = new Map((listing.banks || []).map((g) => [g.bank, g]));
  const unavailable = new Set(listing.unavailable || []);
  const order = banks().map((b) => b.id);
  for (const id of [...groups.keys(), ...unavailable]) if (!order.includes(id)) order.push(id);
  let any = false;
  for (const id of order) {
    const group = groups.get(id);
    if (!group && !unavailable.has(id)) continue;
    const card = document.createElement("article");
    card.className = "bank-card";
    card.dataset.bank = id;
    const title = document.createElement("h2");
    title.textContent = group?.name || bankName(id);
    if (id === consortium.bank) {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = t("this_bank");
      title.append(" ", tag);
    }
    card.append(title);
    if (unavailable.has(id)) {
      card.classList.add("unavailable");
      const p = document.createElement("p");
      p.className = "unavailable-note";
      p.textContent = t("bank_unavailable");
      card.append(p);
    } else if (!group.accounts?.length) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = t("no_accounts_here");
      card.append(p);
    } else {
      const table = document.createElement("table");
      table.className = "stack";
      const head = table.createTHead().insertRow();
      for (const key of ACCOUNT_COLUMNS) {
        const th = document.createElement("th");
        th.scope = "col";
        th.textContent = t(key);
        if (key === "balance" || key === "held") th.className = "num";
        head.append(th);
      }
      const body = table.createTBody();
      for (const account of group.accounts) {
        any = true;
        balance += BigInt(account.balance_cents ?? 0);
        held += BigInt(account.held_cents ?? 0);
        const row = body.insertRow();
        row.dataset.account = String(account.account);
        row.insertCell().textContent = String(account.account);
        row.insertCell().textContent = kindLabel(account.kind);
        // The owners' documents: the line breaks between them, never inside "123.456.789-09".
        const owners = document.createElement("span");
        (account.owners || []).forEach((owner, index) => {
          const one = document.createElement("span");
          one.className = "nowrap";
          one.textContent = formatDocument(owner);
          owners.append(...(index ? [", ", one] : [one]));
        });
        const ownersCell = row.insertCell();
        ownersCell.className = "owners";
        ownersCell.append(owners);
        const b = row.insertCell();
        b.className = "num";
        b.dataset.balance = String(account.balance_cents);
        b.textContent = formatMoney(account.balance_cents ?? 0, lang());
        const h = row.insertCell();
        h.className = "num";
        h.dataset.held = String(account.held_cents ?? 0);
        h.textContent = formatMoney(account.held_cents ?? 0, lang());
        const link = document.createElement("a");
        link.href = `#/statement/${encodeURIComponent(id)}/${encodeURIComponent(account.account)}`;
        link.textContent = t("statement");
        link.setAttribute("aria-label", t("statement_link", { account: account.account, bank: bankName(id) }));
        const linkCell = row.insertCell();
        linkCell.className = "link";
        linkCell.append(link);
        labelCells(row, ACCOUNT_COLUMNS);
      }
      // A phone stacks the rows (app.css); a table still too wide scrolls inside its card,
      // never the whole page sideways.
      const scroller = document.createElement("div");
      scroller.className = "table-scroll";
      scroller.append(table);
      card.append(scroller);
    }
    list.append(card);
  }
  if (!any && unavailable.size === 0) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = t("no_accounts");
    list.append(p);
  }
  $("[data-total-balance]").textContent = formatMoney(balance, lang());
  $("[data-total-held]").textContent = formatMoney(held, lang());
}

// An account in a picker: "alfa · Conta 1 · R$ 1.051,00". The bank's short id, not its name,
// so that the balance still fits in the closed picker on a phone.
function describeAccount(account) {
  return `${account.bank} · ${t("account_number")} ${account.account} · ${formatMoney(account.balance_cents ?? 0, lang())}`;
}

function renderPickers() {
  for (const select of $$("select[data-bank-picker]")) {
    const chosen = select.value;
    select.replaceChildren(
      ...banks().map((b) => new Option(`${b.name} (${b.id})`, b.id, false, b.id === chosen)),
    );
    if (!chosen && consortium.bank) select.value = consortium.bank;
  }
  for (const select of $$("select[data-account-picker]")) {
    const chosen = select.value;
    const options = [new Option(t("choose_account"), "")];
    for (const account of myAccounts()) {
      options.push(new Option(describeAccount(account), JSON.stringify([account.bank, account.account])));
    }
    if (!select.hasAttribute("data-no-typed")) options.push(new Option(t("other_account"), TYPED));
    select.replaceChildren(...options);
    select.value = options.some((o) => o.value === chosen) ? chosen : "";
    syncTyped(select);
  }
  updateTotal();
}

// A picker's "another account" choice shows the bank and number inputs beside it.
function syncTyped(select) {
  const typed = select.parentElement.querySelector("[data-typed-account]");
  if (typed) typed.hidden = select.value !== TYPED;
}

function pickedAccount(select, bankSelect, numberInput) {
  if (select.value === TYPED) {
    const number = numberInput.value.trim();
    if (!/^\d+$/.test(number)) return null;
    return { bank: bankSelect.value, account: accountValue(number) };
  }
  if (!select.value) return null;
  const [bank, account] = JSON.parse(select.value);
  return { bank, account };
}

async function openAccount(form) {
  const session = api.session();
  const kind = new FormData(form).get("kind");
  const mine = digitsOnly(session.document);
  const myKind = documentKind(mine);
  let owners = [mine];
  if (kind === "corporate" && myKind !== "cnpj") return showError(form, t("kind_needs_cnpj"));
  if (kind !== "corporate" && myKind !== "cpf") return showError(form, t("kind_needs_cpf"));
  if (kind === "joint") {
    const others = form.co_owners.value.split(/[\s,;]+/).map(digitsOnly).filter(Boolean);
    for (const other of others) {
      if (documentKind(other) !== "cpf") return showError(form, t("co_owner_invalid", { document: other }));
    }
    const unique = [...new Set(others)].filter((d) => d !== mine);
    if (!unique.length) return showError(form, t("co_owners_missing"));
    owners = owners.concat(unique);
  }
  const key = form.dataset.key || (form.dataset.key = api.newIdempotencyKey());
  try {
    const account = await api.openAccount(kind, owners, key);
    delete form.dataset.key;
    form.reset();
    preselectKind(form); // a company opens another corporate account, not "individual"
    notice(t("opened", { account: account.account, bank: bankName(account.bank || consortium.bank) }), "success");
    await loadAccounts();
  } catch (error) {
    if (error instanceof api.ApiError && error.status && error.status < 500) delete form.dataset.key;
    showError(form, error);
  }
}

// A company opens corporate accounts, a person individual or joint ones: preselect.
function preselectKind(form) {
  const company = documentKind(api.session()?.document || "") === "cnpj";
  const kind = new FormData(form).get("kind");
  if (company) form.querySelector('input[value="corporate"]').checked = true;
  else if (kind === "corporate") form.querySelector('input[value="individual"]').checked = true;
  syncKind(form);
}

function syncKind(form) {
  $("[data-co-owners]", form).hidden = new FormData(form).get("kind") !== "joint";
}

// ---- deposit and withdraw ----------------------------------------------------------------

async function moveMoney(form) {
  const target = pickedAccount(form.mine, form.bank, form.account);
  if (!target) return showError(form, t("account_missing"));
  const amount = parseMoney(form.amount.value, lang());
  if (amount.error) {
    form.amount.setAttribute("aria-invalid", "true");
    return showError(form, moneyError(amount.error));
  }
  form.amount.removeAttribute("aria-invalid");
  const operation = new FormData(form).get("operation");
  // One key per filled-in form: a resubmission after a lost answer is the same request.
  const fingerprint = JSON.stringify([operation, target, amount.cents]);
  if (form.dataset.fingerprint !== fingerprint) {
    form.dataset.fingerprint = fingerprint;
    form.dataset.key = api.newIdempotencyKey();
  }
  try {
    const call = operation === "withdraw" ? api.withdraw : api.deposit;
    const answer = await call(target.bank, target.account, amount.cents, form.dataset.key);
    // A withdrawal from another bank still waiting for the token may yet be paid: the key
    // stays, so that confirming again is the same withdrawal.
    const pending = answer?.status === "pending";
    if (!pending) delete form.dataset.fingerprint;
    const replayed = Boolean(answer?.[api.REPLAYED]);
    const balance = answer?.balance_cents;
    setText(
      $("[data-success]", form),
      pending
        ? t("withdrawal_pending")
        : replayed
        ? t("already_done") // its balance is the first answer's, maybe old: the list is read again
        : balance === undefined
        ? t("done")
        : t(operation === "withdraw" ? "withdrawn" : "deposited", {
            account: target.account,
            bank: bankName(target.bank),
            balance: formatMoney(balance, lang()),
          }),
    );
    if (!pending) form.amount.value = "";
    if (answer?.transfer_id) await balancesAfter(answer.transfer_id); // a withdrawal elsewhere
    else await loadAccounts();
  } catch (error) {
    // A refusal is final for this content; only an unanswered request keeps its key.
    if (error instanceof api.ApiError && error.status && error.status < 500) delete form.dataset.fingerprint;
    showError(form, writeError(error));
  }
}

// ---- transfer ----------------------------------------------------------------------------

function addSourceRow() {
  const list = $("[data-sources]");
  if (list.children.length >= SOURCES_MAX) {
    showError($('[data-form="transfer"]'), t("sources_max", { n: SOURCES_MAX }));
    return null;
  }
  const row = $("#source-row").content.firstElementChild.cloneNode(true);
  const n = list.children.length + 1;
  const id = `source-${Date.now().toString(36)}-${n}`;
  const select = $("select", row);
  const amount = $("input", row);
  select.id = `${id}-account`;
  amount.id = `${id}-amount`;
  $("[data-amount-error]", row).id = `${id}-amount-error`;
  amount.setAttribute("aria-describedby", `${id}-amount-error`);
  $("[data-source-label]", row).htmlFor = select.id;
  $("[data-amount-label]", row).htmlFor = amount.id;
  list.append(row);
  applyTo(row);
  renumberSources();
  renderPickers();
  return row;
}

function renumberSources() {
  $$("[data-sources] > li").forEach((row, index) => {
    $("[data-source-label]", row).textContent = t("source_n", { n: index + 1 });
    // The first row cannot be removed; its button keeps its place so the columns line up.
    const remove = $("[data-action=remove-source]", row);
    remove.disabled = index === 0;
    remove.classList.toggle("invisible", index === 0);
  });
}

function collectTransfer(form) {
  const sources = [];
  for (const row of $$("[data-sources] > li", form)) {
    const picked = pickedAccount($("select", row), null, null);
    if (!picked) return { error: t("source_missing") };
    const amount = parseMoney($("input", row).value, lang());
    if (amount.error) return { error: moneyError(amount.error), field: $("input", row) };
    sources.push({ bank: picked.bank, account: picked.account, amount_cents: amount.cents });
  }
  const seen = new Set(sources.map((s) => JSON.stringify([s.bank, s.account])));
  if (seen.size !== sources.length) return { error: t("source_duplicate") };
  const destination = pickedAccount(form.destination_mine, form.destination_bank, form.destination_account);
  if (!destination) return { error: t("destination_missing") };
  if (seen.has(JSON.stringify([destination.bank, destination.account]))) {
    return { error: t("destination_is_source") };
  }
  // A destination picked from the payee's accounts is reviewed with the payee's document.
  const picked = $("input[name=payee_account]:checked", form);
  if (picked && state.payee && picked.value === JSON.stringify([destination.bank, destination.account])) {
    return { sources, destination, payee: digitsOnly(state.payee.document) };
  }
  return { sources, destination };
}

// The running total of the amounts typed. A row whose amount does not read as money (in the
// page's language) is marked, says why, and the total says that it leaves that row out.
function updateTotal() {
  const out = $("[data-transfer-total]");
  let total = 0n;
  const left = [];
  $$("[data-sources] > li").forEach((row, index) => {
    const input = $("input[data-money]", row);
    const amount = parseMoney(input.value, lang());
    const invalid = Boolean(amount.error) && input.value.trim() !== "";
    if (amount.cents) total += BigInt(amount.cents);
    if (invalid) {
      input.setAttribute("aria-invalid", "true");
      left.push(index + 1);
    } else input.removeAttribute("aria-invalid");
    $("[data-amount-error]", row).textContent = invalid ? moneyError(amount.error) : "";
  });
  out.textContent = formatMoney(total, lang());
  $("[data-total-note]").textContent = left.length
    ? t(left.length === 1 ? "total_leaves_out_one" : "total_leaves_out_many", { n: left.join(", ") })
    : "";
}

// Amounts typed in one language, rewritten in the other's way when the language changes:
// "1.000" (a thousand, in Portuguese) becomes "1,000.00", not one real. Text that was not an
// amount is left as typed, and checked again in the new language.
function retypeAmounts(from, to) {
  for (const input of $$("input[data-money]")) {
    const amount = parseMoney(input.value, from);
    if (amount.cents) input.value = formatMoney(amount.cents, to, { symbol: false });
  }
}

// What a transfer moves, from where to where, in the reader's language: shown to confirm it,
// and again while it is followed to its outcome.
function renderSummary(list, transfer) {
  list.replaceChildren();
  const add = (term, text) => {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    setText(dd, text);
    list.append(dt, dd);
  };
  let total = 0n;
  for (const s of transfer.sources) {
    total += BigInt(s.amount_cents);
    add(t("from"), `${bankName(s.bank)} · ${t("account_number")} ${s.account} · ${formatMoney(s.amount_cents, lang())}`);
  }
  if (transfer.payee) {
    // Whose account it is, as found by the payee's document: the customer checks the person.
    add(t("payee"), `${documentKind(transfer.payee) === "cnpj" ? "CNPJ" : "CPF"} ${formatDocument(transfer.payee)}`);
  }
  add(t("to"), `${bankName(transfer.destination.bank)} · ${t("account_number")} ${transfer.destination.account}`);
  add(t("total"), formatMoney(total, lang()));
}

function review(form) {
  const collected = collectTransfer(form);
  if (collected.error) {
    collected.field?.focus();
    return showError(form, collected.error);
  }
  const fingerprint = JSON.stringify(collected);
  // The same reviewed content keeps its key: confirming twice sends one transfer.
  const key = state.review?.fingerprint === fingerprint ? state.review.key : api.newIdempotencyKey();
  state.review = { ...collected, fingerprint, key };
  renderSummary($("[data-summary]"), state.review);
  form.hidden = true;
  const confirm = $("[data-confirm]");
  clearMessages(confirm);
  confirm.hidden = false;
  confirm.focus();
}

async function confirmTransfer(button) {
  const confirm = $("[data-confirm]");
  const pending = state.review;
  if (!pending) return;
  try {
    const answer = await api.submitTransfer(pending.sources, pending.destination, pending.key);
    confirm.hidden = true;
    follow(answer.id, answer.status, pending);
  } catch (error) {
    showError(confirm, writeError(error)); // the review keeps its key: confirming again is the same transfer
  }
}

function showOutcome(id, status, reason) {
  state.followed = { ...state.followed, id, status, reason };
  const box = $("[data-follow]");
  box.dataset.status = status;
  $("[data-follow-id]", box).textContent = t("transfer_id", { id });
  const pending = $('[data-step="pending"]', box);
  const outcome = $('[data-step="outcome"]', box);
  pending.classList.toggle("current", status === "pending");
  pending.classList.toggle("passed", status !== "pending");
  outcome.hidden = status === "pending";
  outcome.className = status;
  outcome.textContent = status === "pending" ? "" : t(`status_${status}`);
  // The reason may be an error code the page knows (said in the reader's words, the code kept
  // in data-code) or the bank's own text.
  const known = reason ? errorKnown(reason) : null;
  const said = $("[data-follow-reason]", box);
  said.textContent = reason ? t("reason", { reason: known || reason }) : "";
  if (reason) said.dataset.code = reason;
  else delete said.dataset.code;
}

// A decided cross-bank transfer (or withdrawal) is applied at the other banks a moment later;
// until then a source there shows the money held, a destination not yet credited. Wait for
// "delivered" (boundedly) before the balances are read again; true once it is.
async function untilDelivered(id, waitMs = DELIVERY_WAIT_MS_MAX, pollMs = DELIVERY_POLL_MS) {
  const started = performance.now();
  while (performance.now() - started < waitMs) {
    try {
      if ((await api.transfer(id)).delivered !== false) return true;
    } catch {
      return false; // the balances are read anyway
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
  return false;
}

// The balances, read at once after a decided transfer's bounded wait for its delivery; and,
// should that wait run out (a bank slow to apply it), read again once it is delivered, in
// the background, until FOLLOW_MS_MAX: the page never keeps showing money held for good.
async function balancesAfter(id) {
  const delivered = await untilDelivered(id);
  await loadAccounts();
  if (!delivered) {
    untilDelivered(id, FOLLOW_MS_MAX, FOLLOW_INTERVAL_MS).then((late) => late && loadAccounts());
  }
}

async function follow(id, status, transfer) {
  const box = $("[data-follow]");
  state.followed = { transfer };
  renderSummary($("[data-follow-summary]", box), transfer);
  box.hidden = false;
  box.focus();
  const token = ++state.followToken;
  showOutcome(id, status || "pending", null);
  const started = performance.now();
  while (token === state.followToken && performance.now() - started < FOLLOW_MS_MAX) {
    try {
      const answer = await api.transfer(id);
      showOutcome(id, answer.status, answer.reason);
      if (answer.status !== "pending") {
        if (answer.delivered === false) await balancesAfter(id);
        else await loadAccounts();
        return;
      }
    } catch (error) {
      $("[data-follow-reason]", box).textContent = describe(error);
    }
    await new Promise((resolve) => setTimeout(resolve, FOLLOW_INTERVAL_MS));
  }
  if (token === state.followToken) {
    state.followed.gaveUp = true;
    sayGaveUp();
  }
}

function sayGaveUp() {
  $("[data-follow-reason]").textContent = t("follow_gave_up", { seconds: FOLLOW_MS_MAX / 1000 });
}

// ---- the payee: a destination found by its owner's document --------------------------------

// The payee's accounts across the consortium (GET /api/v1/directory): a radio list whose
// choice fills the destination's bank and number, so the review shows exactly what is sent.
async function lookUpPayee(form) {
  const box = $("[data-payee-error]", form);
  const input = form.payee_document;
  box.textContent = "";
  delete box.dataset.code;
  state.payee = null;
  renderPayee(form);
  const digits = digitsOnly(input.value);
  if (!documentKind(digits)) {
    box.textContent = t("document_invalid");
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return;
  }
  input.removeAttribute("aria-invalid");
  try {
    state.payee = await api.directory(digits);
  } catch (error) {
    box.textContent = describe(error);
    if (error instanceof api.ApiError) box.dataset.code = error.code;
    return;
  }
  renderPayee(form);
}

function renderPayee(form = $('[data-form="transfer"]')) {
  const root = $("[data-payee-results]", form);
  const found = state.payee;
  if (!found) {
    root.replaceChildren();
    return;
  }
  const chosen = $("input[name=payee_account]:checked", form)?.value;
  const parts = [];
  if (found.banks.length) {
    const group = document.createElement("fieldset");
    group.className = "payee-results";
    const legend = document.createElement("legend");
    setText(legend, t("payee_accounts", { document: formatDocument(found.document) }));
    group.append(legend);
    for (const bank of found.banks) {
      const heading = document.createElement("p");
      heading.className = "payee-bank";
      heading.textContent = `${bank.name} (${bank.bank})`;
      const list = document.createElement("ul");
      for (const account of bank.accounts) {
        const value = JSON.stringify([account.bank, account.account]);
        const radio = document.createElement("input");
        radio.type = "radio";
        radio.name = "payee_account";
        radio.id = `payee-${account.bank}-${account.account}`;
        radio.value = value;
        radio.checked = value === chosen;
        const label = document.createElement("label");
        label.className = "choice";
        label.htmlFor = radio.id;
        label.append(radio, `${t("account_number")} ${account.account} · ${kindLabel(account.kind)}`);
        const item = document.createElement("li");
        item.append(label);
        list.append(item);
      }
      group.append(heading, list);
    }
    parts.push(group);
  } else {
    const none = document.createElement("p");
    none.className = "muted";
    none.dataset.payeeNone = "";
    none.textContent = t(found.unavailable.length ? "payee_none_answered" : "payee_none");
    parts.push(none);
  }
  for (const id of found.unavailable) {
    const note = document.createElement("p");
    note.className = "payee-bank unavailable";
    note.dataset.payeeUnavailable = id;
    note.textContent = t("payee_bank_unavailable", { bank: `${bankName(id)} (${id})` });
    parts.push(note);
  }
  root.replaceChildren(...parts);
}

function pickPayee(radio) {
  const form = radio.form;
  const [bank, account] = JSON.parse(radio.value);
  form.destination_mine.value = TYPED;
  syncTyped(form.destination_mine);
  form.destination_bank.value = bank;
  form.destination_account.value = String(account);
}

// Choosing or typing another destination leaves the payee's list unchosen: one destination.
function unpickPayee(form) {
  for (const radio of $$("input[name=payee_account]", form)) radio.checked = false;
}

// Any edit of the payee's document drops what was found for the document before, and the
// destination (picked from it or not): a customer who typed another payee must look them up
// again, and cannot send to the accounts of the first.
function forgetPayee(form) {
  state.payee = null;
  renderPayee(form);
  const box = $("[data-payee-error]", form);
  box.textContent = "";
  delete box.dataset.code;
  form.payee_document.removeAttribute("aria-invalid");
  form.destination_mine.value = "";
  syncTyped(form.destination_mine);
  form.destination_bank.value = consortium.bank || form.destination_bank.value;
  form.destination_account.value = "";
}

function resetTransfer({ focus = true } = {}) {
  state.followToken += 1;
  state.review = null;
  state.followed = null;
  const form = $('[data-form="transfer"]');
  form.reset();
  $("[data-sources]", form).replaceChildren();
  addSourceRow();
  form.hidden = false;
  $("[data-confirm]").hidden = true;
  $("[data-follow]").hidden = true;
  clearMessages(form);
  state.payee = null;
  renderPayee(form);
  $("[data-payee-error]", form).textContent = "";
  form.payee_document.removeAttribute("aria-invalid");
  if (focus) $("select", form).focus();
}

// Nothing of one customer's may show to the next at this terminal: every form (and its
// idempotency key), message, transfer review and statement goes with the session.
function forgetCustomer() {
  state.listing = null;
  state.statement = null;
  const statement = $('[data-view="statement"]');
  $("[data-statement] tbody", statement).replaceChildren();
  setText($("[data-statement-account]", statement), "");
  $("[data-banks]").replaceChildren(); // the accounts at every bank
  for (const form of $$("form[data-form]")) {
    if (form.dataset.form === "login" || form.dataset.form === "register") continue;
    form.reset();
    delete form.dataset.fingerprint;
    delete form.dataset.key;
    clearMessages(form);
  }
  resetTransfer({ focus: false });
}

// ---- sign in, register, sign out ---------------------------------------------------------

async function signIn(form) {
  const documentDigits = digitsOnly(form.document.value);
  if (!documentKind(documentDigits)) return showError(form, t("document_invalid"));
  try {
    await api.login(documentDigits, form.password.value);
    form.reset();
    state.listing = null;
    location.hash = "#/accounts";
    route("navigate");
  } catch (error) {
    // At sign-in, "unauthorized" means the document or the password is wrong.
    if (error instanceof api.ApiError && error.code === "unauthorized") {
      showError(form, errorKnown("invalid_credentials"));
    } else showError(form, error);
  }
}

async function registerCustomer(form) {
  const documentDigits = digitsOnly(form.document.value);
  if (!documentKind(documentDigits)) return showError(form, t("document_invalid"));
  const name = form.name.value.trim();
  if (!name) return showError(form, t("name_missing"));
  if (form.password.value.length < PASSWORD_LENGTH_MIN) return showError(form, t("password_short"));
  try {
    await api.register(documentDigits, name, form.password.value);
    const login = $('[data-form="login"]');
    login.document.value = formatDocument(documentDigits);
    form.reset();
    notice(t("registered", { name }), "success");
    login.password.focus();
  } catch (error) {
    showError(form, error);
  }
}

async function signOut() {
  try {
    await api.logout();
  } catch {
    // The session is forgotten here whatever the bank answered.
  }
  forgetCustomer();
  location.hash = "#/login";
  route("navigate");
  notice(t("logged_out"));
}

// ---- wiring ------------------------------------------------------------------------------

const FORMS = {
  login: signIn,
  register: registerCustomer,
  open: openAccount,
  money: moveMoney,
  transfer: async (form) => review(form),
};

function wire() {
  for (const form of $$("form[data-form]")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      // Enter pressed again just after a deposit or withdrawal (its amount cleared): nothing
      // new is asked, and the message of the one made stays, rather than "enter an amount".
      const repeated = form.dataset.form === "money" && !form.amount.value.trim() && $("[data-success]", form).textContent;
      if (repeated) return;
      clearMessages(form);
      clearNotice(); // a new action starts: an older notice would be read as its outcome
      const button = $("button[type=submit]", form);
      await busy(button, () => FORMS[form.dataset.form](form));
    });
  }
  document.addEventListener("change", (event) => {
    const target = event.target;
    if (target.matches("select[data-account-picker]")) syncTyped(target);
    if (target.name === "payee_account") pickPayee(target);
    if (target.name === "destination_mine" || target.name === "destination_bank") unpickPayee(target.form);
    if (target.name === "kind") syncKind(target.form);
  });
  document.addEventListener("input", (event) => {
    if (event.target.matches("[data-sources] input[data-money]")) updateTotal();
    if (event.target.name === "destination_account") unpickPayee(event.target.form);
    if (event.target.name === "payee_document") forgetPayee(event.target.form);
  });
  // The skip link moves the focus to the content; it must not change the view (#main is no view).
  $("a.skip").addEventListener("click", (event) => {
    event.preventDefault();
    $("#main").focus();
  });
  // Enter in the payee's document looks the payee up (it would otherwise submit the review).
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || event.target.name !== "payee_document") return;
    event.preventDefault();
    $('[data-action="lookup-payee"]', event.target.form).click();
  });
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-action]");
    if (!button) return;
    const action = button.dataset.action;
    if (action === "lang") {
      const before = lang();
      setLang(before === "pt" ? "en" : "pt");
      retypeAmounts(before, lang());
      renumberSources();
      renderAccounts();
      renderPickers();
      renderPayee();
      renderStatement();
      if (state.review) renderSummary($("[data-summary]"), state.review);
      const followed = state.followed;
      if (followed?.id) {
        renderSummary($("[data-follow-summary]"), followed.transfer);
        showOutcome(followed.id, followed.status, followed.reason);
        if (followed.gaveUp) sayGaveUp();
      }
      ring.relabel();
    } else if (action === "logout") await signOut();
    else if (action === "refresh") await busy(button, loadAccounts);
    else if (action === "older") await busy(button, () => loadStatement(state.statement.next));
    else if (action === "lookup-payee") await busy(button, () => lookUpPayee(button.form));
    else if (action === "add-source") {
      const row = addSourceRow();
      $("select", row || document)?.focus();
    } else if (action === "remove-source") {
      button.closest("li").remove();
      renumberSources();
      updateTotal();
    } else if (action === "confirm") await busy(button, () => confirmTransfer(button));
    else if (action === "edit") {
      $("[data-confirm]").hidden = true;
      $('[data-form="transfer"]').hidden = false;
      $('[data-form="transfer"] select').focus();
    } else if (action === "new-transfer") resetTransfer();
    else if (action === "fullscreen") {
      const stage = $("[data-view=ring]");
      if (document.fullscreenElement) document.exitFullscreen();
      else stage.requestFullscreen?.();
    }
  });
  window.addEventListener("hashchange", route);
  api.whenSessionLost(() => {
    forgetCustomer();
    location.hash = "#/login";
    notice(t("error_session"), "error");
  });
}

function start() {
  setLang(initialLang());
  const here = banks().find((b) => b.id === consortium.bank);
  $("[data-bank-name]").textContent = here ? here.name : consortium.bank || "";
  if (here) document.title = `${here.name} · ${t("brand")}`;
  // Headings take the focus when their view opens, so screen readers announce the view.
  for (const heading of $$("section[data-view] h1")) heading.tabIndex = -1;
  wire();
  addSourceRow();
  syncKind($('[data-form="open"]'));
  route();
  document.body.dataset.ready = "true";
}

start();
