"""images.keyed -> image_consumers table and image_stats shares; images.chosen and
images.replies out. catalog.images -> the image_catalog table. Logic: streams.core.image_pipeline."""


from agents.deadletters import send_dead_letter
from streams.core.events import Rejected
from streams.core.image_pipeline import (
    decode_image_catalog,
)
from streams.core.ingest import decode_or_reject
from streams.core.metrics import metrics
from streams.core.records import decode_image_keyed
from streams.worker import tables, topics
from streams.worker.app import app, settings
from streams.worker.commit import send_all
from streams.worker.image_batches import apply_images
from streams.worker.runtime import by_partition
from streams.worker.state import image_counts


@app.agent(topics.images_keyed, concurrency=1)
async def process_images(stream):
    async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
        for partition, group in by_partition(events):
            records = [r for r in [await _decode(e) for e in group] if r is not None]
            await send_all(app, apply_images(partition, group[-1], records))


async def _decode(event):
    record = decode_or_reject(decode_image_keyed, event.value, "invalid_internal_record")
    if isinstance(record, Rejected):
        await send_dead_letter(event, record.reason, record.detail)
        return None
    return record


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
    image_counts.forget(tp.partition for tp in revoked if tp.topic == topics.images_keyed.get_topic_name())
