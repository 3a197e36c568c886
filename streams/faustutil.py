"""Small faust glue that the agents share (no business logic here)."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable
from contextlib import contextmanager
from itertools import groupby

from faust.streams import _current_event


@contextmanager
def event_context(event):
    """Run table writes as if processing `event`: faust's RocksDB store and changelog pick the
    partition from the current event, and in a `take_events` batch that would otherwise be the
    batch's last event, whatever partition the key belongs to."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield event
    finally:
        _current_event.reset(token)


def by_partition(events: Iterable) -> list[tuple[int, list]]:
    """Group a batch by partition, keeping each partition's order."""
    ordered = sorted(events, key=lambda e: e.message.partition)  # stable: order within a partition kept
    return [(p, list(group)) for p, group in groupby(ordered, key=lambda e: e.message.partition)]


async def true_end_offsets(ends: dict, client_kwargs: dict, timeout: float = 10.0) -> dict:
    """Correct ListOffsets ends by reading the last batch of each partition.

    Tansu answers ListOffsets(latest) with the start of the last batch + 1 when that batch holds
    several records. A fetch from that offset returns the whole last batch, and the fetch
    response's high watermark is the true end. On Apache Kafka both agree, so this only costs
    one small fetch per partition."""
    import time

    from aiokafka import AIOKafkaConsumer, TopicPartition

    probe = {TopicPartition(tp.topic, tp.partition): end for tp, end in ends.items() if end > 0}
    if not probe:
        return dict(ends)
    consumer = AIOKafkaConsumer(**client_kwargs, enable_auto_commit=False, group_id=None, fetch_max_wait_ms=50)
    await consumer.start()
    fixed = dict(ends)
    try:
        consumer.assign(list(probe))
        for tp, end in probe.items():
            consumer.seek(tp, end - 1)
        pending = set(probe)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            await consumer.getmany(*pending, timeout_ms=200)
            for tp in list(pending):
                high = consumer.highwater(tp)
                if high is not None:
                    for orig in ends:
                        if orig.topic == tp.topic and orig.partition == tp.partition:
                            fixed[orig] = max(ends[orig], high)
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return fixed


def install_true_end_offsets(client_kwargs: dict) -> None:
    """Make faust's table recovery read changelogs to their true end (see true_end_offsets)."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = AIOKafkaConsumerThread._highwaters
    if getattr(original, "_recstream_fixed", False):
        return

    async def _highwaters(self, partitions):
        ends = dict(await original(self, partitions))
        if self.consumer.in_transaction:
            return ends
        return await true_end_offsets(ends, client_kwargs)

    _highwaters._recstream_fixed = True
    AIOKafkaConsumerThread._highwaters = _highwaters



def install_ack_sanitizer() -> None:
    """Keep offset commits advancing after a crash-induced rebalance (cf. faust #596).

    Seen here after a SIGKILL under load: when the group rebalances again while messages are
    buffered, acks from before the rebalance land after it (faust clears its ack index on
    revoke), so the acked list holds offsets below the committed one and duplicates of
    re-delivered offsets. faust's "first consecutive run" logic then stalls and the committed
    offsets freeze for good. Dropping acked offsets already committed and duplicates before
    faust picks the next offset is safe (those are done) and lets commits advance."""
    from faust.transport.consumer import Consumer

    original = Consumer._new_offset
    if getattr(original, "_recstream_fixed", False):
        return

    def _new_offset(self, tp):
        acked = self._acked[tp]
        if acked:
            committed = self._committed_offset[tp]
            clean = sorted({o for o in acked if committed is None or o >= committed})
            if len(clean) != len(acked):
                acked[:] = clean
                self._acked_index[tp] = set(clean)
        return original(self, tp)

    _new_offset._recstream_fixed = True
    Consumer._new_offset = _new_offset


def owned_partitions(app, table) -> list[int]:
    """The partitions of `table` this worker is active for (empty while rebalancing)."""
    name = table.changelog_topic.get_topic_name()
    return sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == name)


def stored_keys(table, partition: int) -> list[str]:
    """The keys in one partition's RocksDB (faust's own bookkeeping keys left out)."""
    db = table.data._db_for_partition(partition)
    return [key.decode() for key in db.keys() if not key.startswith(b"__faust")]


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


def install_fetch_max_wait(ms: int) -> None:
    """faust hard-codes the consumer's fetch_max_wait_ms at 1500. A broker that holds an empty
    fetch for the whole wait instead of answering when data arrives (seen on the embedded
    broker) then adds up to 1.5 s per hop, and recstream has two hops (input -> re-keyed
    topic -> state). RECSTREAM_FETCH_MAX_WAIT_MS sets it."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(original, "_recstream_fixed", False):
        return

    def _create_worker_consumer(self, *args, **kwargs):
        consumer = original(self, *args, **kwargs)
        consumer._fetch_max_wait_ms = ms  # read when the consumer starts its fetcher
        return consumer

    _create_worker_consumer._recstream_fixed = True
    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer


