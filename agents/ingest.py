"""Segment and typed input topics -> the user pipeline, signals.keyed / images.keyed (re-keyed by user or
consumer), a retry for events whose artwork the catalog does not know yet, or a dead letter.

Single hop: a signal whose input message already sits in its user's partition (producers key events by user
id) is applied here, in the same batch, instead of taking a second trip through Kafka; others (other keys,
identity links, retries) are re-keyed through signals.keyed.

Direct ingest (the default) reads signals.keyed and images.keyed too, and applies them in the same state
transaction as the inputs: their per-user dedup needs every partition delivered gaplessly in order, which
faust's consumer does not do across a rebalance (streams.kafka.direct)."""

import asyncio
import functools
import time

from agents.catalog import APPLY as CATALOG_TOPICS
from agents.catalog import catalog_records, store_artworks
from agents.deadletters import decoded, decoded_into, decoded_until, lettered_if_unreadable
from streams.core.catalog import ArtistLookup
from streams.core.ingest import (
    DEADLETTER,
    IMAGES,
    PENDING,
    SIGNALS,
    KeyPartitioner,
    arrival,
    ingest_one,
    outcome,
    route,
    stamp,
    stamp_origin,
)
from streams.core.metrics import metrics
from streams.core.records import Pending, Signal
from streams.core.retries import decode_pending
from streams.core.throttle import RefreshQuota
from streams.kafka.direct import DirectIngest, direct_group
from streams.worker import topics
from streams.worker.app import app, keyed_images, keyed_records, parser_config, settings
from streams.worker.catalog_progress import catalog_as_of
from streams.worker.commit import BatchCommit, send_all
from streams.worker.direct_start import start_reader
from streams.worker.faust_shares import counted_batch
from streams.worker.image_batches import apply_images
from streams.worker.logs import dead_lettered
from streams.worker.runtime import before_stop, owned_partitions, recovered
from streams.worker.state import lag_sources, owed_lists, release_shares, settle_shares, share_positions, write_shares
from streams.worker.tables import affinity, artworks, catalog_index
from streams.worker.user_batches import apply_records, build_owed, fans_in

artist_of = ArtistLookup(artworks, catalog_index)


def _pending(raw: bytes) -> Pending:
    return decode_pending(raw, time.time(), settings.unknown_artwork_patience_s)


home = KeyPartitioner(settings.partitions)  # where the producers' default partitioner puts a user id
_partitions: dict[str, int] = {}  # input topic -> partition count
_SIGNALS, _IMAGES, _PENDING = (t.get_topic_name() for t in (topics.signals, topics.images_keyed, topics.pending))
DESTINATIONS = {SIGNALS: topics.signals, IMAGES: topics.images_keyed, PENDING: topics.pending,
                DEADLETTER: topics.deadletter}


async def ingest(stream):
    """faust's path over the inputs (RECSTREAM_DIRECT_INGEST=false)."""
    async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
        await ingest_batch([e.message for e in events])


if not settings.direct_ingest:
    ingest = app.agent(topics.inputs, concurrency=1)(ingest)


async def ingest_batch(messages) -> None:
    """One batch of input messages (faust Messages or aiokafka ConsumerRecords: .topic,
    .partition, .offset, .key, .value)."""
    batch = BatchCommit(app)  # faust hands over a batch no one can read as its marker, as direct ingest's reader does
    here = await _ingest_parked_first([m for m in messages if not lettered_if_unreadable(m, batch)], batch)
    async with counted_batch():  # the shares written after the acks (streams.worker.faust_shares)
        for partition, signals in here.items():
            apply_records(partition, signals, batch)
        await batch.commit()  # one round of acks per batch


async def _ingest_parked_first(messages, batch: BatchCommit) -> dict[int, list[Signal]]:
    """`_ingest_into`, the retries it parked sent and acknowledged before `batch` reads, stores or sends anything."""
    parked = []
    here = _ingest_into(messages, batch, parked)
    batch.parked = await send_all(app, parked)
    return here


