"""catalog.artworks / catalog.curated (compacted) -> global tables and every worker's catalog
index; newly recommendable works trigger a refresh for their artist's fans on every partition."""

import functools

from agents.deadletters import decoded, send_dead_letter
from streams.core.catalog import decode_artwork, decode_curated
from streams.core.events import Rejected
from streams.core.ingest import decode_or_reject
from streams.core.metrics import metrics
from streams.core.properties import is_id
from streams.core.records import MAX_ID_CHARS, Refresh, encode_keyed
from streams.worker import tables, topics
from streams.worker.app import app, settings
from streams.worker.runtime import event_context


@app.agent(topics.artworks, concurrency=1)
async def load_artworks(stream):
    async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
        tables.ensure_catalog_loaded()
        refresh: dict[str, bytes] = {}  # artist -> newest changed work (one refresh per artist per batch)
        for event in events:
            for artist, raw in await _apply(event):
                refresh[artist] = raw
        for artist, raw in refresh.items():
            for partition in range(settings.partitions):
                await topics.signals.send(key=artist.encode(), partition=partition,
                                          value=encode_keyed(Refresh(artist, raw)))


async def _apply(event) -> list[tuple[str, bytes | None]]:
    """Store one catalog record; returns the (artist, record) whose fans should see the change."""
    if event.value is None:  # tombstone: the artwork is gone
        return await _remove(event)
    artwork = await decoded(event, functools.partial(decode_artwork, key=event.message.key), "invalid_artwork")
    if artwork is None:
        return []
    with event_context(event):
        old = tables.catalog_index.get(artwork.id)
        tables.artworks[artwork.id] = event.value
    newly_recommendable = tables.catalog_index.upsert(artwork)
    metrics.inc("recstream_catalog_records_total")
    no_longer = old is not None and old != artwork and not newly_recommendable
    moved = [(old.artist_id, None)] if old is not None and old.artist_id != artwork.artist_id else []  # its old fans
    return [*moved, *([(artwork.artist_id, event.value)] if newly_recommendable or no_longer or moved else [])]


async def _remove(event):
    artwork_id = decode_or_reject(bytes.decode, event.message.key, "invalid_key")
    if isinstance(artwork_id, Rejected) or not is_id(artwork_id):  # an empty or 3 MB key deletes nothing
        await send_dead_letter(event, "invalid_key", f"a tombstone needs an artwork id (1 to {MAX_ID_CHARS} "
                                                     "characters, UTF-8) as its key")
        return []
    with event_context(event):
        old = tables.catalog_index.get(artwork_id)
        tables.artworks.pop(artwork_id, None)
        tables.catalog_index.remove(artwork_id)
    return [] if old is None else [(old.artist_id, None)]


@app.agent(topics.curated, concurrency=1)
async def load_curated(stream):
    async for event in stream.events():
        ids = await decoded(event, functools.partial(decode_curated, key=event.message.key), "invalid_curated")
        if ids is None:
            continue
        tables.editorial["curated"] = event.value
        tables.catalog_index.curated = ids
        metrics.inc("recstream_curated_updates_total")
