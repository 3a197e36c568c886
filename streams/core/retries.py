"""Retries of input messages whose artwork the catalog does not know yet (pure): the next
``Pending`` record, and a pending record read back, checked."""

from __future__ import annotations

import msgspec

from streams.core.records import Pending

RETRY_FIRST_S = 0.5
CLOCK_SKEW_S = 60.0  # between the worker that wrote a retry and the one reading it
_DECODER = msgspec.msgpack.Decoder(Pending)


def retry_or_give_up(pending: Pending | None, topic: str, partition: int, offset: int, key: bytes | None,
                     value: bytes, now: float, patience_s: float) -> Pending | None:
    """The next retry of a message whose artwork is unknown, or None once patience ran out.
    Backoff: 0.5 s, 1 s, 2 s, ... from the first sighting, the last retry when the patience ends (it
    gave up when the next backoff would pass it: after 31.5 s of a 60 s patience, an outside check)."""
    if pending is None:
        pending = Pending(topic, partition, offset, key, value, first_seen=now, due=now, attempt=0)
    attempt, deadline = pending.attempt + 1, pending.first_seen + patience_s
    if now >= deadline:
        return None
    due = min(now + RETRY_FIRST_S * 2 ** (attempt - 1), deadline)  # attempts: at most 64 (Pending's schema)
    return Pending(pending.topic, pending.partition, pending.offset, pending.key, pending.value,
                   pending.first_seen, due, attempt)


def decode_pending(raw: bytes, now: float, patience_s: float) -> Pending:
    """A pending record read back; ValueError for one no worker wrote: due further from now than
    any retry waits (`patience_s`; held at its partition's head, due 1e300 stopped every event
    behind it for good: an outside fuzzer).

    >>> late = msgspec.msgpack.encode(Pending("t", 0, 1, None, b"{}", first_seen=0.0, due=1e10, attempt=3))
    >>> decode_pending(late, now=100.0, patience_s=60.0)
    Traceback (most recent call last):
    ValueError: a retry due 9999999900 s from now, past RECSTREAM_UNKNOWN_ARTWORK_PATIENCE_S (60 s)
    """
    pending = _DECODER.decode(raw)
    if pending.due - now > patience_s + CLOCK_SKEW_S:
        raise ValueError(f"a retry due {pending.due - now:.0f} s from now, past RECSTREAM_UNKNOWN_ARTWORK_PATIENCE_S "
                         f"({patience_s:g} s)")
    return pending
