"""images.keyed -> image_consumers table and image_stats shares; images.chosen and
images.replies out (catalog.images: agents.catalog). Logic: streams.core.image_pipeline."""

from agents.deadletters import decoded_by_partition
from streams.worker import topics
from streams.worker.app import app, keyed_images, settings
from streams.worker.commit import BatchCommit
from streams.worker.faust_shares import counted_batch
from streams.worker.image_batches import apply_images


async def process_images(stream):
    """faust's path over images.keyed (RECSTREAM_DIRECT_INGEST=false); direct ingest reads it itself."""
    async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
        parts = await decoded_by_partition(events, keyed_images, "invalid_internal_record", keyed=True)
        batch = BatchCommit(app)
        async with counted_batch():  # the shares written after the acks (streams.worker.faust_shares)
            for partition, _, records in parts:  # no await from the first read to commit's local write
                apply_images(partition, records, batch)
            await batch.commit()


if not settings.direct_ingest:
    process_images = app.agent(topics.images_keyed, concurrency=1)(process_images)
