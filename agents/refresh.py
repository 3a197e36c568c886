"""Lists stay fresh without the user's events: every RECSTREAM_REFRESH_INTERVAL_S, the lists of
each partition this worker owns are rebuilt (streams.core.pipeline.PartitionBatch.refresh) in chunks,
at most RECSTREAM_REFRESH_RATE users a second; only lists that changed are written and sent.

A work that leaves the catalog (deleted, sold, withdrawn) leaves its artist's fans' lists at once (the
catalog refresh, streams.core.pipeline) and every other list holding it (as trending, similar, curated or
latest) within GONE_SWEEP_S: the lists of each owned partition are scanned for it and those rebuilt. They kept
it until the user's next event or the hourly pass (an outside check: 55 of 70 lists 20 s after a delete)."""

import asyncio
import time

import msgspec

from streams.core.metrics import metrics
from streams.worker import tables
from streams.worker.app import app, clock, settings
from streams.worker.commit import BatchCommit
from streams.worker.runtime import before_stop, owned_partitions, recovered, stored_items, stored_keys
from streams.worker.state import fresh_popularity_view
from streams.worker.user_batches import refresh_users

CHUNK = 200  # users per batch: one commit each, and no await inside (see BatchCommit)
GONE_SWEEP_S = 5.0
_chunk = asyncio.Lock()  # held from a chunk's first read to its acks
_stopping: list = []  # non-empty once the worker began to stop


@app.task
async def refresh_lists() -> None:
    if settings.refresh_interval_s <= 0:
        return
    while True:
        await asyncio.sleep(settings.refresh_interval_s)
        for partition in owned_partitions(app, tables.recommendations):
            await _refresh_partition(partition)


@app.task
async def drop_gone_works() -> None:
    scan_s = 0.0
    while True:
        await asyncio.sleep(max(GONE_SWEEP_S, 2 * scan_s))  # a scan of a million lists takes seconds
        gone = tables.gone_works
        if gone and recovered(app):  # else kept for the next sweep
            needles = [b'"artwork_id":' + msgspec.json.encode(work) for work in gone]  # as a list encodes it
            gone.clear()
            started = time.monotonic()
            for partition in owned_partitions(app, tables.recommendations):
                holding = await _holding(partition, needles)
                metrics.inc("recstream_lists_holding_gone_works_total", by=len(holding))
                await _refresh_partition(partition, holding)
            scan_s = time.monotonic() - started


async def _holding(partition: int, needles: list[bytes], slice_size: int = 2000) -> list[str]:
    """The users of `partition` whose list names one of the works (`needles`), read in slices between which
    the event loop runs (HTTP reads, batches)."""
    holding = []
    for i, (user, raw) in enumerate(stored_items(tables.recommendations, partition), 1):
        if any(needle in raw for needle in needles):
            holding.append(user)
        if i % slice_size == 0:
            await asyncio.sleep(0)
    return holding


async def _refresh_partition(partition: int, users: list[str] | None = None) -> None:
    """Rebuild the lists of `users` (default: every user) of one partition, chunk by chunk."""
    users = stored_keys(tables.recommendations, partition) if users is None else users
    for start in range(0, len(users), CHUNK):
        if _stopping or not recovered(app) or partition not in owned_partitions(app, tables.recommendations):
            return  # moved to another worker, or rebalancing: its store may miss records until recovered
        chunk = users[start:start + CHUNK]
        async with _chunk:
            await fresh_popularity_view(clock.now())  # after a quiet spell, not the view from before it
            batch = BatchCommit(app, replayable=False)  # no input behind it
            changed = refresh_users(partition, chunk, batch)
            await batch.commit()
        metrics.inc("recstream_lists_refreshed_total", by=len(chunk))
        metrics.inc("recstream_lists_changed_by_refresh_total", by=changed)
        await asyncio.sleep(len(chunk) / settings.refresh_rate)


async def _stop_refreshing() -> None:
    """A stop lets the chunk in progress finish (acked: nothing left in flight to recover at the next
    start) and starts no other; faust would stop the producer and the stores under it."""
    _stopping.append(True)
    async with _chunk:
        pass


before_stop.append(_stop_refreshing)
