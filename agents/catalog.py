"""catalog.artworks (compacted) -> the artworks GlobalTable every worker reads."""

import msgspec

from streams import topics
from streams.app import app
from streams.catalog import decode_artwork
from streams.events import Rejected
from streams.ingest import dead_letter
from streams.metrics import metrics
from streams.tables import artworks


@app.agent(topics.artworks, concurrency=1)
async def load_artworks(stream):
    async for event in stream.events():
        msg = event.message
        if event.value is None:  # tombstone: the artwork is gone
            artworks.pop(msg.key.decode(), None)
            continue
        try:
            artwork = decode_artwork(event.value)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            metrics.inc("recstream_dead_letters_total", reason="invalid_artwork")
            await topics.deadletter.send(key=msg.key, value=dead_letter(
                Rejected("invalid_artwork", str(exc)), msg.topic, msg.partition, msg.offset, msg.key, event.value))
            continue
        artworks[artwork.id] = event.value
        metrics.inc("recstream_catalog_records_total")
