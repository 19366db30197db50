"""tokenring.jsonio: the fast codec agrees with the standard library where callers rely on it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenring import jsonio

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# JSON without floats, with integers of any size (orjson reads those beyond 64 bits as floats).
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)
values_64 = st.recursive(
    st.none() | st.booleans() | INT64 | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


class Refused(Exception):
    pass


def _refuse(text: str) -> Any:
    raise Refused(text)


def _strict(data: bytes) -> Any:
    return jsonio.loads_strict_fallback(data, parse_float=_refuse, parse_constant=_refuse)


@given(values)
def test_strict_reading_equals_the_standard_library_on_documents_without_floats(value: Any) -> None:
    for data in (json.dumps(value).encode(), json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")):
        try:
            expected = json.loads(data, parse_float=_refuse, parse_constant=_refuse)
        except (ValueError, UnicodeDecodeError) as error:
            with pytest.raises(type(error)):
                _strict(data)
        else:
            got = _strict(data)
            assert got == expected
            assert type(got) is type(expected)


@pytest.mark.parametrize(
    "document, refused",
    [
        (b'{"amount_cents": 1.5}', "1.5"),
        (b'{"amount_cents": 1e3}', "1e3"),
        (b'{"a": [1, {"b": -0.0}]}', "-0.0"),
        (b'{"amount_cents": NaN}', "NaN"),
        (b'{"amount_cents": -Infinity}', "-Infinity"),
    ],
)
def test_strict_reading_calls_the_hooks_for_floats_and_constants(document: bytes, refused: str) -> None:
    with pytest.raises(Refused, match=refused.replace("+", r"\+")):
        _strict(document)


def test_strict_reading_keeps_integers_beyond_64_bits_and_lone_surrogates() -> None:
    assert _strict(b'{"n": 123456789012345678901234567890}') == {"n": 123456789012345678901234567890}
    assert _strict(b'{"s": "\\ud800"}') == {"s": "\ud800"}
    with pytest.raises(ValueError):
        _strict(b'{"a": 1')


@given(values_64)
def test_what_dumps_writes_both_readers_read_back(value: Any) -> None:
    try:
        data = jsonio.dumps(value)
    except TypeError:
        # orjson refuses text that is not valid Unicode (a lone surrogate), and only that here.
        assert _has_surrogate(value)
        return
    assert jsonio.loads(data) == value
    assert json.loads(data) == value
    assert jsonio.dumps_text(value) == data.decode()


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, list):
        return any(_has_surrogate(item) for item in value)
    if isinstance(value, dict):
        return any(_has_surrogate(key) or _has_surrogate(item) for key, item in value.items())
    return False


def test_dumps_turns_integer_keys_into_strings_like_the_standard_library() -> None:
    assert json.loads(jsonio.dumps({1: "a"})) == json.loads(json.dumps({1: "a"}))


def test_dumps_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(TypeError):
        jsonio.dumps({"x": object()})
    with pytest.raises(TypeError):
        jsonio.dumps({"x": 2**64})


def test_response_is_json_with_status_and_headers() -> None:
    answer = jsonio.response({"id": "t-1", "amount_cents": 5}, status=202, headers={"X-Request-Id": "r"})
    assert answer.status == 202
    assert answer.content_type == "application/json"
    assert answer.headers["X-Request-Id"] == "r"
    assert isinstance(answer.body, bytes)
    assert json.loads(answer.body) == {"id": "t-1", "amount_cents": 5}
