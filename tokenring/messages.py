"""What ring members say to each other: the fence and the messages, and their JSON form.

This is the vocabulary of :mod:`tokenring.core` (which re-exports it). The transport turns a
:data:`Message` into a JSON body with :func:`encode_message` and back with
:func:`decode_message`; anything a peer sends that does not decode is refused with
``ValueError`` and changes nothing, because a remote peer's mistake is an operating error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

import attrs

__all__ = [
    "Claim",
    "Fence",
    "Leaving",
    "Message",
    "Probe",
    "ProbeAck",
    "Token",
    "TokenAck",
    "Vote",
    "decode_message",
    "encode_message",
]

ISSUER_CHARS_MAX = 64
"""Longest member id a fence may carry; config refuses longer rings long before this."""
WANTING_MAX = 64
"""The most members a token's ``wanting`` list may name (a ring has at most 64 members)."""


@attrs.frozen(order=False)
class Fence:
    """A point in the token's life; the total order is ``(epoch, issuer, seq)``.

    Every critical section runs under one fence, and fences strictly increase over the
    token's whole life, across generations. ``Fence(0, "", 0)`` is "nothing seen yet".
    """

    epoch: int
    """The generation's number: a minted token has an epoch above every one its minter and
    its assenting majority have seen."""
    issuer: str
    """The member that minted this generation ("" before any generation)."""
    seq: int
    """Grows at every hand-off (by the ring distance travelled, see docs/protocol.md)."""

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "issuer": self.issuer, "seq": self.seq}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fence:
        """The fence in ``data``; ``ValueError`` on anything but exactly those three keys."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a fence is an object, not {type(data).__name__}")
        if set(data) != {"epoch", "issuer", "seq"}:
            raise ValueError(f"a fence has exactly epoch, issuer and seq, not {sorted(data)}")
        epoch, issuer, seq = data["epoch"], data["issuer"], data["seq"]
        for name, value in (("epoch", epoch), ("seq", seq)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"fence {name} must be a non-negative integer, not {value!r}")
        if not isinstance(issuer, str) or len(issuer) > ISSUER_CHARS_MAX:
            raise ValueError(f"fence issuer must be a short string, not {issuer!r}")
        return cls(epoch=epoch, issuer=issuer, seq=seq)

    def __str__(self) -> str:
        return f"{self.epoch}/{self.issuer}/{self.seq}"

    # The total order, (epoch, issuer, seq) lexicographic, written out by hand: fences are
    # compared on every message, and attrs' generic ordering costs several times more.
    def __lt__(self, other: Fence) -> bool:
        if other.__class__ is not Fence:
            return NotImplemented
        return (self.epoch, self.issuer, self.seq) < (other.epoch, other.issuer, other.seq)

    def __le__(self, other: Fence) -> bool:
        if other.__class__ is not Fence:
            return NotImplemented
        return (self.epoch, self.issuer, self.seq) <= (other.epoch, other.issuer, other.seq)

    def __gt__(self, other: Fence) -> bool:
        if other.__class__ is not Fence:
            return NotImplemented
        return (self.epoch, self.issuer, self.seq) > (other.epoch, other.issuer, other.seq)

    def __ge__(self, other: Fence) -> bool:
        if other.__class__ is not Fence:
            return NotImplemented
        return (self.epoch, self.issuer, self.seq) >= (other.epoch, other.issuer, other.seq)


FENCE_NONE = Fence(0, "", 0)
"""What a member that knows nothing (a fresh start) has seen."""


@attrs.frozen
class Token:
    """The hand-off: ``sender`` passes the token, now at ``fence``, to the receiver."""

    sender: str
    """The member handing the token on."""
    fence: Fence
    """The fence the receiver holds the token under (never re-sent once it may have arrived)."""
    wanting: tuple[str, ...] = ()
    """Members whose work still waited when their last visit ended and that have not held the
    token since: every holder on the way hands an unused visit on at once (demand carried by
    the token itself, in place of a message to every member)."""


@attrs.frozen
class TokenAck:
    """The receiver's answer to a :class:`Token`; ends the sender's hand-off either way."""

    sender: str
    """The member that received the token."""
    fence: Fence
    """The fence of the hand-off being acknowledged."""
    accepted: bool
    """False when the token was stale where it arrived (it was purged there)."""
    seen: Fence
    """The receiver's highest fence, so a stale sender learns what superseded it."""


