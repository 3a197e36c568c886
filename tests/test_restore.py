"""The bulk restore (streams.worker.restore) on the embedded broker: which table partitions it
copies, from where to where, into a RocksDB store, with what offset, and what a table's changelog
callback sees. faust's table and recovery are stood in for by the few attributes the restore
reads; the broker, the consumer and RocksDB are real. The whole worker path (faust's recovery
after the copy, a kill -9 midway) is in tests/test_integration_affinity.py."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from types import SimpleNamespace

import pytest
from faust.types import TP
from rocksdict import Options, Rdict

from streams.kafka.admin import ensure_topics
from streams.worker.restore import Changed, restore_in_bulk

pytestmark = pytest.mark.integration
_names = itertools.count()
OFFSET_KEY = b"__faust\x00offset__"


class Store:
    """A faust RocksDB store's parts the restore uses: a raw Rdict per partition and the offset key."""

    offset_key = OFFSET_KEY

    def __init__(self, root):
        self.root, self.dbs = root, {}

    def _db_for_partition(self, partition: int) -> Rdict:
        if partition not in self.dbs:
            self.dbs[partition] = Rdict(str(self.root / str(partition)), options=Options(raw_mode=True))
        return self.dbs[partition]

    def contents(self, partition: int) -> dict:
        return dict(self._db_for_partition(partition).items())


class Table:
    def __init__(self, root, callback=None):
        self.data, self._on_changelog_event, self.seen = Store(root), callback, []

    async def on_changelog_event(self, event) -> None:
        self.seen.append(event)


# (key, value) per partition, in offset order; None: a tombstone
WRITES = {0: [(b"u1", b"a1"), (b"u2", b"b1"), (b"u1", b"a2"), (b"u3", b"c1"), (b"u2", None), (b"u4", b"d1")],
          1: [(b"u5", b"e1"), (b"u5", b"e2"), (b"u6", b"f1")]}


async def write_changelog(bootstrap: str, topic: str) -> None:
    from aiokafka import AIOKafkaProducer

    await ensure_topics({"bootstrap_servers": bootstrap}, {topic: (len(WRITES), {})})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for partition, rows in WRITES.items():
            for key, value in rows:
                await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


@pytest.fixture
def changelog(broker):
    topic = f"restore-{next(_names)}-changelog"
    asyncio.run(write_changelog(broker.bootstrap, topic))
    return topic


def applied(rows) -> dict:
    """What applying `rows` in order leaves in a store."""
    out = {}
    for key, value in rows:
        out.pop(key, None) if value is None else out.__setitem__(key, value)
    return out


def recovery_of(topic: str, table: Table) -> SimpleNamespace:
    tps = [TP(topic, p) for p in WRITES]
    return SimpleNamespace(tp_to_table={tp: table for tp in tps},
                           active_highwaters={tp: len(WRITES[tp.partition]) - 1 for tp in tps})  # faust's: end - 1


def restore(broker, recovery, offsets, min_records=1, budget_s=30.0) -> int:
    return asyncio.run(restore_in_bulk(recovery, set(recovery.tp_to_table), offsets,
                                       {"bootstrap_servers": broker.bootstrap}, min_records, budget_s))


def test_each_partition_is_copied_from_its_stored_offset_to_its_end_with_the_offset_in_the_store(broker, changelog,
                                                                                                 tmp_path):
    table = Table(tmp_path)
    table.data._db_for_partition(0)[b"u1"] = b"a0"  # the store holds offsets 0-1 already (faust's: offset 1)
    offsets = Counter({TP(changelog, 0): 1, TP(changelog, 1): -1})

    assert restore(broker, recovery_of(changelog, table), offsets) == 4 + 3
    assert offsets == {TP(changelog, 0): 5, TP(changelog, 1): 2}  # faust's recovery reads on from there
    assert table.data.contents(0) == {**applied([(b"u1", b"a0")] + WRITES[0][2:]), OFFSET_KEY: b"5"}
    assert table.data.contents(1) == {**applied(WRITES[1]), OFFSET_KEY: b"2"}
    assert table.seen == []  # no callback: nothing handed over


def test_a_changelog_callback_gets_every_copied_record_in_order(broker, changelog, tmp_path):
    table = Table(tmp_path, callback=object())
    offsets = Counter({TP(changelog, 0): 2, TP(changelog, 1): -1})
    restore(broker, recovery_of(changelog, table), offsets)
    by_partition = {p: [(e.key, e.value) for e in table.seen if e.message.partition == p] for p in WRITES}
    assert by_partition == {0: WRITES[0][3:], 1: WRITES[1]}
    assert all(isinstance(e, Changed) for e in table.seen)


def test_partitions_with_fewer_records_to_read_than_the_minimum_are_left_to_faust(broker, changelog, tmp_path):
    table = Table(tmp_path)
    offsets = Counter({TP(changelog, 0): 1, TP(changelog, 1): -1})
    assert restore(broker, recovery_of(changelog, table), offsets, min_records=4) == 4  # partition 0 only: 4 to read
    assert offsets == {TP(changelog, 0): 5, TP(changelog, 1): -1}
    assert table.data.contents(1) == {}


def test_nothing_is_copied_past_the_time_budget_or_from_an_unreachable_broker(broker, changelog, tmp_path):
    table = Table(tmp_path)
    offsets = Counter({TP(changelog, 0): -1, TP(changelog, 1): -1})
    assert restore(broker, recovery_of(changelog, table), offsets, budget_s=0.0) == 0
    unreachable = SimpleNamespace(bootstrap="127.0.0.1:9")  # discard port: connection refused
    assert restore(unreachable, recovery_of(changelog, table), offsets) == 0  # a warning; faust reads it all
    assert offsets == {TP(changelog, 0): -1, TP(changelog, 1): -1}
    assert table.data.contents(0) == table.data.contents(1) == {}
