"""A partition's image records through the pure image pipeline (streams.core.image_pipeline)
into a state transaction (streams.worker.commit.BatchCommit), as the user pipeline does: the
consumer table, the experiment ledger and the records to send; the global counts' share."""

from __future__ import annotations

import functools
import time

from streams.core.guarded import run_guarded
from streams.core.image_pipeline import ImageBatch
from streams.core.ingest import IMAGES
from streams.core.ledger import Ledger, tally_key
from streams.core.metrics import metrics
from streams.worker import tables, topics
from streams.worker.app import image_config, pipeline_config
from streams.worker.commit import BatchCommit
from streams.worker.state import image_counts, image_stats, pools, publish_tally
from streams.worker.user_batches import send_failures


def apply_images(partition: int, records: list, txn: BatchCommit) -> None:
    """Apply one partition's image records: the consumer states and the experiment ledger into
    `txn` with the outputs (the caller commits it, then writes the shares and the queued tally:
    streams.worker.state.write_shares). Guarded as the user pipeline is: a record the pipeline
    fails on is dead-lettered (internal_error) and the others applied, so it cannot stop the stream."""
    partial = image_counts.partial(partition, functools.partial(tables.image_stats.get, f"p{partition}"))
    consumers, attribution = txn.table(tables.image_consumers, partition), txn.table(tables.attribution, partition)

    arrived = time.time()  # the wall clock, whatever RECSTREAM_CLOCK: it dates messageIds (streams.core.seen.Horizon)

    def make() -> ImageBatch:  # a new ledger per attempt: it caches what it read
        ledger = Ledger(attribution, partition, pipeline_config.attribution, kind="images")
        return ImageBatch(image_config, consumers, partial, pools, image_stats, ledger, arrived,
                          floor=image_counts.floor(partition))
    run = run_guarded(make, records, [consumers, attribution], apply=ImageBatch.run)
    send_failures(txn, run.failed, partition, IMAGES)
    tally = tally_key(partition, "images")
    publish_tally(tally, partition, attribution.get(tally))
    metrics.inc("recstream_image_events_applied_total", by=run.applied)
    metrics.inc("recstream_duplicates_total", by=run.duplicates)
    for topic, key, value in run.outputs:
        if topics.released(topic):  # not while a per-event rebuild catches up
            txn.send(topics.outputs[topic], key, value)