def view_without_blocking(shares, stored, now: float):
    """A Shares view without stalling the event loop: merging every partition's trending and
    co-engagement counts takes ~0.1 s of Python at full size, which once a second was the
    pipeline's worst latency. The first view is built inline; after that a stale view is
    rebuilt in a thread from a snapshot while agents keep using the previous one.
    `stored`: a callable returning the global table's items (read only when needed)."""
    if shares.current is None:
        return shares.view(stored(), now)
    if shares.stale(now) and not shares.building:
        shares.building = True
        future = asyncio.get_running_loop().run_in_executor(None, shares.build, shares.snapshot(stored()))

        def installed(f):
            shares.building = False
            if f.cancelled():
                return
            if f.exception() is not None:
                logging.getLogger(__name__).warning("popularity view rebuild failed: %r", f.exception())
                return
            shares.install(f.result(), now)

        future.add_done_callback(installed)
    return shares.current


def install_quiet_root_logger() -> None:
    """faust's terminal spinner sets the root logger to DEBUG (its handler wants every record),
    so every logger.debug() in aiokafka and faust built a LogRecord per message even at
    `-l warn`: ~6% of a loaded worker's CPU. Without the spinner the root logger keeps the
    level given with -l."""
    from faust.worker import Worker

    original = Worker.on_setup_root_logger
    if getattr(original, "_recstream_fixed", False):
        return

    def on_setup_root_logger(self, logger, level):
        self.spinner = None
        original(self, logger, level)

    on_setup_root_logger._recstream_fixed = True
    Worker.on_setup_root_logger = on_setup_root_logger


def install_rocksdb_budget(cache_mb: int):
    """One memory budget for every RocksDB store in the worker.

    faust gives each partition store of each table its own block cache and leaves index and
    bloom-filter blocks outside any cache, so a worker's memory grew with its stores and with
    the data (index and filters are proportional to the keys: +360 MB going from 100k to 1M
    users). Here every store shares one LRU cache of `cache_mb` that also holds index and filter
    blocks and is charged for the memtables (a write buffer manager), so RocksDB's memory stays
    near `cache_mb` whatever the number of users. Returns the shared cache."""
    import rocksdict
    from faust.stores.rocksdb import RocksDBOptions

    original = RocksDBOptions.as_options
    if getattr(original, "_recstream_fixed", False):
        return original.cache
    cache = rocksdict.Cache(cache_mb * 1024 * 1024)
    memtables = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
        cache_mb * 1024 * 1024 // 2, False, cache)

    def as_options(self):
        options = original(self)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, True)
        table.set_block_cache(cache)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        options.set_write_buffer_manager(memtables)
        return options

    as_options._recstream_fixed = True
    as_options.cache = cache
    RocksDBOptions.as_options = as_options
    return cache


def rocksdb_cache():
    """The shared RocksDB cache installed by install_rocksdb_budget (None before/without it)."""
    from faust.stores.rocksdb import RocksDBOptions

    return getattr(RocksDBOptions.as_options, "cache", None)


def install_changelog_buffer(max_messages: int) -> None:
    """How many changelog records faust's ProducerBuffer may queue before it stops delivering
    input messages until it has flushed that many (faust: 100). Offsets are still committed only
    after the buffer is flushed."""
    from faust.transport.producer import ProducerBuffer

    ProducerBuffer.max_messages = max_messages


def install_full_flush() -> None:
    """Make faust's pre-commit flush really drain the changelog buffer.

    faust flushes its producer before committing input offsets, but ProducerBuffer.flush()
    returns as soon as 0.1 s passes without a message leaving the buffer, with records still in
    it. When sends are slow (a loaded or shared machine), offsets were then committed ahead of
    changelog records that a crash could lose: events applied to state that neither the
    changelog nor a re-delivery would bring back. This flush waits until the buffer is empty."""
    from faust.transport.producer import ProducerBuffer

    if getattr(ProducerBuffer.flush, "_recstream_fixed", False):
        return

    async def flush(self) -> None:
        while self.size:
            if self.state != "running":
                raise RuntimeError("Cannot flush: Producer not Running")
            self.message_sent.clear()
            try:
                await asyncio.wait_for(self.message_sent.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                continue  # slow, not done: committing now could skip unsent changelog records

    flush._recstream_fixed = True
    ProducerBuffer.flush = flush


class BatchCommit:
    """One pipeline batch's table writes and output records, stored and sent together (see
    streams.batching for why).

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
        from streams.batching import BufferedTable

        entry = self._tables.get((table.name, partition))
        if entry is None:
            view = BufferedTable(table.data._db_for_partition(partition).get)
            entry = self._tables[(table.name, partition)] = (table, view)
        return entry[1]

    def send(self, topic, key: bytes, value: bytes) -> None:
        self._out.append((topic, key, value))

    async def commit(self) -> None:
        from faust.types import TP

        from streams.batching import enqueue_partition

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
        from streams.ingest import KeyPartitioner

        partitioner = _partitioners[topic] = KeyPartitioner(len(partitions))
    return partitioner


async def partitioner(producer, topic: str):
    """`known_partitioner`, fetching the topic's metadata first when the producer lacks it."""
    found = known_partitioner(producer, topic)
    if found is None:
        await producer.partitions_for(topic)  # waits for the topic's metadata
        found = known_partitioner(producer, topic)
    return found
