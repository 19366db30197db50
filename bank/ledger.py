"""The bank's durable ledger: one SQLite database, all of the bank's SQL, one writer thread.

Place in the design: the client API (``bank.api``) and the cross-bank transfer code call this
module's async face, :class:`Ledger`; nothing else opens the database. It keeps customers,
sessions, accounts, an append-only journal of entries, holds, transfer records and idempotency
keys, in ``<data_dir>/<bank id>.sqlite3`` (WAL, ``synchronous=FULL``).

Money rules (DESIGN.md). Every movement of money is one journal transaction whose entries sum
to zero; an entry credits (+) or debits (-) one bucket of one account: ``available`` (the
balance) or ``held``. Deposits and withdrawals balance against the bank's own cash account, so
``-cash`` is deposits minus withdrawals ever made. Money leaving for another bank is credited to
the settlement account and money arriving debits it: each bank's journal sums to zero on its
own, and across the consortium the settlement accounts net to zero once every transfer is
complete. A hold moves money from an account's available bucket to its held bucket; committing
moves it from held to the settlement account (or to a local destination), releasing moves it
back. The stored balances are a cache of the journal; :meth:`Ledger.check` recomputes them.

Concurrency. One dedicated writer thread owns the writing connection and drains a bounded
queue: it takes up to ``batch_operations_max`` queued operations, runs them in one
transaction, each isolated (in its own savepoint, or alone in the transaction: a failing one
undoes only itself), commits once (one fsync for the group) and only then answers every
caller. Reads run on a second thread with its own connection; WAL lets them proceed while
the writer commits, and they only ever see committed data.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import errno
import functools
import hashlib
import itertools
import json
import queue
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Literal, TypeVar, cast

try:
    import fcntl
except ImportError:  # not a POSIX system: no lock (see Ledger.open)
    fcntl = None  # type: ignore[assignment]

import attrs
import structlog

from bank.errors import Refusal
from bank.transfers.protocol import TRANSFER_ID_CHARS_MAX
from tokenring import jsonio
from tokenring.signing import RandomPool

__all__ = [
    "AMOUNT_CENTS_MAX",
    "BALANCE_CENTS_MAX",
    "BATCH_OPERATIONS_MAX",
    "CASH_ACCOUNT",
    "OWNERS_CACHED_MAX",
    "QUEUE_OPERATIONS_MAX",
    "SETTLEMENT_ACCOUNT",
    "STATEMENT_LINES_MAX",
    "STATEMENT_POSITION_MAX",
    "Account",
    "AccountKind",
    "Answer",
    "CheckReport",
    "Customer",
    "Hold",
    "HoldOutcome",
    "HoldRequest",
    "IN_LIST_MAX",
    "Idempotency",
    "KeysElsewhere",
    "Ledger",
    "LegsRequest",
    "LedgerClosed",
    "LedgerInUse",
    "LedgerUnusable",
    "Statement",
    "StatementLine",
    "Transfer",
    "TransferStatus",
    "balances_in",
    "apply_holds_in",
    "apply_legs_in",
    "commit_hold_in",
    "credit_in",
    "in_list",
    "key_stored_in",
    "place_hold_in",
    "post_in",
    "release_hold_in",
    "request_fingerprint",
]

log = structlog.get_logger("bank.ledger")

AMOUNT_CENTS_MAX = 1_000_000_000_00
"""The largest amount one deposit, withdrawal, transfer source or hold may carry (1e9 units)."""
BALANCE_CENTS_MAX = 1_000_000_000_000_00
"""The largest balance a deposit, a local transfer or a cross-bank transfer's prepare lets an
account reach; beyond it they are refused (``balance_limit``). The credit of a transfer already
decided is never refused: one voted before a deposit (or another credit) filled the account
still lands, past the limit by at most the credits voted yes and not yet received, each at most
``AMOUNT_CENTS_MAX`` (what a cross-bank transfer moves at most): far from what a 64-bit balance
holds."""
QUEUE_OPERATIONS_MAX = 4096
"""Operations waiting for the writer thread; callers beyond it wait their turn."""
BATCH_OPERATIONS_MAX = 256
"""Operations committed together in one transaction (group commit)."""
READERS_MAX = 1
"""Threads serving reads, each with its own connection."""
SESSIONS_CACHED_MAX = 10_000
"""Live sessions kept in memory (least recently used dropped first); the rest are read."""
OWNERS_CACHED_MAX = 100_000
"""Accounts whose owners are kept in memory (least recently used ones are forgotten)."""
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
"""What the write-ahead log is cut back to once checkpointed (``PRAGMA journal_size_limit``):
it grows past it only while a reader keeps an old snapshot."""
CLOSE_WAIT_S_MAX = 30.0
"""How long :meth:`Ledger.close` waits for the writer to finish what is queued."""
TRANSFER_ID_RANDOM_BYTES = 8
"""Random bytes in a transfer id (after ``<bank>-`` and the time), as hex."""
IDEMPOTENCY_KEY_CHARS_MAX = 255
"""Longest ``Idempotency-Key`` accepted."""
STATEMENT_LINES_MAX = 100
"""The most lines (journal transactions) one page of an account's statement lists."""
STATEMENT_POSITION_MAX = 2**63 - 1
"""The largest position a statement page starts below (positions are SQLite row ids)."""

CASH_ACCOUNT = -1
"""The bank's own cash: debited by deposits, credited by withdrawals (so it is negative)."""
SETTLEMENT_ACCOUNT = -2
"""Clearing with other banks: credited when money leaves, debited when money arrives."""

AccountKind = Literal["individual", "joint", "corporate"]
KeysElsewhere = Callable[[sqlite3.Connection, str, str], bool]
"""``(conn, scope, key)``: whether another table of the ledger's database holds that key."""
HoldOutcome = Literal[
    "ok",
    "insufficient_funds",
    "unknown_account",
    "forbidden",
    "decided",
    "no_hold",
    "committed",
    "released",
    "balance_limit",
]
TransferStatus = Literal["pending", "committed", "aborted"]

T = TypeVar("T")


class LedgerClosed(Exception):
    """The ledger was closed (or its writer stopped) before the operation could run."""


class LedgerInUse(OSError):
    """Another process (or another ledger of this one) has the database open."""


class LedgerUnusable(Exception):
    """The database cannot be used: not a database, damaged, written by a newer version of
    the bank, or in a folder that cannot be written. ``str()`` is one line naming the file."""


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------


@attrs.frozen
class Account:
    """A customer account as the client API shows it."""

    bank: str
    """The bank that keeps it."""
    number: int
    """Its number, unique within the bank (positive)."""
    kind: AccountKind
    """individual (one CPF), joint (two or more CPFs) or corporate (one CNPJ)."""
    owners: tuple[str, ...]
    """The owners' documents, sorted."""
    balance_cents: int
    """Available money."""
    held_cents: int
    """Money held for unfinished transfers."""

    def to_json(self) -> dict[str, Any]:
        return {
            "bank": self.bank,
            "account": self.number,
            "kind": self.kind,
            "owners": list(self.owners),
            "balance_cents": self.balance_cents,
            "held_cents": self.held_cents,
        }


@attrs.frozen
class Customer:
    """A customer of this bank."""

    document: str
    """CPF or CNPJ, digits only."""
    name: str
    """The customer's name."""
    password_hash: str
    """``bank.auth.hash_password``'s output; never the password."""


@attrs.frozen
class Hold:
    """Money held in one account for one transfer."""

    transfer_id: str
    """The transfer that placed it."""
    account: int
    """The account it is held in."""
    amount_cents: int
    """How much."""
    state: Literal["held", "committed", "released"]
    """held until the transfer's decision; then committed or released."""
    destination: int | None
    """Where a committed hold went: a local account, or :data:`SETTLEMENT_ACCOUNT`."""


@attrs.frozen
class Transfer:
    """A transfer record, as ``GET /api/v1/transfers/{id}`` shows it."""

    id: str
    """Unique in the consortium: starts with the id of the bank that took the request."""
    requested_by: str
    """The document of the customer who asked."""
    status: TransferStatus
    """pending, then committed or aborted."""
    reason: str | None
    """Why it was aborted (an error code), else ``None``."""
    request: dict[str, Any]
    """The request's ``sources`` and ``destination``; or, for cash paid at this bank from an
    account at another, its ``withdrawal`` (``bank``, ``account``, ``amount_cents``)."""
    created_at_ms: int
    """When it was asked for (Unix ms)."""

    def to_json(self) -> dict[str, Any]:
        withdrawal = self.request.get("withdrawal")
        return {
            "id": self.id,
            "kind": "transfer" if withdrawal is None else "withdrawal",
            "status": self.status,
            "reason": self.reason,
            # A withdrawal's one source is the account it draws on; its money leaves as cash.
            "sources": self.request.get("sources", []) if withdrawal is None else [withdrawal],
            "destination": self.request.get("destination"),
            "created_at_ms": self.created_at_ms,
        }


@attrs.frozen
class StatementLine:
    """One journal transaction as one account's statement shows it: what it did to that
    account's two amounts."""

    txn: int
    """The journal transaction's number (grows with every movement of money at this bank)."""
    at_ms: int
    """When it was written (Unix ms)."""
    kind: str
    """``deposit``, ``withdrawal``, ``transfer`` (both accounts here), and for cross-bank
    transfers ``hold`` (available to held), ``commit`` (held money paid out, or arriving at a
    destination here; ``withdrawal`` when paid out as cash at another bank), ``release``
    (held money back to available), ``credit`` (money arriving from another bank) and
    ``debit`` (money leaving for another bank without a hold)."""
    transfer_id: str | None
    """The transfer it belongs to (None for cash)."""
    available_cents: int
    """The change of the account's balance (available money)."""
    held_cents: int
    """The change of the money held in it."""

    def to_json(self) -> dict[str, Any]:
        return {
            "txn": self.txn,
            "at_ms": self.at_ms,
            "kind": self.kind,
            "transfer_id": self.transfer_id,
            "available_cents": self.available_cents,
            "held_cents": self.held_cents,
        }


