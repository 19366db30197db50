"""The values and messages of the cross-bank transfer protocol, and their JSON form.

This is the vocabulary shared by the pure coordinator (:mod:`bank.transfers.coordinator`),
the pure participant (:mod:`bank.transfers.participant`), the simulator and the signed
``/interbank/`` routes. Everything here is a frozen value; nothing does I/O.

A fence is whatever the token ring hands out (``tokenring.core.Fence`` in a bank, any totally
ordered value in the simulator): the protocol only compares fences and carries them, and the
JSON codec takes a pair of functions to turn them into JSON and back.
"""

from __future__ import annotations

import functools

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union

import attrs

__all__ = [
    "ABORTED",
    "ACCOUNT_CHARS_MAX",
    "AMOUNT_CENTS_MAX",
    "COMMITTED",
    "ITEM_BYTES_MAX",
    "LEG_BYTES_MAX",
    "LEG_ROLES",
    "MESSAGE_BYTES_MAX",
    "MESSAGE_ITEMS_BYTES_MAX",
    "PENDING",
    "SOURCES_MAX",
    "TRANSFER_ID_CHARS_MAX",
    "item_bytes_max",
    "Acks",
    "DecisionItem",
    "DecisionQuery",
    "Decisions",
    "Leg",
    "Message",
    "Prepare",
    "PrepareItem",
    "Transfer",
    "Vote",
    "Votes",
    "decode_message",
    "encode_message",
    "transfer_from_dict",
    "transfer_to_dict",
]

SOURCES_MAX = 16
"""The most source accounts one transfer may name (the client API's ``TRANSFER_SOURCES_MAX``)."""
AMOUNT_CENTS_MAX = 10**13
"""The largest amount one leg may move (a hundred billion in the currency's units)."""
ACCOUNT_CHARS_MAX = 64
"""The longest account number or bank id a message may carry."""
TRANSFER_ID_CHARS_MAX = 100
"""The longest transfer id a message may carry, and a ledger stores."""
ITEMS_PER_MESSAGE_MAX = 4096
"""The most transfers one prepare, decision or acknowledgement message may carry."""
MESSAGE_BYTES_MAX = 1 << 20
"""The largest body of an inter-bank message a bank reads (``bank.server`` gives its
application this ``client_max_size``; a larger one is refused with 413, unread). What a
coordinator sends stays under it whatever its backlog: see :data:`MESSAGE_ITEMS_BYTES_MAX`."""
LEG_BYTES_MAX = 340
"""The most bytes one leg takes in a message's JSON: its bank and account at the longest
strings a message may carry (twice ``ACCOUNT_CHARS_MAX``), its amount at
``AMOUNT_CENTS_MAX``, and the comma after it. The ids, accounts and documents a bank sends are
ASCII (member ids by ``tokenring.config``, accounts and documents digits)."""
ITEM_BYTES_MAX = 300
"""The most bytes a prepare's item or a decision takes in a message's JSON besides its legs
(its transfer id at ``TRANSFER_ID_CHARS_MAX``, an owner's document at the longest string)."""
MESSAGE_ITEMS_BYTES_MAX = MESSAGE_BYTES_MAX - (64 << 10)
"""What a message's items and decisions may take together, by :func:`item_bytes_max`: the
rest of :data:`MESSAGE_BYTES_MAX` is left to its sender, fence and type."""


def item_bytes_max(legs: int) -> int:
    """The most bytes a prepare's item or a decision with ``legs`` legs takes in JSON."""
    return ITEM_BYTES_MAX + legs * LEG_BYTES_MAX


PENDING: Literal["pending"] = "pending"
COMMITTED: Literal["committed"] = "committed"
ABORTED: Literal["aborted"] = "aborted"
OUTCOMES = (COMMITTED, ABORTED)

Role = Literal["source", "destination", "cash_out"]
LEG_ROLES: tuple[str, ...] = ("source", "destination", "cash_out")
"""``source``: money leaves this account (a hold, then a debit to settlement);
``destination``: money arrives in this account (from settlement); ``cash_out``: money leaves
the consortium as cash at this bank (a cross-bank withdrawal's counter)."""


@attrs.frozen
class Leg:
    """One account's part in a transfer."""

    bank: str
    """The bank that keeps the account (and that applies this leg)."""
    account: str
    """The account number within that bank; empty for a ``cash_out`` leg."""
    amount_cents: int
    """How much moves through this leg; always positive."""
    role: Role
    """``source``, ``destination`` or ``cash_out`` (see :data:`LEG_ROLES`)."""

    def __attrs_post_init__(self) -> None:
        assert isinstance(self.amount_cents, int) and not isinstance(self.amount_cents, bool)
        assert 0 < self.amount_cents <= AMOUNT_CENTS_MAX, self.amount_cents
        assert self.role in LEG_ROLES, self.role


