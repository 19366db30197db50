// The client API of the bank that served this page (CONTRACT.md), and the session.
//
// Every write carries an Idempotency-Key, so a retry of the same action (a double click, a
// reload after a lost answer) is applied at most once. The bearer token lives in
// sessionStorage: it ends with the tab, and logout ends it at the bank too.

const SESSION_KEY = "consortium.session";
export const REQUEST_TIMEOUT_MS = 15_000; // a cross-bank withdrawal waits for the token

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.status = status; // 0 when the bank could not be reached
    this.code = code;
  }
}

export function newIdempotencyKey() {
  // crypto.randomUUID exists only in secure contexts; getRandomValues exists everywhere.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export function session() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
  } catch {
    return null;
  }
}

function saveSession(value) {
  if (value) sessionStorage.setItem(SESSION_KEY, JSON.stringify(value));
  else sessionStorage.removeItem(SESSION_KEY);
}

let onSessionLost = () => {};
export function whenSessionLost(callback) {
  onSessionLost = callback;
}

// request("POST", "/api/v1/deposits", body, {idempotencyKey}) -> parsed JSON, or throws ApiError.
// Set on an answer the bank replayed for a request already made (same Idempotency-Key).
export const REPLAYED = Symbol("replayed");

export async function request(method, path, body = undefined, { idempotencyKey = null } = {}) {
  const headers = { Accept: "application/json" };
  const current = session();
  if (current?.token) headers.Authorization = `Bearer ${current.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD") headers["Idempotency-Key"] = idempotencyKey || newIdempotencyKey();
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  } catch (error) {
    throw new ApiError(0, error?.name === "TimeoutError" ? "timeout" : "network", String(error));
  }
  let document = null;
  const text = await response.text();
  if (text) {
    try {
      document = JSON.parse(text);
    } catch {
      document = null;
    }
  }
  if (!response.ok) {
    const error = document?.error || {};
    const code = error.code || `http_${response.status}`;
    if (response.status === 401 && current?.token && path !== "/api/v1/sessions") {
      saveSession(null);
      onSessionLost(code);
    }
    throw new ApiError(response.status, code, error.message || response.statusText);
  }
  if (document && typeof document === "object" && response.headers.get("Idempotent-Replayed") === "true") {
    // The first answer again: the bank did not do it twice, and what it says may be old.
    document[REPLAYED] = true;
  }
  return document;
}

export async function register(document, name, password) {
  return request("POST", "/api/v1/customers", { document, name, password });
}

export async function login(document, password) {
  const answer = await request("POST", "/api/v1/sessions", { document, password });
  saveSession({ token: answer.token, expires_at: answer.expires_at, document });
  return answer;
}

export async function logout() {
  try {
    if (session()?.token) await request("DELETE", "/api/v1/sessions");
  } finally {
    saveSession(null);
  }
}

export const consortiumAccounts = () => request("GET", "/api/v1/accounts?scope=consortium");
export const openAccount = (kind, owners, key) =>
  request("POST", "/api/v1/accounts", { kind, owners }, { idempotencyKey: key });
export const deposit = (bank, account, amount_cents, key) =>
  request("POST", "/api/v1/deposits", { bank, account, amount_cents }, { idempotencyKey: key });
export const withdraw = (bank, account, amount_cents, key) =>
  request("POST", "/api/v1/withdrawals", { bank, account, amount_cents }, { idempotencyKey: key });
export const submitTransfer = (sources, destination, key) =>
  request("POST", "/api/v1/transfers", { sources, destination }, { idempotencyKey: key });
export const transfer = (id) => request("GET", `/api/v1/transfers/${encodeURIComponent(id)}`);
// A page of an account's statement, newest first; `before` is the previous page's next_before.
export const statement = (bank, account, before = null) =>
  request(
    "GET",
    `/api/v1/accounts/${encodeURIComponent(bank)}/${encodeURIComponent(account)}/statement` +
      (before === null ? "" : `?before=${encodeURIComponent(before)}`),
  );
// Where a payee can be paid: their accounts at every bank of the ring (no balances).
export const directory = (document) =>
  request("GET", `/api/v1/directory?document=${encodeURIComponent(document)}`);
