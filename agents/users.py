"""signals.keyed -> affinity, fans and recommendations tables; affinity.updates and
recommendations out. All logic is in streams.pipeline; this only moves bytes."""

import functools
import time

from agents.deadletters import send_dead_letter
from streams import tables, topics
from streams.app import app, clock, pipeline_config, settings
from streams.events import Rejected
from streams.faustutil import BatchCommit, by_partition, event_context, view_without_blocking
from streams.ingest import decode_or_reject, failure_letter
from streams.metrics import metrics
from streams.pipeline import PartitionBatch, run_guarded
from streams.popularity import PopularityView, Shares, dump_partial, load_partial
from streams.records import decode_keyed

shares = Shares(load_partial, lambda parts: PopularityView(parts, pipeline_config.trending_half_life_s),
                flush_s=settings.popularity_flush_s, dump=dump_partial)


@app.agent(topics.signals, concurrency=1)  # stateful: concurrency 1 (faust #606)
async def process_users(stream):
    async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
        parts = []
        for partition, group in by_partition(events):  # decoding may await (a dead letter): all of it first
            parts.append((partition, group[-1], [r for r in [await _decode(e) for e in group] if r is not None]))
        batch = BatchCommit(app)
        for partition, anchor, records in parts:  # no await from the first read to commit's local write
            apply_records(partition, anchor, records, batch)
        await batch.commit()  # one round of acks per batch, not one per partition


def apply_records(partition: int, anchor, records: list, batch: BatchCommit) -> None:
    """One partition's records through the pipeline; its table writes and outputs go into
    `batch` (the caller commits it). `anchor`: an event of that partition (of any
    co-partitioned topic), for the popularity share's write through faust. Used by this agent
    and by ingest's single hop."""
    clock.observe_all(records)
    make, views, partial, now = _batch_maker(partition, batch)
    started = time.perf_counter()
    run = run_guarded(make, records, views)
    metrics.observe("recstream_recompute_seconds", time.perf_counter() - started)
    for record, why in run.failed:
        metrics.inc("recstream_dead_letters_total", reason="internal_error")
        batch.send(topics.deadletter, None, failure_letter(record, why, partition))
    tally_key = f"tally:{partition}"
    tally = views[3].writes.get(tally_key)  # the batch's experiment counts moved: every worker's readout
    with event_context(anchor):
        if tally is not None:
            tables.experiment_tallies[tally_key] = tally
        if shares.flush_due(partition, now):
            tables.popularity[f"p{partition}"] = dump_partial(partial)
    metrics.inc("recstream_signals_applied_total", by=run.applied)
    metrics.inc("recstream_duplicates_total", by=run.duplicates)
    for out in run.outputs:
        metrics.inc("recstream_records_sent_total", topic=out.topic)
        batch.send(topics.outputs[out.topic], out.key, out.value)


def refresh_users(partition: int, users: list[str], batch: BatchCommit) -> int:
    """Rebuild these users' lists into `batch` (agents.refresh); returns how many changed."""
    make, _, _, _ = _batch_maker(partition, batch)
    outputs = make().refresh(users)
    for out in outputs:
        batch.send(topics.outputs[out.topic], out.key, out.value)
    return len(outputs)


def _batch_maker(partition: int, batch: BatchCommit):
    """A PartitionBatch factory over `batch`'s table views, the popularity share and view, now."""
    tables.ensure_catalog_loaded()
    now = clock.now()
    partial = shares.partial(partition, functools.partial(tables.popularity.get, f"p{partition}"))
    view = view_without_blocking(shares, tables.popularity.items, now)
    views = [batch.table(t, partition) for t in (tables.affinity, tables.recommendations, tables.fans,
                                                    tables.attribution)]
    return (lambda: PartitionBatch(pipeline_config, partition, *views[:3], partial, tables.catalog_index, view, now,
                                   attribution=views[3]),
            views, partial, now)



async def _decode(event):
    record = decode_or_reject(decode_keyed, event.value, "invalid_internal_record")
    if isinstance(record, Rejected):
        await send_dead_letter(event, record.reason, record.detail)
        return None
    return record


@app.on_partitions_revoked.connect
async def _revoked(app, revoked, **kwargs):
    shares.forget(tp.partition for tp in revoked if tp.topic == topics.signals.get_topic_name())
