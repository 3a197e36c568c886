"""Small faust glue the agents and the web share: event contexts, partition bookkeeping, the
popularity view built off the event loop (no business logic here)."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable
from contextlib import contextmanager
from itertools import groupby

from faust.streams import _current_event

# async callbacks run when the worker begins to stop, before faust stops its services (patches.install_stop_first)
before_stop: list = []


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


def owned_partitions(app, table) -> list[int]:
    """The partitions of `table` this worker is active for (empty while rebalancing)."""
    name = table.changelog_topic.get_topic_name()
    return sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == name)


def recovered(app) -> bool:
    """Whether this worker's tables hold their whole assignment: not rebalancing, and recovery of
    the current assignment finished (faust's `completed` stays set from the first recovery on, and
    the first can end after the next assignment began: patches.install_recovery_generation).
    Between a partition's assignment and the end of its recovery its local store can miss
    records, so nothing may be applied to it or served from it."""
    return not app.rebalancing and assignment_restored(app)


def assignment_restored(app) -> bool:
    """Whether the restore of the current assignment finished (`recovered`, rebalancing aside: a rebalance's first
    step does not change what the stores hold; streams.worker.reads serves them meanwhile)."""
    recovery = app.tables.recovery  # no recovery finished yet for the current assignment: not ready
    return recovery.completed.is_set() and getattr(recovery, "ready_generation", None) == app.consumer_generation_id


FAUST_KEYS = b"__faust"  # faust's own bookkeeping keys in a partition's RocksDB (its changelog offsets)


def stored_keys(table, partition: int) -> list[str]:
    """The keys in one partition's RocksDB (faust's own bookkeeping keys left out)."""
    db = table.data._db_for_partition(partition)
    return [key.decode() for key in db.keys() if not key.startswith(FAUST_KEYS)]


def stored_items(table, partition: int):
    """(key, value) of every key in one partition's RocksDB, as `stored_keys` (read lazily)."""
    db = table.data._db_for_partition(partition)
    return ((key.decode(), value) for key, value in db.items() if not key.startswith(FAUST_KEYS))


def view_without_blocking(shares, stored, now: float):
    """A Shares (streams.core.partitioned) view without stalling the event loop: merging every partition's trending and
    co-engagement counts takes ~0.1 s of Python at full size, which once a second was the
    pipeline's worst latency. The first view is built inline; after that a stale view is
    rebuilt in a thread from a snapshot while agents keep using the previous one.
    `stored`: a callable returning the global table's items (read only when needed)."""
    if shares.current is None:
        return shares.view(stored(), now)
    if shares.stale(now) and not shares.building:
        shares.building = True
        future = asyncio.get_running_loop().run_in_executor(None, shares.build, shares.snapshot(stored()))

        def installed(f):
            shares.building = False
            if f.cancelled():
                return
            if f.exception() is not None:
                logging.getLogger(__name__).warning("popularity view rebuild failed: %r", f.exception())
                return
            shares.install(f.result(), now)

        future.add_done_callback(installed)
    return shares.current


async def fresh_view(shares, stored, now: float) -> None:
    """For work that builds with a Shares view and can wait (a refresh pass): one of the shares as they are now.
    After a quiet spell nothing had rebuilt the view, and a pass's first chunks took the one from before it (an
    outside check: rebuilt lists needed a second pass, up to two refresh intervals, to match the live ones)."""
    if shares.current is None or shares.stale(now):
        snapshot = shares.snapshot(stored())
        shares.install(await asyncio.get_running_loop().run_in_executor(None, shares.build, snapshot), now)
