"""A partition's batch of user records through the pure pipeline (streams.core.pipeline) into
a state transaction (streams.worker.commit.BatchCommit): shared by the signals agent, ingest's
single hop and the list refresh."""

from __future__ import annotations

import functools
import logging
import time

from streams.core.coengagement import MARK, read_mark, settle
from streams.core.guarded import run_guarded
from streams.core.ingest import IMAGES, SIGNALS
from streams.core.ledger import tally_key
from streams.core.letters import failure_key, failure_letter, failure_position
from streams.core.metrics import metrics
from streams.core.pipeline import PartitionBatch
from streams.core.records import decode_fans, fans_key
from streams.worker import tables, topics
from streams.worker.app import clock, pipeline_config
from streams.worker.commit import BatchCommit
from streams.worker.logs import dead_lettered
from streams.worker.reads import read
from streams.worker.runtime import stored_items
from streams.worker.state import popularity, popularity_view, publish_tally

log = logging.getLogger(__name__)


def apply_records(partition: int, records: list, batch: BatchCommit, hold=None) -> None:
    """One partition's records through the pipeline; its table writes and outputs go into
    `batch` (the caller commits it, then writes the shares: streams.worker.state.write_shares).
    Used by this agent and by ingest's single hop. `hold`: the list window's (streams.core.throttle)."""
    clock.observe_all(records)
    make, views = _batch_maker(partition, batch, hold)
    started = time.perf_counter()
    run = run_guarded(make, records, views)
    metrics.observe("recstream_recompute_seconds", time.perf_counter() - started)
    send_failures(batch, run.failed, partition)
    _publish_tally(partition, views)  # published with the shares, after the batch is acknowledged
    metrics.inc("recstream_signals_applied_total", by=run.applied)
    metrics.inc("recstream_duplicates_total", by=run.duplicates)
    _send(batch, run.outputs)


def send_failures(batch: BatchCommit, failed: list, partition: int, topic: str = SIGNALS) -> None:
    """The records a guarded batch failed on (core.guarded: (record, why)), dead-lettered `internal_error`
    into `batch`; `topic`: the internal topic they were read from (logical name), for those without an input
    position: the letter names it as this app's topic."""
    name = {SIGNALS: topics.signals, IMAGES: topics.images_keyed}[topic].get_topic_name()
    for record, why in failed:
        batch.send(topics.deadletter, failure_key(record), failure_letter(record, why, partition, name))
        # a bug or a bound of ours: at ERROR, a few lines an exception type
        dead_lettered("internal_error", *failure_position(record, partition, name), f"{why} while applying",
                      logging.ERROR, sample=("internal_error", why))


def fans_in(partition: int):
    """An artist's number of fans in `partition`, as stored (for a read's refresh quota, streams.core.throttle)."""
    return lambda artist: len(decode_fans(read(tables.fans, fans_key(artist, partition), partition)))


def refresh_users(partition: int, users: list[str], batch: BatchCommit) -> int:
    """Rebuild these users' lists into `batch` (agents.refresh); returns how many changed."""
    return _send(batch, _batch_maker(partition, batch)[0]().refresh(users))


def build_owed(partition: int, owed: dict[str, str], batch: BatchCommit, hold) -> int:
    """Build the lists the window held back (user -> trigger) into `batch`, guarded as a batch of
    records is (a list that fails to build is logged and skipped); how many were sent."""
    metrics.inc("recstream_held_lists_built_total", by=len(owed))
    make, views = _batch_maker(partition, batch, hold)
    run = run_guarded(make, list(owed.items()), views, apply=lambda pipeline, pairs: pipeline.owed(dict(pairs)))
    for (user, trigger), why in run.failed:
        metrics.inc("recstream_held_list_failures_total")
        log.error("the held list of user %r (trigger %r) failed to build: %s", user, trigger, why)
    _publish_tally(partition, views)  # the exposures the lists counted
    return _send(batch, run.outputs)


def _publish_tally(partition: int, views) -> None:
    key = tally_key(partition)
    publish_tally(key, partition, views[3].get(key))  # every worker's readout


def _send(batch: BatchCommit, outputs) -> int:
    for out in outputs:
        if topics.released(out.topic):  # not while a per-event rebuild catches up
            batch.send(topics.outputs[out.topic], out.key, out.value, out.partition)
    return len(outputs)


def _batch_maker(partition: int, batch: BatchCommit, hold=None):
    """A PartitionBatch factory over `batch`'s table views, the popularity share and view, now; the views."""
    tables.ensure_catalog_loaded()
    now = clock.now()
    partial = popularity.partial(partition, functools.partial(tables.popularity.get, f"p{partition}"),
                                 functools.partial(_settle_pairs, partition))
    view = popularity_view(now)
    views = [batch.table(t, partition) for t in (tables.affinity, tables.recommendations, tables.fans,
                                                    tables.attribution)]
    return (lambda: PartitionBatch(pipeline_config, partition, *views[:3], partial, tables.catalog_index, view, now,
                                   attribution=views[3], hold=hold, arrived=time.time(),
                                   floor=popularity.floor(partition)),
            views)


def _settle_pairs(partition: int, share) -> None:
    """A share just loaded (a start, a partition taken over): recounted from the partition's profiles
    when it was not written after their last batch that moved its pairs (a kill -9; streams.core.coengagement)."""
    mark, held = read_mark(read(tables.affinity, MARK, partition)), share.seq
    started = time.perf_counter()
    try:
        recounted = settle(share, mark, stored_items(tables.affinity, partition), pipeline_config.model,
                           pipeline_config.top_needed, pipeline_config.coengagement_top_m)
    except Exception:  # the stream goes on with the share as it was (its pairs may lag the profiles)
        log.exception("partition %d: co-engagement recount failed; its share is kept as written", partition)
        return
    if recounted:
        metrics.inc("recstream_coengagement_recounts_total")
        log.warning("partition %d: co-engagement recounted from its profiles in %.2f s (its share was written "
                    "after batch %d, the profiles after batch %d: the last stop was not clean)",
                    partition, time.perf_counter() - started, held, mark)
