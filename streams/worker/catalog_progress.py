"""How far the whole group has applied catalog.artworks, so that an event naming a work this worker does
not know gives up only once the catalog, as read, has passed the event's patience (streams.core.retries).
A wall-clock patience dead-lettered events on works the catalog had held for minutes while this worker,
or the owner of the work's catalog partition, was behind (an outside soak: 470 events lost during
rebalances, a kill -9 and a backlog).

A plain consumer in direct ingest's group, assigned every catalog.artworks partition, never joining the
group nor committing, follows the partitions' ends (from fetch responses: ListOffsets under-reports them
on the embedded broker, docs/traps.md) and reads the group's committed offsets once a second; this
worker's own read of the artworks table's changelog (faust's consumer) closes the chain. Direct ingest
only: on faust's path the patience stays on the wall clock."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.core.metrics import metrics
from streams.core.retries import CatalogReadThrough
from streams.kafka.admin import partition_counts, start_quietly
from streams.kafka.direct import direct_group
from streams.kafka.offsets import fetched_position, stop_consumer
from streams.worker import topics
from streams.worker.app import app, settings
from streams.worker.tables import artworks

log = logging.getLogger(__name__)
PROBE_EVERY_S = 1.0
RESTART_AFTER_S = 5.0
progress = CatalogReadThrough()


def catalog_as_of() -> float | None:
    """What an unknown work's patience is judged against (streams.core.retries.retry_or_give_up); None:
    the wall clock (faust's path)."""
    return progress.as_of if settings.direct_ingest else None


def changelog_read_through(consumer, changelog: str) -> float:
    """When `consumer` (aiokafka) last fetched the partitions of `changelog` it reads, all read to their
    end then: the oldest of those fetches; 0.0 while one is behind or none is assigned."""
    fetched = []
    for tp in consumer.assignment():
        if tp.topic == changelog:
            high, position = fetched_position(consumer, tp)
            if high is None or position is None or position < high:
                return 0.0
            fetched.append(consumer.last_poll_timestamp(tp) / 1000)
    return min(fetched, default=0.0)


async def _probe(consumer, tps: list) -> None:
    ends = {tp: consumer.highwater(tp) for tp in tps}
    if None in ends.values():  # not fetched yet
        return
    started = min(consumer.last_poll_timestamp(tp) for tp in tps) / 1000
    committed = {tp: await consumer.committed(tp) for tp in tps}
    progress.owners_read(ends, committed, started, time.time())
    try:
        faust_consumer = app.consumer._thread._ensure_consumer()
    except Exception:  # noqa: BLE001 - faust's consumer not started yet: the probes wait for it
        return
    progress.changelog_read(changelog_read_through(faust_consumer, artworks.changelog_topic.get_topic_name()))


async def _follow() -> None:
    consumer = AIOKafkaConsumer(**settings.aiokafka_kwargs(), group_id=direct_group(settings.kafka_app_id),
                                enable_auto_commit=False, fetch_max_wait_ms=int(PROBE_EVERY_S * 500))
    try:
        await start_quietly(consumer)
        name = topics.artworks.get_topic_name()
        tps = [TopicPartition(name, p) for p in range((await partition_counts(consumer, [name]))[name])]
        if not tps:  # not created yet (the worker declares it as it starts)
            return await asyncio.sleep(RESTART_AFTER_S)
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        probed = 0.0
        while True:
            await consumer.getmany(timeout_ms=int(PROBE_EVERY_S * 1000))  # only each partition's end is wanted
            if time.monotonic() - probed >= PROBE_EVERY_S:
                probed = time.monotonic()
                await _probe(consumer, tps)
    finally:
        await stop_consumer(consumer)


if settings.direct_ingest:
    @app.task
    async def follow_catalog() -> None:
        while True:
            try:
                await _follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - events on unknown works wait meanwhile, none is lost
                log.warning("following the catalog's progress failed, again in %g s: %r", RESTART_AFTER_S, exc)
                await asyncio.sleep(RESTART_AFTER_S)

    metrics.gauge("recstream_catalog_read_through_age_seconds",
                  lambda: {(): round(time.time() - progress.as_of, 3)} if progress.as_of else {})
