"""The rebuild's catalog: the artworks and curated topics read to their end into a catalog index,
as the live catalog agents apply them, and written to the new app's global tables."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

from streams.core.catalog import CatalogIndex, decode_artwork, decode_curated
from streams.core.ingest import (
    DEADLETTER,
    Rejected,
    dead_letter,
    decode_or_reject,
)
from streams.core.settings import Settings
from streams.core.topology import changelog
from streams.kafka.offsets import end_offsets
from streams.kafka.ranges import read_partitions
from streams.kafka.transaction import StateTransaction
from streams.kafka.unreadable import skip_unreadable, unreadable_batch
from streams.rebuild.shard import bulk_producer


async def write_catalog(settings: Settings, client: dict, snapshot, report) -> None:
    """The artworks and editorial tables, and what the live catalog agents would dead-letter."""
    producer = bulk_producer(client)
    await producer.start()
    try:
        acks = []
        for r, reason, detail in snapshot.rejected:
            acks.append(await producer.send(settings.topic(DEADLETTER), dead_letter(
                Rejected(reason, detail), r.topic, r.partition, r.offset, r.key, r.value), key=r.key))
            report.forwarded["deadletter"] += 1
        txn = StateTransaction()
        for table, rows in snapshot.rows.items():
            for partition, key, value in rows:
                txn.table(changelog(settings.kafka_app_id, table), partition)[key.decode()] = value
            report.written[table] += len(rows)
        await txn.commit(producer, txn.store())
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


async def read_all(client: dict, topics: list[str], idle_timeout_s: float, handle) -> dict:
    """Every record of `topics` up to the end offsets at the start -> handle(batch). Returns those ends."""
    ends = await end_offsets(client, topics)
    await read_partitions(client, {tp: (0, end) for tp, end in ends.items()}, idle_timeout_s, handle)
    return ends


@dataclass
class CatalogSnapshot:
    """The catalog as the live catalog agents would have stored it, read to its end."""

    index: CatalogIndex
    rows: dict[str, list[tuple[int, bytes, bytes]]]  # table -> (partition, key, value)
    rejected: list  # (record, reason, detail) the live catalog agents would dead-letter
    ends: dict

    def portable(self) -> tuple[list[bytes], list[str]]:
        """What a shard needs to rebuild the index (`streams.rebuild.shard.catalog_index`): the
        stored artwork records and the curated list. Decoding them again takes half the time
        pickling the index does, and the parent would pickle it once per shard."""
        return [raw for _, _, raw in self.rows["artworks"]], list(self.index.curated)


async def read_catalog(settings: Settings, client: dict, idle_timeout_s: float) -> CatalogSnapshot:
    artworks_topic, curated_topic = settings.topic("catalog.artworks"), settings.topic("catalog.curated")
    latest: dict[bytes, list] = {}  # message key -> its records in order (the last one counts)
    curated: list = []
    unread: list = []  # batches no one can read (streams.kafka.unreadable): dead letters, as the live worker's

    async def keep(records):
        for r in records:
            if r.value is None and (refused := unreadable_batch(r)) is not None:
                unread.append((r, refused.reason, refused.detail))
            else:
                (curated if r.topic == curated_topic else latest.setdefault(r.key, [])).append(r)

    skip_unreadable([artworks_topic, curated_topic])
    ends = await read_all(client, [artworks_topic, curated_topic], idle_timeout_s, keep)
    snapshot = CatalogSnapshot(CatalogIndex(), {"artworks": [], "editorial": []}, unread, ends)
    stored: dict[str, tuple[int, bytes]] = {}  # the artworks table: id -> (partition, record)
    for records in latest.values():
        for r in records:  # as the agent applies them: every record of a key, the last one stays
            if r.value is None:
                artwork_id = decode_or_reject(bytes.decode, r.key, "invalid_key")
                if isinstance(artwork_id, Rejected):  # as the agent: a tombstone must name its work
                    snapshot.rejected.append((r, artwork_id.reason, "a tombstone needs the artwork id as a UTF-8 key"))
                    continue
                snapshot.index.remove(artwork_id)
                stored.pop(artwork_id, None)
                continue
            # as the agent decodes them (whatever goes wrong, e.g. JSON nested too deep, is a dead letter)
            artwork = decode_or_reject(functools.partial(decode_artwork, key=r.key), r.value, "invalid_artwork")
            if isinstance(artwork, Rejected):
                snapshot.rejected.append((r, artwork.reason, artwork.detail))
                continue
            snapshot.index.upsert(artwork)
            stored[artwork.id] = (r.partition, r.value)
    snapshot.rows["artworks"] = [(p, wid.encode(), raw) for wid, (p, raw) in stored.items()]
    for r in curated:
        ids = decode_or_reject(functools.partial(decode_curated, key=r.key), r.value, "invalid_curated")
        if isinstance(ids, Rejected):
            snapshot.rejected.append((r, ids.reason, ids.detail))
            continue
        snapshot.index.curated = ids
        snapshot.rows["editorial"] = [(r.partition, b"curated", r.value)]
    snapshot.index.bootstrapped = True
    return snapshot
