"""A thin client of the consortium's public surfaces, as a scenario script sees them.

Only what CONTRACT.md promises: the client API under ``/api/v1``, ``GET /ring/status``,
``GET /metrics`` and ``GET /healthz``. Every call has a bounded timeout and returns an
:class:`Answer`; a call that got no answer (refused connection, reset, timeout) returns one
with ``status`` ``None`` instead of raising, because under faults that is an ordinary outcome
the history must record, not an error of the script.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
import attrs

__all__ = ["Answer", "ApiClient", "CALL_TIMEOUT_S", "make_cnpj", "make_cpf"]

CALL_TIMEOUT_S = 5.0
"""The longest one HTTP call waits for its answer."""
CONNECTIONS_MAX = 256
"""Open connections the client keeps at most (over every bank)."""


@attrs.frozen
class Answer:
    """What one HTTP call got back."""

    status: int | None
    """The HTTP status, or ``None`` when no answer came."""
    body: Any = None
    """The decoded JSON body (``None`` when there was none or it was not JSON)."""
    problem: str | None = None
    """Why there was no answer, or the error code of a 4xx/5xx."""
    sent: bool = True
    """``False`` only when no connection could be made: the request surely never arrived."""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def refused(self) -> bool:
        """Definitely not applied: a 4xx (bad input changes nothing), a 501 (not served at
        all), or a request that never left (no connection could be made)."""
        if not self.sent:
            return True
        return self.status is not None and (400 <= self.status < 500 or self.status == 501)

    @property
    def error_code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            code = self.body["error"].get("code")
            return str(code) if code is not None else None
        return None


class ApiClient:
    """One HTTP session for a whole scenario; every method takes the bank's base URL."""

    def __init__(self, *, call_timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.call_timeout_s = call_timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONNECTIONS_MAX),
            timeout=aiohttp.ClientTimeout(total=self.call_timeout_s),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._session is not None
        await self._session.close()

    async def call(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        token: str | None = None,
        key: str | None = None,
        timeout_s: float | None = None,
    ) -> Answer:
        """One request; never raises for a network failure (``status`` is ``None``)."""
        assert self._session is not None, "use ApiClient as an async context manager"
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if key is not None:
            headers["Idempotency-Key"] = key
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.call_timeout_s)
        try:
            async with self._session.request(
                method, url, json=body, headers=headers, timeout=timeout
            ) as response:
                text = await response.text()
                decoded: Any = None
                if text:
                    try:
                        decoded = await response.json(content_type=None)
                    except ValueError:
                        decoded = text
                answer = Answer(status=response.status, body=decoded)
                if not answer.ok:
                    problem = answer.error_code or f"http {response.status}"
                    answer = attrs.evolve(answer, problem=problem)
                return answer
        except aiohttp.ClientConnectorError as error:
            return Answer(status=None, problem=type(error).__name__, sent=False)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            return Answer(status=None, problem=type(error).__name__)

    async def text(self, url: str, *, timeout_s: float | None = None) -> str | None:
        """A plain-text GET (``/metrics``); ``None`` without an answer."""
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.call_timeout_s)
        try:
            async with self._session.get(url, timeout=timeout) as response:
                if response.status != 200:
                    return None
                return await response.text()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return None


def _cpf_digit(digits: list[int]) -> int:
    weight = len(digits) + 1
    total = sum(d * (weight - i) for i, d in enumerate(digits))
    remainder = total % 11
    return 0 if remainder < 2 else 11 - remainder


def make_cpf(rng: random.Random) -> str:
    """A CPF (a person's document) with valid check digits, drawn from ``rng``."""
    digits = [rng.randrange(10) for _ in range(9)]
    if len(set(digits)) == 1:  # all-equal digits are valid-looking but never issued
        digits[0] = (digits[0] + 1) % 10
    digits.append(_cpf_digit(digits))
    digits.append(_cpf_digit(digits))
    return "".join(map(str, digits))


def _cnpj_digit(digits: list[int]) -> int:
    weights = [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2][-len(digits) :]
    remainder = sum(d * w for d, w in zip(digits, weights, strict=True)) % 11
    return 0 if remainder < 2 else 11 - remainder


def make_cnpj(rng: random.Random) -> str:
    """A CNPJ (a company's document) with valid check digits, drawn from ``rng``."""
    digits = [rng.randrange(10) for _ in range(8)] + [0, 0, 0, 1]
    digits.append(_cnpj_digit(digits))
    digits.append(_cnpj_digit(digits))
    return "".join(map(str, digits))