@attrs.frozen
class Transfer:
    """A cross-bank transfer as its terminal bank recorded it."""

    id: str
    """Unique in the consortium: the terminal bank's id, a colon, a random part."""
    coordinator: str
    """The terminal bank: where the customer asked, and the one that decides."""
    owner_document: str
    """The caller's CPF/CNPJ; every bank holding a source checks ownership by it."""
    legs: tuple[Leg, ...]
    """Sources first, then the one destination (or cash-out) leg."""

    def __attrs_post_init__(self) -> None:
        sources = [leg for leg in self.legs if leg.role == "source"]
        sinks = [leg for leg in self.legs if leg.role != "source"]
        assert 1 <= len(sources) <= SOURCES_MAX, self.legs
        assert len(sinks) == 1, self.legs
        assert sum(leg.amount_cents for leg in sources) == sinks[0].amount_cents, self.legs
        assert _sources_distinct(self.legs), self.legs

    @functools.cached_property
    def banks(self) -> tuple[str, ...]:
        """The banks that take part, each once, in leg order (worked out once: a round asks
        for them several times per transfer)."""
        return tuple(dict.fromkeys(leg.bank for leg in self.legs))

    @functools.cached_property
    def pays_cash(self) -> bool:
        """Whether the money leaves the consortium as cash (a withdrawal) instead of arriving
        in a destination account."""
        return any(leg.role == "cash_out" for leg in self.legs)

    def legs_at(self, bank: str) -> tuple[Leg, ...]:
        """The legs one bank applies."""
        return self._legs_by_bank.get(bank, ())

    @functools.cached_property
    def _legs_by_bank(self) -> dict[str, tuple[Leg, ...]]:
        # Worked out once: a round asks for each bank's legs in its prepare, its decision
        # and its deliveries.
        by_bank: dict[str, list[Leg]] = {}
        for leg in self.legs:
            by_bank.setdefault(leg.bank, []).append(leg)
        return {bank: tuple(legs) for bank, legs in by_bank.items()}

    @property
    def amount_cents(self) -> int:
        """What the destination receives: the sum of the sources."""
        return sum(leg.amount_cents for leg in self.legs if leg.role == "source")


@attrs.frozen
class PrepareItem:
    """One transfer inside a prepare: what the receiving bank must hold or check."""

    transfer_id: str
    """The transfer being prepared."""
    owner_document: str
    """Whose money it is: a source is held only when this document owns the account."""
    legs: tuple[Leg, ...]
    """Only the legs at the receiving bank."""


@attrs.frozen
class Prepare:
    """Coordinator to participant: hold the sources and check the destination, under a fence."""

    sender: str
    """The coordinator."""
    fence: Any
    """The token's fence under which the coordinator started this batch."""
    items: tuple[PrepareItem, ...]
    """The batch: every transfer of this token visit that touches the receiving bank."""
    decisions: tuple[DecisionItem, ...] = ()
    """Decisions of earlier rounds not yet acknowledged by the receiving bank, delivered with
    this prepare instead of a message of their own (applied whatever the fence)."""


@attrs.frozen
class Vote:
    """A participant's answer for one transfer."""

    transfer_id: str
    """The transfer voted on."""
    ok: bool
    """True when every leg here is held or checked; the transfer may then commit."""
    reason: str | None = None
    """Why not (``insufficient_funds``, ``unknown_account``, ``forbidden``, ``stale_fence``,
    ``decided``); None when ok."""


@attrs.frozen
class Votes:
    """Participant to coordinator: the answer to one prepare."""

    sender: str
    """The participant."""
    fence: Any
    """The prepare's fence, so that a late answer to an older round is recognised."""
    votes: tuple[Vote, ...]
    """One per prepared item."""
    acked: tuple[str, ...] = ()
    """The transfers whose decisions came with the prepare and are applied here."""


@attrs.frozen
class DecisionItem:
    """The outcome of one transfer, with what the receiving bank must do about it."""

    transfer_id: str
    """The transfer decided."""
    outcome: Literal["committed", "aborted"]
    """``committed`` or ``aborted``."""
    legs: tuple[Leg, ...]
    """Only the legs at the receiving bank. Empty for a *presumed abort* (the coordinator has
    no record of the transfer): the receiving bank gives back whatever it holds for it."""
    cash_out: bool = False
    """The transfer's money leaves as cash at the coordinator's bank: a withdrawal there from
    an account here, which this bank's journal then calls a withdrawal, not a commit."""

    def __attrs_post_init__(self) -> None:
        if not self.legs and self.outcome != ABORTED:
            raise ValueError("decision: only an abort may name no legs")

    @classmethod
    def of(cls, transfer: Transfer, outcome: Literal["committed", "aborted"], bank: str) -> DecisionItem:
        """The decision of ``transfer`` as ``bank`` must apply it: its legs there."""
        return cls(transfer.id, outcome, transfer.legs_at(bank), cash_out=transfer.pays_cash)


