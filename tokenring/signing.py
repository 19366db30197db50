"""Signed member-to-member messages: HMAC-SHA256 over the request, a clock bound and a nonce.

Every message between ring members (``/ring/...``) and between banks (``/interbank/...``)
carries five headers: the sender's id, a wall-clock timestamp in milliseconds, a random nonce,
the receiver (the member it is sent to, by id, or the base URL it is sent to) and an HMAC-SHA256
signature keyed by the ring secret over the method, the path (with its query), the sender, the
timestamp, the nonce, the SHA-256 of the body and the receiver. The receiving side
(:class:`Verifier`, applied to whole path prefixes by :func:`signature_middleware`) refuses a
message that is unsigned, wrongly signed, from an unknown sender, signed for another member,
too old or too far in the future (``skew_ms_max``), or a replay of a nonce it has already
accepted within that window. (Each member keeps its own nonces: without the receiver in the
signature, a message seen on its way to one member was taken again by another.)
A refused message gets 401 and the contract's error body and never reaches its handler, so it
changes nothing.

The sending side is :class:`SignedClient`; the transport and the bank's inter-bank code both
use it, over :class:`~tokenring.peers.PeerClient` (or any ``aiohttp.ClientSession``). The key
never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import aiohttp
import attrs
from aiohttp import web
from yarl import URL

from tokenring import jsonio
from tokenring.agreement import HEADER_CONFIG, ConfigAgreement
from tokenring.peers import PeerClient, PeerError

__all__ = [
    "BODY_READ_TIMEOUT_S",
    "body_read_deadline",
    "HEADER_NONCE",
    "HEADER_RECEIVER",
    "HEADER_SENDER",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "NONCES_MAX",
    "SIGNED_PREFIXES",
    "SIGNED_SENDER",
    "SKEW_MS_MAX",
    "NonceCache",
    "RandomPool",
    "SendFailed",
    "SignatureError",
    "SignedClient",
    "SignedReply",
    "Verifier",
    "error_body",
    "sign",
    "sign_reply",
    "signature_middleware",
    "wall_clock_ms",
]

HEADER_SENDER = "X-Ring-Sender"
HEADER_TIMESTAMP = "X-Ring-Timestamp"
HEADER_NONCE = "X-Ring-Nonce"
HEADER_SIGNATURE = "X-Ring-Signature"
HEADER_RECEIVER = "X-Ring-Receiver"

_SENDER_LOWER = HEADER_SENDER.lower()
_SIGNATURE_LOWER = HEADER_SIGNATURE.lower()
_CONFIG_LOWER = HEADER_CONFIG.lower()
"""The names as :class:`~tokenring.peers.PeerReply` keeps them (in lower case)."""

SKEW_MS_MAX = 30_000
"""A message whose timestamp is further than this from the receiver's clock is refused.

Members on one machine share a clock; across machines NTP keeps clocks well within this. The
nonce cache must remember each nonce for as long as its message could still be accepted, so
this bound also sets how long nonces are kept."""
NONCES_MAX = 200_000
"""The most nonces one verifier remembers. A ring of 16 at full speed sends well under 1,000
messages a second, so a minute of traffic fits; beyond it, messages are refused (503) rather
than accepted without a replay check."""
NONCE_CHARS_MAX = 64
"""Longer nonces are refused: the cache's memory is bounded by count times this."""
NONCE_BYTES = 16
"""Random bytes in a nonce this module makes (32 hex characters)."""
SENDER_CHARS_MAX = 64
RECEIVER_CHARS_MAX = 255
"""The longest receiver (a member's id or base URL) a message may be signed for."""
SEND_TIMEOUT_S_DEFAULT = 2.0
"""How long :meth:`SignedClient.request_json` waits for a whole answer by default."""
REPLY_BYTES_MAX = 1 << 20
"""A larger answer is an operating error (:class:`SendFailed`), not something to buffer."""
BODY_READ_TIMEOUT_S = 10.0
"""The longest a signed request's body may take to arrive once its headers have (it is read
before the signature can be checked): a sender that trickles it is answered 400 and its
connection closed, rather than holding the connection as long as it likes."""
PATHS_COUNTED_MAX = 64
"""Distinct paths :attr:`SignedClient.sent` counts one by one; requests to any further path
are counted together under ``"other"``."""

