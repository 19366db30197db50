"""The ring's configuration: ``ring.toml`` parsed into frozen values.

Everything that starts a ring member reads its settings through :func:`load`, so a bad file
is refused in one place, before anything starts, with one line that names the file, the key
and what is wrong (:class:`ConfigError`). The format is described in README.md.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

__all__ = [
    "BankConfig",
    "ConfigError",
    "RingConfig",
    "TokenConfig",
    "load",
    "parse",
]

MEMBER_ID_PATTERN = re.compile(r"^[a-z0-9-]+$")
MEMBERS_MAX = 64
"""A ring larger than this is refused: every bound of the protocol grows with the ring."""
HOLD_MAX_MS_MAX = 60_000
LOSS_TIMEOUT_MS_MAX = 3_600_000
DIGEST_CHARS = 16
"""Hex characters of :attr:`RingConfig.digest` (64 bits: two different files never meet)."""
HANDOFF_TIMEOUT_MS_DEFAULT = 50
"""How long a hand-off waits for its acknowledgement before the successor is skipped.

A hand-off on loopback is acknowledged in 1-6 ms (p99, benchmarks/ring_bench.py); 50 ms keeps
the derived loss timeout, and so regeneration after a lost token, under a second on 5 banks.
"""


class ConfigError(Exception):
    """A configuration file that cannot be used. ``str()`` is the one line to show."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        # A problem of the whole file (missing, unreadable, not TOML) names no key.
        super().__init__(f"{self.path}: {key}: {problem}" if key else f"{self.path}: {problem}")


@attrs.frozen
class BankConfig:
    """One member of the ring, as one ``[[banks]]`` table gives it."""

    id: str
    """Unique within the ring; ``[a-z0-9-]+``."""
    name: str
    """The name people read."""
    url: str
    """Where the member serves, ``http://host:port`` without a trailing slash."""

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None, "a member url always carries a port (checked at parse)"
        return port


@attrs.frozen
class TokenConfig:
    """The timing of the token, from the ``[token]`` table."""

    hold_max_ms: int
    """The longest one member keeps the token per visit."""
    handoff_timeout_ms: int
    """How long a hand-off waits for its acknowledgement before it skips the successor."""
    loss_timeout_ms: int | None
    """Silence after which a member claims a new token; ``None`` derives it from the ring."""


