"""``recstream rebuild --bulk``: the input topics -> a new app id's state, without faust's
per-event path, then a hand-over to the live agents.

1. Read the catalog (artworks, curated) to its end.
2. Read every input topic from the beginning to the end offsets taken at the start, in large
   raw batches. Each message goes through the live ingest (`ingest_one` + `route`): signals are
   aggregated per partition by `streams.bulk`; identity links, image events, retries for
   unknown artworks and dead letters go to the same topics the live ingest would send them to,
   for the new app's agents to finish.
3. Write the affinity, fans, recommendations and popularity tables, and the catalog's artworks
   and editorial tables, straight to the new app's changelog topics, in the partition each
   key's live writes use.
4. Commit the new consumer group's offsets at those end offsets (catalog topics included):
   workers started under the new app id recover the tables from the changelogs and carry on
   from there, live, without replaying the catalog (which would refresh every fan again).

Nothing is sent to the recommendations topic (run ``recstream emit-all`` under the new app id
if clients need every list again).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from dataclasses import dataclass, field

import msgspec

from streams.batching import write_partition
from streams.bulk import BulkPartition
from streams.catalog import CatalogIndex, decode_artwork, decode_curated
from streams.direct import direct_group
from streams.faustutil import true_end_offsets
from streams.ingest import (
    DEADLETTER,
    IMAGES,
    PENDING,
    SIGNALS,
    KeyPartitioner,
    ParserConfig,
    Rejected,
    dead_letter,
    ingest_one,
    outcome,
    route,
)
from streams.memory import growing_heap
from streams.pipeline import PipelineConfig
from streams.popularity import PopularityView, dump_partial
from streams.records import SIGNAL_KINDS, Signal
from streams.settings import Settings

TABLES = ("affinity", "recommendations", "fans")
GLOBAL_TABLES = ("popularity", "artworks", "editorial")
READ_BATCH = 20000


@dataclass
class RebuildReport:
    events: int = 0
    outcomes: Counter = field(default_factory=Counter)
    users: int = 0
    written: Counter = field(default_factory=Counter)  # table -> records
    forwarded: Counter = field(default_factory=Counter)  # topic -> records
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        total = sum(self.seconds.values())
        return self.events / total if total else 0.0

    def lines(self) -> list[str]:
        out = [f"rebuilt {self.events:,} events into {self.users:,} users in {sum(self.seconds.values()):.1f} s "
               f"({self.rate:,.0f} events/s)"]
        out.append("  phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()))
        out += [f"  {k}: {v:,}" for k, v in sorted(self.outcomes.items())]
        out += [f"  wrote {t}: {n:,}" for t, n in sorted(self.written.items())]
        out += [f"  forwarded to {t}: {n:,}" for t, n in sorted(self.forwarded.items())]
        return out


def input_topics(settings: Settings) -> dict[str, str | None]:
    """topic name -> the typed kind ingest_one expects (None for Segment)."""
    topics: dict[str, str | None] = {settings.topic("events.segment"): None}
    topics.update({settings.topic(f"signals.{kind}"): kind for kind in SIGNAL_KINDS})
    topics[settings.topic("images.impressions")] = "image:impression"
    topics[settings.topic("images.conversions")] = "image:conversion"
    topics[settings.topic("images.requests")] = "image_request"
    return topics


def changelog(app_id: str, table: str) -> str:
    return f"{app_id}-{table}-changelog"  # faust's naming


async def bulk_rebuild(settings: Settings, client: dict, model_cfg: PipelineConfig, parser: ParserConfig,
                       progress=None, idle_timeout_s: float = 60.0) -> RebuildReport:
    """Rebuild `settings.app_id`'s state from the input topics (see the module docstring)."""
    with growing_heap():
        return await _bulk_rebuild(settings, client, model_cfg, parser, progress, idle_timeout_s)


