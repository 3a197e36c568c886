"""signals.keyed -> affinity, fans and recommendations tables; affinity.updates and
recommendations out. All logic is in streams.core.pipeline; this only moves bytes."""

from agents.deadletters import decoded_by_partition
from streams.worker import topics
from streams.worker.app import app, keyed_records, settings
from streams.worker.commit import BatchCommit
from streams.worker.faust_shares import counted_batch
from streams.worker.user_batches import apply_records


async def process_users(stream):
    """faust's path over signals.keyed (RECSTREAM_DIRECT_INGEST=false); direct ingest reads it itself."""
    async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
        parts = await decoded_by_partition(events, keyed_records, "invalid_internal_record", keyed=True)
        batch = BatchCommit(app)
        async with counted_batch():  # the shares written after the acks (streams.worker.faust_shares)
            for partition, _, records in parts:  # no await from the first read to commit's local write
                apply_records(partition, records, batch)
            await batch.commit()  # one round of acks per batch, not one per partition


if not settings.direct_ingest:
    process_users = app.agent(topics.signals, concurrency=1)(process_users)  # stateful: concurrency 1 (faust #606)

