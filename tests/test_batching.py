"""Batched writes: the buffered table view, and whole record batches on the embedded broker."""

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.kafka.batching import BufferedTable, enqueue_partition
from streams.kafka.transaction import StateTransaction


def test_reads_see_the_batchs_own_writes_before_the_store():
    store = {b"a": b"1", b"b": b"2"}
    reads = []

    def read(key):
        reads.append(key)
        return store.get(key)

    table = BufferedTable(read)
    table["a"] = b"9"
    assert (table.get("a"), table["b"], table.get("c"), table.get("c", b"default")) == (b"9", b"2", None, b"default")
    assert "a" in table and "c" not in table
    assert reads == [b"b", b"c", b"c", b"c"]  # "a" never went to the store once written
    assert store == {b"a": b"1", b"b": b"2"}  # nothing reaches the store until the caller writes it
    assert table.writes == {"a": b"9"}
    with pytest.raises(KeyError):
        table["c"]
    with pytest.raises(TypeError):
        table["a"] = None


async def _topic(bootstrap: str, name: str, partitions: int = 2) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def _read(bootstrap: str, topic: str, partition: int, count: int) -> list:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    out = []
    try:
        async with asyncio.timeout(30):
            while len(out) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    out += [(r.offset, r.key, r.value) for r in records]
    finally:
        await consumer.stop()
    return out


def _rows(n: int, tag: str = "") -> list:
    return [(f"k{i}".encode(), f"{tag}v{i}-".encode() * 20) for i in range(n)]


def _produce(bootstrap: str, topic: str, max_batch_size: int, use):
    """Create `topic`, run `await use(producer)` with a producer of that batch size, return its result."""
    async def scenario():
        await _topic(bootstrap, topic)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=max_batch_size)
        await producer.start()
        try:
            return await use(producer)
        finally:
            await producer.stop()
    return asyncio.run(scenario())


def test_rows_leave_in_full_batches_in_order_and_report_each_batchs_last_offset(broker):
    topic = "batching-order"

    async def two_queues(producer):
        # two queues on one partition, the second queued while the first is still in flight
        first = await enqueue_partition(producer, topic, 1, _rows(100, "a"))
        second = await enqueue_partition(producer, topic, 1, _rows(10, "b"))
        return await asyncio.gather(*first), await asyncio.gather(*second)

    first, second = _produce(broker.bootstrap, topic, 4096, two_queues)
    assert len(first) > 1  # 100 records of ~90 bytes do not fit in one 4 KB batch
    assert first == sorted(first) and first[-1] == 99 and second == [109]
    got = asyncio.run(_read(broker.bootstrap, topic, 1, 110))
    assert got == [(i, k, v) for i, (k, v) in enumerate(_rows(100, "a") + _rows(10, "b"))]


def test_with_a_one_byte_batch_size_every_record_is_its_own_batch(broker):
    """RECSTREAM_SINGLE_RECORD_BATCHES sets the producer's batch size to 1: the embedded
    broker's ListOffsets bug then cannot hide a batch's tail."""
    topic = "batching-single"

    async def five(producer):
        return await asyncio.gather(*await enqueue_partition(producer, topic, 0, _rows(5)))

    assert _produce(broker.bootstrap, topic, 1, five) == [0, 1, 2, 3, 4]  # one future (one batch) per record
    assert [o for o, _, _ in asyncio.run(_read(broker.bootstrap, topic, 0, 5))] == [0, 1, 2, 3, 4]


def test_a_transaction_stores_locally_then_sends_changelog_and_outputs_and_reports_changelog_offsets(broker, tmp_path):
    """The state transaction every writer shares (user and image pipelines, the rebuild): the
    local RocksDB write is synchronous and complete before anything is sent; the changelog
    receives exactly the batch's writes; the returned offsets are the changelog's last ones."""
    from rocksdict import Options, Rdict

    store = Rdict(str(tmp_path / "p1"), options=Options(raw_mode=True))  # as faust opens its stores
    store[b"old"] = b"kept"
    changelog, out = "txn-changelog", "txn-out"

    async def one_batch(producer):
        await _topic(broker.bootstrap, out)
        txn = StateTransaction()
        profiles = txn.table(changelog, 1, store)
        assert profiles.get("old") == b"kept"  # reads fall through to the store
        for i in range(30):
            profiles[f"u{i}"] = f"p{i}".encode()
        profiles["u0"] = b"again"  # a batch writes a key once: its last value
        txn.send(out, b"u1", b"list", partition=0)
        rows = txn.store()
        assert store[b"u0"] == b"again" and store[b"u29"] == b"p29"  # stored before the first await
        return await txn.commit(producer, rows)

    offsets = _produce(broker.bootstrap, changelog, 2048, one_batch)
    assert offsets == {(changelog, 1): 29}  # outputs are not changelogs
    got = asyncio.run(_read(broker.bootstrap, changelog, 1, 30))
    assert [(k, v) for _, k, v in got] == [(b"u0", b"again")] + [(f"u{i}".encode(), f"p{i}".encode()) for i in range(1, 30)]
    assert [(k, v) for _, k, v in asyncio.run(_read(broker.bootstrap, out, 0, 1))] == [(b"u1", b"list")]
    store.close()


def test_a_transaction_leaves_in_one_produce_request_whatever_partitions_it_wrote(broker):
    """The producer keeps one request in flight per broker: a transaction whose first partition
    left alone made the others wait a round trip for it (two requests a commit, one more wait
    for the acks). All of a transaction's batches are queued before the sender wakes, so they
    leave together; counted on the real client's requests to the real broker."""
    changelog, out = "one-request-changelog", "one-request-out"

    async def count_requests(producer):
        await _topic(broker.bootstrap, out)
        for topic in (changelog, out):
            await producer.partitions_for(topic)  # metadata known: queueing never waits for it
        sender, requests = producer._sender, []
        send = sender._send_produce_req

        async def counted(node_id, batches):
            requests.append(sorted(batches))
            return await send(node_id, batches)

        sender._send_produce_req = counted
        for round_ in range(3):
            txn = StateTransaction()
            for partition in range(2):
                txn.table(changelog, partition)[f"u{round_}"] = b"profile"
                txn.send(out, f"u{partition}".encode(), b"list", partition=partition)
            offsets = await txn.commit(producer, txn.store())
            assert offsets == {(changelog, p): round_ for p in range(2)}
        return requests

    requests = _produce(broker.bootstrap, changelog, 16384, count_requests)
    assert len(requests) == 3  # one per transaction
    assert all(len(batches) == 4 for batches in requests)  # 2 changelog and 2 output partitions each
