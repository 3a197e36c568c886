"""Small faust glue that the agents share (no business logic here)."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from contextlib import contextmanager
from itertools import groupby

from faust.streams import _current_event


@contextmanager
def event_context(event):
    """Run table writes as if processing `event`: faust's RocksDB store and changelog pick the
    partition from the current event, and in a `take_events` batch that would otherwise be the
    batch's last event, whatever partition the key belongs to."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield event
    finally:
        _current_event.reset(token)


def by_partition(events: Iterable) -> list[tuple[int, list]]:
    """Group a batch by partition, keeping each partition's order."""
    ordered = sorted(events, key=lambda e: e.message.partition)  # stable: order within a partition kept
    return [(p, list(group)) for p, group in groupby(ordered, key=lambda e: e.message.partition)]
