"""A partition's image records through the pure image pipeline (streams.core.image_pipeline)
into a state transaction (streams.worker.commit.BatchCommit), as the user pipeline does: the
consumer table, the experiment ledger and the records to send; the global counts' share."""

from __future__ import annotations

import functools

from streams.core.image_pipeline import ImageBatch
from streams.core.ledger import Ledger
from streams.core.metrics import metrics
from streams.worker import tables, topics
from streams.worker.app import image_config, pipeline_config
from streams.worker.commit import BatchCommit
from streams.worker.state import image_counts, image_stats, pools, publish_tally


def apply_images(partition: int, records: list, txn: BatchCommit) -> None:
    """Apply one partition's image records: the consumer states and the experiment ledger into
    `txn` with the outputs (the caller commits it, then writes the shares and the queued tally:
    streams.worker.state.write_shares)."""
    partial = image_counts.partial(partition, functools.partial(tables.image_stats.get, f"p{partition}"))
    ledger = Ledger(txn.table(tables.attribution, partition), partition, pipeline_config.attribution, kind="images")
    batch = ImageBatch(image_config, txn.table(tables.image_consumers, partition), partial, pools, image_stats, ledger)
    outputs = batch.run(records)
    publish_tally(ledger.tally_key, partition, txn.table(tables.attribution, partition).get(ledger.tally_key))
    metrics.inc("recstream_image_events_applied_total", by=batch.applied)
    metrics.inc("recstream_duplicates_total", by=batch.duplicates)
    for topic, key, value in outputs:
        metrics.inc("recstream_records_sent_total", topic=topic)
        txn.send(topics.outputs[topic], key, value)
