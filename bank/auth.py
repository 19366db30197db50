"""Customers' secrets: password hashes, session tokens, and the brakes on guessing passwords
and on looking up other customers.

Place in the design: the client API calls these; the ledger stores only what they produce
(a salted scrypt hash, a sha256 of a token), never a password or a token itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable

import attrs

__all__ = [
    "DIRECTORY_LOOKUPS_MAX",
    "DIRECTORY_WINDOW_S",
    "LOGIN_FAILURES_MAX",
    "LOGIN_FAILURE_WINDOW_S",
    "LOGIN_LOCKOUT_S",
    "PASSWORD_CHARS_MAX",
    "PASSWORD_CHARS_MIN",
    "SESSION_TTL_S",
    "LoginThrottle",
    "RateLimit",
    "hash_password",
    "new_token",
    "token_hash",
    "DUMMY_HASH",
    "verify_password",
]

PASSWORD_CHARS_MIN = 8
PASSWORD_CHARS_MAX = 128
SCRYPT_N = 2**13
"""scrypt's cost: 8 MiB and a few milliseconds per hash; moderate, so tests can sign up many."""
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_SALT_BYTES = 16
SCRYPT_HASH_BYTES = 32
SCRYPT_N_MAX = 2**16
"""A stored hash asking for more work than this is refused rather than computed."""
SCRYPT_MEMORY_BYTES_MAX = 128 * 1024 * 1024
"""Memory scrypt may use (128 * r * n bytes, so enough for SCRYPT_N_MAX)."""
TOKEN_BYTES = 32
SESSION_TTL_S = 8 * 3600
"""How long a session lasts after login."""
LOGIN_FAILURES_MAX = 5
"""Failed logins for one document, within the window, before logins are refused."""
LOGIN_FAILURE_WINDOW_S = 300.0
"""Failures older than this are forgotten."""
LOGIN_LOCKOUT_S = 60.0
"""How long logins for a document are refused after too many failures."""
THROTTLED_DOCUMENTS_MAX = 10_000
"""Documents tracked at once; the least recently failed are forgotten first."""
DIRECTORY_LOOKUPS_MAX = 30
"""Payee look-ups (``GET /api/v1/directory``) one customer may make per window: plenty for a
person paying people, few for a script walking through documents to learn who banks where."""
DIRECTORY_WINDOW_S = 60.0
"""The window of :data:`DIRECTORY_LOOKUPS_MAX`, in seconds."""


