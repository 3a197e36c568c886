"""A table value shrunk until it is one changelog record Kafka takes (pure).

>>> kept = list(range(600_000))
>>> raw = fit_value(kept, lambda v: bytes(2 * len(v)), lambda v: v.__delitem__(slice(len(v) // 2, None)))
>>> len(raw) <= MAX_TABLE_VALUE_BYTES, len(kept)
(True, 300000)
>>> fans = [("u%d-" % i + "\U0001D11E" * 256)[:256] for i in range(2000)]  # 1 KB ids: 2 MB
>>> raw = fans_value(fans, keep=2000)
>>> len(raw) <= MAX_TABLE_VALUE_BYTES, decode_fans(raw)[-1] == fans[-1], len(decode_fans(raw))
(True, True, 844)
>>> decode_fans(fans_value(fans, keep=0))
[]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from streams.core.records import MAX_TABLE_VALUE_BYTES, decode_fans, encode_fans  # noqa: F401 - doctest

Value = TypeVar("Value")
# a value carried whole inside another record (a catalog record in its changelog record with the key and ~70 bytes;
# a work in its refresh with the artist id; a profile in a Merge with three ids): room left for those
MAX_CARRIED_BYTES = MAX_TABLE_VALUE_BYTES - 16_384


def fit_value(value: Value, encode: Callable[[Value], bytes], shrink: Callable[[Value], Any],
              limit: int = MAX_TABLE_VALUE_BYTES) -> bytes:
    """`encode(value)`, after `shrink(value)` (in place: it drops what matters least) as often as it
    takes to come within `limit`; `shrink` returns False when it found nothing to drop."""
    raw = encode(value)
    while len(raw) > limit and shrink(value) is not False:
        raw = encode(value)
    return raw


def fans_value(users: list[str], keep: int) -> bytes:
    """An artist's fans on a partition as a table value: the newest `keep`, fewer when their ids are long
    (2,000 user ids of 1 KB made 2 MB): the oldest quarter dropped until it fits."""
    newest = users[-keep:] if keep > 0 else []  # users[-0:] is all of them
    return fit_value(newest, encode_fans, lambda u: u.__delitem__(slice(0, max(1, len(u) // 4))) if u else False)
