"""One shard of a bulk rebuild, in this process or in a child process of its own.

A rebuild with N shards is a map and a reduce over the input history (`streams.rebuild.coordinator.plan`
shares it out): each shard reads some of the input partitions (map) and owns some of the
state partitions (reduce). A signal for one of its own partitions goes straight into that
partition's `BulkPartition`; a signal for another shard's partition is spilled to a file for
that shard (msgpack chunks of Signal lists, in the order read). Once every shard has read its
share, each adds the spills for its partitions in shard order, so a partition sees every
signal of its users whichever shard read them (dedup included), in an order that depends only
on the plan. Then it builds and writes its partitions' tables.

The parent drives the steps through a handle's `call(step, *args)`: "ingest", "aggregate",
"build". `ShardProcess` runs the shard in a spawned child; with one shard, `LocalShard` runs
the same object in the parent's process (no pickling, no spill).
"""

from __future__ import annotations

import asyncio
import gc
import os
import struct
import time
from collections import Counter

import msgspec

from streams.core.bulk import BulkPartition
from streams.core.catalog import CatalogIndex
from streams.core.ingest import DEADLETTER, KeyPartitioner, ParserConfig, arrival, ingest_one, outcome, route
from streams.core.pipeline import PipelineConfig
from streams.core.popularity import Partial, PopularityView, dump_partial
from streams.core.records import ImageRequest, Signal
from streams.core.settings import Settings
from streams.core.topology import changelog
from streams.kafka.ranges import read_partitions
from streams.kafka.transaction import StateTransaction
from streams.kafka.unreadable import skip_unreadable, unreadable_batch

_CHUNK = struct.Struct("<I")
_SPILL_ENCODER = msgspec.msgpack.Encoder()
_SPILL_DECODER = msgspec.msgpack.Decoder(list[Signal])


def bulk_producer(client: dict):
    """A producer for large record batches (whole table partitions, forwarded records)."""
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(**client, linger_ms=20, max_batch_size=1 << 20, max_request_size=1 << 24)


