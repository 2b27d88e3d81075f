"""JSON as this node accepts it from others: every number finite and storable.

Python's ``json`` reads ``NaN``, ``Infinity`` and ``-Infinity``, turns ``1e999`` into ``inf``
and reads integers of any length. None of these can be stored or sent on faithfully (the
database's integers are signed 64-bit; ``inf`` and ``NaN`` are not JSON), so ``loads`` refuses
them with ``UnsafeNumber``, wherever they are nested. Malformed JSON still raises
``json.JSONDecodeError``.
"""

from __future__ import annotations

import json
import math
from typing import Any

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
# Longest literal of an integer in range ("-9223372036854775808"): longer ones are refused
# before Python spends time converting them.
_INT_DIGITS = 20
UNSAFE_NUMBER_MESSAGE = ("numbers must be finite and integers within the signed 64-bit range "
                         "(no NaN, Infinity or overflow)")


class UnsafeNumber(ValueError):
    """A number that is not finite, or an integer outside the signed 64-bit range."""

    def __init__(self, literal: str) -> None:
        super().__init__(f"{UNSAFE_NUMBER_MESSAGE}: {literal[:32]}")
        self.literal = literal


def _constant(name: str) -> Any:
    raise UnsafeNumber(name)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnsafeNumber(text)
    return value


def _int(text: str) -> int:
    if len(text) > _INT_DIGITS:
        raise UnsafeNumber(text)
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise UnsafeNumber(text)
    return value


def loads(data: str | bytes | bytearray) -> Any:
    """``json.loads`` that raises ``UnsafeNumber`` for a number the node does not accept."""
    return json.loads(data, parse_constant=_constant, parse_float=_float, parse_int=_int)