@attrs.frozen
class Decisions:
    """Coordinator to participant: outcomes to apply (each at most once)."""

    sender: str
    """The coordinator."""
    items: tuple[DecisionItem, ...]
    """Batched: every undelivered decision for the receiving bank, up to a bound."""


@attrs.frozen
class Acks:
    """Participant to coordinator: these decisions are applied and durable here."""

    sender: str
    """The participant."""
    transfer_ids: tuple[str, ...]
    """The transfers whose decision was applied."""


@attrs.frozen
class DecisionQuery:
    """Participant to coordinator: what became of these transfers? (recovery)"""

    sender: str
    """The participant asking."""
    transfer_ids: tuple[str, ...]
    """Transfers it prepared and has no decision for."""


Message = Union[Prepare, Votes, Decisions, Acks, DecisionQuery]


# --- JSON -----------------------------------------------------------------------------------

FenceEncoder = Callable[[Any], Any]
FenceDecoder = Callable[[Any], Any]


def _leg_to_dict(leg: Leg) -> dict[str, Any]:
    return {
        "bank": leg.bank,
        "account": leg.account,
        "amount_cents": leg.amount_cents,
        "role": leg.role,
    }


def _is_object(value: Any) -> bool:
    """Whether ``value`` is a JSON object: a dict, as decoded JSON always is, answered
    without the slower abstract-class check that any other mapping takes."""
    return type(value) is dict or isinstance(value, Mapping)


def _text(data: Mapping[str, Any], key: str, *, empty_ok: bool = False) -> str:
    value = data.get(key)
    if not isinstance(value, str) or len(value) > ACCOUNT_CHARS_MAX * 2:
        raise ValueError(f"{key}: expected a short string")
    if not value and not empty_ok:
        raise ValueError(f"{key}: must not be empty")
    return value


def _sources_distinct(legs: Sequence[Leg]) -> bool:
    """Whether no account is a source twice: held once per transfer and account, it would
    be paid out twice."""
    named = [(leg.bank, leg.account) for leg in legs if leg.role == "source"]
    return len(set(named)) == len(named)


def _transfer_id(data: Mapping[str, Any], key: str = "transfer_id") -> str:
    value = _text(data, key)
    if len(value) > TRANSFER_ID_CHARS_MAX:
        raise ValueError(f"{key}: longer than {TRANSFER_ID_CHARS_MAX} characters")
    return value


def _leg_from_dict(data: Any) -> Leg:
    if not _is_object(data):
        raise ValueError("leg: expected an object")
    amount = data.get("amount_cents")
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise ValueError("amount_cents: expected an integer")
    if not 0 < amount <= AMOUNT_CENTS_MAX:
        raise ValueError("amount_cents: out of range")
    role = data.get("role")
    if role not in LEG_ROLES:
        raise ValueError("role: unknown")
    return Leg(
        bank=_text(data, "bank"),
        account=_text(data, "account", empty_ok=role == "cash_out"),
        amount_cents=amount,
        role=role,
    )


def _decisions_to_json(items: Sequence[DecisionItem]) -> list[dict[str, Any]]:
    encoded = []
    for item in items:
        data: dict[str, Any] = {
            "transfer_id": item.transfer_id,
            "outcome": item.outcome,
            "legs": [_leg_to_dict(leg) for leg in item.legs],
        }
        if item.cash_out:
            data["cash_out"] = True
        encoded.append(data)
    return encoded


def _decisions_from_json(data: Mapping[str, Any], key: str) -> tuple[DecisionItem, ...]:
    decided = []
    for raw in _list(data, key):
        if not _is_object(raw) or raw.get("outcome") not in OUTCOMES:
            raise ValueError("decision: expected an object with an outcome")
        cash_out = raw.get("cash_out", False)
        if not isinstance(cash_out, bool):
            raise ValueError("decision: cash_out must be true or false")
        decided.append(DecisionItem(_transfer_id(raw), raw["outcome"], _legs(raw), cash_out=cash_out))
    return tuple(decided)


def _ids(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    ids = _list(data, key)
    if not all(isinstance(i, str) and 0 < len(i) <= TRANSFER_ID_CHARS_MAX for i in ids):
        raise ValueError(f"{key}: expected transfer ids")
    return tuple(ids)


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list) or len(value) > ITEMS_PER_MESSAGE_MAX:
        raise ValueError(f"{key}: expected a bounded list")
    return value