def _ingest_into(messages, batch: BatchCommit, parked: list) -> dict[int, list[Signal]]:
    """Ingest input messages: what leaves for another topic goes into `batch`, but retries of messages whose
    artwork is unknown into `parked` (`_ingest_parked_first`); returned, per partition, the single hop's signals.

    A parked message's user's later messages move their profile's input position past it, and a read
    again after a crash takes a position passed for one applied: a kill -9 after the batch's RocksDB
    write (or its signals.keyed records) and before its retry record landed lost the message for good
    when its artwork was known by the time it was read again (a chaos run: two workers, late works,
    4 events of 3 users lost, no dead letter)."""
    here, now = {}, time.time()
    for msg in messages:
        result = stamp(ingest_one(msg.value, topics.TYPED_BY_NAME.get(msg.topic), artist_of, parser_config,
                                  arrival(msg.timestamp, now)), msg.topic, msg.partition, msg.offset)
        if isinstance(result, Signal) and _in_home_partition(result.user_id, msg):
            _count(result, None, msg.topic, msg.partition, msg.offset)
            here.setdefault(msg.partition, []).append(result)
        else:
            for topic, key, value in _route(result, msg.value, msg.topic, msg.partition, msg.offset, msg.key, None):
                parked.append((topic, key, value)) if topic is topics.pending else batch.send(topic, key, value)
    metrics.inc("recstream_single_hop_signals_total", by=sum(len(v) for v in here.values()))
    return here


async def direct_batch(records) -> None:
    """One read of the direct consumer, all in one state transaction: catalog records stored, input
    records ingested, signals.keyed and images.keyed records applied, due retries of the pending
    topic ingested (their faust agents' work, without faust's consumer: see streams.kafka.direct on why a path
    must never lose a record). Returns the partitions to hold: pending ones until their head is due, and
    signals.keyed ones past a read's catalog refreshes (streams.core.throttle.RefreshQuota: read again at once)."""
    batch, inputs, catalog, users, images, pending = BatchCommit(app), [], [], {}, {}, {}
    internal = {_SIGNALS: users, _IMAGES: images, _PENDING: pending}  # topic -> its records by partition
    for rec in records:
        by_partition = internal.get(rec.topic)
        if lettered_if_unreadable(rec, batch):  # a batch no one can read
            continue
        if by_partition is not None:
            by_partition.setdefault(rec.partition, []).append(rec)
        else:
            (catalog if rec.topic in CATALOG_TOPICS else inputs).append(rec)
    catalog_records(catalog, batch)  # first: this read's events may name the works it brings
    here, wall, held = await _ingest_parked_first(inputs, batch), time.monotonic(), {}
    for partition in sorted(users.keys() | here.keys()):
        keyed, again = decoded_until(batch, users.get(partition, ()), keyed_records, "invalid_internal_record",
                                     keyed=True, stop=RefreshQuota(fans_in(partition)).exceeded)
        if again is not None:
            held[(_SIGNALS, partition)] = (again, 0.0)
        apply_records(partition, keyed + here.get(partition, []), batch, owed_lists.hold_for(partition, wall))
    _build_owed(owed_lists.due(wall), batch, wall)  # lists whose window ended
    for partition, recs in images.items():
        apply_images(partition, decoded_into(batch, recs, keyed_images, "invalid_internal_record", keyed=True),
                     batch)
    held.update({(_PENDING, partition): hold for partition, recs in pending.items()
                 if (hold := _retry_due(recs, batch)) is not None})
    await batch.commit()  # one round of acks per read
    store_artworks()  # after the refreshes they cause (agents.catalog)
    write_shares(now=time.time())  # once the batch is acknowledged: a share is never ahead of the state
    return held


async def before_commit() -> tuple[dict, dict]:
    """What the batches behind the next input commit still owe (DirectIngest's before_commit):
    every list the window holds, built and acknowledged, and every changed share written (the
    commit flushes faust's producer, so the shares are acknowledged before it too); returns the
    shares' positions in those writes, settled once the commit is done (`settle_shares`)."""
    owed = owed_lists.drain()
    if owed:
        batch = BatchCommit(app)
        _build_owed(owed, batch, time.monotonic())
        await batch.commit()
    write_shares()
    return share_positions()


metrics.gauge("recstream_lists_owed", lambda: {(): len(owed_lists)})


def _build_owed(owed: dict[int, dict[str, str]], batch: BatchCommit, wall: float) -> None:
    """Per partition, the lists the window held (user -> trigger), built into `batch`."""
    for partition, lists in owed.items():
        build_owed(partition, lists, batch, owed_lists.hold_for(partition, wall))


def _retry_due(records, batch: BatchCommit) -> tuple[int, float] | None:
    """One pending partition's records in order: each due message ingested again into `batch`;
    at the first not due yet, (its offset, its due time): reading that partition stops there."""
    now = time.time()
    for rec in records:
        for pending in decoded_into(batch, [rec], _pending, "invalid_internal_record"):
            if pending.due > now:
                return rec.offset, pending.due
            for topic, key, value in _retried(pending):
                batch.send(topic, key, value)
    return None


def _retried(pending: Pending) -> list[tuple]:
    """A due retry ingested again: what to send (its signal, the next retry, or a dead letter)."""
    result = stamp_origin(ingest_one(pending.value, topics.TYPED_BY_NAME.get(pending.topic), artist_of, parser_config,
                                     pending.first_seen), pending)  # judged as when it first came
    return _route(result, pending.value, pending.topic, pending.partition, pending.offset, pending.key, pending)