class Shard:
    """Shard `index` of `count`: see the module docstring."""

    def __init__(self, index: int, count: int, settings: Settings, client: dict, model_cfg: PipelineConfig,
                 parser: ParserConfig, spill_dir: str | None, counter=None):
        self.index, self.count, self.settings, self.client = index, count, settings, client
        self.model_cfg, self.parser, self.spill_dir, self.counter = model_cfg, parser, spill_dir, counter
        # remembers every user's partition: one murmur2 per user, not per event
        self.partition_of = KeyPartitioner(settings.partitions, memo=1 << 22)
        self.bulk: dict[int, BulkPartition] = {}
        self.catalog: CatalogIndex | None = None

    async def ingest(self, catalog: tuple[list[bytes], list[str]], owned: list[int], ranges: dict, typed: dict,
                     idle_timeout_s: float) -> dict:
        """Read `ranges` (topic partition -> (start, end) offsets): signals into the owned state
        partitions or the spills; everything else to the topics the live ingest sends it to.
        `catalog`: the artwork records and curated list (`CatalogSnapshot.portable`)."""
        self.catalog = catalog = catalog_index(*catalog)
        arrived = time.time()  # the history is read now, as a live worker reading it now would date it
        self.bulk = {p: BulkPartition(self.model_cfg, p, arrived) for p in owned}
        artist_of = {wid: w.artist_id for wid, w in catalog.works.items()}
        self.outcomes, self.forwarded, self._acks = Counter(), Counter(), []
        spills = _Spills(self.spill_dir, self.index)
        producer = bulk_producer(self.client)
        await producer.start()
        skip_unreadable(tp.topic for tp in ranges)
        try:
            await read_partitions(self.client, ranges, idle_timeout_s,
                                  lambda records: self._ingest_batch(records, typed, artist_of, producer, spills))
            await asyncio.gather(*self._acks)
        finally:
            spills.close()
            await producer.stop()
        return {"outcomes": self.outcomes, "forwarded": self.forwarded}

    async def _ingest_batch(self, records, typed: dict, artist_of: dict, producer, spills: _Spills) -> None:
        now = time.time()
        foreign: dict[int, list[Signal]] = {}
        for r in records:
            refused = unreadable_batch(r) if r.value is None else None  # a batch no one can read, as a live worker
            result = refused or ingest_one(r.value, typed[r.topic], artist_of, self.parser, arrival(r.timestamp, now))
            if isinstance(result, Signal):
                self.outcomes[result.kind] += 1  # what outcome() gives a signal
                p = self.partition_of(result.user_id.encode())
                bulk = self.bulk.get(p)
                if bulk is not None:
                    bulk.add(result)
                else:
                    foreign.setdefault(p, []).append(result)
                continue
            self.outcomes[outcome(result)] += 1
            if isinstance(result, ImageRequest):  # answered when it came: a rebuild answered every one again
                continue
            dest = route(result, r.topic, r.partition, r.offset, r.key, r.value, None, now,
                         self.settings.unknown_artwork_patience_s)
            if dest is not None:
                name = (self.settings.topic(DEADLETTER) if dest[0] == DEADLETTER
                        else self.settings.internal_topic(dest[0]))
                self._acks.append(await producer.send(name, dest[2], key=dest[1]))
                self.forwarded[dest[0]] += 1
        spills.write(foreign)
        if self.counter is not None:
            self.counter.value += len(records)
        gc.freeze()  # what a batch leaves behind is long-lived (streams.kafka.memory.growing_heap)

    def aggregate(self) -> list[tuple[int, Partial]]:
        """Add the other shards' spills for the owned partitions; their popularity shares."""
        for p, bulk in self.bulk.items():
            for shard in range(self.count):
                if shard != self.index:
                    for signals in _read_spill(self.spill_dir, p, shard):
                        for sig in signals:
                            bulk.add(sig)
                        gc.freeze()
        return [(p, b.partial(self.model_cfg.trending_half_life_s)) for p, b in self.bulk.items()]

    async def build(self, partials: list[Partial], now: float) -> dict:
        """Build and write the owned partitions' tables (and popularity shares)."""
        view = PopularityView(partials, self.model_cfg.trending_half_life_s)
        written, users = Counter(), 0
        app_id = self.settings.kafka_app_id
        producer = bulk_producer(self.client)
        await producer.start()
        try:
            for p, bulk in self.bulk.items():
                users += len(bulk.profiles())
                txn = StateTransaction()  # the partition's tables, as the live worker's batches write them
                for table, rows in bulk.outputs(self.catalog, view, now).items():
                    txn.table(changelog(app_id, table), p).update(rows)
                    written[table] += len(rows)
                txn.table(changelog(app_id, "popularity"), p)[f"p{p}"] = dump_partial(partials[p])
                written["popularity"] += 1
                await txn.commit(producer, txn.store())
                gc.freeze()
        finally:
            await producer.stop()
        return {"users": users, "written": written}


def catalog_index(artworks: list[bytes], curated: list[str]) -> CatalogIndex:
    """The catalog index from the stored artwork records (as a worker loads it after recovery)."""
    index = CatalogIndex()
    index.bootstrap(artworks, curated)
    return index


class _Spills:
    """Signals read by one shard for another shard's partition: one append-only file per
    partition, each read batch one length-prefixed msgpack chunk."""

    def __init__(self, spill_dir: str | None, shard: int):
        self.dir, self.shard, self.files = spill_dir, shard, {}

    def write(self, by_partition: dict[int, list[Signal]]) -> None:
        for p, signals in by_partition.items():
            f = self.files.get(p)
            if f is None:
                f = self.files[p] = open(_spill_path(self.dir, p, self.shard), "wb")  # noqa: SIM115 (closed in close)
            blob = _SPILL_ENCODER.encode(signals)
            f.write(_CHUNK.pack(len(blob)))
            f.write(blob)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def _spill_path(spill_dir: str | None, partition: int, shard: int) -> str:
    if spill_dir is None:
        raise RuntimeError("a signal for another shard's partition, but this rebuild has no spill directory")
    return os.path.join(spill_dir, f"p{partition}-s{shard}.msgpack")


def _read_spill(spill_dir: str | None, partition: int, shard: int):
    path = _spill_path(spill_dir, partition, shard)
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        while header := f.read(_CHUNK.size):
            (size,) = _CHUNK.unpack(header)
            yield _SPILL_DECODER.decode(f.read(size))
    os.unlink(path)  # read once: the disk (or tmpfs) is given back as the rebuild goes




