"""Direct ingest: the input topics read in batches by a plain aiokafka consumer inside the worker, not faust's.

faust hands every message through a consumer thread, the conductor, a channel queue, the stream iterator
and per-message acks: ~100 us of Python a message, and 76 ms p99 from produce to fetch at 500 events/s where
a plain consumer saw 12 ms. So the inputs (and the catalog: a record faust's consumer drops, below, is a
missing work) are read here; the tables and their changelogs stay faust's.

Partitions follow faust's assignment: input partition i belongs to the worker that owns table
partition i mod N (for co-partitioned inputs: partition i itself, so the single hop holds).
Offsets are committed under their own consumer group (`<app id>-direct`: a group faust is a
live member of refuses commits from a non-member), only after faust's producer has flushed
every changelog and output record of the batches they cover, at most every `commit_every_s`
(in the background, one commit at a time, while the next batches are read and applied) and on
every revoke, before the partitions can move to another worker. A crash replays from
the last commit: at-least-once, as faust's path; per-user dedup absorbs the replay.

It also reads the internal topics (signals.keyed, images.keyed, pending; `handle` may hold a partition at a
record not due yet: paused, read again from it later). The keyed ones' dedup keeps, per user and input
partition, the offset of the last input record applied, so it needs each partition delivered gaplessly in
order: a record may come again, but never after a later one was applied while it was not. This consumer gives
that (a batch is applied whole under the lock, and every reassignment restarts at the committed offsets).
faust's consumer does not: after an assignment it can drop re-fetched records below its read offset
("DROPPED MESSAGE ROFF") while later ones are applied, and a kill -9 under load lost single events for
good (2026-12-03: signals.keyed offsets 183-286 of a partition dropped, one never applied; docs/traps.md)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streams.core.metrics import metrics
from streams.kafka.admin import partition_counts
from streams.kafka.offsets import fetched_position, stop_consumer
from streams.kafka.pacing import BatchSizer, IdleWait
from streams.kafka.unreadable import skip_unreadable

log = logging.getLogger(__name__)
AGE_BOUNDS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 3600.0)
ISOLATION = "read_committed"  # no aborted transaction applied (the embedded broker keeps none: docs/traps.md)
SLOW_COMMIT_S = 5.0  # a commit slower than this is logged: lists held for it and the next commit wait
SLOW_BATCH_S = 2.0  # logged with its records' offsets: it held every partition and the HTTP API (docs/traps.md)


def direct_group(app_id: str) -> str:
    """The consumer group holding the direct consumer's committed input offsets."""
    return f"{app_id}-direct"


def owned_input_partitions(owned: Iterable[int], topic_partitions: dict[str, int],
                           table_partitions: int) -> set[tuple[str, int]]:
    """Input (topic, partition)s read by the worker owning table partitions `owned`: partition i
    goes with table partition i mod N, so every input partition has exactly one reader and a
    co-partitioned topic's partition i stays with its user's state."""
    mine = set(owned)
    return {(topic, i) for topic, count in topic_partitions.items() for i in range(count)
            if i % table_partitions in mine}


class Anchor:
    """A stand-in for the faust event a table write takes its partition from (store and
    changelog partition, source-topic check): `topic` must be co-partitioned with the tables."""

    __slots__ = ("message", "__weakref__")

    def __init__(self, topic: str, partition: int):
        self.message = _AnchorMessage(topic, partition)


class _AnchorMessage:
    __slots__ = ("topic", "partition", "timestamp")

    def __init__(self, topic: str, partition: int):
        self.topic, self.partition, self.timestamp = topic, partition, time.time()


