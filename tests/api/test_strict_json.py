"""The one JSON reader of what others send: numbers finite and within 64 bits."""

from __future__ import annotations

import json

import pytest

from api.strict_json import INT_MAX, INT_MIN, UnsafeNumber, loads


@pytest.mark.parametrize("raw", [
    '{"pricing_amount": 1e999}',
    '{"pricing_amount": -1e999}',
    '{"a": NaN}',
    '{"a": Infinity}',
    '{"a": -Infinity}',
    '{"a": {"b": [1, 2, {"c": 1e400}]}}',
    '[[[[[NaN]]]]]',
    f'{{"id": {INT_MAX + 1}}}',
    f'{{"id": {INT_MIN - 1}}}',
    '{"id": ' + "9" * 5000 + '}',
])
def test_unsafe_numbers_are_refused(raw: str) -> None:
    with pytest.raises(UnsafeNumber):
        loads(raw)
    with pytest.raises(UnsafeNumber):
        loads(raw.encode())


def test_ordinary_json_reads_as_json_does() -> None:
    raw = (f'{{"a": 1.5, "b": [1e308, -0.0, {INT_MAX}, {INT_MIN}], "c": "NaN", '
           f'"d": null, "e": true, "f": 12e-3}}')
    assert loads(raw) == json.loads(raw)
    assert isinstance(loads("3"), int) and isinstance(loads("3.0"), float)


def test_malformed_json_is_still_a_decode_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads('{"a": ')