SIGNED_PREFIXES: tuple[str, ...] = ("/ring/", "/interbank/")
"""Every path under these is member-to-member and must be signed."""

SIGNED_SENDER = web.RequestKey("ring_sender", str)
"""Set on a request by :func:`signature_middleware`: the verified sender's member id."""


def wall_clock_ms() -> int:
    """Milliseconds since the epoch: signatures compare clocks across machines."""
    return time.time_ns() // 1_000_000


def _canonical(
    method: str, path: str, sender: str, timestamp_ms: int, nonce: str, body: bytes, receiver: str | None = None
) -> bytes:
    # The body enters through its digest so that the signed string has a fixed shape; every
    # other field is free of newlines (checked on both sides), so the join is unambiguous.
    # The receiver, when named, is signed over too: the message is then good only at that
    # member (each member keeps its own nonces, so a message seen on its way to one member
    # would otherwise be taken again by another within the clock bound).
    text = f"{method.upper()}\n{path}\n{sender}\n{timestamp_ms}\n{nonce}\n{hashlib.sha256(body).hexdigest()}"
    if receiver is not None:
        text += "\nto " + receiver
    return text.encode()


RANDOM_POOL_BYTES = 4096
"""System randomness drawn at a time by a :class:`RandomPool`."""


class RandomPool:
    """Unpredictable hex strings (nonces, ids) from system randomness drawn
    ``RANDOM_POOL_BYTES`` at a time: one ``os.urandom`` call per 256 nonces instead of one
    per nonce. Every byte comes from the system's generator and is used once. (A system call
    on the event loop's thread also hands the GIL to any other thread that wants it, and
    getting it back can take far longer than the call itself.)"""

    def __init__(self, pool_bytes: int = RANDOM_POOL_BYTES) -> None:
        assert pool_bytes > 0
        self._pool_bytes = pool_bytes
        self._pool = b""
        self._at = 0
        self._lock = threading.Lock()

    def hex(self, nbytes: int) -> str:
        """``nbytes`` unused random bytes, as ``2 * nbytes`` hex characters."""
        assert 0 < nbytes <= self._pool_bytes, nbytes
        with self._lock:
            if self._at + nbytes > len(self._pool):
                self._pool, self._at = os.urandom(self._pool_bytes), 0
            start = self._at
            self._at = start + nbytes
            return self._pool[start : self._at].hex()


_nonces = RandomPool()


@functools.lru_cache(maxsize=16)
def _keyed(secret: bytes) -> hmac.HMAC:
    # The key's set-up (and OpenSSL's look-up of SHA-256) done once per key: every signature
    # copies this state instead, which costs less. Never updated itself.
    return hmac.new(secret, digestmod=hashlib.sha256)


def _signature(secret: bytes, canonical: bytes) -> str:
    mac = _keyed(secret).copy()
    mac.update(canonical)
    return mac.hexdigest()


def sign(
    secret: bytes,
    method: str,
    path: str,
    body: bytes,
    *,
    sender: str,
    timestamp_ms: int | None = None,
    nonce: str | None = None,
    receiver: str | None = None,
) -> dict[str, str]:
    """The four headers that make a request to ``path`` (with its query) from ``sender``;
    with ``receiver`` (the member the request goes to, by id or by base URL), a fifth,
    and the message is good only at that member (a :class:`Verifier` whose receiver it is)."""
    assert secret, "an empty key signs nothing"
    assert path.startswith("/") and "\n" not in path, path
    assert sender and "\n" not in sender and len(sender) <= SENDER_CHARS_MAX, sender
    if receiver is not None:
        receiver = receiver.rstrip("/")
        assert receiver and receiver.isascii() and "\n" not in receiver and len(receiver) <= RECEIVER_CHARS_MAX, receiver
    timestamp_ms = wall_clock_ms() if timestamp_ms is None else timestamp_ms
    nonce = _nonces.hex(NONCE_BYTES) if nonce is None else nonce
    signature = _signature(secret, _canonical(method, path, sender, timestamp_ms, nonce, body, receiver))
    headers = {
        HEADER_SENDER: sender,
        HEADER_TIMESTAMP: str(timestamp_ms),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: signature,
    }
    if receiver is not None:
        headers[HEADER_RECEIVER] = receiver
    return headers


