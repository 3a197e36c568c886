"""Batched writes (no faust): a batch's table writes buffered in memory, and records sent as
whole record batches per topic partition.

faust's per-key table path costs, for every write, a RocksDB put, a changelog send through its
producer buffer and, on the ack, another RocksDB put of the changelog offset; its per-message
send wraps each record in futures and callbacks. Profiled under load that was a fifth of a
worker's main thread. A pipeline batch instead reads and writes a `BufferedTable`, and its
writes leave in one RocksDB write batch and one changelog record batch per partition
(streams.kafka.transaction.StateTransaction, which the bulk rebuild uses as well).

>>> stored = {b"u1": b"old"}
>>> table = BufferedTable(stored.get)
>>> table.get("u1"), table.get("u2")
(b'old', None)
>>> table["u1"] = b"new"
>>> table.get("u1"), stored[b"u1"], table.writes
(b'new', b'old', {'u1': b'new'})
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable


class BufferedTable:
    """One table partition during one batch: reads see the batch's own writes first, then the
    store (`read(key_bytes)`); writes stay in `writes` until the caller stores them. The
    pipeline's mapping interface (get, [] and []=)."""

    __slots__ = ("_read", "writes")

    def __init__(self, read: Callable[[bytes], bytes | None]):
        self._read = read
        self.writes: dict[str, bytes] = {}

    def get(self, key: str, default: bytes | None = None) -> bytes | None:
        value = self.writes.get(key)
        if value is None:
            value = self._read(key.encode())
        return default if value is None else value

    def __getitem__(self, key: str) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: bytes) -> None:
        if value is None:
            raise TypeError("BufferedTable values are bytes (deletes are not batched)")
        self.writes[key] = value

    def update(self, rows: dict[str, bytes]) -> None:
        """Many writes at once (a rebuilt table partition)."""
        self.writes.update(rows)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None


async def enqueue_partition(producer, topic: str, partition: int, rows: Iterable[tuple[bytes | None, bytes]]) -> list:
    """(key, value) rows -> one topic partition, in full record batches built here (no
    per-message send path, no partitioner). Returns the batches' delivery futures (each
    resolves to the RecordMetadata of its first record) once every batch is queued in the
    producer; a batch waits for the previous one of the same partition to leave first, so
    records keep their order. With the producer's max batch size at 1 every record is its own
    batch (the single-record-batch workaround for the embedded broker)."""
    futures = []
    batch = producer.create_batch()
    for key, value in rows:
        while batch.append(key=key, value=value, timestamp=None) is None:
            if batch.record_count() == 0:
                raise ValueError(f"a record for {topic} is larger than the producer's max batch size")
            futures.append(await _send(producer, batch, topic, partition))
            batch = producer.create_batch()
    if batch.record_count():
        futures.append(await _send(producer, batch, topic, partition))
    return futures


async def _send(producer, batch, topic: str, partition: int) -> asyncio.Future:
    count = batch.record_count()
    batch.close()
    return _last_offset(await producer.send_batch(batch, topic, partition=partition), count)


def _last_offset(delivery: asyncio.Future, count: int) -> asyncio.Future:
    """A future of the batch's last offset, chained by a callback (a task per batch cost more)."""
    last = delivery.get_loop().create_future()

    def done(d: asyncio.Future) -> None:
        if last.done():
            return
        if d.cancelled():
            last.cancel()
        elif d.exception() is not None:
            last.set_exception(d.exception())
        else:
            last.set_result(d.result().offset + count - 1)

    delivery.add_done_callback(done)
    return last