@attrs.frozen
class Statement:
    """A page of an account's statement, newest first, read in one snapshot with the account."""

    account: Account
    """The account, its balance and held money as of the newest line."""
    lines: tuple[StatementLine, ...]
    """At most the page's size, newest first."""
    next_before: int | None
    """Where the next (older) page starts: pass it as ``before``; None on the last page."""

    def to_json(self) -> dict[str, Any]:
        return {
            **self.account.to_json(),
            "lines": [line.to_json() for line in self.lines],
            "next_before": self.next_before,
        }


@attrs.frozen
class Answer:
    """A client write's answer: what the API sends, and what an idempotent retry gets again."""

    status: int
    """The HTTP status."""
    body: dict[str, Any]
    """The JSON body."""
    replayed: bool = False
    """True when this is the stored first answer of an earlier request with the same key."""

    @classmethod
    def refused(cls, code: str, message: str) -> Answer:
        refusal = Refusal(code, message)
        return cls(refusal.status, refusal.body())


@attrs.frozen
class Idempotency:
    """The ``Idempotency-Key`` of one client write."""

    scope: str
    """Whose key it is: the caller's document (keys of different customers never collide)."""
    key: str
    """The header's value."""
    fingerprint: str
    """:func:`request_fingerprint` of the request, to catch a key reused for another request."""


@attrs.frozen
class CheckReport:
    """What :meth:`Ledger.check` found when it recomputed everything from the journal."""

    problems: tuple[str, ...]
    """One line per disagreement; empty when the ledger is consistent."""
    journal_sum_cents: int
    """The sum of every entry ever written; always zero in a sound ledger."""
    entries: int
    """How many entries the journal holds."""

    @property
    def ok(self) -> bool:
        return not self.problems


def request_fingerprint(method: str, path: str, body: Any) -> str:
    """A stable digest of a request, to tell a retry from another request with the same key."""
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------

_MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        f"""
        CREATE TABLE customers (
            document TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            created_at_ms INTEGER NOT NULL
        ) WITHOUT ROWID;

        CREATE TABLE sessions (
            token_hash TEXT PRIMARY KEY,
            document TEXT NOT NULL REFERENCES customers(document),
            expires_at_ms INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX sessions_by_expiry ON sessions(expires_at_ms);

        -- System accounts (cash, settlement) have negative numbers and may go negative;
        -- customer accounts never may.
        CREATE TABLE accounts (
            number INTEGER PRIMARY KEY,
            kind TEXT NOT NULL
                CHECK (kind IN ('individual', 'joint', 'corporate', 'cash', 'settlement')),
            balance_cents INTEGER NOT NULL DEFAULT 0,
            held_cents INTEGER NOT NULL DEFAULT 0 CHECK (held_cents >= 0),
            created_at_ms INTEGER NOT NULL,
            CHECK ((number < 0) = (kind IN ('cash', 'settlement'))),
            CHECK (number < 0 OR balance_cents >= 0)
        );
        INSERT INTO accounts (number, kind, created_at_ms) VALUES ({CASH_ACCOUNT}, 'cash', 0);
        INSERT INTO accounts (number, kind, created_at_ms)
            VALUES ({SETTLEMENT_ACCOUNT}, 'settlement', 0);

        CREATE TABLE account_owners (
            account INTEGER NOT NULL REFERENCES accounts(number),
            document TEXT NOT NULL REFERENCES customers(document),
            PRIMARY KEY (account, document)
        ) WITHOUT ROWID;
        CREATE INDEX account_owners_by_document ON account_owners(document, account);

        -- The journal: one row per movement of money, entries that sum to zero per row.
        CREATE TABLE journal (
            txn INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            transfer_id TEXT,
            at_ms INTEGER NOT NULL
        );
        CREATE TABLE entries (
            id INTEGER PRIMARY KEY,
            txn INTEGER NOT NULL REFERENCES journal(txn),
            account INTEGER NOT NULL REFERENCES accounts(number),
            bucket TEXT NOT NULL CHECK (bucket IN ('available', 'held')),
            amount_cents INTEGER NOT NULL CHECK (amount_cents != 0)
        );
        CREATE INDEX entries_by_account ON entries(account);
        CREATE TRIGGER journal_append_only_update BEFORE UPDATE ON journal
            BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
        CREATE TRIGGER journal_append_only_delete BEFORE DELETE ON journal
            BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
        CREATE TRIGGER entries_append_only_update BEFORE UPDATE ON entries
            BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
        CREATE TRIGGER entries_append_only_delete BEFORE DELETE ON entries
            BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;

        CREATE TABLE holds (
            transfer_id TEXT NOT NULL,
            account INTEGER NOT NULL REFERENCES accounts(number),
            amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
            state TEXT NOT NULL CHECK (state IN ('held', 'committed', 'released')),
            destination INTEGER REFERENCES accounts(number),
            placed_at_ms INTEGER NOT NULL,
            decided_at_ms INTEGER,
            PRIMARY KEY (transfer_id, account)
        ) WITHOUT ROWID;

        -- The first outcome of every hold operation: a repeat answers it again.
        CREATE TABLE hold_operations (
            operation TEXT NOT NULL CHECK (operation IN ('place', 'commit', 'release', 'credit')),
            transfer_id TEXT NOT NULL,
            account INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            at_ms INTEGER NOT NULL,
            PRIMARY KEY (operation, transfer_id, account)
        ) WITHOUT ROWID;

        CREATE TABLE transfers (
            id TEXT PRIMARY KEY,
            requested_by TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'committed', 'aborted')),
            reason TEXT,
            request TEXT NOT NULL,
            created_at_ms INTEGER NOT NULL,
            decided_at_ms INTEGER
        ) WITHOUT ROWID;

        CREATE TABLE idempotency (
            scope TEXT NOT NULL,
            key TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            status INTEGER NOT NULL,
            body TEXT NOT NULL,
            at_ms INTEGER NOT NULL,
            PRIMARY KEY (scope, key)
        ) WITHOUT ROWID;
        """,
    ),
    (
        2,
        # A sign-up's key was stored with a SHA-256 of its whole body, password included: a
        # fast, unsalted hash of the password beside its scrypt one. Sign-up fingerprints
        # leave the password out now (bank.api); the old ones are dropped (a retry of a
        # sign-up made before is then answered 422 idempotency_key_reused; the customer is
        # there all the same).
        """
        UPDATE idempotency SET fingerprint = 'dropped: held a hash of the password'
            WHERE scope LIKE 'signup:%';
        """,
    ),
)
SCHEMA_VERSION = _MIGRATIONS[-1][0]


STATEMENTS_CACHED_MAX = 512
"""Prepared statements each connection keeps (sqlite3's default is 128). The writer's texts
number a few hundred once batches of every size have come: an ``IN`` list has one text per
power of two (:func:`in_list`), a run of inserted rows up to one per group size
(:func:`insert_rows`); beyond the cache, a text is prepared again each time it comes back."""


_NO_LOCKS_ERRNOS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS})
"""What flock answers on a file system that has no locks."""


def _lock(file: Path) -> IO[bytes] | None:
    """The exclusive lock of database ``file`` (see :meth:`Ledger.open`), held while the
    returned file stays open; :class:`LedgerInUse` when another holds it."""
    if fcntl is None:
        return None
    lock = open(file.with_name(file.name + ".lock"), "ab")  # noqa: SIM115 (held until close)
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise LedgerInUse(f"{file}: another process has this bank's database open") from None
    except OSError as error:
        lock.close()
        if error.errno not in _NO_LOCKS_ERRNOS:
            raise
        # A file system without locks (some network ones): the bank runs, unguarded.
        log.warning("ledger_unlocked", path=str(file), error=str(error))
        return None
    except BaseException:
        lock.close()
        raise
    return lock


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a group commit is one
    # transaction and nothing commits behind our back.
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, cached_statements=STATEMENTS_CACHED_MAX
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    # Statement journals (a savepoint's undo log, which the writer opens per job) stay in
    # memory: spilled, each one is a temporary file made and removed, several a second.
    conn.execute("PRAGMA temp_store=MEMORY")
    # A WAL that grew while a long read held its snapshot (a backup) is cut back to this
    # at the next checkpoint that empties it, instead of keeping its largest size for good.
    conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
    return conn


def _migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date; each migration runs once, in its own transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = row[0] or 0
        for version, script in _MIGRATIONS:
            if version <= current:
                continue
            for statement in _split_sql(script):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            current = version
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if current != SCHEMA_VERSION:
        raise LedgerUnusable(
            f"its schema is at version {current}, this bank's code knows up to {SCHEMA_VERSION}:"
            " run the version of the bank that wrote it"
        )
    return current


def _split_sql(script: str) -> Iterable[str]:
    # executescript() would COMMIT on its own; split into statements so a migration stays
    # one transaction. Triggers contain ';' inside BEGIN ... END, so join until complete.
    buffer = ""
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        buffer += line + "\n"
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    assert not buffer.strip(), f"incomplete SQL statement: {buffer!r}"


# ---------------------------------------------------------------------------------------------
# The writer thread
# ---------------------------------------------------------------------------------------------


@attrs.frozen
class _Job:
    """One queued write: a function of the connection, and the future its caller awaits."""

    run: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


_STOP = object()