async def _bulk_rebuild(settings: Settings, client: dict, model_cfg: PipelineConfig, parser: ParserConfig,
                        progress, idle_timeout_s: float) -> RebuildReport:
    from aiokafka import AIOKafkaProducer

    report = RebuildReport()
    started = time.monotonic()
    await check_fresh(settings, client)
    await _create_topics(settings, client)
    snapshot = await _read_catalog(settings, client, idle_timeout_s)
    catalog, artist_of = snapshot.index, snapshot.artist_of
    report.seconds["catalog"] = time.monotonic() - started

    partition_of = KeyPartitioner(settings.partitions)
    bulk = [BulkPartition(model_cfg, p) for p in range(settings.partitions)]
    producer = AIOKafkaProducer(**client, linger_ms=20, max_batch_size=1 << 20, max_request_size=1 << 24)
    await producer.start()
    try:
        t0 = time.monotonic()
        typed = input_topics(settings)
        forwarded: list = []  # acks of what went to the live agents' topics
        ends = await _read_all(client, list(typed), idle_timeout_s, progress, lambda records: _ingest(
            records, typed, bulk, partition_of, artist_of, parser, settings, producer, report, forwarded))
        for r, reason, detail in snapshot.rejected:  # what the live catalog agents would dead-letter
            forwarded.append(await producer.send(settings.topic(DEADLETTER), dead_letter(
                Rejected(reason, detail), r.topic, r.partition, r.offset, r.key, r.value), key=r.key))
            report.forwarded["deadletter"] += 1
        for table, rows in snapshot.rows.items():
            for partition in {p for p, _, _ in rows}:
                report.written[table] += await write_partition(
                    producer, changelog(settings.app_id, table), partition,
                    [(k, v) for p, k, v in rows if p == partition])
        await asyncio.gather(*forwarded)
        report.seconds["read+aggregate"] = time.monotonic() - t0

        t0 = time.monotonic()
        partials = [b.partial(model_cfg.trending_half_life_s) for b in bulk]
        view = PopularityView(partials, model_cfg.trending_half_life_s)
        now = time.time()
        for b, partial in zip(bulk, partials, strict=True):
            report.users += len(b.profiles())
            for table, rows in b.outputs(catalog, view, now).items():
                report.written[table] += await write_partition(
                    producer, changelog(settings.app_id, table), b.partition,
                    ((key.encode(), value) for key, value in rows.items()))
            gc.freeze()
            report.written["popularity"] += await write_partition(
                producer, changelog(settings.app_id, "popularity"), b.partition,
                [(f"p{b.partition}".encode(), dump_partial(partial))])
        report.seconds["build+write"] = time.monotonic() - t0
    finally:
        await producer.stop()
    report.events = sum(report.outcomes.values())

    # the hand-over covers the catalog topics too: the new workers recover those tables instead
    # of replaying the catalog (which would also refresh every fan of every artist again)
    await _commit(client, settings.app_id, {tp: end for tp, end in {**ends, **snapshot.ends}.items() if end > 0})
    # the inputs are read by direct ingest (its own group) or, with it off, by faust: both start here
    await _commit(client, direct_group(settings.app_id), {tp: end for tp, end in ends.items() if end > 0})
    return report


class AppIdInUse(RuntimeError):
    """The target app id's consumer group already committed input offsets."""


async def check_fresh(settings: Settings, client: dict) -> None:
    """A bulk rebuild writes a new app id's whole state: refuse an app id whose workers already
    consumed input (its state would be overwritten under them)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    for group in (settings.app_id, direct_group(settings.app_id)):
        consumer = AIOKafkaConsumer(**client, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            for topic in input_topics(settings):
                for p in consumer.partitions_for_topic(topic) or ():
                    if await consumer.committed(TopicPartition(topic, p)):
                        raise AppIdInUse(f"app id {settings.app_id!r} already has committed offsets on {topic} "
                                         f"(group {group}: its workers ran): rebuild into a new app id")
        finally:
            await consumer.stop()


async def _commit(client: dict, group_id: str, offsets: dict) -> None:
    """The hand-over: the new app's workers start reading the inputs where the bulk read ended."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(**client, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def _ingest(records, typed, bulk, partition_of, artist_of, parser, settings, producer, report, acks) -> None:
    """One read batch into the per-partition aggregates (what it leaves behind is long-lived
    state: frozen after the batch, see streams.memory.growing_heap)."""
    patience = settings.unknown_artwork_patience_s
    now = time.time()
    for r in records:
        result = ingest_one(r.value, typed[r.topic], artist_of, parser)
        report.outcomes[outcome(result)] += 1
        if isinstance(result, Signal):
            bulk[partition_of(result.user_id.encode())].add(result)
            continue
        dest = route(result, r.topic, r.partition, r.offset, r.key, r.value, None, now, patience)
        if dest is not None:
            name = settings.topic(DEADLETTER) if dest[0] == DEADLETTER else settings.internal_topic(dest[0])
            acks.append(await producer.send(name, dest[2], key=dest[1]))
            report.forwarded[dest[0]] += 1
    gc.freeze()


