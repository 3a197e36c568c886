"""Segment and typed input topics -> signals.keyed / images.keyed (re-keyed by user or
consumer), a retry for events whose artwork the catalog does not know yet, or a dead letter."""

import asyncio
import time

import msgspec

from streams import topics
from streams.app import app, parser_config, settings
from streams.catalog import ArtistLookup
from streams.faustutil import send_all
from streams.ingest import DEADLETTER, IMAGES, PENDING, SIGNALS, ingest_one, outcome, route
from streams.metrics import metrics
from streams.records import Pending
from streams.tables import artworks

artist_of = ArtistLookup(artworks)
_pending = msgspec.msgpack.Decoder(Pending)
DESTINATIONS = {SIGNALS: topics.signals, IMAGES: topics.images_keyed, PENDING: topics.pending,
                DEADLETTER: topics.deadletter}


@app.agent(topics.inputs, concurrency=1)
async def ingest(stream):
    async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
        out = []
        for event in events:
            msg = event.message
            out.extend(_route(event.value, topics.TYPED_BY_NAME.get(msg.topic), msg.topic, msg.partition,
                              msg.offset, msg.key, None))
        await send_all(app, out)


@app.agent(topics.pending, concurrency=1)
async def retry_pending(stream):
    """Due times only grow along the topic (give or take one backoff step), so waiting for the
    head never runs a message early."""
    async for raw in stream:
        pending = _pending.decode(raw)
        wait = pending.due - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        await send_all(app, _route(pending.value, topics.TYPED_BY_NAME.get(pending.topic), pending.topic,
                                   pending.partition, pending.offset, pending.key, pending))


def _route(value, typed_kind, topic, partition, offset, key, pending) -> list[tuple]:
    """What to send for one input message: its signal, a retry, or a dead letter."""
    result = ingest_one(value, typed_kind, artist_of, parser_config)
    dest = route(result, topic, partition, offset, key, value, pending, time.time(), settings.unknown_artwork_patience_s)
    kind = outcome(result)
    if dest is not None and dest[0] == PENDING:
        metrics.inc("recstream_pending_retries_total")
    elif kind == "rejected":
        metrics.inc("recstream_dead_letters_total", reason=result.reason)
        app.log.warning("dead letter: reason=%s topic=%s partition=%s offset=%s", result.reason, topic, partition, offset)
    elif kind == "ignored":
        metrics.inc("recstream_events_ignored_total")
    else:
        metrics.inc("recstream_events_total", kind=kind)
    return [] if dest is None else [(DESTINATIONS[dest[0]], dest[1], dest[2])]
