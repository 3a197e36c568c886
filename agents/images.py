"""images.keyed -> image_consumers table and image_stats shares; images.chosen and
images.replies out. catalog.images -> the image_catalog table. Logic: streams.core.image_pipeline."""

import functools
import time

from agents.deadletters import decoded, decoded_by_partition
from streams.core.image_pipeline import decode_image_catalog
from streams.core.metrics import metrics
from streams.core.records import decode_image_keyed
from streams.worker import tables, topics
from streams.worker.app import app, settings
from streams.worker.commit import BatchCommit
from streams.worker.image_batches import apply_images
from streams.worker.state import write_shares


async def process_images(stream):
    """faust's path over images.keyed (RECSTREAM_DIRECT_INGEST=false); direct ingest reads it itself."""
    async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
        parts = await decoded_by_partition(events, decode_image_keyed, "invalid_internal_record", keyed=True)
        batch = BatchCommit(app)
        for partition, _, records in parts:  # no await from the first read to commit's local write
            apply_images(partition, records, batch)
        await batch.commit()
        write_shares(now=time.time())  # after the acks: a share is never ahead of the state it counts


if not settings.direct_ingest:
    process_images = app.agent(topics.images_keyed, concurrency=1)(process_images)


@app.agent(topics.image_catalog, concurrency=1)
async def load_image_catalog(stream):
    async for event in stream.events():
        record = await decoded(event, functools.partial(decode_image_catalog, key=event.message.key),
                               "invalid_image_catalog")
        if record is None:
            continue
        tables.image_catalog[record.merchant_id] = event.value
        metrics.inc("recstream_image_catalog_records_total")

