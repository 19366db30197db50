"""Load makers: customers at every bank doing deposits, withdrawals and transfers.

Everything here goes through the client API of CONTRACT.md and writes what it saw into a
:class:`Recorder`, which freezes into the :class:`scenarios.history.History` the checker
judges. Every write carries an Idempotency-Key, so an operation whose answer was lost is
resolved after the faults stop by sending it again with the same key (the bank answers with
its first answer, or applies it now): that is how a history ends with few unknowns without
ever guessing. Every loop is bounded in count and in time. Under faults the clients keep going
(``WorkloadOptions.keep_going``): they keep off banks and links that gave no answer lately
(:class:`Unanswered`) and do not wait for a slow operation before they start the next.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from typing import Any

import attrs

from scenarios.client import Answer, ApiClient, make_cpf
from scenarios.cluster import ScenarioError
from scenarios.history import (
    AccountRef,
    AuditRead,
    BalanceSeen,
    FaultEvent,
    History,
    Kind,
    Movement,
    Operation,
    Outcome,
    StatementLine,
)

__all__ = [
    "Customer",
    "MoneyApiMissing",
    "Recorder",
    "Teller",
    "Unanswered",
    "WorkloadOptions",
    "run_bank_workload",
    "transfer_home",
]

SETUP_ATTEMPTS_MAX = 20
"""Tries of one setup call (customer, session, account) before the scenario gives up; a
busy bank answers 503 while too many password hashes are pending."""
ENROL_ATTEMPTS_MAX = 10
"""Documents tried for one customer before giving up (each taken one is replaced)."""
SETUP_RETRY_MS = 100
SETUP_RETRY_MS_MAX = 1_000
"""Retries back off, doubling from ``SETUP_RETRY_MS`` up to this."""
TRANSFER_WAIT_S = 10.0
"""How long a client follows its transfer before moving on (it is resolved later)."""
PATIENCE_S = 0.1
"""How long a client waits for its operation before it starts the next one, leaving that one
to end on its own within its bounds (``WorkloadOptions.keep_going``). Operations answer in tens
of milliseconds when nothing is wrong, so a client then does one at a time; under a fault, one
that waits for a stopped bank, a cut link or the token's next visit no longer holds back every
operation its client would make meanwhile: a load that stood still while a request hung would
judge almost nothing under the fault."""
UNDER_WAY_PER_CLIENT_MAX = 16
"""Operations one client has under way at most (the one it waits for and those left to end on
their own); with this many, it waits for one of them to end before it starts another. Times
:data:`PATIENCE_S`, 1.6 s: a client goes on through a lost token's regeneration (a loss timeout
and a bid, 1 to 1.5 s on a scenario's ring) even when each of its operations waits for it."""
SILENT_AFTER_S = 1.0
"""How long a call that needs no token visit goes unanswered before the clients that keep
going take its bank, or the link its request was forwarded over, for silent
(:class:`Unanswered`): a deposit (at the account's bank or forwarded to it), a withdrawal at
the account's bank, a transfer asked for without waiting (one that waits: ``wait_ms`` more),
a transfer's status. Such answers come in tens of milliseconds (at most about 0.1 s with 8
clients on a busy two-core machine); none by then means a stopped bank, or a bank cut off from
the one the request was forwarded to. The call itself still waits for its answer up to the
client's ``CALL_TIMEOUT_S``: a stopped bank that is resumed by then answers it, and its
operation does not end unknown."""
WITHDRAWAL_SILENT_AFTER_S = 3.0
""":data:`SILENT_AFTER_S` for a withdrawal from an account at another bank than the terminal, a
transfer decided at one of the terminal's token visits (the bank itself waits up to
``WITHDRAWAL_WAIT_MS``, 10 s): a rotation of the token, a round that waits its whole second
(``ROUND_MS_MIN``) for a bank that does not vote, and the second the terminal waits for the
account's bank to apply it (``WITHDRAWAL_DELIVERY_WAIT_MS``), with margin."""
AUDIT_TIMEOUT_S = 3.0
"""The longest the auditor of a load that keeps going waits for a consortium audit: its bank
asks every other bank for at most 2 s (``bank.interbank.AUDIT_TIMEOUT_S``), then answers 503."""
AVOID_S = 1.0
"""How long clients that keep going keep off a bank that gave no answer, and off the link
between two banks when a request one of them forwarded to the other got none: no such bank is
a terminal, no request goes over such a link, and no deposit or withdrawal goes to the accounts
of a bank that does not answer (see :class:`Unanswered`). Then the next request that would use
it tries it again. Shorter than any fault of the catalog; each try at a bank or link that still
does not answer is one more operation held up there (:data:`SILENT_AFTER_S` before it tells)."""
TRANSFER_WAIT_MS = 2_000
"""How long a client that waits for the outcome in its request asks the bank to wait (well
under the client's call timeout): longer, and the answer is the id, followed by polling."""
TRANSFER_POLL_MS_MIN = 15
TRANSFER_POLL_MS_MAX = 200
RESOLVE_TIMEOUT_S = 30.0
"""How long, after the load, unknown operations are retried and pending transfers followed."""
RESOLVE_RETRY_MS = 200
RESOLVE_ROUNDS_MAX = 100
"""Rounds of retries after the load, at most (also bounded by ``RESOLVE_TIMEOUT_S``)."""
FOLLOW_POLLS_MAX = 1_000
"""Status polls of one transfer at most (also bounded by its timeout)."""
SETTLE_READS_MAX = 200
"""Final reads at most while waiting for holds to be released."""
SETTLE_TIMEOUT_S = 15.0
"""How long the final read waits for every hold to be released."""
SETTLE_POLL_MS = 100
STATEMENT_PAGE_LINES = 100
"""Lines asked per page of an account's statement (the banks' most)."""
STATEMENT_PAGES_MAX = 500
"""Pages read at most of one account's statement; a longer one is left unread (not judged)."""
OPERATIONS_PER_CLIENT_MAX = 5_000
"""A client stops after this many operations even if its time is not up."""
AUDIT_INTERVAL_MS = 150
"""The pause between two consortium audit reads of the auditor."""


