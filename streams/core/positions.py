"""Input positions (pure): exactly-once rules for records read again after a crash.

A record's position is its input "topic:partition" (`source`) and offset; -1: unknown (then
messageId dedup alone decides). Two kinds of state remember positions:

- a keyed value (a user's profile, a consumer's image views, an experiment log) is written with
  every batch, in the batch's transaction: `first_delivery` tells a redelivery, and `note_repeat` /
  `repeated` remember which of its recent positions were repeats (a messageId seen before);
- a partition's share (trending, image counts: too large for every batch's transaction) is written
  apart, once the batches it counted are acknowledged (the worker's rule) and before every input
  commit, so after a kill -9 it can be behind the keyed values, never ahead: `share_takes` decides
  from the share's own last position and the keyed value's verdict.

>>> applied, repeats, counted = {}, {}, {}
>>> [first_delivery(applied, "events:0", o) for o in (5, 6)], note_repeat(repeats, "events:0", 6, {})
([True, True], None)
>>> share_takes(counted, "events:0", 5, fresh=True, counted_before=False), counted
(True, {'events:0': 5})

A kill -9 loses the share's decision on offset 6 (a repeat) but not the value's; both are read
again: offset 5 was decided, offset 6 was a repeat, neither is counted again.

>>> redelivered = [not first_delivery(applied, "events:0", o) for o in (5, 6)]
>>> redelivered, [share_takes(counted, "events:0", o, False, not repeated(repeats, "events:0", o)) for o in (5, 6)]
([True, True], [False, False])
"""

from __future__ import annotations

from collections.abc import Mapping

from streams.core.seen import contains, digest

# repeats a keyed value remembers per input source: those past its share's acknowledged position are all a
# share can count again (`note_repeat`'s floor); the bound only matters where that is not known
REPEATS_KEPT = 1024
# a repeats key (+ an input source): the positions of that source whose pending retry a value applied; a
# retry waits for patience at most (60 s by default), so a few dozen per source is plenty
RETRIED, RETRIES_KEPT = "retried ", 64
# forwarded positions a share keeps (one per alias that forwarded records to its partition; only those
# forwarded since the input's last commit can be read again): the latest half when it reaches the bound
MAX_FORWARDED_KEPT = 4096


def first_delivery(applied: dict[str, int], source: str, offset: int) -> bool:
    """Record that the input record at `offset` of `source` was applied; False if it (or a
    later record of that source) already was: a redelivery. Records of one source reach a
    user in offset order (one partition, read in order). Offset -1: position unknown, True.

    >>> applied = {}
    >>> [first_delivery(applied, "events:0", o) for o in (5, 6, 5, 6, 7, -1)], applied
    ([True, True, False, False, True, True], {'events:0': 7})
    """
    if delivered_before(applied, source, offset):
        return False
    if offset >= 0:
        applied[source] = offset
    return True


def delivered_before(applied: dict[str, int], source: str, offset: int) -> bool:
    """Whether the input record at `offset` of `source` was applied already (read-only)."""
    return 0 <= offset <= applied.get(source, -1)


def forwarded_position(record) -> dict[str, str]:
    """The position a record for an aliased id travels on with to the merged profile: its own, named
    after the alias, "<source>@<alias id>" (a topic name holds no "@"; one forwarded already keeps
    its name). One alias's records reach the merged profile in their order, while the merged
    profile's own records of that source may come first, so the source alone would not do; and a
    redelivery forwarded again after a crash comes at the same position (it came as a new
    signals.keyed record, which only messageId dedup could tell: a merged profile that saw more
    than its window of other ids since counted it twice). No position: none (messageId dedup).

    >>> from types import SimpleNamespace as Record
    >>> forwarded_position(Record(user_id="anon-1", source="events:3", offset=41))
    {'source': 'events:3@anon-1'}
    >>> forwarded_position(Record(user_id="email-1", source="events:3@anon-1", offset=41))  # a second hop
    {}
    """
    if record.offset < 0 or "@" in record.source:
        return {}
    return {"source": f"{record.source}@{record.user_id}"}


def note_repeat(repeats: dict[str, list[int]], source: str, offset: int, floor: Mapping[str, int]) -> None:
    """Remember that the record at this position repeated a messageId when first applied.
    `floor`: source -> the position of the value's share in a write already acknowledged
    (streams.core.partitioned.Shares.floor): no crash brings the share back behind it, and a
    redelivery at or below its position is never counted (`share_takes`), so the repeats there
    are forgotten. (Not the input's committed offset: a record forwarded through a keyed topic is
    read again after its input was committed, a repeat forgotten at that commit then counted twice.)

    >>> repeats = {}
    >>> for offset in (3, 5, 9):
    ...     note_repeat(repeats, "events:0", offset, {"events:0": 2})
    >>> repeats
    {'events:0': [3, 5, 9]}
    >>> note_repeat(repeats, "events:0", 12, {"events:0": 5}); repeats
    {'events:0': [9, 12]}
    """
    if offset >= 0:
        kept = repeats.setdefault(source, [])
        low = floor.get(source, -1)
        if kept and kept[0] <= low:
            kept[:] = [o for o in kept if o > low]
        kept.append(offset)
        del kept[:-REPEATS_KEPT]