def _in_home_partition(user_id: str, msg) -> bool:
    """The single hop: the message already sits in the partition its user's state lives in, and
    its topic is co-partitioned with the tables (same partition count: faust assigns partition
    p of every such topic to the same worker, and direct ingest follows that assignment)."""
    if not settings.single_hop:
        return False
    partitions = _partitions.get(msg.topic)
    if partitions is None:
        partitions = direct.topic_partitions.get(msg.topic) if direct else app.consumer.topic_partitions(msg.topic)
        if partitions is None:
            return False
        _partitions[msg.topic] = partitions
    return partitions == settings.partitions and home(user_id.encode()) == msg.partition


async def retry_pending(stream):
    """faust's path over the pending topic (RECSTREAM_DIRECT_INGEST=false). Due times only grow
    along the topic (give or take one backoff step), so waiting for the head never runs a message
    early; direct ingest holds a partition at its head the same way."""
    async for event in stream.events():
        pending = await decoded(event, _pending, "invalid_internal_record")
        if pending is None:
            continue
        wait = pending.due - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        await send_all(app, _retried(pending))


if not settings.direct_ingest:
    retry_pending = app.agent(topics.pending, concurrency=1)(retry_pending)


def _route(result, value, topic, partition, offset, key, pending) -> list[tuple]:
    """What to send for one ingested input message: its signal, a retry, or a dead letter."""
    dest = route(result, topic, partition, offset, key, value, pending, time.time(),
                 settings.unknown_artwork_patience_s, catalog_as_of())
    _count(result, dest, topic, partition, offset)
    return [] if dest is None else [(DESTINATIONS[dest[0]], dest[1], dest[2])]


def _count(result, dest, topic, partition, offset) -> None:
    kind = outcome(result)
    if dest is not None and dest[0] == PENDING:
        metrics.inc("recstream_pending_retries_total")
    elif kind == "rejected":
        dead_lettered(result.reason, topic, partition, offset)
    elif kind == "ignored":
        metrics.inc("recstream_events_ignored_total")
    else:
        metrics.inc("recstream_events_total", kind=kind)


direct: DirectIngest | None = None  # direct ingest (default): the inputs read by a plain consumer
_assigned: set[int] | None = None  # faust's last assignment, if it came before the direct ingest task started


@app.on_partitions_revoked.connect
async def _revoked(app, revoked, **kwargs) -> None:
    """Direct ingest finishes the batch in flight, writes the shares and commits first; then the
    shares of the revoked partitions go (both paths)."""
    global _assigned
    _assigned = set()  # a task starting after this must not read an assignment that is gone (fuzzing: it did)
    if direct is not None:
        await direct.revoke()
    release_shares({tp.partition for tp in revoked})


if settings.direct_ingest:
    @app.task
    async def direct_ingest() -> None:
        global direct
        reader = DirectIngest(list(topics.read_topics), settings.partitions, direct_group(settings.kafka_app_id),
                              settings.aiokafka_kwargs(), handle=direct_batch, flush=app.producer.flush,
                              ready=functools.partial(recovered, app), batch_max=settings.batch_max,
                              before_commit=before_commit, after_commit=settle_shares,
                              fetch_max_wait_ms=settings.ingest_fetch_max_wait_ms,
                              idle_fetch_max_wait_ms=settings.ingest_idle_fetch_max_wait_ms,
                              commit_every_s=settings.input_commit_interval_s, timed_topics=topics.inputs.topics)
        declare = (*topics.input_topics, *topics.catalog_topics, topics.signals, topics.images_keyed, topics.pending)
        groups = (settings.kafka_app_id, direct_group(settings.kafka_app_id))
        await start_reader(declare, reader, settings.aiokafka_kwargs(), groups,
                           [*CATALOG_TOPICS, _SIGNALS, _IMAGES, _PENDING])  # a stop cancels it (stop_app_tasks)
        direct = reader
        lag_sources.append(direct.lag)
        if _assigned is not None:
            await direct.assign(_assigned)
        try:
            await direct.run()
        finally:
            await direct.stop()

    async def _direct_stop() -> None:
        """A graceful stop commits what was applied while the tables and faust's producer still run."""
        if direct is not None:
            await direct.stop()

    before_stop.append(_direct_stop)

    @app.on_partitions_assigned.connect
    async def _direct_assigned(app, assigned, **kwargs) -> None:
        global _assigned
        _assigned = set(owned_partitions(app, affinity))  # the table partitions this worker is active for
        if direct is not None:
            await direct.assign(_assigned)