def _legs(data: Mapping[str, Any]) -> tuple[Leg, ...]:
    raw = _list(data, "legs")
    if len(raw) > SOURCES_MAX + 1:
        raise ValueError("legs: too many")
    legs = tuple([_leg_from_dict(item) for item in raw])
    if len(legs) > 1:  # (one leg is always distinct, and at most one destination)
        if not _sources_distinct(legs):
            raise ValueError("legs: an account is a source twice")
        if sum(leg.role != "source" for leg in legs) > 1:
            raise ValueError("legs: more than one destination")
    return legs


def transfer_to_dict(transfer: Transfer) -> dict[str, Any]:
    """The JSON form of a transfer (kept by the terminal bank, shown to clients)."""
    return {
        "id": transfer.id,
        "coordinator": transfer.coordinator,
        "owner_document": transfer.owner_document,
        "legs": [_leg_to_dict(leg) for leg in transfer.legs],
    }


def transfer_from_dict(data: Mapping[str, Any]) -> Transfer:
    """The inverse of :func:`transfer_to_dict`; ValueError on anything malformed."""
    try:
        return Transfer(
            id=_transfer_id(data, "id"),
            coordinator=_text(data, "coordinator"),
            owner_document=_text(data, "owner_document"),
            legs=_legs(data),
        )
    except AssertionError as error:  # the value's own checks: malformed input, not a bug here
        raise ValueError(f"transfer: inconsistent legs ({error})") from None


def encode_message(message: Message, fence_to_json: FenceEncoder) -> dict[str, Any]:
    """A message as a JSON-able dict with a ``type`` key."""
    match message:
        case Prepare(sender, fence, items, decisions):
            prepare = {
                "type": "prepare",
                "sender": sender,
                "fence": fence_to_json(fence),
                "items": [
                    {
                        "transfer_id": item.transfer_id,
                        "owner_document": item.owner_document,
                        "legs": [_leg_to_dict(leg) for leg in item.legs],
                    }
                    for item in items
                ],
            }
            if decisions:
                prepare["decisions"] = _decisions_to_json(decisions)
            return prepare
        case Votes(sender, fence, votes, acked):
            answer = {
                "type": "votes",
                "sender": sender,
                "fence": fence_to_json(fence),
                "votes": [
                    {"transfer_id": v.transfer_id, "ok": v.ok, "reason": v.reason} for v in votes
                ],
            }
            if acked:
                answer["acked"] = list(acked)
            return answer
        case Decisions(sender, items):
            return {"type": "decisions", "sender": sender, "items": _decisions_to_json(items)}
        case Acks(sender, transfer_ids):
            return {"type": "acks", "sender": sender, "transfer_ids": list(transfer_ids)}
        case DecisionQuery(sender, transfer_ids):
            return {"type": "decision_query", "sender": sender, "transfer_ids": list(transfer_ids)}
    raise AssertionError(f"not a message: {message!r}")


def decode_message(data: Any, fence_from_json: FenceDecoder) -> Message:
    """A message from its JSON form; ValueError on anything malformed."""
    if not _is_object(data):
        raise ValueError("message: expected an object")
    kind = data.get("type")
    sender = _text(data, "sender")
    if kind == "prepare":
        items = []
        for raw in _list(data, "items"):
            if not _is_object(raw):
                raise ValueError("item: expected an object")
            items.append(
                PrepareItem(
                    transfer_id=_transfer_id(raw),
                    owner_document=_text(raw, "owner_document"),
                    legs=_legs(raw),
                )
            )
        decisions = _decisions_from_json(data, "decisions") if "decisions" in data else ()
        return Prepare(sender, fence_from_json(data.get("fence")), tuple(items), decisions)
    if kind == "votes":
        votes = []
        for raw in _list(data, "votes"):
            if not _is_object(raw) or not isinstance(raw.get("ok"), bool):
                raise ValueError("vote: expected an object with a boolean ok")
            reason = raw.get("reason")
            if reason is not None and not isinstance(reason, str):
                raise ValueError("vote: reason must be a string")
            votes.append(Vote(_transfer_id(raw), raw["ok"], reason))
        acked = _ids(data, "acked") if "acked" in data else ()
        return Votes(sender, fence_from_json(data.get("fence")), tuple(votes), acked)
    if kind == "decisions":
        return Decisions(sender, _decisions_from_json(data, "items"))
    if kind in ("acks", "decision_query"):
        ids = _ids(data, "transfer_ids")
        if kind == "acks":
            return Acks(sender, tuple(ids))
        return DecisionQuery(sender, tuple(ids))
    raise ValueError(f"type: unknown message type {kind!r}")


def legs_of(transfers: Sequence[Transfer], bank: str) -> dict[str, tuple[Leg, ...]]:
    """Each transfer's legs at one bank, for the transfers that touch it."""
    return {t.id: t.legs_at(bank) for t in transfers if t.legs_at(bank)}