def retried_before(repeats: dict[str, list[int]], record) -> bool:
    """Whether `record` is a pending retry (it has an origin: the input record that waited for its
    artwork) whose input record a retry already brought to this value. A record read again after a crash
    while its first retry waited is parked a second time, and both retries come back, as far apart as
    their backoff: a user's burst between them took the first one's messageId out of the window, and
    the event counted twice (an outside chaos check: 2,100 views in between).

    >>> from types import SimpleNamespace as Retry
    >>> repeats, retry = {}, Retry(origin="events:2", origin_offset=17)
    >>> retried_before(repeats, retry), note_retry(repeats, retry, {}, applied=True), retried_before(repeats, retry)
    (False, None, True)
    >>> retried_before(repeats, Retry(origin="", origin_offset=-1))  # no origin: not a retry
    False
    """
    return record.origin_offset >= 0 and record.origin_offset in repeats.get(RETRIED + record.origin, ())


def note_retry(repeats: dict[str, list[int]], record, floor: Mapping[str, int], applied: bool) -> None:
    """A pending retry reached its value: its input record counted nothing when read (`note_repeat`: read
    again after a crash, it counts nothing), and once one is applied no other retry of it counts."""
    if record.origin_offset >= 0:
        note_repeat(repeats, record.origin, record.origin_offset, floor)
        if applied:
            kept = repeats.setdefault(RETRIED + record.origin, [])
            kept.append(record.origin_offset)
            del kept[:-RETRIES_KEPT]


def repeated(repeats: dict[str, list[int]], source: str, offset: int) -> bool:
    """Whether the record at this position was a repeat when first applied: its redelivery is one again."""
    return offset in repeats.get(source, ())


def counted_when_applied(value, record) -> bool:
    """Whether a redelivered record (a position its keyed value applied already) was counted when
    first read: not a repeat, and its messageId among the value's recent ones. An event that waited
    on the pending topic for its artwork sits behind its user's later records without ever having
    been applied at its position (its retry through signals.keyed counts it), so read again after a
    crash it counts nothing. (A messageId older than the value's window, 2,048 ids, cannot tell:
    that needs a user's thousands of events between a share's write and a crash.)

    >>> from types import SimpleNamespace as Value
    >>> value = Value(repeats={"events:0": [6]}, seen=bytearray(digest("m5") + digest("m6")))
    >>> [counted_when_applied(value, Value(source="events:0", offset=o, message_id=m))
    ...  for o, m in ((5, "m5"), (6, "m6"), (4, "m4"))]
    [True, False, False]
    """
    return not repeated(value.repeats, record.source, record.offset) and contains(value.seen, digest(record.message_id))


def floor_of(counted: Mapping[str, int]) -> dict[str, int]:
    """A share's positions as the floor of its keyed values' repeats (`note_repeat`), taken from a write
    that is acknowledged: every source but the forwarded ones, which the share forgets past
    MAX_FORWARDED_KEPT (`share_takes`), and a floor the share no longer holds would let a repeat count twice.

    >>> floor_of({"events:0": 7, "events:0@anon-1": 3})
    {'events:0': 7}
    """
    return {source: offset for source, offset in counted.items() if "@" not in source}


def share_takes(counted: dict[str, int], source: str, offset: int, fresh: bool, counted_before: bool) -> bool:
    """Whether a share counts a record `fresh` to its keyed value (first delivery, new messageId),
    `counted_before` by it (a redelivery of a position it applied and did not judge a repeat) or
    neither; records the position as decided (`counted`: source -> the last offset decided).

    A redelivery past the share's position is counted again (the share fell behind) unless the
    keyed value judged it a repeat; one at or before it, never. A fresh record is counted wherever
    it is: a position the share passed without it never reached it (it waited on the pending topic
    for its artwork, and is read again after a crash, resolvable now), since the share is never
    written ahead of the keyed values it counted.

    >>> counted, cases = {"images:0": 7}, ((7, True, False), (7, False, True), (8, False, True), (9, False, False))
    >>> [share_takes(counted, "images:0", offset, fresh, before) for offset, fresh, before in cases]
    [True, False, True, False]
    >>> share_takes(counted, "images:0", 10, True, False), counted, share_takes(counted, "images:0", -1, True, False)
    (True, {'images:0': 10}, True)
    """
    if offset < 0:  # no position: the keyed value's dedup alone
        return fresh
    if offset <= counted.get(source, -1):
        return fresh  # passed without it (see above), or a redelivery it counted
    if "@" in source:  # a forwarded position (`forwarded_position`), one per alias: the newest kept
        counted.pop(source, None)
        if len(counted) >= MAX_FORWARDED_KEPT:
            for old in [s for s in counted if "@" in s][: MAX_FORWARDED_KEPT // 2]:
                del counted[old]
    counted[source] = offset
    return fresh or counted_before
