"""Table partitions restored in bulk before faust's own recovery reads what remains.

faust's recovery hands each changelog record through its consumer thread, the conductor, an
event, a queue and a buffer: ~200 µs a record here (100,000 users' state, 282,000 records: 57-69 s
to ready, bench/restore.py), while a worker that joins, restarts on an empty disk or takes over a
dead peer's partitions answers their reads with 503. So once faust knows where each active
partition's store stands (its persisted offset) and where its changelog ends, a partition with at
least `min_records` to read is copied here: a plain consumer reads the range in fetches and each
fetched run goes into the store as one RocksDB write batch with its last offset
(streams.kafka.ranges.copy_records, atomic). faust then seeks past what was copied and reads
the rest as before: records written meanwhile and anything past the time budget. A table's
changelog callback (the catalog's, which feed the in-memory index) gets each copied record in
order, as a `Changed` with the raw key and value, as faust's events of a raw table hand them.

The end comes from faust's highwaters, which already read the true end (patches:
true_end_offsets). Any error here stops the copy where it is: what was written is consistent
(data and offset in one batch), and faust's recovery reads the rest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from streams.kafka.ranges import copy_records, read_partitions
from streams.worker.failpoints import failpoint

log = logging.getLogger(__name__)
BUDGET_SHARE = 0.5  # of faust's broker_request_timeout, which bounds the step this runs in


@dataclass(frozen=True)
class Changed:
    """A copied changelog record as a table's changelog callback reads it (faust's event: `key`,
    `value`, `message`; raw tables' keys and values are bytes)."""

    key: bytes
    value: bytes | None
    message: object


def install(client_kwargs: dict, min_records: int, max_records: int) -> None:
    """Copy in bulk after faust builds the active partitions' start offsets (`min_records` 0: never),
    `max_records` at a time (as faust's own polls: RECSTREAM_MAX_POLL_RECORDS, which bounds what a
    restore leaves pinned in pymalloc's arenas)."""
    from faust.tables.recovery import Recovery

    original = Recovery._build_offsets
    if getattr(original, "_recstream", False) or min_records <= 0:
        return

    async def _build_offsets(self, consumer, tps, destination, title: str) -> None:
        await original(self, consumer, tps, destination, title)
        if title == "active":
            budget = BUDGET_SHARE * self.app.conf.broker_request_timeout
            await restore_in_bulk(self, tps, destination, client_kwargs, min_records, budget, max_records)

    _build_offsets._recstream = True
    Recovery._build_offsets = _build_offsets


def copy_plan(recovery, tps, offsets, min_records: int) -> dict:
    """{aiokafka TopicPartition: (first offset to read, end)} of the partitions worth a bulk copy:
    at least `min_records` between the store's offset and the changelog's end, a RocksDB store."""
    from aiokafka import TopicPartition

    plan = {}
    for tp in tps:
        table = recovery.tp_to_table.get(tp)
        last = recovery.active_highwaters.get(tp)  # faust's: the end - 1
        if table is None or last is None or not hasattr(table.data, "_db_for_partition"):
            continue
        start = max(offsets[tp], -1) + 1
        if last + 1 - start >= min_records:
            plan[TopicPartition(tp.topic, tp.partition)] = (start, last + 1)
    return plan


async def restore_in_bulk(recovery, tps, offsets, client_kwargs: dict, min_records: int, budget_s: float,
                          max_records: int = 500) -> int:
    """Copy the planned partitions into their stores, moving `offsets` (faust's active offsets) along;
    returns the records copied."""
    from faust.types import TP

    plan = copy_plan(recovery, tps, offsets, min_records)
    if not plan:
        return 0
    total = sum(end - start for start, end in plan.values())
    log.info("bulk restore: %d records of %d table partitions", total, len(plan))
    copied, started = 0, time.monotonic()

    async def write(records) -> None:
        nonlocal copied
        tp = TP(records[0].topic, records[0].partition)
        table = recovery.tp_to_table[tp]
        offsets[tp] = copy_records(table.data._db_for_partition(tp.partition), records, table.data.offset_key)
        copied += len(records)
        failpoint("bulk_restore_copied")
        if table._on_changelog_event is not None:
            for record in records:
                await table.on_changelog_event(Changed(record.key, record.value, record))

    try:
        await read_partitions(client_kwargs, plan, budget_s, write, started + budget_s, max_records)
    except Exception as exc:  # noqa: BLE001 - what was copied is whole; faust's recovery reads the rest
        log.warning("bulk restore stopped (%s: %s); faust's recovery reads the rest", type(exc).__name__, exc)
    seconds = time.monotonic() - started
    log.info("bulk restore: %d of %d records in %.1f s (%.0f records/s)%s", copied, total, seconds,
             copied / max(seconds, 1e-9), "" if copied >= total else "; faust's recovery reads the rest")
    return copied
