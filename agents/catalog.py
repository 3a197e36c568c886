"""catalog.artworks / catalog.curated / catalog.images (compacted) -> global tables and every
worker's catalog index and image pools; newly recommendable works trigger a refresh for their
artist's fans on every partition.

Direct ingest reads these topics (the default, `catalog_records` within its batches): faust's
consumer can drop records it re-fetches after an assignment (streams.kafka.direct), and a
dropped catalog record is a work missing until its next update, with every event naming it
dead-lettered (fuzzing under kills during restarts: 64 consecutive records of one partition
never reached the artworks table while the group's offsets passed them). The faust agents below
remain for RECSTREAM_DIRECT_INGEST=false. Both paths apply a record with the same functions."""

import functools
import logging

from agents.deadletters import letter
from streams.core.catalog import decode_artwork, decode_curated, leaves_lists
from streams.core.events import Rejected
from streams.core.image_pipeline import decode_image_catalog
from streams.core.ingest import decode_or_reject
from streams.core.metrics import metrics
from streams.core.properties import is_id
from streams.core.records import MAX_ID_CHARS, Refresh, encode_keyed
from streams.kafka.unreadable import unreadable_batch
from streams.worker import tables, topics
from streams.worker.app import app, settings
from streams.worker.commit import send_all
from streams.worker.runtime import event_context
from streams.worker.state import pools, table_anchor

log = logging.getLogger(__name__)
Changed = list[tuple[str, bytes | None]]  # (artist, its newest changed record) whose fans should see a change
# the artworks table's writes, made once the refreshes they cause are acknowledged: a kill -9 between a write (its
# changelog record goes at once) and the read's refreshes lost them, the restart finding the work stored and
# unchanged (an outside check); written after them, a restart sees the change again and sends them again
_stored_later: list[tuple[str, bytes | None, object]] = []  # (artwork id, record or None to delete, anchor)


def apply_artwork(msg, anchor) -> Changed | Rejected:
    """Apply one catalog.artworks record (`msg`: .key, .value; a tombstone deletes) to the catalog index; its
    table write waits in `_stored_later` (`store_artworks`); the artists whose fans should see the change."""
    tables.ensure_catalog_loaded()
    if msg.value is None:  # tombstone: the artwork is gone
        return _remove(msg, anchor)
    artwork = decode_or_reject(functools.partial(decode_artwork, key=msg.key), msg.value, "invalid_artwork")
    if isinstance(artwork, Rejected):
        return artwork
    old = tables.catalog_index.get(artwork.id)
    _stored_later.append((artwork.id, msg.value, anchor))
    newly_recommendable = tables.catalog_index.upsert(artwork)
    if leaves_lists(old, artwork):  # sold, withdrawn: out of every list (agents.refresh)
        tables.gone_works.add(artwork.id)
    metrics.inc("recstream_catalog_records_total")
    no_longer = old is not None and old != artwork and not newly_recommendable
    moved = [(old.artist_id, None)] if old is not None and old.artist_id != artwork.artist_id else []  # its old fans
    return [*moved, *([(artwork.artist_id, msg.value)] if newly_recommendable or no_longer or moved else [])]


def _tombstone_id(msg, what: str) -> str | Rejected:
    """The id a tombstone's key names; an empty or 3 MB key deletes nothing."""
    found = decode_or_reject(bytes.decode, msg.key, "invalid_key")
    if isinstance(found, Rejected) or not is_id(found):
        return Rejected("invalid_key", f"a tombstone needs {what} (1 to {MAX_ID_CHARS} characters, UTF-8) as its key")
    return found


def _remove(msg, anchor) -> Changed | Rejected:
    artwork_id = _tombstone_id(msg, "an artwork id")
    if isinstance(artwork_id, Rejected):
        return artwork_id
    old = tables.catalog_index.get(artwork_id)
    _stored_later.append((artwork_id, None, anchor))
    tables.catalog_index.remove(artwork_id)
    if leaves_lists(old, None):
        tables.gone_works.add(artwork_id)
    return [] if old is None else [(old.artist_id, None)]


def store_artworks() -> None:
    """The artworks table's writes of the records applied so far, once their refreshes are acknowledged."""
    for artwork_id, value, anchor in _stored_later:
        with event_context(anchor):
            if value is None:
                tables.artworks.pop(artwork_id, None)
            else:
                tables.artworks[artwork_id] = value
    _stored_later.clear()


