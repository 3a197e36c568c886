"""Segment and typed input topics -> signals.keyed / images.keyed (re-keyed by user or
consumer), a retry for events whose artwork the catalog does not know yet, or a dead letter."""

import asyncio
import time

import msgspec

from streams import topics
from streams.app import app, parser_config, settings
from streams.catalog import ArtistLookup
from streams.events import Ignored, Rejected
from streams.faustutil import send_all
from streams.ingest import dead_letter, ingest_one, retry_or_give_up
from streams.metrics import metrics
from streams.records import Identity, ImageEvent, ImageRequest, Pending, encode_keyed
from streams.tables import artworks

artist_of = ArtistLookup(artworks)
_pending = msgspec.msgpack.Decoder(Pending)
_pending_enc = msgspec.msgpack.Encoder()


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
    if isinstance(result, Rejected) and result.reason == "unknown_artwork":
        retry = retry_or_give_up(pending, topic, partition, offset, key, value, time.time(),
                                 settings.unknown_artwork_patience_s)
        if retry is not None:
            metrics.inc("recstream_pending_retries_total")
            return [(topics.pending, key, _pending_enc.encode(retry))]
    if isinstance(result, Rejected):
        metrics.inc("recstream_dead_letters_total", reason=result.reason)
        app.log.warning("dead letter: reason=%s topic=%s partition=%s offset=%s", result.reason, topic, partition, offset)
        return [(topics.deadletter, key, dead_letter(result, topic, partition, offset, key, value))]
    if isinstance(result, Ignored):
        metrics.inc("recstream_events_ignored_total")
        return []
    if isinstance(result, (ImageEvent, ImageRequest)):
        kind = "image_request" if isinstance(result, ImageRequest) else f"image_{result.kind}"
        metrics.inc("recstream_events_total", kind=kind)
        return [(topics.images_keyed, result.consumer_id.encode(), encode_keyed(result))]
    metrics.inc("recstream_events_total", kind="identity" if isinstance(result, Identity) else result.kind)
    # identity links go to the partition of the id being merged away
    user = result.previous_id if isinstance(result, Identity) else result.user_id
    return [(topics.signals, user.encode(), encode_keyed(result))]