@attrs.frozen
class Claim:
    """A bid to mint a new generation ``(epoch, sender)``, sent to every other member."""

    sender: str
    """The claimant; with ``epoch`` it is the bid, and the highest bid wins."""
    epoch: int
    """The generation the claimant wants to mint; above every epoch it has seen."""
    fence: Fence
    """The claimant's highest fence."""


@attrs.frozen
class Vote:
    """An answer to a :class:`Claim`: assent (a promise) or refusal."""

    sender: str
    """The voter."""
    epoch: int
    """The bid's epoch this vote answers."""
    candidate: str
    """The bid's claimant this vote answers."""
    granted: bool
    """True: the voter promised this bid and will purge every older generation."""
    fence: Fence
    """The voter's highest fence before this vote: a minted token must be above it."""


@attrs.frozen
class Probe:
    """Sent now and then to members believed down; any answer brings them back up."""

    sender: str
    """The prober."""
    fence: Fence
    """The prober's highest fence."""


@attrs.frozen
class ProbeAck:
    """The answer to a :class:`Probe`."""

    sender: str
    """The probed member, alive."""
    fence: Fence
    """Its highest fence, so a member cut off from the ring learns of newer generations."""


@attrs.frozen
class Leaving:
    """A member leaves gracefully: mark it down now instead of after a hand-off timeout."""

    sender: str
    """The leaving member."""


Message = Union[Token, TokenAck, Claim, Vote, Probe, ProbeAck, Leaving]

_TYPES: dict[str, type[Any]] = {
    "token": Token,
    "token_ack": TokenAck,
    "claim": Claim,
    "vote": Vote,
    "probe": Probe,
    "probe_ack": ProbeAck,
    "leaving": Leaving,
}
_NAMES: dict[type[Any], str] = {cls: name for name, cls in _TYPES.items()}
_FIELD_KINDS: dict[type[Any], dict[str, Any]] = {
    cls: {field.name: field.type for field in attrs.fields(cls)}
    for cls in _TYPES.values()
}
_REQUIRED: dict[type[Any], set[str]] = {
    cls: {field.name for field in attrs.fields(cls) if field.default is attrs.NOTHING}
    for cls in _TYPES.values()
}


def encode_message(message: Message) -> dict[str, Any]:
    """A JSON-able object with a ``"type"`` key naming the message."""
    out: dict[str, Any] = {"type": _NAMES[type(message)]}
    for name in _FIELD_KINDS[type(message)]:
        value = getattr(message, name)
        if isinstance(value, Fence):
            value = value.to_dict()
        elif isinstance(value, tuple):
            value = list(value)
        out[name] = value
    return out


def decode_message(data: Mapping[str, Any]) -> Message:
    """The message in ``data``; ``ValueError`` on an unknown type, a missing, extra or
    mistyped field (a field with a default, such as a token's ``wanting``, may be absent:
    what a member of an earlier version sends)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a message is an object, not {type(data).__name__}")
    kind = data.get("type")
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown message type {kind!r}")
    fields = _FIELD_KINDS[cls]
    keys = set(data) - {"type"}
    if not _REQUIRED[cls] <= keys <= set(fields):
        raise ValueError(f"{kind} has fields {sorted(fields)}, not {sorted(keys)}")
    values: dict[str, Any] = {}
    for name, annotation in fields.items():
        if name not in data:
            continue
        value = data[name]
        if annotation in ("Fence", Fence):
            values[name] = Fence.from_dict(value)
        elif annotation in ("bool", bool):
            if not isinstance(value, bool):
                raise ValueError(f"{kind}.{name} must be true or false, not {value!r}")
            values[name] = value
        elif annotation in ("tuple[str, ...]",):
            if (
                not isinstance(value, list)
                or len(value) > WANTING_MAX
                or not all(isinstance(v, str) and v and len(v) <= ISSUER_CHARS_MAX for v in value)
            ):
                raise ValueError(f"{kind}.{name} must be a list of member ids, not {value!r}")
            values[name] = tuple(value)
        elif annotation in ("int", int):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{kind}.{name} must be a non-negative integer, not {value!r}")
            values[name] = value
        else:
            assert annotation in ("str", str), f"no decoder for {annotation!r}"
            if not isinstance(value, str) or not value or len(value) > ISSUER_CHARS_MAX:
                raise ValueError(f"{kind}.{name} must be a member id, not {value!r}")
            values[name] = value
    message: Message = cls(**values)
    return message
