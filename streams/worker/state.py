"""The worker's shared runtime state: what several agents and the web views read, built once
per process (the agents import it; it imports no agent)."""

from __future__ import annotations

import functools
import time

from streams.core.image_counts import merge_counts
from streams.core.image_pipeline import Pools, dump_counts, load_counts
from streams.core.partitioned import Shares, flush_due
from streams.core.popularity import PopularityView, dump_partial, load_partial, newest_counted
from streams.core.throttle import PartitionThrottles
from streams.kafka.direct import Anchor
from streams.worker import tables, topics
from streams.worker.app import clock, image_config, pipeline_config, settings
from streams.worker.runtime import event_context, fresh_view, view_without_blocking

# trending and co-engagement: each partition's share (the popularity table), merged into a view
popularity = Shares(load_partial, lambda parts: PopularityView(parts, pipeline_config.trending_half_life_s),
                    flush_s=settings.popularity_flush_s, dump=dump_partial)
# image impressions/conversions: each partition's share (the image_stats table), merged
image_counts = Shares(load_counts, lambda parts: merge_counts(parts, image_config.half_life_s),
                      flush_s=settings.popularity_flush_s)
pools = Pools(tables.image_catalog, image_config.rules)  # merchant -> image pool
owed_lists = PartitionThrottles(settings.list_window_ms / 1000)  # lists the window holds (direct ingest)
lag_sources: list = []  # more readers' per-topic lag (direct ingest), each a callable -> {topic: n}
# the event clock resumes after a restart at the newest event time the shares counted
clock.seed = lambda: newest_counted(tables.popularity.values())


def popularity_view(now: float) -> PopularityView:
    return view_without_blocking(popularity, tables.popularity.items, now)


async def fresh_popularity_view(now: float) -> None:
    """The popularity view of the shares as they are now, before a refresh chunk builds with it."""
    await fresh_view(popularity, tables.popularity.items, now)


def image_stats() -> dict[str, tuple[float, float]]:
    return image_counts.view(tables.image_stats.items(), time.time())


_tallies: dict[str, tuple[int, bytes]] = {}  # tally copies to publish: key -> (partition, tally)
_tallies_flushed: dict[str, float] = {}  # key -> when `write_shares(now)` last published it


def publish_tally(key: str, partition: int, tally: bytes | None) -> None:
    """Copy partition `partition`'s experiment tally (stored with its state, exactly once) to the
    global table every worker's readout reads: queued here, published by `write_shares` with the
    shares (at most every popularity_flush_s while batches come, and before every input commit
    and rebalance), when the copy differs. Publishing it after every batch cost a faust table
    write and a produce request per partition and batch (15% of a worker's CPU at 500 events/s).
    The copy goes through faust's producer buffer, which dies with a killed process while the
    state transaction's writes were acked: the next batch of that partition (a replayed one too)
    repairs a copy lost that way."""
    if tally is not None:
        _tallies[key] = (partition, tally)


def _publish_tallies(anchor_for, now: float | None) -> int:
    written = 0
    for key in list(_tallies):
        if now is not None and not flush_due(_tallies_flushed, key, now, settings.popularity_flush_s):
            continue
        partition, tally = _tallies.pop(key)
        if tables.experiment_tallies.get(key) != tally:
            with event_context(anchor_for(partition)):
                tables.experiment_tallies[key] = tally
            written += 1
    return written


def share_positions() -> tuple[dict, dict]:
    """Every live share's positions, taken once they are written (`settle_shares` once acknowledged)."""
    return popularity.positions(), image_counts.positions()


def settle_shares(positions: tuple[dict, dict]) -> None:
    """The shares' writes that `share_positions` followed are acknowledged (an input commit flushed them): their
    positions are the floor of the repeats their keyed values keep (streams.core.partitioned.Shares.floor)."""
    popularity.settle(positions[0])
    image_counts.settle(positions[1])


def release_shares(partitions: set[int]) -> None:
    """Revoked partitions: this worker's counts since the last write go with them, then it forgets
    their shares (eager rebalancing: every partition held is revoked)."""
    write_shares()
    popularity.forget(partitions)
    image_counts.forget(partitions)


@functools.cache
def table_anchor(partition: int) -> Anchor:
    """A stand-in event of table partition `partition`, for table writes outside a batch."""
    return Anchor(topics.signals.get_topic_name(), partition)


def write_shares(anchor_for=table_anchor, now: float | None = None) -> int:
    """Write every popularity and image-count share a batch changed since its last write and the
    queued experiment tallies (`publish_tally`) (with `now`, wall-clock seconds: only those whose
    flush is due), each within `anchor_for(partition)`'s event context; returns how many. Called
    before the input offsets covering those batches are committed, before a revoked partition's
    share is forgotten, and after a batch's transaction is acknowledged, never inside it: a share
    is never ahead of the keyed values it counted (streams.core.positions.share_takes relies on it)."""
    written = 0
    for shares, table, dump in ((popularity, tables.popularity, dump_partial),
                                (image_counts, tables.image_stats, dump_counts)):
        for partition in shares.unwritten():
            if now is not None and not shares.flush_due(partition, now):
                continue
            with event_context(anchor_for(partition)):
                table[f"p{partition}"] = dump(shares.live[partition])
            shares.written(partition)
            written += 1
    return written + _publish_tallies(anchor_for, now)