class _Writer:
    """Owns the writing connection; runs queued jobs in group-committed batches."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        loop: asyncio.AbstractEventLoop,
        *,
        name: str,
        batch_operations_max: int,
    ) -> None:
        assert batch_operations_max > 0
        self.conn = conn
        self.loop = loop
        self.batch_operations_max = batch_operations_max
        # Lists of jobs (what one pass of the event loop wrote) and, last, the stop marker.
        # Unbounded in itself (a SimpleQueue's put is one C call, with no Python-level
        # condition to notify): ``Ledger``'s semaphore of ``queue_operations_max`` slots bounds
        # the jobs in it.
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Jobs taken from the queue and not yet run (a list beyond what one batch takes).
        self._carry: collections.deque[_Job] = collections.deque()
        # Whether the thread has ended and emptied the queue for the last time; taken with
        # the lock, so that nothing is queued after that and left unanswered.
        self._hand_over = threading.Lock()
        self._drained = False
        self.batches = 0
        self.operations = 0
        self.failures = 0
        self._stopping = False
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            while not self._stopping or self._carry:
                if not self._carry and not self._stopping:
                    first = self.queue.get()
                    if first is _STOP:
                        self._stopping = True
                    else:
                        self._carry.extend(first)
                jobs: list[_Job] = []
                self._more(jobs)
                if jobs:
                    try:
                        self._run_batch(jobs)
                    except Exception as error:  # noqa: BLE001 - the writer must outlive it
                        # Whatever escaped the batch's own handling (it answers every job
                        # itself): its callers hear it, and the writer goes on, or every
                        # later write would wait for an answer that never comes.
                        self._settle([(job.future, None, error) for job in jobs])
        finally:
            self.conn.close()
            # Anything queued after the stop (a caller racing close) learns it is closed, and
            # so does anything handed over later (see ``hand_over``).
            late = list(self._carry)
            with self._hand_over:
                self._drained = True
                while True:
                    try:
                        item = self.queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not _STOP:
                        late += item
            if late:
                self._settle([(job.future, None, LedgerClosed("the ledger is closed")) for job in late])

    def hand_over(self, jobs: list[_Job]) -> None:
        """Queue ``jobs`` (from the event loop's thread); after the writer has ended, they are
        answered at once that the ledger is closed."""
        with self._hand_over:
            if not self._drained:
                self.queue.put_nowait(jobs)
                return
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(LedgerClosed("the ledger is closed"))

    def _more(self, jobs: list[_Job]) -> bool:
        """Append to ``jobs`` what was queued meanwhile (within the batch bound); True when
        something was added. Taking the stop marker ends the writer once what was queued
        before it has run."""
        added = False
        while len(jobs) < self.batch_operations_max:
            if self._carry:
                jobs.append(self._carry.popleft())
                added = True
                continue
            if self._stopping:
                break
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                self._stopping = True
            else:
                self._carry.extend(item)
        return added

    def _run_batch(self, jobs: list[_Job]) -> None:
        results: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            # Whether the transaction holds a job's changes. Until it does, a job runs bare:
            # should it fail, rolling the transaction back undoes that job and nothing else,
            # so it needs no savepoint (the savepoint's undo copy of every page it writes,
            # and the SAVEPOINT and RELEASE, are saved on most batches, which hold one job).
            kept = False
            done = 0
            # Jobs queued while the batch ran join it before its COMMIT: a larger group for
            # the same fsync, and no job waits longer for it.
            while done < len(jobs) or self._more(jobs):
                job = jobs[done]
                done += 1
                if not self.conn.in_transaction:  # the job before ran bare and failed
                    self.conn.execute("BEGIN IMMEDIATE")
                bare = not kept
                if not bare:
                    # In its own savepoint: its failure undoes only this job.
                    self.conn.execute("SAVEPOINT job")
                try:
                    value = job.run(self.conn)
                except Exception as error:  # noqa: BLE001 - delivered to the caller
                    if not self.conn.in_transaction:
                        # SQLite rolled the whole transaction back (a full disk does): the
                        # batch failed whole, and every job in it hears this error.
                        raise
                    if bare:
                        self.conn.execute("ROLLBACK")
                    else:
                        self.conn.execute("ROLLBACK TO job")
                        self.conn.execute("RELEASE job")
                    results.append((job, None, error))
                else:
                    if not bare:
                        self.conn.execute("RELEASE job")
                    kept = True
                    results.append((job, value, None))
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")
        except Exception as error:  # noqa: BLE001 - the whole batch failed to commit
            self.failures += 1
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            log.error("ledger_batch_failed", error=repr(error), jobs=len(jobs))
            results = [(job, None, error) for job in jobs]
        self.batches += 1
        self.operations += len(jobs)
        # Answers leave only now, after the COMMIT made the whole batch durable: all of them
        # in one callback of the event loop (one wake-up of the loop per batch, not per job).
        self._settle([(job.future, value, job_error) for job, value, job_error in results])

    def _settle(self, answers: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
        def settle() -> None:
            for future, value, error in answers:
                if future.done():  # the caller was cancelled; the write stands regardless
                    continue
                if error is None:
                    future.set_result(value)
                else:
                    future.set_exception(error)

        try:
            self.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


# ---------------------------------------------------------------------------------------------
# The ledger
# ---------------------------------------------------------------------------------------------


class Ledger:
    """One bank's ledger; open it with ``await Ledger.open(path)``, end with ``await close()``.

    Every method is a coroutine that never blocks the event loop. Writes are queued to the
    writer thread and answered after their group's COMMIT; reads that may scan run on the
    reader thread. Point reads (one row by its key: an account, a transfer, a session) run
    on the event loop's own thread, on a connection of their own: in WAL mode they never wait
    for the writer, and they take a few microseconds where a hop to a thread and back costs
    ten times that (and wakes a thread that competes for the GIL).
    ``clock`` gives the time in seconds (tests move it forward to expire sessions).
    """

    def __init__(
        self,
        path: Path,
        bank_id: str,
        writer: _Writer,
        reader_conn: sqlite3.Connection,
        reader: concurrent.futures.ThreadPoolExecutor,
        point_conn: sqlite3.Connection,
        *,
        queue_operations_max: int,
        clock: Callable[[], float],
        lock: IO[bytes] | None = None,
    ) -> None:
        self.path = path
        self.bank_id = bank_id
        self.clock = clock
        self._lock = lock
        self._writer = writer
        self._reader_conn = reader_conn
        self._reader = reader
        self._point_conn = point_conn
        assert queue_operations_max > 0
        self._slots = asyncio.Semaphore(queue_operations_max)
        self._outbox: list[_Job] = []
        self._closed = False
        # Live sessions by token hash: every request looks its session up, and this process
        # is the only one that creates or ends them, so a cache here stays true.
        self._sessions: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._session_deletions = 0
        # Owners by account number. An account's owners are set when it is opened and never
        # change, and accounts are never removed, so what was read once stays true.
        self._owners: OrderedDict[int, frozenset[str]] = OrderedDict()
        self.keys_elsewhere: KeysElsewhere | None = None
        """Whether a key is taken outside this ledger's own table, asked in the writer thread
        before a keyed write stores a new key there: the cross-bank transfers' keys, kept by
        :mod:`bank.transfers.store` in the same database (it sets this). A key taken there is
        refused here as reused, as a key of this table is for another request."""

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        bank_id: str | None = None,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        queue_operations_max: int = QUEUE_OPERATIONS_MAX,
        batch_operations_max: int = BATCH_OPERATIONS_MAX,
        clock: Callable[[], float] = time.time,
    ) -> Ledger:
        """Open (creating and migrating when needed) the database at ``path``.

        ``bank_id`` defaults to the file's stem (``var/alfa.sqlite3`` is bank ``alfa``).

        One ledger at a time has a database: it holds an exclusive lock on ``<path>.lock``
        until :meth:`close` (or the process's end, a crash included), and another open of the
        same database, in any process, raises :class:`LedgerInUse`. Two processes of one bank
        would each believe its memory of the transfers it runs. (No lock where the system has
        no ``fcntl``.)
        """
        file = Path(path)
        loop = asyncio.get_running_loop()
        created = not file.exists()
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            lock = _lock(file)
        except LedgerInUse:
            raise
        except OSError as error:  # a read-only folder, a file where a folder should be
            raise LedgerUnusable(f"database {file}: {error.strerror or error}") from error

        def prepare() -> tuple[sqlite3.Connection, sqlite3.Connection, sqlite3.Connection]:
            writer_conn = _connect(file, synchronous)
            try:
                _migrate(writer_conn)
            except BaseException:
                writer_conn.close()
                raise
            point_conn = _connect(file, synchronous)
            # Never wait on the event loop's thread: a busy database sends the read to the
            # reader thread instead (see Ledger.point).
            point_conn.execute("PRAGMA busy_timeout=0")
            return writer_conn, _connect(file, synchronous), point_conn

        try:
            writer_conn, reader_conn, point_conn = await asyncio.to_thread(prepare)
        except BaseException as error:
            if lock is not None:
                lock.close()
            if isinstance(error, (sqlite3.Error, LedgerUnusable)):
                raise LedgerUnusable(f"database {file}: {error}") from error
            raise
        bank = bank_id or file.name.split(".")[0]
        writer = _Writer(
            writer_conn,
            loop,
            name=f"ledger-writer-{bank}",
            batch_operations_max=batch_operations_max,
        )
        reader = concurrent.futures.ThreadPoolExecutor(
            max_workers=READERS_MAX, thread_name_prefix=f"ledger-reader-{bank}"
        )
        if created:
            # Said loudly: a data folder mistyped, or a volume not mounted, makes a bank start
            # empty where its customers' accounts should be.
            log.warning("ledger_created", path=str(file), bank=bank, note="a new, empty database")
        log.info("ledger_opened", path=str(file), bank=bank, schema_version=SCHEMA_VERSION)
        return cls(
            file,
            bank,
            writer,
            reader_conn,
            reader,
            point_conn,
            queue_operations_max=queue_operations_max,
            clock=clock,
            lock=lock,
        )

    async def close(self) -> None:
        """Finish every queued write, then close both connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._post_outbox()
        self._writer.queue.put(_STOP)
        await asyncio.to_thread(self._writer.thread.join, CLOSE_WAIT_S_MAX)
        assert not self._writer.thread.is_alive(), "the ledger writer did not stop in time"
        self._reader.shutdown(wait=True)
        self._reader_conn.close()
        self._point_conn.close()
        if self._lock is not None:
            self._lock.close()  # the database is free for the next ledger

    @property
    def writing(self) -> bool:
        """Whether the writer thread runs: every write goes through it (``/healthz``)."""
        return self._writer.thread.is_alive()

    @property
    def batches(self) -> int:
        """Transactions committed so far by the writer (for benchmarks and metrics)."""
        return self._writer.batches

    @property
    def operations(self) -> int:
        """Write operations run so far by the writer."""
        return self._writer.operations

    @property
    def batch_failures(self) -> int:
        """Writer transactions that failed whole (nothing of them kept)."""
        return self._writer.failures

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def write(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``run(conn)`` in the writer thread, inside a group-commit transaction (isolated
        from the others: an exception undoes only its changes and reaches the caller);
        answered after the COMMIT. Every write of this class goes through it, and so do
        modules that keep their own tables in this database (``bank.transfers.store``,
        calling the ``*_in`` functions of this module)."""
        if self._closed:
            raise LedgerClosed("the ledger is closed")
        async with self._slots:
            # The writer's loop, where it answers (asyncio.get_running_loop() costs a
            # getpid() system call per call on Python 3.11).
            loop = self._writer.loop
            future: asyncio.Future[T] = loop.create_future()
            # Writes made during one pass of the event loop reach the writer together (one
            # put, one wake-up of its thread, and the same commit); the semaphore bounds them.
            self._outbox.append(_Job(run, future))
            if len(self._outbox) == 1:
                loop.call_soon(self._post_outbox)
            return await future

    def _post_outbox(self) -> None:
        if self._outbox:
            jobs, self._outbox = self._outbox, []
            self._writer.hand_over(jobs)

    async def read(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``run(conn)`` on the reader thread (a read that may scan many rows)."""
        if self._closed:
            raise LedgerClosed("the ledger is closed")
        conn = self._reader_conn
        return await self._writer.loop.run_in_executor(self._reader, run, conn)

    async def point(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``run(conn)``, a read of a few rows by key, on the event loop's thread (see
        the class's note); on the reader thread when the database is busy (rare in WAL)."""
        if self._closed:
            raise LedgerClosed("the ledger is closed")
        conn = self._point_conn
        try:
            conn.execute("BEGIN")  # one snapshot for every statement of the read
            try:
                return run(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            return await self.read(run)

    # -- customers and sessions -----------------------------------------------------------

    async def create_customer(
        self,
        document: str,
        name: str,
        password_hash: str,
        *,
        idempotency: Idempotency | None = None,
    ) -> Answer:
        """201 ``{"document", "name"}``, or 409 ``customer_exists``."""
        now = self.now_ms()

        def run(conn: sqlite3.Connection) -> Answer:
            def apply() -> Answer:
                if _customer(conn, document) is not None:
                    return Answer.refused("customer_exists", "a customer with this document exists")
                conn.execute(
                    "INSERT INTO customers (document, name, password_hash, created_at_ms)"
                    " VALUES (?, ?, ?, ?)",
                    (document, name, password_hash, now),
                )
                return Answer(201, {"document": document, "name": name})

            return _idempotent(conn, idempotency, now, apply, self.keys_elsewhere)

        return await self.write(run)

    async def customer(self, document: str) -> Customer | None:
        return await self.read(lambda conn: _customer(conn, document))

    async def create_session(self, token_hash: str, document: str, expires_at_ms: int) -> None:
        """Store a session (by its token's hash); expired sessions are pruned on the way."""
        now = self.now_ms()

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM sessions WHERE expires_at_ms <= ?", (now,))
            conn.execute(
                "INSERT INTO sessions (token_hash, document, expires_at_ms) VALUES (?, ?, ?)",
                (token_hash, document, expires_at_ms),
            )

        await self.write(run)
        self._cache_session(token_hash, (document, expires_at_ms))

    async def session_document(self, token_hash: str) -> str | None:
        """The document of the live session with this token hash, else ``None``."""
        now = self.now_ms()
        cached = self._sessions.get(token_hash)
        if cached is not None:
            document, expires_at_ms = cached
            if expires_at_ms > now:
                self._sessions.move_to_end(token_hash)
                return document
            del self._sessions[token_hash]
            return None
        deletions = self._session_deletions

        def run(conn: sqlite3.Connection) -> tuple[str, int] | None:
            row = conn.execute(
                "SELECT document, expires_at_ms FROM sessions"
                " WHERE token_hash = ? AND expires_at_ms > ?",
                (token_hash, now),
            ).fetchone()
            return None if row is None else (str(row[0]), int(row[1]))

        found = await self.point(run)
        if found is None:
            return None
        # A logout that ran while we read must not be undone by caching what we read.
        if deletions == self._session_deletions:
            self._cache_session(token_hash, found)
        return found[0]

    def _cache_session(self, token_hash: str, session: tuple[str, int]) -> None:
        self._sessions[token_hash] = session
        self._sessions.move_to_end(token_hash)
        while len(self._sessions) > SESSIONS_CACHED_MAX:
            self._sessions.popitem(last=False)

    async def delete_session(self, token_hash: str) -> bool:
        """End a session; whether it existed."""
        self._sessions.pop(token_hash, None)
        self._session_deletions += 1

        def run(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))
            return cursor.rowcount > 0

        try:
            return await self.write(run)
        finally:
            # Until the DELETE commits, a request with this token misses the cache, reads the
            # row still there and caches it (its count of deletions was taken after ours): it
            # is dropped again now, and a read still under way will not cache it.
            self._sessions.pop(token_hash, None)
            self._session_deletions += 1

    # -- accounts -------------------------------------------------------------------------

    async def create_account(
        self,
        kind: AccountKind,
        owners: Sequence[str],
        *,
        idempotency: Idempotency | None = None,
    ) -> Answer:
        """201 account, or 422 ``unknown_customer`` when an owner is not a customer here.

        The kind's rules (how many owners, CPF or CNPJ) and the caller's ownership are the
        API's to check before calling.
        """
        assert kind in ("individual", "joint", "corporate")
        assert owners and len(set(owners)) == len(owners), "owners are distinct, at least one"
        now = self.now_ms()

        def run(conn: sqlite3.Connection) -> Answer:
            def apply() -> Answer:
                for document in owners:
                    if _customer(conn, document) is None:
                        return Answer.refused(
                            "unknown_customer", f"owner {document} is not a customer of this bank"
                        )
                # Numbers count from 1 (the system accounts are negative); one writer, no race.
                number = conn.execute(
                    "SELECT MAX(MAX(number), 0) + 1 FROM accounts"
                ).fetchone()[0]
                conn.execute(
                    "INSERT INTO accounts (number, kind, created_at_ms) VALUES (?, ?, ?)",
                    (number, kind, now),
                )
                assert number > 0
                conn.executemany(
                    "INSERT INTO account_owners (account, document) VALUES (?, ?)",
                    [(number, document) for document in owners],
                )
                account = _account(conn, self.bank_id, number)
                assert account is not None
                return Answer(201, account.to_json())

            return _idempotent(conn, idempotency, now, apply, self.keys_elsewhere)

        return await self.write(run)

    async def account(self, number: int) -> Account | None:
        """A customer account by number (system accounts are not customer accounts)."""
        return await self.point(lambda conn: _account(conn, self.bank_id, number))

    async def owners(self, number: int) -> frozenset[str] | None:
        """The documents owning customer account ``number``; None when there is no such
        account. From memory after the first read: owners never change."""
        cached = self._owners.get(number)
        if cached is not None:
            self._owners.move_to_end(number)
            return cached
        account = await self.account(number)
        if account is None:
            return None
        owners = frozenset(account.owners)
        self._owners[number] = owners
        while len(self._owners) > OWNERS_CACHED_MAX:
            self._owners.popitem(last=False)
        return owners

    async def accounts_of(self, document: str) -> list[Account]:
        """Every account ``document`` owns here, by number."""

        def run(conn: sqlite3.Connection) -> list[Account]:
            rows = conn.execute(
                "SELECT account FROM account_owners WHERE document = ? ORDER BY account",
                (document,),
            ).fetchall()
            accounts = [_account(conn, self.bank_id, row[0]) for row in rows]
            return [account for account in accounts if account is not None]

        return await self.read(run)

    async def statement(
        self, number: int, *, before: int | None = None, limit: int = STATEMENT_LINES_MAX
    ) -> Statement | None:
        """Customer account ``number``'s statement: its journal transactions, newest first, at
        most ``limit``, older than the position ``before`` (a page's ``next_before``; None:
        from the newest). None when there is no such account.

        The page is read by the entries' own order (entries are appended in journal order),
        so a page costs the same on an account with millions of entries as on a new one."""
        assert 0 < limit <= STATEMENT_LINES_MAX
        assert before is None or 0 < before <= STATEMENT_POSITION_MAX

        def run(conn: sqlite3.Connection) -> Statement | None:
            conn.execute("BEGIN")  # the account and its lines in one snapshot
            try:
                return page(conn)
            finally:
                conn.execute("COMMIT")

        def page(conn: sqlite3.Connection) -> Statement | None:
            account = _account(conn, self.bank_id, number)
            if account is None:
                return None
            # An account has at most two entries per transaction (its two buckets): enough
            # rows for limit transactions, and one row more to tell whether older ones exist.
            rows = conn.execute(
                "SELECT e.id, e.txn, j.at_ms, j.kind, j.transfer_id, e.bucket, e.amount_cents"
                " FROM entries AS e JOIN journal AS j ON j.txn = e.txn"
                " WHERE e.account = ? AND e.id < ? ORDER BY e.id DESC LIMIT ?",
                (number, STATEMENT_POSITION_MAX if before is None else before, 2 * limit + 1),
            ).fetchall()
            lines: list[StatementLine] = []
            first_ids: list[int] = []  # each line's lowest entry id: where older lines start
            for entry_id, txn, at_ms, kind, transfer_id, bucket, amount in rows:
                if lines and lines[-1].txn == txn:
                    line = lines[-1]
                    lines[-1] = attrs.evolve(
                        line,
                        available_cents=line.available_cents + (amount if bucket == "available" else 0),
                        held_cents=line.held_cents + (amount if bucket == "held" else 0),
                    )
                    first_ids[-1] = entry_id
                    continue
                if len(lines) == limit:
                    return Statement(account, tuple(lines), first_ids[-1])
                lines.append(StatementLine(
                    txn, at_ms, kind, transfer_id,
                    amount if bucket == "available" else 0, amount if bucket == "held" else 0,
                ))  # fmt: skip
                first_ids.append(entry_id)
            # Fewer rows than asked: every one there is was read, and this is the last page.
            assert len(rows) <= 2 * limit, "an account has at most two entries per transaction"
            return Statement(account, tuple(lines), None)

        return await self.read(run)

    async def all_accounts(self) -> list[Account]:
        """Every customer account of the bank (for checks, tests and benchmarks)."""

        def run(conn: sqlite3.Connection) -> list[Account]:
            rows = conn.execute("SELECT number FROM accounts WHERE number > 0 ORDER BY number")
            accounts = [_account(conn, self.bank_id, row[0]) for row in rows.fetchall()]
            return [account for account in accounts if account is not None]

        return await self.read(run)

    # -- local money movements ------------------------------------------------------------

    async def deposit(
        self,
        account: int,
        amount_cents: int,
        *,
        document: str,
        idempotency: Idempotency | None = None,
    ) -> Answer:
        """Cash in: 201 account; 404 ``unknown_account``, 403 ``forbidden``, 409 ``balance_limit``."""
        _assert_amount(amount_cents)

        def refusal(found: Account) -> Answer | None:
            if found.balance_cents + amount_cents > BALANCE_CENTS_MAX:
                return Answer.refused(
                    "balance_limit", f"the balance would exceed {BALANCE_CENTS_MAX} cents"
                )
            return None

        return await self._cash(
            "deposit", account, amount_cents, document=document, idempotency=idempotency,
            refusal=refusal,
        )  # fmt: skip

    async def withdraw(
        self,
        account: int,
        amount_cents: int,
        *,
        document: str,
        idempotency: Idempotency | None = None,
    ) -> Answer:
        """Cash out: 201 account; 404, 403, or 409 ``insufficient_funds``."""
        _assert_amount(amount_cents)

        def refusal(found: Account) -> Answer | None:
            if found.balance_cents < amount_cents:
                return Answer.refused(
                    "insufficient_funds",
                    f"account {account} has {found.balance_cents} cents available",
                )
            return None

        return await self._cash(
            "withdrawal", account, -amount_cents, document=document, idempotency=idempotency,
            refusal=refusal,
        )  # fmt: skip

    async def _cash(
        self,
        kind: str,
        account: int,
        signed_cents: int,
        *,
        document: str,
        idempotency: Idempotency | None,
        refusal: Callable[[Account], Answer | None],
    ) -> Answer:
        """Move ``signed_cents`` between ``account`` and the bank's cash (positive: cash in),
        once per idempotency key, unless the owner check or ``refusal`` answers otherwise."""
        now = self.now_ms()

        def run(conn: sqlite3.Connection) -> Answer:
            def apply() -> Answer:
                found = _owned_account(conn, self.bank_id, account, document)
                if isinstance(found, Answer):
                    return found
                refused = refusal(found)
                if refused is not None:
                    return refused
                post_in(
                    conn,
                    kind,
                    None,
                    now,
                    [(account, "available", signed_cents), (CASH_ACCOUNT, "available", -signed_cents)],
                )
                return Answer(201, _must_account(conn, self.bank_id, account).to_json())

            return _idempotent(conn, idempotency, now, apply, self.keys_elsewhere)

        return await self.write(run)

    async def transfer_local(
        self,
        sources: Sequence[tuple[int, int]],
        destination: int,
        *,
        document: str,
        request: dict[str, Any],
        idempotency: Idempotency | None = None,
    ) -> Answer:
        """A transfer whose sources ``(account, amount_cents)`` and destination are all here.

        Committed at once: 202 ``{"id", "status": "committed"}``, or 202 with status
        ``aborted`` and a ``reason`` (``insufficient_funds``, ``balance_limit``); either way it
        is recorded for ``GET /api/v1/transfers/{id}``. A source the caller does not own (403)
        or an unknown account (404) is refused and nothing is recorded.
        """
        assert sources, "a transfer has at least one source"
        assert len({account for account, _ in sources}) == len(sources), "distinct sources"
        assert destination not in {account for account, _ in sources}
        for _, amount in sources:
            _assert_amount(amount)
        now = self.now_ms()
        transfer_id = new_transfer_id(self.bank_id)

        def run(conn: sqlite3.Connection) -> Answer:
            def apply() -> Answer:
                found: list[tuple[Account, int]] = []
                for account, amount in sources:
                    owned = _owned_account(conn, self.bank_id, account, document)
                    if isinstance(owned, Answer):
                        return owned
                    found.append((owned, amount))
                target = _account(conn, self.bank_id, destination)
                if target is None:
                    return Answer.refused("unknown_account", f"no account {destination} at bank {self.bank_id}")
                total = sum(amount for _, amount in sources)
                reason: str | None = None
                for owned, amount in found:
                    if owned.balance_cents < amount:
                        reason = "insufficient_funds"
                if reason is None and target.balance_cents + total > BALANCE_CENTS_MAX:
                    reason = "balance_limit"
                if reason is None:
                    entries = [(account, "available", -amount) for account, amount in sources]
                    entries.append((destination, "available", total))
                    post_in(conn, "transfer", transfer_id, now, entries)
                status = "committed" if reason is None else "aborted"
                conn.execute(
                    "INSERT INTO transfers (id, requested_by, status, reason, request,"
                    " created_at_ms, decided_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (transfer_id, document, status, reason, jsonio.dumps_text(request), now, now),
                )
                body: dict[str, Any] = {"id": transfer_id, "status": status}
                if reason is not None:
                    body["reason"] = reason
                return Answer(202, body)

            return _idempotent(conn, idempotency, now, apply, self.keys_elsewhere)

        return await self.write(run)

    async def transfer(self, transfer_id: str) -> Transfer | None:
        """The record of a transfer taken by this bank."""

        def run(conn: sqlite3.Connection) -> Transfer | None:
            row = conn.execute(
                "SELECT id, requested_by, status, reason, request, created_at_ms"
                " FROM transfers WHERE id = ?",
                (transfer_id,),
            ).fetchone()
            if row is None:
                return None
            return Transfer(row[0], row[1], row[2], row[3], jsonio.loads(row[4]), row[5])

        return await self.point(run)

    async def first_answer(self, idempotency: Idempotency, answer: Answer, *, client_key: bool = False) -> Answer:
        """``answer`` stored under ``idempotency`` unless an answer is stored there already;
        the stored one (``replayed``) either way. For an answer made after its effect was
        written elsewhere (a cross-bank withdrawal's, once its transfer committed), so that
        a retry gets the first answer, not a new reading; and for a client's key that a
        write elsewhere takes (``client_key``: refused as reused, as a local write would
        be, when a cross-bank transfer holds it: :attr:`keys_elsewhere`)."""
        now = self.now_ms()

        def run(conn: sqlite3.Connection) -> Answer:
            return _idempotent(conn, idempotency, now, lambda: answer, self.keys_elsewhere if client_key else None)

        return await self.write(run)

    async def forget_answer(self, idempotency: Idempotency, body: dict[str, Any]) -> bool:
        """Give a key back: delete the answer stored under ``idempotency`` if it is ``body``
        (the same request's, and not another answer since). For a key taken for a write that
        is known never to happen, so that a retry makes it. Whether it was deleted."""

        def run(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT fingerprint, body FROM idempotency WHERE scope = ? AND key = ?",
                (idempotency.scope, idempotency.key),
            ).fetchone()
            if row is None or row[0] != idempotency.fingerprint or jsonio.loads(row[1]) != body:
                return False
            conn.execute("DELETE FROM idempotency WHERE scope = ? AND key = ?", (idempotency.scope, idempotency.key))
            return True

        return bool(await self.write(run))

    # -- holds: the participant's side of a cross-bank transfer ---------------------------

    async def place_hold(
        self, transfer_id: str, account: int, amount_cents: int, owner_document: str
    ) -> HoldOutcome:
        """Move ``amount_cents`` of ``account`` from available to held for ``transfer_id``.

        Outcomes: ``ok``; ``unknown_account``; ``forbidden`` (``owner_document`` does not own
        it); ``insufficient_funds``; ``decided`` (this transfer's hold here was already
        committed or released, so a late prepare must not hold money again). Applied at most
        once per ``(transfer_id, account)``: a repeat answers the first outcome.
        """
        now = self.now_ms()
        return await self.write(
            lambda conn: place_hold_in(conn, transfer_id, account, amount_cents, owner_document, now)
        )

    async def commit_hold(
        self, transfer_id: str, account: int, *, destination: int | None = None
    ) -> HoldOutcome:
        """Turn the hold into a debit: to ``destination`` (a local account) or, by default,
        to the settlement account (the money leaves for another bank).

        Outcomes: ``ok``; ``no_hold`` (none was placed); ``released`` (it was released
        already); ``unknown_account`` (no such destination; nothing recorded, may be retried).
        At most once: a repeat answers the first outcome.
        """
        now = self.now_ms()
        return await self.write(
            lambda conn: commit_hold_in(conn, transfer_id, account, now, destination)
        )

    async def release_hold(self, transfer_id: str, account: int) -> HoldOutcome:
        """Give the held money back to the account's available balance.

        Outcomes: ``ok``; ``no_hold`` (none was placed: a later place is then refused as
        ``decided``); ``committed`` (too late: it was committed). At most once.
        """
        now = self.now_ms()
        return await self.write(lambda conn: release_hold_in(conn, transfer_id, account, now))

    async def credit(self, transfer_id: str, account: int, amount_cents: int) -> HoldOutcome:
        """Money arriving from another bank: debit settlement, credit ``account``.

        Outcomes: ``ok``; ``unknown_account``. Never refused for the balance limit (the
        transfer is decided; see :data:`BALANCE_CENTS_MAX`). At most once per
        ``(transfer_id, account)``: a repeat answers the first outcome and moves nothing.
        """
        now = self.now_ms()
        return await self.write(
            lambda conn: credit_in(conn, transfer_id, account, amount_cents, now)
        )

    async def holds(self, transfer_id: str) -> list[Hold]:
        """Every hold placed here for ``transfer_id``, by account."""

        def run(conn: sqlite3.Connection) -> list[Hold]:
            rows = conn.execute(
                "SELECT transfer_id, account, amount_cents, state, destination FROM holds"
                " WHERE transfer_id = ? ORDER BY account",
                (transfer_id,),
            ).fetchall()
            return [Hold(*row) for row in rows]

        return await self.read(run)

    async def open_holds(self) -> list[Hold]:
        """Every hold still waiting for its transfer's decision (for recovery after a crash)."""

        def run(conn: sqlite3.Connection) -> list[Hold]:
            rows = conn.execute(
                "SELECT transfer_id, account, amount_cents, state, destination FROM holds"
                " WHERE state = 'held' ORDER BY transfer_id, account"
            ).fetchall()
            return [Hold(*row) for row in rows]

        return await self.read(run)

    # -- audit and check ------------------------------------------------------------------

    async def audit(self) -> dict[str, Any]:
        """This bank's totals, read in one snapshot (``GET /api/v1/audit``)."""

        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            conn.execute("BEGIN")
            try:
                balance, held, count = conn.execute(
                    "SELECT COALESCE(SUM(balance_cents), 0), COALESCE(SUM(held_cents), 0),"
                    " COUNT(*) FROM accounts WHERE number > 0"
                ).fetchone()
                cash = _system_balance(conn, CASH_ACCOUNT)
                settlement = _system_balance(conn, SETTLEMENT_ACCOUNT)
                customers = conn.execute("SELECT COUNT(*) FROM customers").fetchone()[0]
                # Entries are never deleted and their ids follow one another (a rolled-back
                # insert leaves no gap): the last id is their count, read from the index's end
                # instead of counted over the whole table (anyone may ask for the audit).
                entries = conn.execute("SELECT COALESCE(MAX(id), 0) FROM entries").fetchone()[0]
                transfers = conn.execute("SELECT COUNT(*) FROM transfers").fetchone()[0]
            finally:
                conn.execute("COMMIT")
            return {
                "bank": self.bank_id,
                "balance_cents": balance,
                "held_cents": held,
                "accounts": count,
                "customers": customers,
                "deposited_net_cents": -cash,
                "settlement_cents": settlement,
                "journal_entries": entries,
                "transfers": transfers,
            }

        return await self.read(run)

    async def check(self) -> CheckReport:
        """Recompute every balance and hold from the journal and compare with the stored ones."""

        def run(conn: sqlite3.Connection) -> CheckReport:
            conn.execute("BEGIN")
            try:
                return _check(conn)
            finally:
                conn.execute("COMMIT")

        return await self.read(run)


# ---------------------------------------------------------------------------------------------
# SQL helpers (run on the writer or reader thread)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Hold operations inside a writer transaction (Ledger.write), for bank.transfers.store
# ---------------------------------------------------------------------------------------------


_transfer_id_randomness = RandomPool()


def new_transfer_id(bank_id: str) -> str:
    """A new transfer id: ``<bank>-``, the time in milliseconds (11 hex digits), then
    ``TRANSFER_ID_RANDOM_BYTES`` random bytes (16 hex digits), so no one guesses another's.

    Ids made in time order land next to each other in every index keyed by transfer id: a
    group commit writes a few index pages, not one page per transfer. A clock that steps back
    costs only that locality: uniqueness rests on the random part.
    """
    return (
        f"{bank_id}-{time.time_ns() // 1_000_000:011x}"
        f"{_transfer_id_randomness.hex(TRANSFER_ID_RANDOM_BYTES)}"
    )


def transfer_id_bank(transfer_id: str) -> str:
    """The bank that made a transfer id (:func:`new_transfer_id`), which records the
    transfer (bank ids may hold hyphens; the rest of an id does not)."""
    return transfer_id.rsplit("-", 1)[0]


IN_LIST_MAX = 512
"""The most keys one ``IN (...)`` list names (SQLite's own limit on bound parameters is far
above it). A power of two: see :func:`in_list`."""


def in_list(keys: Sequence[Any]) -> tuple[str, list[Any]]:
    """The ``?, ?, ...`` of an ``IN`` list naming ``keys`` (1 to :data:`IN_LIST_MAX` of
    them), and its parameters.

    The list is padded to a power of two by repeating the last key (a repeat in an ``IN``
    list changes nothing), so a statement has a handful of texts instead of one per batch
    size, which the connection's cache of prepared statements (:data:`STATEMENTS_CACHED_MAX`)
    keeps without pushing others out."""
    assert 0 < len(keys) <= IN_LIST_MAX
    size = 1 << (len(keys) - 1).bit_length()
    params = list(keys) + [keys[-1]] * (size - len(keys))
    return ", ".join("?" * size), params


ROWS_PER_INSERT_MAX = 64
"""The most rows one multi-row ``INSERT`` of :func:`insert_rows` names (a power of two)."""


@functools.cache  # a few texts per call site (see insert_rows)
def _values_sql(head: str, width: int, rows: int, tail: str) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return f"{head} VALUES {', '.join([row] * rows)}{tail}"


def insert_rows(conn: sqlite3.Connection, head: str, rows: Sequence[Sequence[Any]], tail: str = "") -> None:
    """``{head} VALUES (...){tail}`` for each of ``rows``, in order (``head`` is ``INSERT
    INTO t (a, b)``, ``tail`` an ``ON CONFLICT`` clause), with a few multi-row statements
    instead of one per row.

    One statement of n rows costs SQLite and the sqlite3 module much less than n runs of
    a one-row statement. The rows go in groups of :data:`ROWS_PER_INSERT_MAX`, and what is
    left in groups of powers of two (the binary digits of its count), so a table needs a
    handful of statement texts, which the connection's cache of prepared statements keeps.
    The rows come out as one statement per row would make them (rowids in order). Should a
    statement fail, the rows written before it are undone with the rest of the job (the
    writer isolates each job), as they were when each row had a statement of its own."""
    if not rows:
        return
    width = len(rows[0])
    start = 0
    while start < len(rows):
        left = len(rows) - start
        size = ROWS_PER_INSERT_MAX if left >= ROWS_PER_INSERT_MAX else 1 << (left.bit_length() - 1)
        params = list(itertools.chain.from_iterable(rows[start : start + size]))
        conn.execute(_values_sql(head, width, size, tail), params)
        start += size


@attrs.frozen
class HoldRequest:
    """One hold operation for :func:`apply_holds_in`."""

    operation: Literal["place", "commit", "release", "credit"]
    transfer_id: str
    account: int
    amount_cents: int = 0
    """What ``place`` holds and ``credit`` credits (the others move what was held)."""
    owner_document: str = ""
    """Who must own the account (``place``)."""
    destination: int | None = None
    """A local account ``commit`` pays instead of the settlement account."""
    cash_out: bool = False
    """A ``commit`` whose money leaves as cash at another bank: journaled as a withdrawal."""
    decided: bool = False
    """For ``place``: the transfer's decision is known (by the caller's records), so a hold
    not placed before is refused ``decided``, whatever the account."""


def apply_holds_in(
    conn: sqlite3.Connection, requests: Sequence[HoldRequest], now_ms: int
) -> list[HoldOutcome]:
    """Apply hold operations in order inside the caller's writer transaction; their outcomes.

    The same outcomes and the same rows as calling :func:`place_hold_in`,
    :func:`commit_hold_in`, :func:`release_hold_in` and :func:`credit_in` one request at a
    time (a test holds it to that), for a fraction of the statements: what the requests
    already did, their holds and their accounts are read with a few statements per
    :data:`IN_LIST_MAX` requests, each request is decided in order against what the ones
    before it changed, and the writes go out together (one update per account touched,
    whatever the number of holds on it)."""
    outcomes: list[HoldOutcome] = []
    for start in range(0, len(requests), IN_LIST_MAX):
        outcomes += _apply_holds_chunk(conn, requests[start : start + IN_LIST_MAX], now_ms)
    return outcomes


def _apply_holds_chunk(
    conn: sqlite3.Connection, requests: Sequence[HoldRequest], now_ms: int
) -> list[HoldOutcome]:
    for request in requests:
        _assert_transfer_id(request.transfer_id)
        if request.operation in ("place", "credit"):
            _assert_amount(request.amount_cents)
    marks, ids = in_list(sorted({request.transfer_id for request in requests}))
    # What these transfers already did, as far as the run asks (each request's own operation,
    # and for a hold to place whether its transfer was committed or released here), and
    # their holds: (transfer, account) -> ...
    asked = {request.operation for request in requests}
    if "place" in asked:
        asked |= {"commit", "release"}
    operations, operation_params = in_list(sorted(asked))
    done: dict[tuple[str, str, int], str] = {
        (operation, transfer_id, account): outcome
        for operation, transfer_id, account, outcome in conn.execute(
            # The key starts with the operation: naming them lets SQLite look each
            # (operation, transfer) up in it instead of scanning the table.
            "SELECT operation, transfer_id, account, outcome FROM hold_operations"
            f" WHERE operation IN ({operations}) AND transfer_id IN ({marks})",
            operation_params + ids,
        )
    }
    holds: dict[tuple[str, int], list[Any]] = {
        (transfer_id, account): [amount, state]
        for transfer_id, account, amount, state in conn.execute(
            f"SELECT transfer_id, account, amount_cents, state FROM holds WHERE transfer_id IN ({marks})",
            ids,
        )
    }
    # Customer accounts named, as [available, held]; owners of the accounts to be held.
    wanted = {r.account for r in requests} | {r.destination for r in requests if r.destination is not None}
    numbers = sorted(number for number in wanted if number > 0)
    balances: dict[int, list[int]] = {}
    owned: set[tuple[int, str]] = set()
    if numbers:
        marks, params = in_list(numbers)
        balances = {
            number: [available, held]
            for number, available, held in conn.execute(
                f"SELECT number, balance_cents, held_cents FROM accounts WHERE number IN ({marks})", params
            )
        }
        owned = set(
            conn.execute(
                f"SELECT account, document FROM account_owners WHERE account IN ({marks})", params
            ).fetchall()
        )
    postings: list[tuple[str, str, list[tuple[int, str, int]]]] = []
    new_holds: list[tuple[str, int, int, int]] = []
    ended_holds: dict[tuple[str, int], tuple[str, int | None]] = {}
    records: list[tuple[str, str, int, str, int]] = []
    outcomes: list[HoldOutcome] = []

    def post(kind: str, transfer_id: str, entries: list[tuple[int, str, int]]) -> None:
        postings.append((kind, transfer_id, entries))
        for account, bucket, amount in entries:
            if account in balances:
                balances[account][0 if bucket == "available" else 1] += amount

    for request in requests:
        operation, transfer_id, account = request.operation, request.transfer_id, request.account
        first = done.get((operation, transfer_id, account))
        if first is not None:  # applied before: answer the first outcome again
            outcomes.append(cast(HoldOutcome, first))
            continue
        outcome: HoldOutcome
        if operation == "place":
            amount = request.amount_cents
            balance = balances.get(account)
            refusal = _debit_refusal(None if balance is None else balance[0], account, request.owner_document, amount, owned)
            if request.decided or ("commit", transfer_id, account) in done or ("release", transfer_id, account) in done:
                outcome = "decided"
            elif refusal is not None:
                outcome = refusal
            else:
                post("hold", transfer_id, [(account, "available", -amount), (account, "held", amount)])
                holds[(transfer_id, account)] = [amount, "held"]
                new_holds.append((transfer_id, account, amount, now_ms))
                outcome = "ok"
        elif operation == "credit":
            # A decided transfer's money arriving: never refused for the balance limit, which
            # the destination checked when it voted (``CheckAccount``). Refused now, it would
            # stay in settlement for good. A deposit or another credit landing since the vote
            # can take the account past the limit, by at most the credits voted yes and not
            # yet received.
            amount = request.amount_cents
            balance = balances.get(account)
            if balance is None:
                outcome = "unknown_account"
            else:
                post("credit", transfer_id, [(SETTLEMENT_ACCOUNT, "available", -amount), (account, "available", amount)])
                outcome = "ok"
        else:
            destination = request.destination if operation == "commit" else None
            if destination is not None and destination not in balances:
                # Nothing recorded: the caller may retry with an account that exists.
                outcomes.append("unknown_account")
                continue
            target = (SETTLEMENT_ACCOUNT if destination is None else destination) if operation == "commit" else None
            hold = holds.get((transfer_id, account))
            if hold is None:
                outcome = "no_hold"
            elif hold[1] != "held":
                outcome = cast(HoldOutcome, hold[1])
            else:
                to = account if target is None else target
                kind = "withdrawal" if request.cash_out and operation == "commit" else operation
                post(kind, transfer_id, [(account, "held", -hold[0]), (to, "available", hold[0])])
                hold[1] = "committed" if operation == "commit" else "released"
                ended_holds[(transfer_id, account)] = (hold[1], target)
                outcome = "ok"
        done[(operation, transfer_id, account)] = outcome
        records.append((operation, transfer_id, account, outcome, now_ms))
        outcomes.append(outcome)
    _write_holds(conn, postings, new_holds, ended_holds, records, now_ms)
    return outcomes


@attrs.frozen
class LegsRequest:
    """One transfer's legs at this bank for :func:`apply_legs_in`: applied all or none."""

    transfer_id: str
    owner_document: str
    """Who must own every source account."""
    legs: tuple[tuple[Literal["source", "destination", "cash_out"], int | None, int], ...]
    """``(role, account, amount_cents)``; the account is None where it cannot be a number
    (a source or destination that does not exist), and is not read for a cash-out."""


def apply_legs_in(
    conn: sqlite3.Connection, requests: Sequence[LegsRequest], now_ms: int
) -> dict[str, HoldOutcome]:
    """Move the money of transfers' legs at once, inside the caller's writer transaction:
    a source is debited to the settlement account, a destination credited from it, a
    cash-out paid from it as cash. Each transfer's legs all succeed or none moves (checked
    in order, against what the transfers before it moved); the transfers refused, each
    with the first leg's refusal (``unknown_account``, ``forbidden``, ``insufficient_funds``,
    ``balance_limit``), the same outcomes as placing holds and crediting.

    No hold and no per-operation record: the caller writes, in the same transaction, the
    decision that makes these legs happen once (a cross-bank transfer's coordinator, for its
    own legs, with its decision: see bank.transfers.coordinator)."""
    for request in requests:
        _assert_transfer_id(request.transfer_id)
        for _, _, amount in request.legs:
            _assert_amount(amount)
    numbers = sorted({a for r in requests for role, a, _ in r.legs if a is not None and a > 0 and role != "cash_out"})
    balances: dict[int, int] = {}
    owned: set[tuple[int, str]] = set()
    for start in range(0, len(numbers), IN_LIST_MAX):
        marks, params = in_list(numbers[start : start + IN_LIST_MAX])
        balances.update(
            conn.execute(f"SELECT number, balance_cents FROM accounts WHERE number IN ({marks})", params).fetchall()
        )
        owned.update(
            conn.execute(f"SELECT account, document FROM account_owners WHERE account IN ({marks})", params).fetchall()
        )
    postings: list[tuple[str, str | None, Sequence[tuple[int, str, int]]]] = []
    refused: dict[str, HoldOutcome] = {}
    for request in requests:
        changes: dict[int, int] = {}
        moves: list[tuple[str, str, list[tuple[int, str, int]]]] = []
        reason: HoldOutcome | None = None
        for role, account, amount in request.legs:
            if role == "cash_out":
                moves.append(("cash_out", request.transfer_id, [(SETTLEMENT_ACCOUNT, "available", -amount), (CASH_ACCOUNT, "available", amount)]))
                continue
            if account is None or account not in balances:
                reason = "unknown_account"
                break
            now = balances[account] + changes.get(account, 0)
            if role == "source":
                reason = _debit_refusal(now, account, request.owner_document, amount, owned)
                if reason is not None:
                    break
                changes[account] = changes.get(account, 0) - amount
                moves.append(("debit", request.transfer_id, [(account, "available", -amount), (SETTLEMENT_ACCOUNT, "available", amount)]))
            else:
                if now + amount > BALANCE_CENTS_MAX:
                    reason = "balance_limit"
                    break
                changes[account] = changes.get(account, 0) + amount
                moves.append(("credit", request.transfer_id, [(SETTLEMENT_ACCOUNT, "available", -amount), (account, "available", amount)]))
        if reason is not None:
            refused[request.transfer_id] = reason
            continue
        for account, change in changes.items():
            balances[account] += change
        postings += moves
    if postings:
        _post_all(conn, postings, now_ms)
    return refused


def _debit_refusal(
    balance_cents: int | None, account: int, owner_document: str, amount_cents: int, owned: set[tuple[int, str]]
) -> HoldOutcome | None:
    """Why ``amount_cents`` may not leave ``account`` on ``owner_document``'s word (held or
    debited), or None: the rules a hold and a coordinator's own debit share."""
    if balance_cents is None:
        return "unknown_account"
    if (account, owner_document) not in owned:
        return "forbidden"
    if balance_cents < amount_cents:
        return "insufficient_funds"
    return None


def _write_holds(
    conn: sqlite3.Connection,
    postings: Sequence[tuple[str, str, list[tuple[int, str, int]]]],
    new_holds: Sequence[tuple[str, int, int, int]],
    ended_holds: dict[tuple[str, int], tuple[str, int | None]],
    records: Sequence[tuple[str, str, int, str, int]],
    now_ms: int,
) -> None:
    """The writes of :func:`apply_holds_in`, in the order one request at a time makes them
    (journal numbers and entry ids come out the same)."""
    if postings:
        _post_all(conn, postings, now_ms)
    insert_rows(
        conn,
        "INSERT INTO holds (transfer_id, account, amount_cents, state, placed_at_ms)",
        [(transfer_id, account, amount, "held", at_ms) for transfer_id, account, amount, at_ms in new_holds],
    )
    conn.executemany(
        "UPDATE holds SET state = ?, destination = ?, decided_at_ms = ? WHERE transfer_id = ? AND account = ?",
        [(state, target, now_ms, transfer_id, account) for (transfer_id, account), (state, target) in ended_holds.items()],
    )
    insert_rows(conn, "INSERT INTO hold_operations (operation, transfer_id, account, outcome, at_ms)", records)


def place_hold_in(
    conn: sqlite3.Connection,
    transfer_id: str,
    account: int,
    amount_cents: int,
    owner_document: str,
    now_ms: int,
) -> HoldOutcome:
    """:meth:`Ledger.place_hold` inside the caller's writer transaction."""
    return apply_holds_in(conn, [HoldRequest("place", transfer_id, account, amount_cents, owner_document)], now_ms)[0]


def commit_hold_in(
    conn: sqlite3.Connection,
    transfer_id: str,
    account: int,
    now_ms: int,
    destination: int | None = None,
) -> HoldOutcome:
    """:meth:`Ledger.commit_hold` inside the caller's writer transaction."""
    request = HoldRequest("commit", transfer_id, account, destination=destination)
    return apply_holds_in(conn, [request], now_ms)[0]


def release_hold_in(
    conn: sqlite3.Connection, transfer_id: str, account: int, now_ms: int
) -> HoldOutcome:
    """:meth:`Ledger.release_hold` inside the caller's writer transaction."""
    return apply_holds_in(conn, [HoldRequest("release", transfer_id, account)], now_ms)[0]


def credit_in(
    conn: sqlite3.Connection,
    transfer_id: str,
    account: int,
    amount_cents: int,
    now_ms: int,
) -> HoldOutcome:
    """:meth:`Ledger.credit` inside the caller's writer transaction."""
    return apply_holds_in(conn, [HoldRequest("credit", transfer_id, account, amount_cents)], now_ms)[0]


def balances_in(conn: sqlite3.Connection, numbers: Sequence[int]) -> dict[int, int]:
    """The balances of those of ``numbers`` that are customer accounts, inside the caller's
    transaction (:data:`IN_LIST_MAX` at a time)."""
    found: dict[int, int] = {}
    customers = [n for n in numbers if n > 0]  # system accounts are not customers' to see
    for start in range(0, len(customers), IN_LIST_MAX):
        marks, params = in_list(customers[start : start + IN_LIST_MAX])
        found.update(conn.execute(f"SELECT number, balance_cents FROM accounts WHERE number IN ({marks})", params))
    return found


def _assert_amount(amount_cents: int) -> None:
    assert type(amount_cents) is int, f"amounts are int cents, not {type(amount_cents)}"
    assert 0 < amount_cents <= AMOUNT_CENTS_MAX, f"amount {amount_cents} out of range"


def _assert_transfer_id(transfer_id: str) -> None:
    assert isinstance(transfer_id, str) and 0 < len(transfer_id) <= TRANSFER_ID_CHARS_MAX


def _customer(conn: sqlite3.Connection, document: str) -> Customer | None:
    row = conn.execute(
        "SELECT document, name, password_hash FROM customers WHERE document = ?", (document,)
    ).fetchone()
    return None if row is None else Customer(*row)


def _account(conn: sqlite3.Connection, bank_id: str, number: int) -> Account | None:
    if number <= 0:  # system accounts are not customers' to see
        return None
    row = conn.execute(
        "SELECT kind, balance_cents, held_cents FROM accounts WHERE number = ?", (number,)
    ).fetchone()
    if row is None:
        return None
    owners = tuple(
        r[0]
        for r in conn.execute(
            "SELECT document FROM account_owners WHERE account = ? ORDER BY document", (number,)
        )
    )
    return Account(bank_id, number, row[0], owners, row[1], row[2])


def _must_account(conn: sqlite3.Connection, bank_id: str, number: int) -> Account:
    account = _account(conn, bank_id, number)
    assert account is not None, f"account {number} vanished inside its own transaction"
    return account


def _owned_account(
    conn: sqlite3.Connection, bank_id: str, number: int, document: str
) -> Account | Answer:
    account = _account(conn, bank_id, number)
    if account is None:
        return Answer.refused("unknown_account", f"no account {number} at bank {bank_id}")
    if document not in account.owners:
        return Answer.refused("forbidden", f"account {number} is not yours")
    return account


def _system_balance(conn: sqlite3.Connection, number: int) -> int:
    row = conn.execute("SELECT balance_cents FROM accounts WHERE number = ?", (number,)).fetchone()
    return int(row[0])


def post_in(
    conn: sqlite3.Connection,
    kind: str,
    transfer_id: str | None,
    now_ms: int,
    entries: Sequence[tuple[int, str, int]],
) -> int:
    """Append one journal transaction (entries summing to zero) inside the caller's writer
    transaction and apply it to the stored balances; its number."""
    return _post_all(conn, [(kind, transfer_id, entries)], now_ms)


def _post_all(
    conn: sqlite3.Connection,
    postings: Sequence[tuple[str, str | None, Sequence[tuple[int, str, int]]]],
    now_ms: int,
) -> int:
    """Append journal transactions ``(kind, transfer_id, entries)``, in order, and apply them
    to the stored balances with one update per account touched (however many postings touch
    it); the first one's number (the others follow it)."""
    row = conn.execute("SELECT COALESCE(MAX(txn), 0) FROM journal").fetchone()
    first_txn = int(row[0]) + 1
    insert_rows(
        conn,
        "INSERT INTO journal (txn, kind, transfer_id, at_ms)",
        [(txn, kind, transfer_id, now_ms) for txn, (kind, transfer_id, _) in enumerate(postings, first_txn)],
    )
    deltas: dict[int, list[int]] = {}
    rows = []
    for txn, (_, _, entries) in enumerate(postings, first_txn):
        total = 0
        for account, bucket, amount in entries:
            rows.append((txn, account, bucket, amount))
            total += amount
            delta = deltas.get(account)
            if delta is None:
                delta = deltas[account] = [0, 0]
            delta[0 if bucket == "available" else 1] += amount
        assert entries and total == 0, "entries must sum to zero"
    insert_rows(conn, "INSERT INTO entries (txn, account, bucket, amount_cents)", rows)
    # The CHECK constraints refuse a negative customer balance or hold: a programmer error
    # here, since every caller checked funds first (in order, posting by posting).
    changed = [(available, held, account) for account, (available, held) in deltas.items() if available or held]
    cursor = conn.executemany(
        "UPDATE accounts SET balance_cents = balance_cents + ?, held_cents = held_cents + ? WHERE number = ?",
        changed,
    )
    assert cursor.rowcount == len(changed), "a posting names an account that does not exist"
    return first_txn


def _idempotent(
    conn: sqlite3.Connection,
    idempotency: Idempotency | None,
    now_ms: int,
    apply: Callable[[], Answer],
    elsewhere: KeysElsewhere | None = None,
) -> Answer:
    """Run ``apply`` at most once per key; a retry gets the stored first answer. A key that
    ``elsewhere`` says is taken (by a cross-bank transfer) is refused as reused."""
    if idempotency is None:
        return apply()
    row = conn.execute(
        "SELECT fingerprint, status, body FROM idempotency WHERE scope = ? AND key = ?",
        (idempotency.scope, idempotency.key),
    ).fetchone()
    if row is None and elsewhere is not None and elsewhere(conn, idempotency.scope, idempotency.key):
        return _key_reused()
    if row is not None:
        if row[0] != idempotency.fingerprint:
            return _key_reused()
        return Answer(row[1], jsonio.loads(row[2]), replayed=True)
    answer = apply()
    # The answer is stored in the same transaction as the effect: both or neither survive.
    conn.execute(
        "INSERT INTO idempotency (scope, key, fingerprint, status, body, at_ms)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            idempotency.scope,
            idempotency.key,
            idempotency.fingerprint,
            answer.status,
            jsonio.dumps_text(answer.body),
            now_ms,
        ),
    )
    return answer


def key_stored_in(conn: sqlite3.Connection, scope: str, key: str) -> bool:
    """Whether a keyed write of this ledger stored ``key`` of ``scope`` (inside the caller's
    writer transaction)."""
    found = conn.execute("SELECT 1 FROM idempotency WHERE scope = ? AND key = ?", (scope, key)).fetchone()
    return found is not None


def _key_reused() -> Answer:
    return Answer.refused("idempotency_key_reused", "this Idempotency-Key was used for a different request")


def _check(conn: sqlite3.Connection) -> CheckReport:
    problems: list[str] = []
    total, entries = conn.execute(
        "SELECT COALESCE(SUM(amount_cents), 0), COUNT(*) FROM entries"
    ).fetchone()
    if total != 0:
        problems.append(f"the journal sums to {total} cents, not zero")
    for txn, txn_sum in conn.execute(
        "SELECT txn, SUM(amount_cents) FROM entries GROUP BY txn HAVING SUM(amount_cents) != 0"
    ):
        problems.append(f"journal transaction {txn} sums to {txn_sum} cents")
    recomputed: dict[tuple[int, str], int] = {
        (account, bucket): amount
        for account, bucket, amount in conn.execute(
            "SELECT account, bucket, SUM(amount_cents) FROM entries GROUP BY account, bucket"
        )
    }
    held_by_holds: dict[int, int] = dict(
        conn.execute(
            "SELECT account, SUM(amount_cents) FROM holds WHERE state = 'held' GROUP BY account"
        ).fetchall()
    )
    for number, balance, held in conn.execute(
        "SELECT number, balance_cents, held_cents FROM accounts"
    ):
        if balance != recomputed.get((number, "available"), 0):
            problems.append(
                f"account {number}: stored balance {balance},"
                f" journal says {recomputed.get((number, 'available'), 0)}"
            )
        if held != recomputed.get((number, "held"), 0):
            problems.append(
                f"account {number}: stored held {held},"
                f" journal says {recomputed.get((number, 'held'), 0)}"
            )
        if held != held_by_holds.get(number, 0):
            problems.append(
                f"account {number}: stored held {held}, open holds say"
                f" {held_by_holds.get(number, 0)}"
            )
        if number > 0 and (balance < 0 or held < 0):
            problems.append(f"account {number} is negative: {balance} / {held}")
    return CheckReport(tuple(problems), int(total), int(entries))
