"""A partition's image records through the pure image pipeline (streams.core.image_pipeline):
the consumer table, the global counts' share, the experiment ledger, and the records to send."""

from __future__ import annotations

import functools
import time

from streams.core.image_pipeline import ImageBatch, dump_counts
from streams.core.ledger import Ledger
from streams.core.metrics import metrics
from streams.worker import tables, topics
from streams.worker.app import image_config, pipeline_config
from streams.worker.runtime import event_context
from streams.worker.state import image_counts, image_stats, pools


def apply_images(partition: int, anchor, records: list) -> list[tuple]:
    """Apply one partition's image records (table writes within `anchor`'s event context) and
    return the (topic, key, value) records to send."""
    with event_context(anchor):
        partial = image_counts.partial(partition, functools.partial(tables.image_stats.get, f"p{partition}"))
        ledger = Ledger(tables.attribution, partition, pipeline_config.attribution, kind="images")
        batch = ImageBatch(image_config, tables.image_consumers, partial, pools, image_stats, ledger)
        outputs = batch.run(records)
        if ledger.changed:  # every worker's readout
            tables.experiment_tallies[ledger.tally_key] = ledger.dump_tally()
        if image_counts.flush_due(partition, time.time()):
            tables.image_stats[f"p{partition}"] = dump_counts(partial)
    metrics.inc("recstream_image_events_applied_total", by=batch.applied)
    metrics.inc("recstream_duplicates_total", by=batch.duplicates)
    for topic, _, _ in outputs:
        metrics.inc("recstream_records_sent_total", topic=topic)
    return [(topics.outputs[t], k, v) for t, k, v in outputs]
