"""Offset ranges read whole (plain aiokafka, no faust): the bulk rebuild's input and catalog reads,
`emit`'s reads, and a table partition's changelog copied into its RocksDB store (`copy_records`,
the worker's bulk restore: streams.worker.restore)."""

from __future__ import annotations

import time

READ_BATCH = 20000


async def read_partitions(client: dict, ranges: dict, idle_timeout_s: float, handle,
                          deadline: float | None = None, max_records: int = READ_BATCH) -> None:
    """Every record of each topic partition in its offset range (`ranges`: topic partition ->
    (start, end), end exclusive) -> `await handle(records)`, in raw batches of up to `max_records`,
    one partition's at a time and in offset order. With a `deadline` (time.monotonic()), returns
    once it passes, the rest unread."""
    from aiokafka import AIOKafkaConsumer

    from streams.kafka.direct import ISOLATION
    from streams.kafka.offsets import stop_consumer

    remaining = {tp for tp, (start, end) in ranges.items() if end > start}
    if not remaining:
        return
    consumer = AIOKafkaConsumer(**client, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20, fetch_max_wait_ms=50,
                                isolation_level=ISOLATION)  # what the live worker applies
    await consumer.start()
    try:
        consumer.assign(list(remaining))
        for tp in remaining:
            consumer.seek(tp, ranges[tp][0])  # below the log start: auto_offset_reset moves it up
        last_progress = time.monotonic()
        while remaining and (deadline is None or time.monotonic() < deadline):
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=max_records)
            for tp, records in batch.items():
                start, end = ranges[tp]
                records = [r for r in records if start <= r.offset < end]  # a fetch returns whole batches
                if records:
                    await handle(records)
                    last_progress = time.monotonic()
            for tp in list(remaining):
                if await consumer.position(tp) >= ranges[tp][1]:
                    remaining.discard(tp)
            if time.monotonic() - last_progress > idle_timeout_s:
                waiting = sorted(map(str, remaining))
                raise TimeoutError(f"no progress for {idle_timeout_s:.0f} s reading {waiting}")
    finally:
        await stop_consumer(consumer)


def copy_records(db, records, offset_key: bytes) -> int:
    """One partition's changelog `records` (offset order) into `db`, a rocksdict Rdict in raw mode,
    as faust's recovery applies them (a value puts its key, a tombstone deletes it), in ONE write batch
    holding the last record's offset under `offset_key` as well: a kill -9 leaves the store at a batch
    boundary with the offset it reached, never data without its offset or the reverse (faust writes
    the two apart). Records without a key (never a table row) are skipped. Returns the last offset.

    >>> import tempfile
    >>> from types import SimpleNamespace as Record
    >>> from rocksdict import Options, Rdict
    >>> db = Rdict(tempfile.mkdtemp(), options=Options(raw_mode=True))
    >>> copy_records(db, [Record(key=b"u1", value=b"a", offset=7), Record(key=b"u2", value=b"b", offset=8),
    ...                   Record(key=None, value=b"?", offset=9), Record(key=b"u1", value=None, offset=10)], b"@")
    10
    >>> db.get(b"u1"), db[b"u2"], db[b"@"]
    (None, b'b', b'10')
    >>> db.close()
    """
    from rocksdict import WriteBatch

    batch = WriteBatch(raw_mode=True)
    for record in records:
        if record.key is None:
            continue
        if record.value is None:
            batch.delete(record.key)
        else:
            batch.put(record.key, record.value)
    last = records[-1].offset
    batch.put(offset_key, str(last).encode())
    db.write(batch)
    return last
