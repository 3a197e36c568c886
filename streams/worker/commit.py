"""The worker's state transaction: a batch's table writes and output records stored and sent
together (`BatchCommit`), and sending through the transport producer with every ack awaited."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

from streams.kafka.transaction import StateTransaction
from streams.worker import fence, hot, local_state
from streams.worker.failpoints import failpoint

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


class BatchCommit(StateTransaction):
    """The worker's state transaction (streams.kafka.transaction.StateTransaction) over faust
    tables and topics: `table(t, partition)` is that partition's RocksDB behind `t`, outputs name
    faust topics (declared before their first send, keys partitioned as the default partitioner
    does), and once the changelog acks are in, each table records the offsets faust's recovery
    starts from, as faust does after each changelog ack.

    Callers apply a batch with no await between its reads and `commit()`, whose RocksDB write
    comes before its first await, so two batches on one event loop (direct ingest and the
    signals agent) never interleave a read-modify-write; from that write on, batches queue their
    records in order (a FIFO lock), so the changelog keeps the order of the local writes."""

    _queueing: asyncio.Lock | None = None  # one batch queues at a time: per-partition record order

    def __init__(self, app, replayable: bool = True):
        super().__init__()
        self.app = app
        # False: no uncommitted input rewrites this batch's writes after a kill -9 before its acks
        # (a list refresh), so its stores are noted as in flight meanwhile (local_state.note_in_flight)
        self.replayable = replayable
        self._faust_tables: dict[str, object] = {}
        self.parked = 0  # messages this batch parked on the pending topic (acknowledged before `commit`)

    def table(self, table, partition: int):
        name = table.changelog_topic.get_topic_name()
        self._faust_tables[name] = table
        return super().table(name, partition, table.data._db_for_partition(partition))

    async def commit(self) -> None:
        from faust.types import TP

        in_flight = not self.replayable and self.changelogs()
        if in_flight:
            local_state.note_in_flight(Path(self.app.conf.tabledir), in_flight)
        rows = self.store()
        if in_flight:
            failpoint("unreplayable_batch_stored")
        hot.written(rows)  # in the same synchronous step as the RocksDB write
        fence.unsent.stored(rows)  # until acked: a worker fenced out removes these stores (streams.worker.fence)
        if self.parked:
            failpoint("parked_batch_stored")
        if BatchCommit._queueing is None:
            BatchCommit._queueing = asyncio.Lock()
        async with BatchCommit._queueing:  # FIFO from the local write on (see the class docstring)
            producer = self.app.producer._ensure_producer()
            queued = await self.enqueue(producer, rows, functools.partial(_route, producer))
        offsets = await self.acked(queued)
        fence.unsent.acked(rows)
        if in_flight:
            local_state.clear_in_flight(Path(self.app.conf.tabledir))
        for (name, partition), offset in offsets.items():
            data, tp = self._faust_tables[name].data, TP(name, partition)
            # never backwards: two writers share a table partition (the user and image pipelines
            # both write attribution), and one's acks can complete after a later one's; recovery
            # replays the changelog from this offset over the local store, so a regressed offset
            # would lay older values over newer local ones
            if offset > (data.persisted_offset(tp) or -1):
                data.set_persisted_offset(tp, offset)


async def _route(producer, topic, key: bytes | None, partition: int | None) -> tuple[str, int]:
    name = await _declare(topic)
    return name, partition if partition is not None else (await partitioner(producer, name))(key)


def mark_declared(names) -> None:
    """Topics created before the worker started (streams.cli.worker.prepare_topics): no declare at their first send."""
    _declared.update(names)


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
