"""Lists stay fresh without the user's events: every RECSTREAM_REFRESH_INTERVAL_S, the lists of
each partition this worker owns are rebuilt (streams.core.pipeline.PartitionBatch.refresh) in chunks,
at most RECSTREAM_REFRESH_RATE users a second; only lists that changed are written and sent."""

import asyncio

from streams.core.metrics import metrics
from streams.worker import tables
from streams.worker.app import app, clock, settings
from streams.worker.commit import BatchCommit
from streams.worker.runtime import before_stop, owned_partitions, recovered, stored_keys
from streams.worker.state import fresh_popularity_view
from streams.worker.user_batches import refresh_users

CHUNK = 200  # users per batch: one commit each, and no await inside (see BatchCommit)
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


async def _refresh_partition(partition: int) -> None:
    users = stored_keys(tables.recommendations, partition)
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