def _reply_canonical(responder: str, request_nonce: str, body: bytes) -> bytes:
    # Bound to the request's nonce: a recorded answer cannot be passed off as the answer to
    # another request; "reply" keeps it apart from any request's signed string.
    return f"reply\n{responder}\n{request_nonce}\n{hashlib.sha256(body).hexdigest()}".encode()


def sign_reply(secret: bytes, *, responder: str, request_nonce: str, body: bytes) -> dict[str, str]:
    """Headers that sign an answer ``body`` to the request that carried ``request_nonce``.

    A member that answers a signed request with something the requester will act on (the
    transport returns the receiver's own ring messages in the answer) signs it with these, and
    :class:`SignedClient` reports the verified responder in :attr:`SignedReply.signed_by`.
    """
    assert secret and responder and request_nonce
    signature = _signature(secret, _reply_canonical(responder, request_nonce, body))
    return {HEADER_SENDER: responder, HEADER_SIGNATURE: signature}


class SignatureError(Exception):
    """A message refused by :class:`Verifier`. ``str()`` says why, never with the key."""

    def __init__(self, message: str, *, status: int = 401, code: str = "unauthorized") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@attrs.define
class NonceCache:
    """The nonces accepted recently, each kept until its message could no longer be accepted.

    Nonces expire in the order they were added (each lives ``keep_ms`` from its arrival), so a
    deque holds them in expiry order and a set answers membership.
    """

    keep_ms: int
    """How long a nonce is remembered after it was accepted."""
    nonces_max: int = NONCES_MAX
    """The most nonces remembered at once; :meth:`add` refuses beyond it."""
    _order: collections.deque[tuple[int, str]] = attrs.field(factory=collections.deque)
    _seen: set[str] = attrs.field(factory=set)

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, nonce: str, now_ms: int) -> None:
        """Remember ``nonce``; :class:`SignatureError` when it was seen or the cache is full."""
        while self._order and self._order[0][0] <= now_ms:
            _, expired = self._order.popleft()
            self._seen.discard(expired)
        if nonce in self._seen:
            raise SignatureError("replayed message (nonce already used)")
        if len(self._seen) >= self.nonces_max:
            raise SignatureError(
                "too many recent messages to check for replay; retry later",
                status=503,
                code="busy",
            )
        self._seen.add(nonce)
        self._order.append((now_ms + self.keep_ms, nonce))