def hash_password(password: str) -> str:
    """A salted scrypt hash, self-describing: ``scrypt$n$r$p$salt$hash`` (base64)."""
    salt = secrets.token_bytes(SCRYPT_SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(
        ["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)]
    )


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        cost = (int(n), int(r), int(p))
    except ValueError:
        return False
    if scheme != "scrypt" or not 1 < cost[0] <= SCRYPT_N_MAX:
        return False
    computed = _scrypt(password, base64.b64decode(salt), *cost)
    return hmac.compare_digest(computed, base64.b64decode(digest))


def new_token() -> str:
    """A fresh opaque bearer token."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What the ledger stores for a token: its sha256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MEMORY_BYTES_MAX, dklen=SCRYPT_HASH_BYTES
    )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# Checked against when the document is unknown, so a wrong document costs as long as a
# wrong password and the timing does not tell who is a customer.
DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


@attrs.define
class _Failures:
    """Recent failed logins of one document."""

    times_s: list[float]
    """When each failure happened (at most LOGIN_FAILURES_MAX kept)."""
    locked_until_s: float
    """Logins are refused before this instant."""


@attrs.define
class LoginThrottle:
    """Refuses logins for a document for a while after repeated failures.

    In memory: a restart forgets it, which costs an attacker a restart per few guesses.
    """

    failures_max: int = LOGIN_FAILURES_MAX
    """Failures within the window that trigger the lockout."""
    window_s: float = LOGIN_FAILURE_WINDOW_S
    """Failures older than this do not count."""
    lockout_s: float = LOGIN_LOCKOUT_S
    """How long the lockout lasts."""
    documents_max: int = THROTTLED_DOCUMENTS_MAX
    """Bound on the documents remembered."""
    clock: Callable[[], float] = time.monotonic
    """The time in seconds."""
    _failures: OrderedDict[str, _Failures] = attrs.field(factory=OrderedDict)
    _checking: dict[str, int] = attrs.field(factory=dict)
    """Logins being checked now (their password hashed), by document: each may fail."""

    def begin(self, document: str) -> float:
        """Before a login's password is checked: 0, counting the attempt as under way until
        :meth:`end`, or the seconds to wait (locked out, or as many attempts under way as
        the failures still allowed). Without it, guesses sent at once are all checked
        before the first failure is counted."""
        wait_s = self.retry_after_s(document)
        if wait_s > 0:
            return wait_s
        entry = self._failures.get(document)
        recent = 0 if entry is None else len(self._recent(entry, self.clock()))
        if recent + self._checking.get(document, 0) >= self.failures_max:
            return 1.0  # an attempt under way may lock it: ask again once it has ended
        self._checking[document] = self._checking.get(document, 0) + 1
        return 0.0

    def end(self, document: str) -> None:
        """The attempt counted by :meth:`begin` is over (after :meth:`failed` or
        :meth:`succeeded`)."""
        left = self._checking.pop(document, 0) - 1
        if left > 0:
            self._checking[document] = left

    def retry_after_s(self, document: str) -> float:
        """Seconds until ``document`` may try again; 0 when it may now."""
        entry = self._failures.get(document)
        if entry is None:
            return 0.0
        return max(0.0, entry.locked_until_s - self.clock())

    def failed(self, document: str) -> None:
        now = self.clock()
        entry = self._failures.pop(document, None) or _Failures([], 0.0)
        entry.times_s = self._recent(entry, now)[-(self.failures_max - 1) :]
        entry.times_s.append(now)
        if len(entry.times_s) >= self.failures_max:
            entry.locked_until_s = now + self.lockout_s
            entry.times_s = []
        self._failures[document] = entry
        while len(self._failures) > self.documents_max:
            self._failures.popitem(last=False)

    def succeeded(self, document: str) -> None:
        self._failures.pop(document, None)

    def _recent(self, entry: _Failures, now: float) -> list[float]:
        """The failures of ``entry`` still within the window at ``now``."""
        return [t for t in entry.times_s if now - t < self.window_s]


@attrs.define
class RateLimit:
    """At most ``limit`` uses per ``window_s`` seconds for each key (a customer's document),
    over a sliding window. A refused use does not count.

    In memory and per bank, like :class:`LoginThrottle`: a restart forgets it, and a customer
    signed in at several banks gets the allowance at each.
    """

    limit: int = DIRECTORY_LOOKUPS_MAX
    """Uses allowed within any window."""
    window_s: float = DIRECTORY_WINDOW_S
    """The window's length."""
    keys_max: int = THROTTLED_DOCUMENTS_MAX
    """Bound on the keys remembered (the least recently used are forgotten first)."""
    clock: Callable[[], float] = time.monotonic
    """The time in seconds."""
    _uses: OrderedDict[str, deque[float]] = attrs.field(factory=OrderedDict)

    def __attrs_post_init__(self) -> None:
        assert self.limit > 0 and self.window_s > 0 and self.keys_max > 0

    def take(self, key: str) -> float:
        """Count a use by ``key`` and return 0, or, when its allowance is spent, count nothing
        and return the seconds until a use is allowed again."""
        now = self.clock()
        uses = self._uses.pop(key, None) or deque()
        while uses and now - uses[0] >= self.window_s:
            uses.popleft()
        wait_s = 0.0
        if len(uses) >= self.limit:
            wait_s = uses[0] + self.window_s - now
        else:
            uses.append(now)
        self._uses[key] = uses
        while len(self._uses) > self.keys_max:
            self._uses.popitem(last=False)
        return wait_s