class MoneyApiMissing(Exception):
    """The banks do not serve the client API (yet): money scenarios cannot run."""


@attrs.define
class Customer:
    """A person with a session and an individual account at every bank of the ring."""

    index: int
    """The client number (its operations carry it)."""
    document: str
    """Its CPF (replaced when some earlier run registered the same one)."""
    name: str
    """The name it registers with."""
    password: str
    """The password it logs in with."""
    sessions: dict[str, str] = attrs.field(factory=dict)
    """Bearer token per bank."""
    accounts: dict[str, AccountRef] = attrs.field(factory=dict)
    """Its individual account per bank."""


class Recorder:
    """Collects a history while a scenario runs; :meth:`freeze` gives the checker its input."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self.operations: dict[str, Operation] = {}
        self.audits: list[AuditRead] = []
        self.balances: list[BalanceSeen] = []
        self.faults: list[FaultEvent] = []
        self.accounts: list[AccountRef] = []
        self.final_balances: dict[AccountRef, int] = {}
        self.final_held: dict[AccountRef, int] = {}
        self.baseline_cents = 0
        self.settled = False
        self.funds_before: dict[AccountRef, int] = {}
        self.funds_before_ms: float | None = None
        self.statements: dict[AccountRef, tuple[StatementLine, ...]] = {}
        self._keys = 0

    def now_ms(self) -> float:
        return (time.monotonic() - self._started) * 1000

    def new_key(self, prefix: str) -> str:
        self._keys += 1
        return f"{prefix}-{self._keys}"

    def record(self, op: Operation) -> None:
        self.operations[op.key] = op

    def fault(
        self, action: str, target: str, detail: str = "", *, at_ms: float | None = None
    ) -> FaultEvent:
        at = self.now_ms() if at_ms is None else at_ms
        event = FaultEvent(at_ms=at, action=action, target=target, detail=detail)
        self.faults.append(event)
        return event

    def saw_balance(self, account: AccountRef, body: Any, source: str) -> None:
        if isinstance(body, dict) and isinstance(body.get("balance_cents"), int):
            held = body.get("held_cents", 0)
            self.balances.append(
                BalanceSeen(
                    at_ms=self.now_ms(),
                    account=account,
                    balance_cents=body["balance_cents"],
                    held_cents=held if isinstance(held, int) else 0,
                    source=source,
                )
            )

    def freeze(self) -> History:
        return History(
            operations=tuple(sorted(self.operations.values(), key=lambda op: op.invoke_ms)),
            audits=tuple(self.audits),
            balances=tuple(self.balances),
            faults=tuple(self.faults),
            accounts=tuple(self.accounts),
            final_balances=dict(self.final_balances),
            final_held=dict(self.final_held),
            baseline_cents=self.baseline_cents,
            settled=self.settled,
            funds_before=dict(self.funds_before),
            funds_before_ms=self.funds_before_ms,
            statements=dict(self.statements),
        )


def _wire_account(account: AccountRef) -> dict[str, Any]:
    number: Any = int(account.account) if account.account.isdigit() else account.account
    return {"bank": account.bank, "account": number}


def _account_ref(body: Any, bank: str) -> AccountRef | None:
    if isinstance(body, dict) and body.get("account") is not None:
        return AccountRef(str(body.get("bank", bank)), str(body["account"]))
    return None


_Route = tuple[str, ...]
"""A bank ``(bank,)``, or the link between two banks ``(a, b)`` (sorted: a cut is both ways)."""


def transfer_home(transfer_id: str, banks: Iterable[str]) -> str | None:
    """The bank that records and decides a transfer: its id names it (``<bank>-<rest>``,
    docs/transfers.md); ``None`` for an id that names no bank of ``banks``."""
    home = transfer_id.rsplit("-", 1)[0]
    return home if home in banks else None


class Unanswered:
    """Banks, and links between two banks, that recently gave no answer: the clients' shared
    memory of the ring's troubles, as customers who found a terminal dead tell each other.

    A call nobody answered (no connection, or none within its kind's :data:`SILENT_AFTER_S`)
    marks its terminal; when the request was to be forwarded to another bank (a deposit or
    withdrawal for an account there, a transfer whose first source is there, the status of a
    transfer decided there), no answer or a ``503 unavailable`` from the terminal marks the
    link between the two instead (the terminal may be fine: in a partition, clients reach every
    bank, but the terminal cannot reach the other). The ring's watcher marks a bank that does
    not answer ``GET /ring/status`` (until it answers again) and a link one of whose banks says
    the other is down (:meth:`status`). Each mark lasts :data:`AVOID_S` after the last sign;
    then the next request that would use a bank or link the clients marked goes
    (:meth:`take`) and is the try: the others keep off it until that request is answered or
    taken for silent, and its answer clears the mark or renews it (:meth:`heard`)."""

    def __init__(
        self, *, avoid_s: float = AVOID_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.avoid_s = avoid_s
        self.clock = clock
        self._until: dict[_Route, float] = {}
        """Until when each bank or link the clients found silent is avoided."""
        self._silent_until: dict[str, float] = {}
        """Until when each bank the watcher found silent is avoided (apart: its answer to the
        watcher says nothing of what the clients found)."""
        self._cut_until: dict[_Route, float] = {}
        """Until when each link is avoided because one of its banks said the other is down."""

    @staticmethod
    def _link(a: str, b: str) -> _Route:
        return (a, b) if a <= b else (b, a)

    def _routes(self, terminal: str, bank: str) -> list[_Route]:
        if terminal == bank:
            return [(terminal,)]
        return [(terminal,), (bank,), self._link(terminal, bank)]

    def _avoided(self, route: _Route) -> bool:
        until = self._until.get(route)
        return until is not None and self.clock() < until

    def _silent(self, bank: str) -> bool:
        until = self._silent_until.get(bank)
        return until is not None and self.clock() < until

    def _cut(self, link: _Route) -> bool:
        until = self._cut_until.get(link)
        return until is not None and self.clock() < until

    def answers(self, bank: str) -> bool:
        """Whether clients may send requests to ``bank`` now."""
        return not self._avoided((bank,)) and not self._silent(bank)

    def reaches(self, terminal: str, bank: str) -> bool:
        """Whether a request made at ``terminal`` and forwarded to ``bank`` (the same bank: not
        forwarded) may be sent now."""
        if not self.answers(terminal) or not self.answers(bank):
            return False
        link = self._link(terminal, bank)
        return terminal == bank or not (self._avoided(link) or self._cut(link))

    def avoided(self) -> list[str]:
        """The banks clients keep off now."""
        banks = {r[0] for r in self._until if len(r) == 1} | set(self._silent_until)
        return sorted(bank for bank in banks if not self.answers(bank))

    def take(self, terminal: str, bank: str, *, for_s: float) -> None:
        """A request is about to go to ``terminal`` (forwarded to ``bank``): whatever mark on
        its way has run out, this request probes; the other clients keep off it for the
        request's bound ``for_s`` (or until :meth:`heard` says how it went)."""
        now = self.clock()
        for route in self._routes(terminal, bank):
            until = self._until.get(route)
            if until is not None and now >= until:
                self._until[route] = now + for_s

    def status(self, bank: str, answered: bool, down: Iterable[str] = ()) -> None:
        """What the ring's watcher saw: ``bank`` answered ``GET /ring/status`` or not (within
        its bound, ``scenarios.monitor.STATUS_TIMEOUT_S``), and which members it said are
        ``down`` (the ring's own view: a hand-off to them went unanswered). A bank that does not
        answer even that is stopped or gone: clients keep off it without each finding out for
        themselves, for :data:`AVOID_S` after each silent sample and no longer once it answers
        the watcher again (what the clients found themselves stays as it is); likewise no
        request goes over the link between a bank and a member it says is down (in a partition
        that is said long before a request across the cut has gone unanswered a second)."""
        now = self.clock()
        if answered:
            self._silent_until.pop(bank, None)
        else:
            self._silent_until[bank] = now + self.avoid_s
        for peer in down:
            if peer != bank:
                self._cut_until[self._link(bank, peer)] = now + self.avoid_s

    def silent(self, terminal: str, bank: str, *, sent: bool) -> None:
        """A request to ``terminal``, forwarded to ``bank``, got no answer (``sent``: the
        connection was made; else it was refused, and the terminal is down)."""
        forwarded = sent and terminal != bank
        route = self._link(terminal, bank) if forwarded else (terminal,)
        self._until[route] = self.clock() + self.avoid_s

    def heard(self, terminal: str, bank: str, answer: Answer) -> None:
        """What ``answer`` of ``terminal``, to a request forwarded to ``bank``, says."""
        now = self.clock()
        if answer.status is None:
            self.silent(terminal, bank, sent=answer.sent)
            return
        self._until.pop((terminal,), None)
        if terminal == bank:
            return
        if answer.status == 503 and answer.error_code == "unavailable":
            self._until[self._link(terminal, bank)] = now + self.avoid_s
        elif answer.ok:
            self._until.pop((bank,), None)
            self._until.pop(self._link(terminal, bank), None)


class Teller:
    """Does operations for customers against the ring and records every one."""

    def __init__(
        self,
        client: ApiClient,
        urls: dict[str, str],
        recorder: Recorder,
        *,
        prefix: str,
        transfer_wait_s: float = TRANSFER_WAIT_S,
    ) -> None:
        self.client = client
        self.urls = urls
        self.recorder = recorder
        self.prefix = prefix
        self.transfer_wait_s = transfer_wait_s
        self.unanswered = Unanswered()
        """The banks and links that gave its clients no answer lately: every call is told to it,
        and the load (``WorkloadOptions.keep_going``) and a transfer's polls keep off them."""

    # -- setup -------------------------------------------------------------------------

    async def _setup_call(
        self, method: str, url: str, body: Any = None, token: str | None = None
    ) -> Answer:
        answer = Answer(status=None)
        retry_ms = SETUP_RETRY_MS
        for _ in range(SETUP_ATTEMPTS_MAX):
            answer = await self.client.call(method, url, body=body, token=token)
            if answer.status in (404, 405) and url.endswith("/api/v1/customers"):
                raise MoneyApiMissing(f"{url} answered {answer.status}: no client API here")
            if answer.status is not None and answer.status < 500:
                return answer
            await asyncio.sleep(retry_ms / 1000)
            retry_ms = min(SETUP_RETRY_MS_MAX, retry_ms * 2)
        return answer

    async def enrol(self, customer: Customer, banks: Sequence[str]) -> None:
        """Register ``customer`` at ``banks``, log in, and open an individual account each.

        A document some earlier run already registered (a ring used again under --attach)
        is replaced by a new one, so that the customer is always a new person. The new ones
        are drawn from the system's randomness, not from the run's seeded generator: a run
        again with the same seed would try the same ones, which the earlier run took too (a
        fresh ring never needs one, so its run stays what its seed makes it)."""
        fresh = random.SystemRandom()
        for _ in range(ENROL_ATTEMPTS_MAX):
            if await self._register(customer, banks):
                break
            customer.document = make_cpf(fresh)
        else:
            raise ScenarioError(f"no free document found for {customer.name}")
        for bank in banks:
            url = self.urls[bank]
            answer = await self._setup_call(
                "POST",
                url + "/api/v1/sessions",
                {"document": customer.document, "password": customer.password},
            )
            if not answer.ok or not isinstance(answer.body, dict):
                raise ScenarioError(f"{bank}: cannot log {customer.name} in: {answer.problem}")
            customer.sessions[bank] = str(answer.body["token"])
            account = await self.open_account(customer, bank, "individual", [customer.document])
            customer.accounts[bank] = account

    async def _register(self, customer: Customer, banks: Sequence[str]) -> bool:
        """Register at every bank; ``False`` when the document is somebody's already (409;
        or 429, a bank's brake on wrong passwords for it, which a sign-up with another's
        document counts as)."""
        for bank in banks:
            answer = await self._setup_call(
                "POST",
                self.urls[bank] + "/api/v1/customers",
                {"document": customer.document, "name": customer.name,
                 "password": customer.password},
            )  # fmt: skip
            if answer.status in (409, 429):
                return False
            if not answer.ok:
                raise ScenarioError(f"{bank}: cannot register {customer.name}: {answer.problem}")
        return True

    async def open_account(
        self, customer: Customer, bank: str, kind: str, owners: list[str]
    ) -> AccountRef:
        answer = await self._setup_call(
            "POST",
            self.urls[bank] + "/api/v1/accounts",
            {"kind": kind, "owners": owners},
            token=customer.sessions[bank],
        )
        account = _account_ref(answer.body, bank) if answer.ok else None
        if account is None:
            raise ScenarioError(f"{bank}: cannot open a {kind} account: {answer.problem}")
        self.recorder.accounts.append(account)
        return account

    async def baseline(self, customer: Customer, bank: str) -> int | None:
        """The consortium's audited money before the load (``None`` if it cannot be read)."""
        for _ in range(SETUP_ATTEMPTS_MAX):
            read = await self.audit(customer, bank)
            if read.ok and read.total_cents is not None:
                return read.total_cents
            await asyncio.sleep(SETUP_RETRY_MS / 1000)
        return None

    # -- operations --------------------------------------------------------------------

    async def _ask(
        self, method: str, terminal: str, bank: str, path: str, *,
        silent_after_s: float | None = None, timeout_s: float | None = None,
        token: str | None, body: Any = None, key: str | None = None,
    ) -> Answer:
        """One call to ``terminal`` for a request it forwards to ``bank`` (or answers itself,
        when they are the same), told to :attr:`unanswered`: before it goes, after
        ``silent_after_s`` without an answer (the call goes on waiting, up to ``timeout_s`` or
        the client's bound), and once it ends."""
        bound_s = timeout_s or self.client.call_timeout_s
        self.unanswered.take(terminal, bank, for_s=silent_after_s or bound_s)
        call = asyncio.ensure_future(self.client.call(
            method, self.urls[terminal] + path, body=body, token=token, key=key,
            timeout_s=timeout_s,
        ))  # fmt: skip
        if silent_after_s is not None:
            try:
                done, _ = await asyncio.wait({call}, timeout=silent_after_s)
            except BaseException:
                call.cancel()
                raise
            if not done:
                self.unanswered.silent(terminal, bank, sent=True)
        answer = await call
        self.unanswered.heard(terminal, bank, answer)
        return answer

    async def deposit(
        self, customer: Customer, terminal: str, account: AccountRef, amount_cents: int,
        *, silent_after_s: float | None = None,
    ) -> Operation:
        return await self._cash(
            Kind.DEPOSIT, customer, terminal, account, amount_cents, silent_after_s=silent_after_s
        )

    async def withdraw(
        self, customer: Customer, terminal: str, account: AccountRef, amount_cents: int,
        *, silent_after_s: float | None = None,
    ) -> Operation:
        return await self._cash(
            Kind.WITHDRAWAL, customer, terminal, account, amount_cents,
            silent_after_s=silent_after_s,
        )  # fmt: skip

    async def _cash(
        self,
        kind: Kind,
        customer: Customer,
        terminal: str,
        account: AccountRef,
        amount_cents: int,
        *,
        key: str | None = None,
        invoke_ms: float | None = None,
        silent_after_s: float | None = None,
    ) -> Operation:
        key = key or self.recorder.new_key(f"{self.prefix}-{customer.index}-{kind}")
        path = "/api/v1/deposits" if kind is Kind.DEPOSIT else "/api/v1/withdrawals"
        movement = (Movement(account, amount_cents),)
        started = self.recorder.now_ms() if invoke_ms is None else invoke_ms
        pending = Operation(
            key=key, client=customer.index, kind=kind, bank=terminal, invoke_ms=started,
            complete_ms=None, outcome=Outcome.UNKNOWN,
            debits=movement if kind is Kind.WITHDRAWAL else (),
            credits=movement if kind is Kind.DEPOSIT else (),
        )  # fmt: skip
        self.recorder.record(pending)
        answer = await self._ask(
            "POST", terminal, account.bank, path, silent_after_s=silent_after_s,
            body={**_wire_account(account), "amount_cents": amount_cents},
            token=customer.sessions[terminal], key=key,
        )  # fmt: skip
        now = self.recorder.now_ms()
        body = answer.body if isinstance(answer.body, dict) else {}
        if answer.status == 202 and body.get("id") is not None:
            # A cross-bank withdrawal answered with its transfer's record (still pending, or
            # aborted through no fault of the request): it ends as that transfer ends.
            op = self._transfer_status(attrs.evolve(pending, transfer_id=str(body["id"])), body)
        elif answer.ok:
            self.recorder.saw_balance(account, answer.body, str(kind))
            # A withdrawal paid at another bank than the account's names its transfer.
            paid_by = body.get("transfer_id")
            op = attrs.evolve(
                pending, complete_ms=now, outcome=Outcome.OK,
                transfer_id=paid_by if isinstance(paid_by, str) else None,
            )  # fmt: skip
        elif answer.refused:
            reason = answer.problem if answer.sent else f"not sent ({answer.problem})"
            op = attrs.evolve(pending, complete_ms=now, outcome=Outcome.REFUSED, reason=reason)
        else:
            op = attrs.evolve(pending, reason=answer.problem)
        self.recorder.record(op)
        return op

    async def transfer(
        self,
        customer: Customer,
        terminal: str,
        sources: Sequence[Movement],
        destination: AccountRef,
        *,
        follow: bool = True,
        wait_ms: int = 0,
        silent_after_s: float | None = None,
    ) -> Operation:
        """Ask for a transfer and (with ``follow``) wait for it to end, within a bound.
        ``wait_ms``: ask the bank to answer with the outcome, waiting at most that long (the
        bank then stores the transfer with its decision; see docs/transfers.md).
        ``silent_after_s``: how long a call goes unanswered before its bank or link is taken
        for silent (besides the ``wait_ms`` it asked for); ``None``: never."""
        key = self.recorder.new_key(f"{self.prefix}-{customer.index}-transfer")
        total = sum(m.amount_cents for m in sources)
        pending = Operation(
            key=key, client=customer.index, kind=Kind.TRANSFER, bank=terminal,
            invoke_ms=self.recorder.now_ms(), complete_ms=None, outcome=Outcome.UNKNOWN,
            debits=tuple(sources), credits=(Movement(destination, total),),
        )  # fmt: skip
        self.recorder.record(pending)
        op = await self._submit_transfer(
            customer, pending, wait_ms=wait_ms, silent_after_s=silent_after_s
        )
        if follow and op.outcome is Outcome.UNKNOWN and op.transfer_id is not None:
            op = await self.follow_transfer(
                customer, op, timeout_s=self.transfer_wait_s, silent_after_s=silent_after_s
            )
        return op

    async def _submit_transfer(
        self,
        customer: Customer,
        pending: Operation,
        *,
        wait_ms: int = 0,
        silent_after_s: float | None = None,
    ) -> Operation:
        body = {
            "sources": [
                {**_wire_account(m.account), "amount_cents": m.amount_cents}
                for m in pending.debits
            ],
            "destination": _wire_account(pending.credits[0].account),
        }
        # A transfer with a key is coordinated by its first source's bank, wherever it is
        # asked for (docs/transfers.md): the terminal forwards it there.
        answer = await self._ask(
            "POST", pending.bank, pending.debits[0].account.bank,
            "/api/v1/transfers" + (f"?wait_ms={wait_ms}" if wait_ms else ""),
            silent_after_s=None if silent_after_s is None else silent_after_s + wait_ms / 1000,
            body=body, token=customer.sessions[pending.bank], key=pending.key,
        )  # fmt: skip
        if answer.ok and isinstance(answer.body, dict) and answer.body.get("id") is not None:
            op = attrs.evolve(pending, transfer_id=str(answer.body["id"]), reason=None)
            op = self._transfer_status(op, answer.body)
        elif answer.refused:
            reason = answer.problem if answer.sent else f"not sent ({answer.problem})"
            op = attrs.evolve(
                pending, complete_ms=self.recorder.now_ms(), outcome=Outcome.REFUSED,
                reason=reason,
            )  # fmt: skip
        else:
            op = attrs.evolve(pending, reason=answer.problem)
        self.recorder.record(op)
        return op

    def _transfer_status(self, op: Operation, body: Any) -> Operation:
        status = body.get("status") if isinstance(body, dict) else None
        if status == "committed":
            return attrs.evolve(
                op, complete_ms=self.recorder.now_ms(), outcome=Outcome.OK, reason=None
            )
        if status == "aborted":
            reason = body.get("reason")
            return attrs.evolve(
                op, complete_ms=self.recorder.now_ms(), outcome=Outcome.REFUSED,
                reason=str(reason) if reason is not None else "aborted",
            )  # fmt: skip
        return attrs.evolve(op, reason=f"status {status}")

    async def follow_transfer(
        self,
        customer: Customer,
        op: Operation,
        *,
        timeout_s: float,
        silent_after_s: float | None = None,
    ) -> Operation:
        """Poll ``GET /api/v1/transfers/{id}`` until it ends or ``timeout_s`` passes (a poll
        unanswered for ``silent_after_s`` tells :attr:`unanswered`). It is asked at the bank the
        transfer was asked at, which asks the bank that decides it; when that way gives no
        answer now, at the deciding bank itself; when that bank does not answer either, not
        until one of them may again."""
        assert op.transfer_id is not None
        deadline = time.monotonic() + timeout_s
        poll_ms = TRANSFER_POLL_MS_MIN
        home = transfer_home(op.transfer_id, self.urls) or op.bank
        path = f"/api/v1/transfers/{op.transfer_id}"
        for _ in range(FOLLOW_POLLS_MAX):
            if op.outcome is not Outcome.UNKNOWN or time.monotonic() >= deadline:
                break
            await asyncio.sleep(poll_ms / 1000)
            poll_ms = min(TRANSFER_POLL_MS_MAX, poll_ms * 2)
            if self.unanswered.reaches(op.bank, home):
                asked = op.bank
            elif self.unanswered.answers(home):
                asked = home
            else:
                continue
            answer = await self._ask(
                "GET", asked, home, path, silent_after_s=silent_after_s,
                token=customer.sessions[asked],
            )
            if answer.ok:
                op = self._transfer_status(op, answer.body)
        self.recorder.record(op)
        return op

    async def audit(
        self, customer: Customer, bank: str, *, timeout_s: float | None = None
    ) -> AuditRead:
        read, _ = await self._audit(bank, customer.sessions.get(bank), timeout_s=timeout_s)
        return read

    async def _audit(
        self, bank: str, token: str | None, *, timeout_s: float | None = None
    ) -> tuple[AuditRead, dict[str, Any]]:
        """One consortium audit read, recorded for the checker; the read and the answer."""
        invoke = self.recorder.now_ms()
        answer = await self._ask(
            "GET", bank, bank, "/api/v1/consortium/audit", timeout_s=timeout_s, token=token
        )
        complete = self.recorder.now_ms()
        body = answer.body if isinstance(answer.body, dict) else {}
        unavailable = body.get("unavailable") or []
        total = body.get("total_cents")
        ok = answer.ok and not unavailable and isinstance(total, int)
        held = body.get("held_cents")
        expected = body.get("expected_cents")
        read = AuditRead(
            bank=bank, invoke_ms=invoke, complete_ms=complete, ok=ok,
            total_cents=total if isinstance(total, int) else None,
            held_cents=held if isinstance(held, int) else None,
            expected_cents=expected if isinstance(expected, int) else None,
            reason=None if ok else (answer.problem or f"unavailable: {unavailable}"),
        )  # fmt: skip
        self.recorder.audits.append(read)
        return read, body

    # -- after the load ----------------------------------------------------------------

    async def resolve(
        self, customers: dict[int, Customer], *, timeout_s: float = RESOLVE_TIMEOUT_S
    ) -> int:
        """Retry every operation still unknown with its own key, and follow every pending
        transfer, until all end or ``timeout_s`` passes; how many stay unknown."""
        deadline = time.monotonic() + timeout_s
        asked_again: set[str] = set()
        for _ in range(RESOLVE_ROUNDS_MAX):
            if time.monotonic() >= deadline:
                break
            unknown = [
                op for op in self.recorder.operations.values() if op.outcome is Outcome.UNKNOWN
            ]
            if not unknown:
                break
            asked_again.update(op.key for op in unknown)
            await asyncio.gather(*(self._resolve_one(customers[op.client], op) for op in unknown))
            if any(op.outcome is Outcome.UNKNOWN for op in self.recorder.operations.values()):
                await asyncio.sleep(RESOLVE_RETRY_MS / 1000)
        for key in asked_again:  # ended now, not when first asked: no latency of the banks'
            op = self.recorder.operations[key]
            if op.outcome is not Outcome.UNKNOWN:
                self.recorder.record(attrs.evolve(op, late=True))
        return sum(op.outcome is Outcome.UNKNOWN for op in self.recorder.operations.values())

    async def _resolve_one(self, customer: Customer, op: Operation) -> None:
        if op.kind is Kind.TRANSFER:
            if op.transfer_id is None:
                op = await self._submit_transfer(customer, op)
            if op.transfer_id is not None and op.outcome is Outcome.UNKNOWN:
                await self.follow_transfer(customer, op, timeout_s=1.0)
            return
        if op.transfer_id is not None:
            await self.follow_transfer(customer, op, timeout_s=1.0)
            return
        movement = op.credits[0] if op.kind is Kind.DEPOSIT else op.debits[0]
        # Retried through the next bank, not the one first asked: the account's bank keeps a
        # deposit's or a withdrawal's key, so any bank answers the first answer (or makes it,
        # when it never happened).
        banks = sorted(customer.sessions)
        terminal = banks[(banks.index(op.bank) + 1) % len(banks)] if op.bank in banks else op.bank
        retried = await self._cash(
            op.kind, customer, terminal, movement.account, movement.amount_cents,
            key=op.key, invoke_ms=op.invoke_ms,
        )  # fmt: skip
        if retried.outcome is Outcome.REFUSED and retried.reason and "not sent" in retried.reason:
            # The bank is unreachable now; that says nothing about the first attempt.
            self.recorder.record(op)

    async def balances(
        self, customers: dict[int, Customer], *, source: str = "accounts"
    ) -> dict[AccountRef, tuple[int, int]]:
        """Balance and held money of every account the scenario opened, as ``GET
        /api/v1/accounts`` at each bank shows them to their owners."""
        seen: dict[AccountRef, tuple[int, int]] = {}
        async for account, row, _ in self._listed(customers):
            if isinstance(row.get("balance_cents"), int):
                self.recorder.saw_balance(account, row, source)
                seen[account] = (row["balance_cents"], int(row.get("held_cents", 0)))
        return seen

    async def _listed(self, customers: dict[int, Customer]) -> AsyncIterator[tuple[AccountRef, dict[str, Any], str]]:
        """Each account the scenario opened as ``GET /api/v1/accounts`` at its bank lists it
        to each of its owners: the account, its row and the owner's token there."""
        ours = set(self.recorder.accounts)
        for customer in customers.values():
            for bank, token in customer.sessions.items():
                answer = await self.client.call("GET", self.urls[bank] + "/api/v1/accounts", token=token)
                rows = answer.body if answer.ok else None
                if isinstance(rows, dict):  # the contract's listing (a bare list is taken too)
                    rows = rows.get("accounts")
                for row in rows if isinstance(rows, list) else []:
                    account = _account_ref(row, bank)
                    if account in ours and isinstance(row, dict):
                        yield account, row, token

    async def read_final(
        self, customers: dict[int, Customer], *, timeout_s: float = SETTLE_TIMEOUT_S
    ) -> bool:
        """Read every account's final balance once the consortium is quiet: nothing held and
        nothing between banks (a participant releases a hold, and a destination is credited,
        once it learns the decision, which may come after the client's answer). The audit is
        read first: once it shows quiet, with the load over, nothing changes any more, so the
        balances read after it are final. Whether all settled in time."""
        ours = set(self.recorder.accounts)
        deadline = time.monotonic() + timeout_s
        complete = False
        for _ in range(SETTLE_READS_MAX):
            quiet = await self._quiet()
            seen = await self.balances(customers, source="final")
            self.recorder.final_balances = {a: b for a, (b, _) in seen.items()}
            self.recorder.final_held = {a: h for a, (_, h) in seen.items()}
            complete = quiet and set(seen) == ours and not any(h for _, h in seen.values())
            if complete or time.monotonic() >= deadline:
                break
            await asyncio.sleep(SETTLE_POLL_MS / 1000)
        if complete:
            await self.read_statements(customers)
        return complete

    async def read_statements(self, customers: dict[int, Customer]) -> None:
        """Every line of each account's statement, read at its own bank by one of its owners
        (every page: one read, once nothing moves any more). An account whose statement cannot
        be read whole is left out."""
        async for account, _, token in self._listed(customers):
            if account not in self.recorder.statements:
                lines = await self._statement(account, token)
                if lines is not None:
                    self.recorder.statements[account] = lines

    async def _statement(self, account: AccountRef, token: str) -> tuple[StatementLine, ...] | None:
        url = f"{self.urls[account.bank]}/api/v1/accounts/{account.bank}/{account.account}/statement"
        lines: list[StatementLine] = []
        before = ""
        for _ in range(STATEMENT_PAGES_MAX):
            answer = await self.client.call("GET", f"{url}?limit={STATEMENT_PAGE_LINES}{before}", token=token)
            page = answer.body if answer.ok and isinstance(answer.body, dict) else {}
            if not isinstance(page.get("lines"), list):
                return None  # unread (or a bank without statements)
            try:
                for line in page["lines"]:
                    transfer_id = line["transfer_id"]
                    lines.append(StatementLine(
                        str(line["kind"]), None if transfer_id is None else str(transfer_id),
                        int(line["available_cents"]), int(line["held_cents"]),
                    ))  # fmt: skip
            except (KeyError, TypeError, ValueError):
                return None  # a line that is not one: this statement is not judged
            if page.get("next_before") is None:
                return tuple(lines)
            before = f"&before={page['next_before']}"
        return None

    async def _quiet(self) -> bool:
        """Whether the consortium's audit shows no money held and none between banks (decided
        transfers not yet applied everywhere). A figure the answer lacks counts as zero (a
        simpler bank's audit); no answer counts as not quiet. Each read is recorded: the
        checker judges the settled total too (a run too short for the auditor has no other)."""
        bank = next(iter(self.urls))
        read, body = await self._audit(bank, None)
        if not read.ok:
            return False
        figures = [body.get(name, 0) for name in ("held_cents", "in_flight_cents")]
        return all(isinstance(value, int) and value == 0 for value in figures)


@attrs.frozen
class WorkloadOptions:
    """The shape of a bank workload."""

    clients: int = 4
    """Concurrent customers, each doing one operation at a time (see ``keep_going``)."""
    duration_s: float = 5.0
    """How long the load runs."""
    opening_cents: int = 20_000
    """The first deposit into every account."""
    amount_cents_max: int = 8_000
    """The largest single deposit, withdrawal or transfer source."""
    think_ms_max: int = 20
    """The longest pause between two operations of one client (spreads the load)."""
    audits: bool = True
    """Whether an auditor reads the consortium audit all along."""
    keep_going: bool = False
    """Clients that go on when banks do not answer, as a fault scenario's must for its verdicts
    to judge a load under the fault: a client waits for an operation at most
    :data:`PATIENCE_S` before it starts the next (at most :data:`UNDER_WAY_PER_CLIENT_MAX`
    under way); a call unanswered for as long as its kind allows (:data:`SILENT_AFTER_S`,
    :data:`WITHDRAWAL_SILENT_AFTER_S`) marks its bank, or the link its request was forwarded
    over, in the teller's :class:`Unanswered`, and clients keep off what it names; the auditor
    waits :data:`AUDIT_TIMEOUT_S` at most. Off, each client waits for every operation in turn
    (every call bounded by the client's ``CALL_TIMEOUT_S``): the steady closed loop that
    ``bank-workload`` and ``scale`` measure."""


async def run_bank_workload(
    teller: Teller,
    banks: Sequence[str],
    options: WorkloadOptions,
    rng: random.Random,
    *,
    progress: Callable[[str], None] = lambda phase: None,
    stop: asyncio.Event | None = None,
) -> dict[int, Customer]:
    """The Jepsen-style bank workload: enrol clients at every bank, open accounts with a
    deposit, then run random multi-source transfers, deposits, withdrawals and consortium
    audit reads until ``options.duration_s`` passes (or ``stop`` is set)."""
    assert options.clients >= 1 and banks
    progress("setup")
    customers = {
        index: Customer(
            index=index, document=make_cpf(rng), name=f"Cliente {index}",
            password=f"senha-{rng.randrange(10**9)}",
        )  # fmt: skip
        for index in range(options.clients)
    }
    await asyncio.gather(*(teller.enrol(c, banks) for c in customers.values()))
    baseline = await teller.baseline(customers[0], banks[0])
    teller.recorder.baseline_cents = baseline or 0
    await asyncio.gather(
        *(
            teller.deposit(c, bank, c.accounts[bank], options.opening_cents)
            for c in customers.values()
            for bank in banks
        )
    )
    every_account = [a for c in customers.values() for a in c.accounts.values()]
    progress("load")
    stop = stop or asyncio.Event()
    end = time.monotonic() + options.duration_s
    keep_going = options.keep_going
    unanswered = teller.unanswered
    silent_s = SILENT_AFTER_S if keep_going else None
    patience_s = PATIENCE_S if keep_going else None

    def answering() -> list[str]:
        """The banks clients may send requests to now: under ``keep_going``, those that did not
        fail to answer lately (all of them, should none answer: then every request is a try)."""
        if not keep_going:
            return list(banks)
        return [b for b in banks if unanswered.answers(b)] or list(banks)

    def reachable(terminal: str, bank: str) -> str:
        """``terminal``, or ``bank`` itself when a request made at ``terminal`` would be
        forwarded to ``bank`` over a link that gave no answer lately."""
        if not keep_going or unanswered.reaches(terminal, bank):
            return terminal
        return bank

    async def one_client(customer: Customer, seed: int) -> None:
        own = random.Random(seed)
        under_way: set[asyncio.Task[Operation]] = set()

        def ended(tasks: set[asyncio.Task[Operation]]) -> None:
            for task in tasks:
                task.result()  # an error of the load itself is raised, not lost
            under_way.difference_update(tasks)

        try:
            for _ in range(OPERATIONS_PER_CLIENT_MAX):
                if len(under_way) >= UNDER_WAY_PER_CLIENT_MAX:
                    done, _ = await asyncio.wait(under_way, return_when=asyncio.FIRST_COMPLETED)
                    ended(done)
                if time.monotonic() >= end or stop.is_set():
                    break
                operation = draw_operation(customer, own)
                if operation is None:
                    continue
                task = asyncio.create_task(operation)
                under_way.add(task)
                # Without keep_going, no patience: each operation is waited for to its end.
                done, _ = await asyncio.wait({task}, timeout=patience_s)
                ended(done)
                await asyncio.sleep(own.randint(0, options.think_ms_max) / 1000)
            if under_way:
                ended((await asyncio.wait(under_way))[0])
        finally:
            for task in under_way:
                task.cancel()

    def draw_operation(
        customer: Customer, own: random.Random
    ) -> Coroutine[Any, Any, Operation] | None:
        """One random operation, drawn from the client's own random numbers before any of it
        runs (so operations under way never draw from them); ``None`` for a transfer drawn into
        one of its own sources. Under ``keep_going`` a bank that failed to answer lately is no
        terminal and no deposit or withdrawal goes to its accounts, and a request goes to the
        bank it would be forwarded to when the drawn terminal cannot reach that bank
        (:class:`Unanswered`); transfers still name any account as destination and a second
        source anywhere: those reach a bank that does not answer through the protocol, which
        decides them (``vote_timeout``, ``unreachable``)."""
        up = answering()
        terminal = own.choice(up)
        roll = own.random()
        if roll < 0.55 and len(banks) > 1:
            count = own.choice((1, 2)) if len(banks) > 2 else 1
            source_banks = own.sample(list(banks), count)
            # The first source's bank decides a transfer: one that answers, when there is one.
            source_banks.sort(key=lambda b: b not in up)
            if source_banks[0] not in up:
                source_banks = own.sample(up, min(count, len(up)))
            sources = [
                Movement(customer.accounts[b], own.randint(1, options.amount_cents_max))
                for b in source_banks
            ]
            choices = [a for a in every_account if a not in customer.accounts.values()]
            destination = own.choice(choices or every_account)
            if any(m.account == destination for m in sources):
                return None
            # Half the clients wait for the outcome in their request, half follow it.
            wait_ms = TRANSFER_WAIT_MS if own.random() < 0.5 else 0
            return teller.transfer(
                customer, reachable(terminal, source_banks[0]), sources, destination,
                wait_ms=wait_ms, silent_after_s=silent_s,
            )  # fmt: skip
        account = customer.accounts[own.choice(up)]
        amount = own.randint(1, options.amount_cents_max)
        terminal = reachable(terminal, account.bank)
        if roll < 0.8:
            return teller.deposit(customer, terminal, account, amount, silent_after_s=silent_s)
        # A withdrawal at another bank than the account's waits for a token visit there.
        cross = keep_going and terminal != account.bank
        return teller.withdraw(
            customer, terminal, account, amount,
            silent_after_s=WITHDRAWAL_SILENT_AFTER_S if cross else silent_s,
        )  # fmt: skip

    async def auditor(seed: int) -> None:
        own = random.Random(seed)
        reader = customers[0]
        for _ in range(OPERATIONS_PER_CLIENT_MAX):
            if time.monotonic() >= end or stop.is_set():
                return
            await teller.audit(
                reader, own.choice(answering()), timeout_s=AUDIT_TIMEOUT_S if keep_going else None
            )
            await asyncio.sleep(AUDIT_INTERVAL_MS / 1000)

    tasks = [one_client(c, rng.randrange(2**32)) for c in customers.values()]
    if options.audits:
        tasks.append(auditor(rng.randrange(2**32)))
    await asyncio.gather(*tasks)
    return customers