@attrs.define
class Verifier:
    """Checks signed requests for one member; keeps the nonces it has accepted."""

    secret: bytes = attrs.field(repr=False)
    """The ring key (never shown: it is left out of the repr)."""
    members: frozenset[str] | None = None
    """The ids allowed to send; ``None`` accepts any id that signs correctly."""
    skew_ms_max: int = SKEW_MS_MAX
    """The largest accepted difference between a message's timestamp and this clock."""
    nonces_max: int = NONCES_MAX
    """The bound of the nonce cache."""
    clock_ms: Callable[[], int] = wall_clock_ms
    """The wall clock in milliseconds (a parameter so that tests can move it)."""
    receiver: str | None = None
    """This member's id: every message must then be signed for it or for :attr:`receiver_url`
    (:func:`sign`'s ``receiver``), and one signed for another member, or for none, is
    refused. ``None``: a message signed for any receiver or none is taken."""
    receiver_url: str | None = None
    """This member's base URL as its ring file names it, also taken as its name (a sender that
    does not know which member a URL leads to signs for the URL)."""
    not_before_ms: int | None = None
    """A message stamped before this instant is refused: a member sets its start, since the
    nonces it took before a restart are forgotten, and a message it took up to
    ``skew_ms_max`` before would otherwise be taken again after it."""
    nonces: NonceCache = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        assert self.secret, "a verifier needs a non-empty key"
        assert self.skew_ms_max > 0 and self.nonces_max > 0
        # A nonce must outlive every moment at which its timestamp is still acceptable: the
        # message may arrive up to skew_ms_max early and be accepted until skew_ms_max late.
        self.nonces = NonceCache(keep_ms=2 * self.skew_ms_max, nonces_max=self.nonces_max)

    def verify(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> str:
        """The verified sender's id; :class:`SignatureError` when the request must be refused.

        Only a correctly signed, fresh message records its nonce: an attacker without the key
        cannot fill the nonce cache.
        """
        sender = headers.get(HEADER_SENDER, "")
        timestamp = headers.get(HEADER_TIMESTAMP, "")
        nonce = headers.get(HEADER_NONCE, "")
        signature = headers.get(HEADER_SIGNATURE, "")
        receiver = headers.get(HEADER_RECEIVER)
        if not (sender and timestamp and nonce and signature):
            raise SignatureError("unsigned message (missing X-Ring-* signature headers)")
        if self.receiver is not None and (
            receiver is None
            or receiver not in (self.receiver, (self.receiver_url or self.receiver).rstrip("/"))
        ):
            raise SignatureError(
                "message not signed for this member" if receiver else "message signed for no receiver (X-Ring-Receiver)"
            )
        if receiver is not None and not (receiver and receiver.isascii() and "\n" not in receiver and len(receiver) <= RECEIVER_CHARS_MAX):
            raise SignatureError("malformed receiver")
        # Members send ASCII only; other bytes (aiohttp passes undecodable ones on as lone
        # surrogates) could be neither signed over nor compared.
        if not (sender.isascii() and timestamp.isascii() and nonce.isascii() and signature.isascii()):
            raise SignatureError("malformed signature headers (not ASCII)")
        if len(sender) > SENDER_CHARS_MAX or "\n" in sender:
            raise SignatureError("malformed sender")
        if self.members is not None and sender not in self.members:
            raise SignatureError(f"unknown sender {sender!r}")
        if len(nonce) > NONCE_CHARS_MAX or "\n" in nonce:
            raise SignatureError("malformed nonce")
        try:
            timestamp_ms = int(timestamp)
        except ValueError:
            raise SignatureError("malformed timestamp") from None
        now_ms = self.clock_ms()
        skew_ms = timestamp_ms - now_ms
        if abs(skew_ms) > self.skew_ms_max:
            raise SignatureError(
                f"stale message (clock skew {skew_ms} ms beyond {self.skew_ms_max} ms)"
            )
        expected = _signature(
            self.secret, _canonical(method, path, sender, timestamp_ms, nonce, body, receiver)
        )
        if not hmac.compare_digest(expected, signature):
            raise SignatureError("bad signature")
        if self.not_before_ms is not None and timestamp_ms < self.not_before_ms:
            raise SignatureError(
                f"message sent before this member started ({self.not_before_ms - timestamp_ms} ms before;"
                " the nonces taken before are forgotten)"
            )
        self.nonces.add(nonce, now_ms)
        return sender


def error_body(code: str, message: str) -> dict[str, Any]:
    """The contract's error document."""
    return {"error": {"code": code, "message": message}}


def body_read_deadline(request: web.Request, timeout_s: float) -> contextlib.AbstractAsyncContextManager[Any]:
    """The bound on reading ``request``'s body: ``timeout_s``, or none when the body came
    whole with its headers, as a small one nearly always does (then there is no wait to bound,
    and no timer to arm and cancel per request)."""
    if request.content.is_eof():
        return contextlib.nullcontext()
    return asyncio.timeout(timeout_s)


def signature_middleware(
    verifier: Verifier,
    *,
    prefixes: Collection[str] = SIGNED_PREFIXES,
    unsigned: Collection[tuple[str, str]] = (("GET", "/ring/status"),),
    agreement: ConfigAgreement | None = None,
) -> Any:
    """An aiohttp middleware that verifies every request under ``prefixes``.

    ``unsigned`` lists (method, path) pairs under those prefixes that people read without a
    key (``GET /ring/status``). Other paths pass through untouched, and so does a request for
    a path or method no route serves (its 404 or 405). A refused request is
    answered here with 401 (503 when the nonce cache is full) and never reaches its handler.
    With an ``agreement``, a verified request's ring file digest is compared with this
    member's, and the answer carries this member's.
    """
    prefixes = tuple(prefixes)
    exempt = frozenset(unsigned)

    @web.middleware
    async def verify_signature(
        request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        path = request.path
        if (
            not path.startswith(prefixes)
            or (request.method, path) in exempt
            # No such route (404) or method (405): said as it is, signed or not, rather than
            # sending someone who mistyped /ring/status looking for signatures.
            or request.match_info.http_exception is not None
        ):
            response: web.StreamResponse = await handler(request)
            return response
        try:
            async with body_read_deadline(request, BODY_READ_TIMEOUT_S):
                body = await request.read()
        except TimeoutError:
            request.content.feed_eof()
            refused = jsonio.response(
                error_body("invalid_request", f"the body did not arrive within {BODY_READ_TIMEOUT_S:.0f} s"),
                status=400,
                headers={"Connection": "close"},
            )
            refused.force_close()  # the rest of the body is not waited for
            return refused
        try:
            sender = verifier.verify(request.method, request.raw_path, request.headers, body)
        except SignatureError as error:
            return jsonio.response(error_body(error.code, str(error)), status=error.status)
        request[SIGNED_SENDER] = sender
        if agreement is not None:
            agreement.observe(sender, request.headers.get(HEADER_CONFIG))
        response = await handler(request)
        if agreement is not None and not response.prepared:
            response.headers[HEADER_CONFIG] = agreement.digest
        return response

    return verify_signature


class SendFailed(Exception):
    """A signed request that got no answer (connection refused, timeout, reset, too large)."""


@attrs.frozen
class SignedReply:
    """The answer to a signed request."""

    status: int
    """The HTTP status."""
    body: Any
    """The decoded JSON body, or ``None`` when the body was empty or not JSON."""
    signed_by: str | None = None
    """The responder, when the answer was signed for this very request (:func:`sign_reply`)
    with the ring key; ``None`` for an unsigned or wrongly signed answer."""


class SignedClient:
    """Sends signed JSON requests from ``sender`` to other members, over one shared
    :class:`~tokenring.peers.PeerClient` (what a ring member uses) or ``aiohttp.ClientSession``.

    ``await client.post_json(base_url, "/interbank/prepare", payload, timeout_s=2)`` returns a
    :class:`SignedReply` whatever the status; it raises :class:`SendFailed` when no answer came.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | PeerClient,
        secret: bytes,
        sender: str,
        *,
        agreement: ConfigAgreement | None = None,
        receivers: Mapping[str, str] | None = None,
    ) -> None:
        assert secret, "a signed client needs a non-empty key"
        self.session = session
        self._secret = secret
        self.sender = sender
        self._agreement = agreement
        self._receivers = {url.rstrip("/"): member for url, member in (receivers or {}).items()}
        """The member at each base URL this client sends to (a ring member's peers): a request
        is signed for that member's id, good wherever its URL leads (a proxy, another name for
        the same host); one to a URL not named here is signed for the URL itself."""
        """With one, requests carry this member's ring file digest, and signed answers' digests
        are compared with it."""
        self._peers: dict[str, tuple[str, int]] = {}
        self.sent: dict[str, int] = {}
        """Requests sent so far (answered or not), by path (at most :data:`PATHS_COUNTED_MAX`
        paths, then ``"other"``): what a member's messages cost it, for its metrics."""

    def __repr__(self) -> str:
        return f"SignedClient(sender={self.sender!r})"

    async def request_json(
        self,
        method: str,
        base_url: str,
        path: str,
        payload: Any = None,
        *,
        timeout_s: float = SEND_TIMEOUT_S_DEFAULT,
        reply_bytes_max: int = REPLY_BYTES_MAX,
    ) -> SignedReply:
        """Send ``payload`` (JSON; nothing when ``None``) and return the decoded answer."""
        assert timeout_s > 0, timeout_s
        body = b"" if payload is None else jsonio.dumps(payload)
        counted = path if path in self.sent or len(self.sent) < PATHS_COUNTED_MAX else "other"
        self.sent[counted] = self.sent.get(counted, 0) + 1
        # Signed for the member at base_url alone: no other member takes it.
        receiver = self._receivers.get(base_url.rstrip("/"), base_url)
        headers = sign(self._secret, method, path, body, sender=self.sender, receiver=receiver)
        if self._agreement is not None:
            headers[HEADER_CONFIG] = self._agreement.digest
        if payload is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with asyncio.timeout(timeout_s):
                if isinstance(self.session, PeerClient):
                    host, port = self._peer(base_url)
                    reply = await self.session.request(
                        method, host, port, path, headers, body, reply_bytes_max=reply_bytes_max
                    )
                    raw, status = reply.body, reply.status
                    responder = reply.headers.get(_SENDER_LOWER, "")
                    reply_signature = reply.headers.get(_SIGNATURE_LOWER, "")
                    reply_config = reply.headers.get(_CONFIG_LOWER)
                else:
                    # encoded=True: the path goes on the wire exactly as it was signed.
                    url = URL(base_url.rstrip("/") + path, encoded=True)
                    async with self.session.request(
                        method, url, data=body or None, headers=headers
                    ) as response:
                        raw = await response.content.read(reply_bytes_max + 1)
                        if len(raw) > reply_bytes_max:
                            raise SendFailed(f"{method} {base_url}{path}: answer too large")
                        status = response.status
                        responder = response.headers.get(HEADER_SENDER, "")
                        reply_signature = response.headers.get(HEADER_SIGNATURE, "")
                        reply_config = response.headers.get(HEADER_CONFIG)
        except TimeoutError:
            raise SendFailed(f"{method} {base_url}{path}: no answer in {timeout_s} s") from None
        except (aiohttp.ClientError, PeerError, OSError) as error:
            raise SendFailed(f"{method} {base_url}{path}: {type(error).__name__}") from None
        decoded: Any = None
        if raw:
            try:
                decoded = jsonio.loads(raw)
            except ValueError:
                decoded = None
        signed_by = None
        # A reply whose headers are not ASCII is unsigned (they could be neither signed over
        # nor compared), not an error of the send.
        if (
            responder
            and reply_signature
            and len(responder) <= SENDER_CHARS_MAX
            and responder.isascii()
            and reply_signature.isascii()
        ):
            expected = _signature(
                self._secret, _reply_canonical(responder, headers[HEADER_NONCE], raw)
            )
            if hmac.compare_digest(expected, reply_signature):
                signed_by = responder
                if self._agreement is not None:
                    self._agreement.observe(responder, reply_config)
        return SignedReply(status=status, body=decoded, signed_by=signed_by)

    def _peer(self, base_url: str) -> tuple[str, int]:
        peer = self._peers.get(base_url)
        if peer is None:
            url = URL(base_url)
            if url.scheme != "http" or url.host is None or url.port is None:
                raise SendFailed(f"{base_url}: a member is reached at an http://host:port URL")
            peer = self._peers[base_url] = (url.host, url.port)
        return peer

    async def post_json(
        self,
        base_url: str,
        path: str,
        payload: Any,
        *,
        timeout_s: float = SEND_TIMEOUT_S_DEFAULT,
    ) -> SignedReply:
        """``POST`` ``payload`` as JSON to ``base_url + path``, signed."""
        return await self.request_json("POST", base_url, path, payload, timeout_s=timeout_s)

    async def get_json(
        self, base_url: str, path: str, *, timeout_s: float = SEND_TIMEOUT_S_DEFAULT
    ) -> SignedReply:
        """``GET`` ``base_url + path``, signed."""
        return await self.request_json("GET", base_url, path, timeout_s=timeout_s)