def apply_curated(msg, anchor) -> Changed | Rejected:
    """Store the editorial list (catalog.curated)."""
    ids = decode_or_reject(functools.partial(decode_curated, key=msg.key), msg.value, "invalid_curated")
    if isinstance(ids, Rejected):
        return ids
    with event_context(anchor):
        tables.editorial["curated"] = msg.value
    tables.catalog_index.curated = ids
    metrics.inc("recstream_curated_updates_total")
    return []


def apply_image_catalog(msg, anchor) -> Changed | Rejected:
    """Store one merchant's images (catalog.images); a tombstone deletes them, as on catalog.artworks (it was
    dead-lettered, and the merchant's pool stayed for good)."""
    if msg.value is None:
        merchant = _tombstone_id(msg, "a merchant id")
        if isinstance(merchant, Rejected):
            return merchant
        with event_context(anchor):
            tables.image_catalog.pop(merchant, None)
    else:
        record = decode_or_reject(functools.partial(decode_image_catalog, key=msg.key), msg.value,
                                  "invalid_image_catalog")
        if isinstance(record, Rejected):
            return record
        merchant = record.merchant_id
        with event_context(anchor):
            tables.image_catalog[merchant] = msg.value
    pools.forget(merchant)
    metrics.inc("recstream_image_catalog_records_total")
    return []


metrics.gauge("recstream_catalog_works", lambda: {(): len(tables.catalog_index.works)})  # this worker's catalog

APPLY = {topics.artworks.get_topic_name(): apply_artwork, topics.curated.get_topic_name(): apply_curated,
         topics.image_catalog.get_topic_name(): apply_image_catalog}


def _applied(msg, anchor) -> Changed | Rejected:
    """A record applied; one that raises (a bug meeting an input nothing foresaw) is that record's
    dead letter, not a stopped reader that would meet it again at every restart."""
    if (refused := unreadable_batch(msg)) is not None:  # a batch no one can read (faust's path hands its marker over)
        return refused
    try:
        return APPLY[msg.topic](msg, anchor)
    except Exception as exc:
        log.exception("catalog record %s:%s@%s failed to apply", msg.topic, msg.partition, msg.offset)
        return Rejected("internal_error", f"{type(exc).__name__} while applying")


def refreshes(changed: dict[str, bytes | None]) -> list[tuple]:
    """The refresh records for the changed artists' fans, one per artist and partition."""
    return [(topics.signals, artist.encode(), encode_keyed(Refresh(artist, raw)), partition)
            for artist, raw in changed.items() for partition in range(settings.partitions)]


def _apply_all(records) -> list[tuple]:
    """(message, anchor) pairs applied in order: the messages to send, each rejected record's dead
    letter, then one refresh per changed artist."""
    changed: dict[str, bytes | None] = {}
    letters = []
    for msg, anchor in records:
        result = _applied(msg, anchor)
        if isinstance(result, Rejected):
            letters.append(letter(result, msg, msg.value))
        else:
            changed.update(result)
    return letters + refreshes(changed)


def catalog_records(records, batch) -> None:
    """Direct ingest's catalog records (aiokafka ConsumerRecords, in order per partition) applied,
    before the events of the same read; dead letters and refreshes go into `batch`, the read's
    state transaction; the caller stores the artworks once it is acknowledged (`store_artworks`). The tables'
    changelog records go through faust's producer, which direct ingest flushes before it commits the offsets
    covering them."""
    for message in _apply_all((rec, table_anchor(rec.partition)) for rec in records):
        batch.send(*message)


async def _apply_events(events) -> None:
    """faust's path: the events applied in order, then their dead letters and refreshes sent, then stored."""
    await send_all(app, _apply_all((event.message, event) for event in events))
    if events and events[0].message.topic == topics.artworks.get_topic_name():  # its own writes, after their acks
        store_artworks()


async def load_catalog(stream):
    """faust's path over the catalog topics (RECSTREAM_DIRECT_INGEST=false)."""
    async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
        await _apply_events(events)


if not settings.direct_ingest:  # one agent per topic: each is compacted and read in its own order
    load_artworks = app.agent(topics.artworks, name="load_artworks", concurrency=1)(load_catalog)
    load_curated = app.agent(topics.curated, name="load_curated", concurrency=1)(load_catalog)
    load_image_catalog = app.agent(topics.image_catalog, name="load_image_catalog", concurrency=1)(load_catalog)