async def _read_all(client: dict, topics: list[str], idle_timeout_s: float, progress, handle) -> dict:
    """Every record of `topics` up to the end offsets at the start -> handle(batch). Returns those ends."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**client, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
        if not tps:
            return {}
        consumer.assign(tps)
        ends = await _true_ends(consumer, tps, client)
        await consumer.seek_to_beginning(*tps)
        remaining = {tp for tp, end in ends.items() if end > 0}
        done, last_progress = 0, time.monotonic()
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=READ_BATCH)
            for tp, records in batch.items():
                records = [r for r in records if r.offset < ends[tp]]
                if records:
                    await handle(records)
                    done += len(records)
                    last_progress = time.monotonic()
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            if progress is not None:
                progress.update(done)
            if time.monotonic() - last_progress > idle_timeout_s:
                raise TimeoutError(f"rebuild: no progress for {idle_timeout_s:.0f} s reading {sorted(map(str, remaining))}")
        if progress is not None:
            progress.close(done)
        return ends
    finally:
        await consumer.stop()


async def _true_ends(consumer, tps, client) -> dict:
    ends = await consumer.end_offsets(tps)
    return await true_end_offsets(ends, client)  # Tansu under-reports multi-record batches


@dataclass
class CatalogSnapshot:
    """The catalog as the live catalog agents would have stored it, read to its end."""

    index: CatalogIndex
    rows: dict[str, list[tuple[int, bytes, bytes]]]  # table -> (partition, key, value)
    rejected: list  # (record, reason, detail) the live catalog agents would dead-letter
    ends: dict

    @property
    def artist_of(self) -> dict[str, str]:
        return {wid: w.artist_id for wid, w in self.index.works.items()}


async def _read_catalog(settings: Settings, client: dict, idle_timeout_s: float) -> CatalogSnapshot:
    artworks_topic, curated_topic = settings.topic("catalog.artworks"), settings.topic("catalog.curated")
    latest: dict[bytes, list] = {}  # message key -> its records in order (the last one counts)
    curated: list = []

    async def keep(records):
        for r in records:
            (curated if r.topic == curated_topic else latest.setdefault(r.key, [])).append(r)

    ends = await _read_all(client, [artworks_topic, curated_topic], idle_timeout_s, None, keep)
    snapshot = CatalogSnapshot(CatalogIndex(), {"artworks": [], "editorial": []}, [], ends)
    stored: dict[str, tuple[int, bytes]] = {}  # the artworks table: id -> (partition, record)
    for records in latest.values():
        for r in records:  # as the agent applies them: every record of a key, the last one stays
            if r.value is None:
                snapshot.index.remove(r.key.decode())
                stored.pop(r.key.decode(), None)
                continue
            try:
                artwork = decode_artwork(r.value)
            except (msgspec.MsgspecError, ValueError) as exc:
                snapshot.rejected.append((r, "invalid_artwork", str(exc)))
                continue
            snapshot.index.upsert(artwork)
            stored[artwork.id] = (r.partition, r.value)
    snapshot.rows["artworks"] = [(p, wid.encode(), raw) for wid, (p, raw) in stored.items()]
    for r in curated:
        try:
            snapshot.index.curated = decode_curated(r.value or b"")
        except (msgspec.MsgspecError, ValueError) as exc:
            snapshot.rejected.append((r, "invalid_curated", str(exc)))
            continue
        snapshot.rows["editorial"] = [(r.partition, b"curated", r.value)]
    snapshot.index.bootstrapped = True
    return snapshot


async def _create_topics(settings: Settings, client: dict) -> None:
    """The new app's changelogs and internal topics, as faust would declare them."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    compact = {"cleanup.policy": "compact"}
    wanted = [NewTopic(changelog(settings.app_id, t), settings.partitions, 1, topic_configs=compact)
              for t in TABLES + GLOBAL_TABLES]
    wanted += [NewTopic(settings.internal_topic(name), settings.partitions, 1) for name in (SIGNALS, IMAGES, PENDING)]
    wanted.append(NewTopic(settings.topic(DEADLETTER), settings.partitions, 1))
    admin = AIOKafkaAdminClient(**client)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
