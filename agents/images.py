"""images.keyed -> image_consumers table and image_stats shares; images.chosen and
images.replies out. catalog.images -> the image_catalog table. Logic: streams.image_pipeline."""

import functools
import time

from agents.deadletters import send_dead_letter
from streams import tables, topics
from streams.app import app, image_config, pipeline_config, settings
from streams.events import Rejected
from streams.faustutil import by_partition, event_context, send_all
from streams.image_pipeline import ImageBatch, Pools, decode_image_catalog, dump_counts, load_counts
from streams.images import merge_counts
from streams.ingest import decode_or_reject
from streams.ledger import Ledger
from streams.metrics import metrics
from streams.popularity import Shares
from streams.records import decode_image_keyed

pools = Pools(tables.image_catalog, image_config.rules)
shares = Shares(load_counts, lambda parts: merge_counts(parts, image_config.half_life_s),
                flush_s=settings.popularity_flush_s)


def image_stats():
    return shares.view(tables.image_stats.items(), time.time())


@app.agent(topics.images_keyed, concurrency=1)
async def process_images(stream):
    async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
        for partition, group in by_partition(events):
            records = []
            for event in group:
                record = decode_or_reject(decode_image_keyed, event.value, "invalid_internal_record")
                if isinstance(record, Rejected):
                    await send_dead_letter(event, record.reason, record.detail)
                else:
                    records.append(record)
            with event_context(group[-1]):
                partial = shares.partial(partition, functools.partial(tables.image_stats.get, f"p{partition}"))
                ledger = Ledger(tables.attribution, partition, pipeline_config.attribution, kind="images")
                batch = ImageBatch(image_config, tables.image_consumers, partial, pools, image_stats, ledger)
                outputs = batch.run(records)
                if ledger.changed:  # every worker's readout
                    tables.experiment_tallies[ledger.tally_key] = ledger.dump_tally()
                if shares.flush_due(partition, time.time()):
                    tables.image_stats[f"p{partition}"] = dump_counts(partial)
            metrics.inc("recstream_image_events_applied_total", by=batch.applied)
            metrics.inc("recstream_duplicates_total", by=batch.duplicates)
            for topic, _, _ in outputs:
                metrics.inc("recstream_records_sent_total", topic=topic)
            await send_all(app, [(topics.outputs[t], k, v) for t, k, v in outputs])


@app.agent(topics.image_catalog, concurrency=1)
async def load_image_catalog(stream):
    async for event in stream.events():
        record = decode_or_reject(decode_image_catalog, event.value, "invalid_image_catalog")
        if isinstance(record, Rejected):
            await send_dead_letter(event, record.reason, record.detail)
            continue
        tables.image_catalog[record.merchant_id] = event.value
        metrics.inc("recstream_image_catalog_records_total")


@app.on_partitions_revoked.connect
async def _revoked(app, revoked, **kwargs):
    shares.forget(tp.partition for tp in revoked if tp.topic == topics.images_keyed.get_topic_name())
