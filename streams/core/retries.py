"""Retries of input messages whose artwork the catalog does not know yet (pure): the next
``Pending`` record, and a pending record read back, checked."""

from __future__ import annotations

import msgspec

from streams.core.records import Pending

RETRY_FIRST_S = 0.5
RETRY_BEHIND_S = 5.0  # past its patience, while the catalog is not read that far yet
MAX_ATTEMPT = 64  # Pending's schema
CLOCK_SKEW_S = 60.0  # between the worker that wrote a retry and the one reading it
_DECODER = msgspec.msgpack.Decoder(Pending)


def retry_or_give_up(pending: Pending | None, topic: str, partition: int, offset: int, key: bytes | None,
                     value: bytes, now: float, patience_s: float, catalog_as_of: float | None = None) -> Pending | None:
    """The next retry of a message whose artwork is unknown, or None once patience ran out.
    Backoff: 0.5 s, 1 s, 2 s, ... from the first sighting, the last retry when the patience ends (it
    gave up when the next backoff would pass it: after 31.5 s of a 60 s patience, an outside check).

    Patience runs out against the catalog as read, not the wall clock: the message gives up only once
    `catalog_as_of` (every catalog record that reached Kafka before it is applied; None: now) has passed
    the deadline. A worker behind on the catalog (a backlog, a rebalance, the catalog's reader paused)
    lost events on works the catalog had for minutes (an outside soak: 470); it now retries every 5 s.

    >>> first = retry_or_give_up(None, "t", 0, 7, None, b"{}", now=100.0, patience_s=10.0)
    >>> first.due, first.attempt
    (100.5, 1)
    >>> late = Pending("t", 0, 7, None, b"{}", first_seen=100.0, due=110.0, attempt=5)
    >>> retry_or_give_up(late, "t", 0, 7, None, b"{}", now=130.0, patience_s=10.0, catalog_as_of=109.0).due
    135.0
    >>> retry_or_give_up(late, "t", 0, 7, None, b"{}", now=130.0, patience_s=10.0, catalog_as_of=110.0) is None
    True
    """
    if pending is None:
        pending = Pending(topic, partition, offset, key, value, first_seen=now, due=now, attempt=0)
    attempt, deadline = min(pending.attempt + 1, MAX_ATTEMPT), pending.first_seen + patience_s
    if now >= deadline:
        if (now if catalog_as_of is None else catalog_as_of) >= deadline:
            return None
        due = now + RETRY_BEHIND_S
    else:
        due = min(now + RETRY_FIRST_S * 2 ** (attempt - 1), deadline)
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


class CatalogReadThrough:
    """How far a worker's catalog is read: `as_of`, the latest wall time T such that every catalog record
    that reached Kafka before T is applied on this worker (0.0 until known).

    A probe finds every partition's end (fetched at `started`); once the group's committed offsets reach
    those ends (owners commit only what they applied and flushed), every record before `started` is applied
    by its owner, and its table write reaches the other workers through the table's changelog: read there
    by a fetch `CHANGELOG_QUEUE_S` after the probe's answer (faust hands fetched records on through a queue).

    >>> progress = CatalogReadThrough()
    >>> progress.owners_read({"p0": 5, "p1": 0}, {"p0": 4}, started=10.0, answered=10.1)  # p0 not applied
    >>> progress.changelog_read(20.0)
    0.0
    >>> progress.owners_read({"p0": 5, "p1": 0}, {"p0": 5, "p1": None}, started=11.0, answered=11.1)
    >>> progress.changelog_read(11.5)  # not read past what the owners wrote yet
    0.0
    >>> progress.changelog_read(12.2)
    11.0
    """

    CHANGELOG_QUEUE_S = 1.0
    KEPT = 64  # probes waiting for the changelog; older ones dropped (as_of only comes later)

    def __init__(self) -> None:
        self.as_of = 0.0
        self._probes: list[tuple[float, float]] = []  # (started, answered), oldest first

    def owners_read(self, ends: dict, committed: dict, started: float, answered: float) -> None:
        """A probe: `ends` (partition -> end offset, fetched at `started`), `committed` (partition ->
        the group's committed offset or None), read back by `answered`."""
        if all((committed.get(tp) or 0) >= end for tp, end in ends.items()):
            self._probes = [*self._probes[-(self.KEPT - 1):], (started, answered)]

    def changelog_read(self, through: float) -> float:
        """This worker read the catalog table's changelog to its end at wall time `through`: `as_of`."""
        for started, answered in self._probes:
            if answered + self.CHANGELOG_QUEUE_S <= through:
                self.as_of = max(self.as_of, started)
        self._probes = [p for p in self._probes if p[1] + self.CHANGELOG_QUEUE_S > through]
        return self.as_of
