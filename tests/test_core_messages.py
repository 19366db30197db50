"""Fences and messages: the total order, and the JSON form peers exchange (bad input refused)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenring.core import (
    Claim,
    Fence,
    Leaving,
    Message,
    Probe,
    ProbeAck,
    Token,
    TokenAck,
    Vote,
    decode_message,
    encode_message,
)

ids = st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True)
fences = st.builds(Fence, st.integers(0, 10**6), st.one_of(st.just(""), ids), st.integers(0, 10**9))
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Token, ids, fences, st.lists(ids, max_size=5).map(tuple)),
    st.builds(TokenAck, ids, fences, st.booleans(), fences),
    st.builds(Claim, ids, st.integers(0, 10**6), fences),
    st.builds(Vote, ids, st.integers(0, 10**6), ids, st.booleans(), fences),
    st.builds(Probe, ids, fences),
    st.builds(ProbeAck, ids, fences),
    st.builds(Leaving, ids),
)


@given(fences, fences)
def test_fence_order_is_epoch_then_issuer_then_seq(a: Fence, b: Fence) -> None:
    key_a, key_b = (a.epoch, a.issuer, a.seq), (b.epoch, b.issuer, b.seq)
    assert (a < b) == (key_a < key_b)
    assert (a <= b) == (key_a <= key_b)
    assert (a > b) == (key_a > key_b)
    assert (a >= b) == (key_a >= key_b)
    assert (a == b) == (key_a == key_b)


def test_fence_text_and_dict() -> None:
    fence = Fence(3, "beta", 41)
    assert str(fence) == "3/beta/41"
    assert fence.to_dict() == {"epoch": 3, "issuer": "beta", "seq": 41}
    assert Fence.from_dict({"epoch": 3, "issuer": "beta", "seq": 41}) == fence


@pytest.mark.parametrize(
    "data",
    [
        {"epoch": 1, "issuer": "a"},
        {"epoch": 1, "issuer": "a", "seq": 1, "extra": 0},
        {"epoch": -1, "issuer": "a", "seq": 1},
        {"epoch": True, "issuer": "a", "seq": 1},
        {"epoch": 1.0, "issuer": "a", "seq": 1},
        {"epoch": 1, "issuer": 7, "seq": 1},
        {"epoch": 1, "issuer": "a" * 65, "seq": 1},
        [1, "a", 1],
    ],
)
def test_bad_fence_is_refused(data: Any) -> None:
    with pytest.raises(ValueError):
        Fence.from_dict(data)


@given(messages)
def test_every_message_survives_its_json_form(message: Message) -> None:
    data = encode_message(message)
    assert isinstance(data["type"], str)
    assert decode_message(data) == message


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"type": "nonsense", "sender": "a"},
        {"type": "token", "sender": "a"},
        {"type": "token", "sender": "a", "fence": {"epoch": 1, "issuer": "a", "seq": 1}, "x": 1},
        {"type": "token", "sender": "", "fence": {"epoch": 1, "issuer": "a", "seq": 1}},
        {"type": "token", "sender": 5, "fence": {"epoch": 1, "issuer": "a", "seq": 1}},
        {"type": "token", "sender": "a", "fence": "1/a/1"},
        {"type": "token", "sender": "a", "fence": {"epoch": 1, "issuer": "a", "seq": 1}, "wanting": "b"},
        {"type": "token", "sender": "a", "fence": {"epoch": 1, "issuer": "a", "seq": 1}, "wanting": [""]},
        {"type": "token", "sender": "a", "fence": {"epoch": 1, "issuer": "a", "seq": 1},
         "wanting": ["m"] * 65},
        {
            "type": "claim", "sender": "a", "epoch": -2,
            "fence": {"epoch": 0, "issuer": "", "seq": 0},
        },
        {
            "type": "vote", "sender": "a", "epoch": 1, "candidate": "b", "granted": "yes",
            "fence": {"epoch": 0, "issuer": "", "seq": 0},
        },
        "token",
    ],
)
def test_malformed_message_is_refused(data: Any) -> None:
    with pytest.raises(ValueError):
        decode_message(data)


def test_a_token_from_a_member_that_sends_no_wanting_list_is_read() -> None:
    fence = {"epoch": 1, "issuer": "a", "seq": 1}
    assert decode_message({"type": "token", "sender": "a", "fence": fence}) == Token(
        "a", Fence(1, "a", 1)
    )
    assert encode_message(Token("a", Fence(1, "a", 1), ("b",)))["wanting"] == ["b"]