@attrs.frozen
class RingConfig:
    """A whole ``ring.toml``."""

    path: Path
    """The file it was read from (relative paths in it are relative to its folder)."""
    name: str
    """The consortium's name."""
    secret_env: str
    """The environment variable that holds the key signing member-to-member messages."""
    data_dir: Path
    """Where each bank keeps ``<id>.sqlite3``; absolute, resolved against the file's folder."""
    token: TokenConfig
    banks: tuple[BankConfig, ...]
    """The ring, in order: each member hands the token to the next live one."""

    @functools.cached_property
    def member_ids(self) -> tuple[str, ...]:
        """The members' ids in ring order (worked out once: every request checks a bank id
        against them)."""
        return tuple(bank.id for bank in self.banks)

    @functools.cached_property
    def digest(self) -> str:
        """A short fingerprint of what every member must agree on: the members' ids and urls
        in ring order and the token's timings, as this file states them.

        Members tell each other theirs (:mod:`tokenring.agreement`) so that one started with
        another ring file is noticed. Names people read, the data folder and the secret's
        variable are each member's own business and stay out of it.
        """
        agreed = {
            "banks": [[bank.id, bank.url] for bank in self.banks],
            "token": attrs.asdict(self.token),
        }
        canonical = json.dumps(agreed, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(canonical).hexdigest()[:DIGEST_CHARS]

    def bank(self, bank_id: str) -> BankConfig:
        """The member called ``bank_id``, or :class:`ConfigError` naming the known ones."""
        for bank in self.banks:
            if bank.id == bank_id:
                return bank
        known = ", ".join(self.member_ids)
        raise ConfigError(self.path, "banks", f"no bank with id {bank_id!r} (known: {known})")

    def secret(self, environ: os._Environ[str] | dict[str, str] | None = None) -> bytes:
        """The signing key from the environment; :class:`ConfigError` when unset or empty."""
        env = os.environ if environ is None else environ
        value = env.get(self.secret_env)
        if not value:
            # Set but empty is told apart: the variable is there, its value went missing.
            state = "is not set" if value is None else "is empty"
            raise ConfigError(
                self.path,
                "consortium.secret_env",
                f"environment variable {self.secret_env} {state} "
                "(it must hold the key that signs bank-to-bank messages)",
            )
        return value.encode()


_CONSORTIUM_KEYS = {"name", "secret_env", "data_dir"}
_TOKEN_KEYS = {"hold_max_ms", "loss_timeout_ms", "handoff_timeout_ms"}
_BANK_KEYS = {"id", "name", "url"}
_TOP_KEYS = {"consortium", "token", "banks"}


def load(path: str | os.PathLike[str]) -> RingConfig:
    """Read and check ``path``; raise :class:`ConfigError` on the first problem found."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, "", "file not found") from None
    except OSError as error:
        raise ConfigError(file, "", f"cannot be read ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(file, "", f"not UTF-8 text (byte {error.start}), which TOML must be") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(file, "", f"not valid TOML ({error})") from None
    return parse(document, file)


def parse(document: dict[str, Any], path: Path | str = "ring.toml") -> RingConfig:
    """Check an already-decoded TOML document; ``path`` names it in errors."""
    file = Path(path)

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(file, key, problem)

    _refuse_unknown(document, _TOP_KEYS, "", fail)
    consortium = _table(document, "consortium", fail)
    _refuse_unknown(consortium, _CONSORTIUM_KEYS, "consortium.", fail)
    name = _string(consortium, "name", "consortium.", fail)
    secret_env = _string(consortium, "secret_env", "consortium.", fail)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", secret_env):
        raise fail("consortium.secret_env", f"{secret_env!r} is not an environment variable name")
    data_dir = Path(_string(consortium, "data_dir", "consortium.", fail, default="var"))
    if not data_dir.is_absolute():
        data_dir = (file.parent / data_dir).resolve()

    token_table = _table(document, "token", fail)
    _refuse_unknown(token_table, _TOKEN_KEYS, "token.", fail)
    hold_max_ms = _positive_int(token_table, "hold_max_ms", HOLD_MAX_MS_MAX, fail)
    assert hold_max_ms is not None
    handoff_timeout_ms = _positive_int(
        token_table, "handoff_timeout_ms", HOLD_MAX_MS_MAX, fail, required=False
    )
    loss_timeout_ms = _positive_int(
        token_table, "loss_timeout_ms", LOSS_TIMEOUT_MS_MAX, fail, required=False
    )
    token = TokenConfig(
        hold_max_ms=hold_max_ms,
        handoff_timeout_ms=handoff_timeout_ms or HANDOFF_TIMEOUT_MS_DEFAULT,
        loss_timeout_ms=loss_timeout_ms,
    )

    raw_banks = document.get("banks")
    if raw_banks is None:
        raise fail("banks", "missing: the ring needs at least one [[banks]] table")
    if not isinstance(raw_banks, list) or not all(isinstance(b, dict) for b in raw_banks):
        raise fail("banks", "must be an array of tables ([[banks]])")
    if not raw_banks:
        raise fail("banks", "empty: the ring needs at least one bank")
    if len(raw_banks) > MEMBERS_MAX:
        raise fail("banks", f"{len(raw_banks)} banks; at most {MEMBERS_MAX} are supported")
    banks: list[BankConfig] = []
    seen_ids: set[str] = set()
    seen_urls: set[str] = set()
    for index, raw in enumerate(raw_banks):
        prefix = f"banks[{index}]."
        _refuse_unknown(raw, _BANK_KEYS, prefix, fail)
        bank_id = _string(raw, "id", prefix, fail)
        if not MEMBER_ID_PATTERN.fullmatch(bank_id):
            raise fail(prefix + "id", f"{bank_id!r} must match [a-z0-9-]+")
        if bank_id in seen_ids:
            raise fail(prefix + "id", f"duplicate id {bank_id!r}")
        bank_name = _string(raw, "name", prefix, fail)
        url = _url(_string(raw, "url", prefix, fail), prefix + "url", fail)
        if url in seen_urls:
            raise fail(prefix + "url", f"duplicate url {url!r}")
        seen_ids.add(bank_id)
        seen_urls.add(url)
        banks.append(BankConfig(id=bank_id, name=bank_name, url=url))

    # A ring whose every member uses its whole visit goes round in banks x hold_max_ms even
    # with instant hand-offs: a loss timeout within that makes a healthy ring lose its token.
    # (The derived one is twice the worst-case rotation, which counts every hand-off timing
    # out too; a shorter one set here trades claims under faults for a quicker recovery.)
    full_visits_ms = len(banks) * token.hold_max_ms
    if loss_timeout_ms is not None and loss_timeout_ms <= full_visits_ms:
        raise fail(
            "token.loss_timeout_ms",
            f"{loss_timeout_ms} is not above one rotation at full visits ({full_visits_ms} ms:"
            " banks x hold_max_ms): a healthy ring would lose its token",
        )

    return RingConfig(
        path=file,
        name=name,
        secret_env=secret_env,
        data_dir=data_dir,
        token=token,
        banks=tuple(banks),
    )


def _refuse_unknown(table: dict[str, Any], known: set[str], prefix: str, fail: Any) -> None:
    for key in table:
        if key not in known:
            expected = ", ".join(sorted(known))
            raise fail(prefix + key, f"unknown key (expected one of: {expected})")


def _table(document: dict[str, Any], key: str, fail: Any) -> dict[str, Any]:
    value = document.get(key)
    if value is None:
        raise fail(key, f"missing [{key}] table")
    if not isinstance(value, dict):
        raise fail(key, f"must be a table ([{key}])")
    return value


def _string(
    table: dict[str, Any], key: str, prefix: str, fail: Any, default: str | None = None
) -> str:
    value = table.get(key, default)
    if value is None:
        raise fail(prefix + key, "missing")
    if not isinstance(value, str) or not value.strip():
        raise fail(prefix + key, "must be a non-empty string")
    return value


def _positive_int(
    table: dict[str, Any], key: str, maximum: int, fail: Any, *, required: bool = True
) -> int | None:
    value = table.get(key)
    name = "token." + key
    if value is None:
        if required:
            raise fail(name, "missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(name, f"must be an integer number of milliseconds, not {value!r}")
    if value <= 0:
        raise fail(name, f"must be positive, not {value}")
    if value > maximum:
        raise fail(name, f"{value} is above the maximum of {maximum}")
    return value


def _url(value: str, key: str, fail: Any) -> str:
    parts = urlsplit(value)
    if parts.scheme != "http":
        # Members speak plain HTTP to each other, every message signed: TLS, where wanted,
        # is a proxy's job in front of them.
        raise fail(key, f"{value!r} must start with http:// (members speak HTTP, messages signed)")
    if not parts.hostname:
        raise fail(key, f"{value!r} has no host")
    try:
        port = parts.port
    except ValueError:
        raise fail(key, f"{value!r} has a bad port") from None
    if port is None:
        raise fail(key, f"{value!r} must name a port")
    if port == 0:
        # The system would pick a free port, one the other members cannot know.
        raise fail(key, f"{value!r} must name a port from 1 to 65535, not 0")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise fail(key, f"{value!r} must be only scheme, host and port")
    return f"{parts.scheme}://{parts.hostname}:{port}"
