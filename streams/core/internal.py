"""Internal records read back (pure): what a record of the internal topics must pass beyond its
schema, since whoever can write those topics is not always a worker."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from streams.core.affinity import load as load_profile
from streams.core.catalog import decode_artwork
from streams.core.events import Rejected, requested_merchants
from streams.core.records import ImageRequest, Merge, Refresh, Signal  # noqa: F401 - Signal: the doctest's


class Checked:
    """An internal record's decoder that also refuses (ValueError) a time further ahead of the wall
    clock than any input's may run (`max_future_s`, plus the workers' clock skew): ingest checked
    the time, so only a hand-written record has one, and one Signal stamped 9.9e10 on signals.keyed
    took over trending for everyone, for good (an outside fuzzer). A merge's is its profile's time.
    (A time that is no number of seconds since 1970, NaN or negative, the schema refuses.) An image
    request keeps the request topic's merchant rule (`requested_merchants`).

    >>> import msgspec
    >>> checked = Checked(lambda raw: Signal("view", "u", "m", float(raw)), max_future_s=60.0, clock=lambda: 1000.0)
    >>> checked(b"1100").time
    1100.0
    >>> checked(b"9.9e10")
    Traceback (most recent call last):
    ValueError: its time is 98999999000 s ahead of the wall clock
    >>> Checked(lambda raw: ImageRequest("r", "c", ["m1"] * 20_000), max_future_s=60.0)(b"").merchant_ids
    ['m1']
    """

    def __init__(self, decode: Callable[[bytes], Any], max_future_s: float, clock: Callable[[], float] = time.time):
        self.decode, self.latest, self.clock = decode, max_future_s + 60.0, clock

    def __call__(self, raw: bytes):
        record = self.decode(raw)
        t = load_profile(record.profile).ref if isinstance(record, Merge) else getattr(record, "time", None)
        if t is not None and (ahead := t - self.clock()) > self.latest:
            raise ValueError(f"its time is {ahead:.0f} s ahead of the wall clock")
        if isinstance(record, Refresh) and record.artwork is not None:  # else it failed where it was applied
            decode_artwork(record.artwork)
        if isinstance(record, ImageRequest):  # the request topic's rule: one named 150,000 times made a 28 MB reply
            merchants = requested_merchants(record.merchant_ids)
            if isinstance(merchants, Rejected):
                raise ValueError(merchants.detail)
            record.merchant_ids = merchants
        return record
