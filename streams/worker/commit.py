"""The worker's state transaction: a batch's table writes and output records stored and sent
together (`BatchCommit`), and sending through the transport producer with every ack awaited."""

from __future__ import annotations

import asyncio

_declared: set[str] = set()


async def send_all(app, messages) -> int:
    """Send (topic, key, value[, partition]) tuples through the transport producer and wait
    for every ack. One round trip per batch instead of faust's per-message wrapper; the
    caller's batch is acked (and so committable) only after this returns, so delivery stays
    at-least-once, and a failed send raises here instead of being lost.

    Each topic is declared (created with its partitions and config) before its first send:
    relying on the broker's auto-creation left a worker stuck for good when the embedded broker
    did not create an output topic (the producer waits on metadata for the whole request
    timeout, and every changelog write queues behind it), and production clusters often
    disable auto-creation."""
    pending = []
    for msg in messages:
        topic, key, value = msg[0], msg[1], msg[2]
        partition = msg[3] if len(msg) > 3 else None
        name = topic if isinstance(topic, str) else await _declare(topic)
        pending.append(await app.producer.send(name, key, value, partition, None, None))
    if pending:
        await asyncio.gather(*pending)
    return len(pending)


class BatchCommit:
    """One pipeline batch's table writes and output records, stored and sent together (see
    streams.kafka.batching for why).

    `table(t, partition)` is the pipeline's view of a table partition: reads go straight to that
    partition's RocksDB, writes are buffered. `send(topic, key, value)` queues an output.
    `commit()` stores each table partition's writes in one RocksDB write batch, queues them on
    the changelog and the outputs on their topics as whole record batches per partition (keys
    partitioned as the default partitioner does), waits for every ack, and then records the
    changelog offsets faust's recovery starts from, as faust does after each changelog ack.

    The RocksDB write happens before commit's first await, and callers apply a batch with no
    await between its reads and `commit()`, so two batches on one event loop (direct ingest and
    the signals agent) never interleave a read-modify-write; from that write on, batches queue
    their records in order (a FIFO lock), so the changelog keeps the order of the local writes.
    A crash before the acks: the input is not committed either, replayed events are duplicates,
    and the pipeline re-writes a duplicate's profile (heals the changelog)."""

    _queueing: asyncio.Lock | None = None  # one batch queues at a time: per-partition record order

    def __init__(self, app):
        self.app = app
        self._tables: dict[tuple[str, int], tuple[object, object]] = {}
        self._out: list[tuple[object, bytes, bytes]] = []

    def table(self, table, partition: int):
        from streams.kafka.batching import BufferedTable

        entry = self._tables.get((table.name, partition))
        if entry is None:
            view = BufferedTable(table.data._db_for_partition(partition).get)
            entry = self._tables[(table.name, partition)] = (table, view)
        return entry[1]

    def send(self, topic, key: bytes, value: bytes) -> None:
        self._out.append((topic, key, value))

    async def commit(self) -> None:
        from faust.types import TP

        from streams.kafka.batching import enqueue_partition

        rows, changelogs = self._store()
        if BatchCommit._queueing is None:
            BatchCommit._queueing = asyncio.Lock()
        # FIFO from the local write on: changelog records leave in the order the batches wrote
        # RocksDB, even when a batch waits on a first topic declaration or on metadata
        async with BatchCommit._queueing:
            producer = self.app.producer._ensure_producer()
            for topic, key, value in self._out:
                name = await _declare(topic)
                partition = (await partitioner(producer, name))(key)
                rows.setdefault((name, partition), []).append((key, value))
            if not rows:
                return
            queued = await asyncio.gather(*(enqueue_partition(producer, name, partition, part)
                                            for (name, partition), part in rows.items()))
        acked = dict(zip(rows, await asyncio.gather(*(asyncio.gather(*futures) for futures in queued)), strict=True))
        for table, name, partition in changelogs:
            table.data.set_persisted_offset(TP(name, partition), max(acked[(name, partition)]))

    def _store(self) -> tuple[dict, list]:
        """Each table partition's writes into its RocksDB (one write batch), and as changelog rows."""
        from rocksdict import WriteBatch

        rows: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
        changelogs: list[tuple[object, str, int]] = []
        for (_, partition), (table, view) in self._tables.items():
            if not view.writes:
                continue
            batch = WriteBatch(raw_mode=True)
            written = [(key.encode(), value) for key, value in view.writes.items()]
            for key, value in written:
                batch.put(key, value)
            table.data._db_for_partition(partition).write(batch)
            name = table.changelog_topic.get_topic_name()
            rows[(name, partition)] = written
            changelogs.append((table, name, partition))
        return rows, changelogs


async def _declare(topic) -> str:
    name = topic.get_topic_name()
    if name not in _declared:
        await topic.maybe_declare()
        _declared.add(name)
    return name


_partitioners: dict[str, object] = {}


def known_partitioner(producer, topic: str):
    """The default partitioner for `topic` (murmur2 over its partition count, as the producer
    picks partitions), or None while the producer has no metadata for the topic."""
    partitioner = _partitioners.get(topic)
    if partitioner is None:
        partitions = producer._metadata.partitions_for_topic(topic)
        if not partitions:
            return None
        from streams.core.ingest import KeyPartitioner

        partitioner = _partitioners[topic] = KeyPartitioner(len(partitions))
    return partitioner


async def partitioner(producer, topic: str):
    """`known_partitioner`, fetching the topic's metadata first when the producer lacks it."""
    found = known_partitioner(producer, topic)
    if found is None:
        await producer.partitions_for(topic)  # waits for the topic's metadata
        found = known_partitioner(producer, topic)
    return found
