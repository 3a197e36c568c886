"""A table value shrunk until it is one changelog record Kafka takes (pure).

>>> kept = list(range(600_000))
>>> raw = fit_value(kept, lambda v: bytes(2 * len(v)), lambda v: v.__delitem__(slice(len(v) // 2, None)))
>>> len(raw) <= MAX_TABLE_VALUE_BYTES, len(kept)
(True, 300000)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from streams.core.records import MAX_TABLE_VALUE_BYTES

Value = TypeVar("Value")


def fit_value(value: Value, encode: Callable[[Value], bytes], shrink: Callable[[Value], Any]) -> bytes:
    """`encode(value)`, after `shrink(value)` (in place: it drops what matters least) as often as it
    takes to come within MAX_TABLE_VALUE_BYTES; `shrink` returns False when it found nothing to drop."""
    raw = encode(value)
    while len(raw) > MAX_TABLE_VALUE_BYTES and shrink(value) is not False:
        raw = encode(value)
    return raw