class DirectIngest:
    """A batch consumer for the input topics that follows faust's table assignment.

    `handle(records)`: applies one batch of aiokafka ConsumerRecords (their .topic, .partition,
    .offset, .key, .value match a faust Message's; a batch no one can read is one marker record,
    streams.kafka.unreadable); it may return {(topic, partition): (offset,
    not_before)} for partitions to hold: read again from `offset` (a record it left for later),
    not before wall-clock time `not_before`; it is also called with no records after a poll that
    returned none (for timed work). `before_commit()`: produces what the handled batches still owe
    (lists a window holds back), in order with the batches. `flush()`: waits until every record the
    handled batches produced (changelogs, outputs) is acknowledged; offsets are committed only
    after both, and then `after_commit(what before_commit returned)` is called."""

    def __init__(self, topics: list[str], table_partitions: int, group_id: str, client: dict,
                 handle: Callable[[list], Awaitable[None]], flush: Callable[[], Awaitable[None]],
                 ready: Callable[[], bool], batch_max: int = 500, fetch_max_wait_ms: int = 50,
                 commit_every_s: float = 2.8, idle_fetch_max_wait_ms: int | None = None,
                 before_commit: Callable[[], Awaitable[object]] | None = None, timed_topics: Iterable[str] = (),
                 after_commit: Callable[[object], None] | None = None):
        self.topics, self.table_partitions = topics, table_partitions
        skip_unreadable(topics)
        self.timed_topics = frozenset(timed_topics)  # their records' age when read: recstream_input_age_seconds
        self.handle, self.flush, self.ready, self.before_commit = handle, flush, ready, before_commit
        self.after_commit = after_commit
        self.batch_max, self.commit_every_s = batch_max, commit_every_s
        self.consumer = AIOKafkaConsumer(**client, group_id=group_id, enable_auto_commit=False,
                                         auto_offset_reset="earliest", fetch_max_wait_ms=fetch_max_wait_ms,
                                         max_poll_records=batch_max, isolation_level=ISOLATION)
        self.topic_partitions: dict[str, int] = {}
        self._lock = asyncio.Lock()  # a batch, an assignment change and a commit never interleave
        self._uncommitted: dict[TopicPartition, int] = {}
        self._last_commit = time.monotonic()
        self._committing: asyncio.Task | None = None  # the commit running beside the batches
        self._held: dict[TopicPartition, float] = {}  # paused partitions -> when to read them again
        self._stopping = False
        self._waits = IdleWait(fetch_max_wait_ms, idle_fetch_max_wait_ms or fetch_max_wait_ms)
        self._sizes = BatchSizer(batch_max)

    async def start(self, patience_s: float = 120.0) -> None:
        """Connect and learn the inputs' partitions. A broker that cannot be reached yet (a worker started, or
        faust connected, just before its broker went away) is tried again, 0.5 s doubling to 5 s, for
        `patience_s`: the worker stopped at once before, and only a restart policy brought it back."""
        delay, deadline, started = 0.5, time.monotonic() + patience_s, False
        while True:
            try:
                if not started:  # a failed start can be called again (aiokafka made no fetcher yet)
                    await self.consumer.start()
                    started = True
                return await self._learn_partitions()
            except (KafkaError, RuntimeError) as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("direct ingest: cannot start yet (%s); again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 5.0)

    async def stop(self) -> None:
        """Commit what the handled batches covered, then stop reading; a second call does nothing."""
        if self._stopping:
            return
        self._stopping = True
        async with self._lock:
            try:
                await self._settle()
                await self._commit(*await self._covered())
            except Exception as exc:  # e.g. the producer already stopped: a restart replays from the last commit
                log.warning("direct ingest: final commit failed: %r", exc)
            await stop_consumer(self.consumer)

    async def _learn_partitions(self) -> None:
        counts = await partition_counts(self.consumer, self.topics)
        missing = [t for t, n in counts.items() if not n]
        if missing:
            raise RuntimeError(f"input topics without metadata after 10 s: {missing}")
        self.topic_partitions = counts

    async def assign(self, owned: Iterable[int]) -> None:
        """faust assigned table partitions `owned` (after a revoke: the full new assignment)."""
        async with self._lock:
            await self._settle()  # a commit in flight covers partitions of the old assignment
            tps = owned_input_partitions(owned, self.topic_partitions, self.table_partitions)
            # reading restarts at the committed offsets: progress not committed is read again
            self._uncommitted.clear()
            self._held.clear()
            self.consumer.assign([TopicPartition(t, p) for t, p in sorted(tps)])
            log.info("direct ingest reads %d input partitions", len(tps))

    def lag(self) -> dict[str, int]:
        """Per input topic: records not handed to `handle` yet (highwater from the last fetch
        response - the consumer's position), over the assigned partitions fetched at least once
        (a partition not fetched since its assignment is unknown, not 0: it is left out)."""
        behind: dict[str, int] = {}
        for tp in self.consumer.assignment():
            high, position = fetched_position(self.consumer, tp)
            if high is not None and position is not None:
                behind[tp.topic] = behind.get(tp.topic, 0) + max(high - position, 0)
        return behind

    async def revoke(self) -> None:
        """Before faust hands partitions to another worker: finish, flush, commit, let go."""
        async with self._lock:
            await self._settle()
            await self._commit(*await self._covered())
            self._held.clear()
            self.consumer.assign([])

    async def run(self) -> None:
        while not self._stopping:
            if not self.consumer.assignment() or not self.ready():
                await asyncio.sleep(0.05)
                continue
            async with self._lock:
                self._release_due()
                batch = await self.consumer.getmany(timeout_ms=100, max_records=self._sizes.size)
                records = [r for part in batch.values() for r in part]
                self._set_fetch_wait(self._waits.after_poll(bool(records), time.monotonic()))
                self._observe_ages(records)
                started = time.monotonic()
                held = await self.handle(records) or {}
                took = time.monotonic() - started
                self._sizes.after_batch(len(records), took)
                if took > SLOW_BATCH_S:
                    _slow_batch(batch, took)
                for tp, part in batch.items():
                    offset, not_before = held.get((tp.topic, tp.partition), (part[-1].offset + 1, None))
                    self._uncommitted[tp] = offset
                    if not_before is not None:  # read from `offset` again later, nothing after it before
                        self.consumer.seek(tp, offset)
                        self.consumer.pause(tp)
                        self._held[tp] = not_before
                if time.monotonic() - self._last_commit >= self.commit_every_s and self._committing is None:
                    # beside the next batches, not before them: an offset commit is a broker round
                    # trip, and every event read meanwhile would wait for it
                    self._committing = asyncio.create_task(self._commit_in_background(*await self._covered()))

    def _observe_ages(self, records: list) -> None:
        """Each timed record's age when read: now minus its Kafka timestamp (the producer's create
        time unless it set one), as Kafka Streams' record-e2e-latency; a backfill with event-time
        timestamps shows its events' age."""
        now_ms = time.time() * 1000
        for r in records:
            if r.topic in self.timed_topics:
                metrics.observe("recstream_input_age_seconds", (now_ms - r.timestamp) / 1000, AGE_BOUNDS)

    def _set_fetch_wait(self, ms: int) -> None:
        fetcher = getattr(self.consumer, "_fetcher", None)  # aiokafka reads it for every fetch request it builds
        if fetcher is not None and getattr(fetcher, "_fetch_max_wait_ms", ms) != ms:
            fetcher._fetch_max_wait_ms = ms

    def _release_due(self) -> None:
        now = time.time()
        for tp in [tp for tp, at in self._held.items() if at <= now]:
            del self._held[tp]
            self.consumer.resume(tp)

    async def _covered(self) -> tuple[dict[TopicPartition, int], object]:
        """The offsets to commit next, taken from the uncommitted ones once what the batches
        behind them still owe is produced (under the lock: no batch comes in between), and
        what `before_commit` returned, for `after_commit`."""
        owed = await self.before_commit() if self.before_commit is not None and self._uncommitted else None
        offsets, self._uncommitted = self._uncommitted, {}
        return offsets, owed

    async def _commit_in_background(self, offsets: dict[TopicPartition, int], owed: object) -> None:
        try:
            await self._commit(offsets, owed)
        except Exception as exc:  # kept for the next commit; a crash would only replay more
            log.warning("direct ingest commit failed, retrying with the next batch: %r", exc)
        finally:
            self._committing = None

    async def _settle(self) -> None:
        """Wait for a commit running in the background (its failure put its offsets back)."""
        if self._committing is not None:
            await asyncio.wait([self._committing])

    async def _commit(self, offsets: dict[TopicPartition, int], owed: object) -> None:
        self._last_commit = started = time.monotonic()
        if not offsets:
            return
        try:
            await self.flush()  # every changelog/output record of these batches acked first
            flushed = time.monotonic()
            await self.consumer.commit(offsets)
            if self.after_commit is not None:
                self.after_commit(owed)
            metrics.inc("recstream_input_commits_total")
            if time.monotonic() - started > SLOW_COMMIT_S:  # held lists and the next commit wait for it
                log.warning("direct ingest commit took %.1f s (producer flush %.1f s, offset commit %.1f s)",
                            time.monotonic() - started, flushed - started, time.monotonic() - flushed)
        except Exception:
            for tp, offset in offsets.items():  # keep them for the next commit
                self._uncommitted.setdefault(tp, offset)
            raise


def _slow_batch(batch: dict, seconds: float) -> None:
    metrics.inc("recstream_slow_batches_total")
    log.warning("a batch of %d records took %.1f s, holding every partition and the HTTP API meanwhile: %s",
                sum(map(len, batch.values())), seconds,
                ", ".join(f"{tp.topic}[{tp.partition}] {rs[0].offset}-{rs[-1].offset}" for tp, rs in batch.items()))
