"""Segment and typed input topics -> signals.keyed (re-keyed by user id) or a dead letter."""

from streams import topics
from streams.app import app, parser_config
from streams.catalog import ArtistLookup
from streams.events import Ignored, Rejected
from streams.ingest import dead_letter, ingest_one
from streams.metrics import metrics
from streams.records import Identity, ImageEvent, ImageRequest, encode_keyed
from streams.tables import artworks

artist_of = ArtistLookup(artworks)


@app.agent(topics.inputs, concurrency=1)
async def ingest(stream):
    async for event in stream.events():
        msg = event.message
        result = ingest_one(event.value, topics.TYPED_BY_NAME.get(msg.topic), artist_of, parser_config)
        if isinstance(result, Rejected):
            metrics.inc("recstream_dead_letters_total", reason=result.reason)
            await topics.deadletter.send(
                key=msg.key, value=dead_letter(result, msg.topic, msg.partition, msg.offset, msg.key, event.value))
        elif isinstance(result, Ignored):
            metrics.inc("recstream_events_ignored_total")
        elif isinstance(result, (ImageEvent, ImageRequest)):
            metrics.inc("recstream_events_total", kind="image_request" if isinstance(result, ImageRequest) else f"image_{result.kind}")
            await topics.images_keyed.send(key=result.consumer_id.encode(), value=encode_keyed(result))
        else:
            kind = "identity" if isinstance(result, Identity) else result.kind
            metrics.inc("recstream_events_total", kind=kind)
            # identity links go to the partition of the id being merged away
            key = result.previous_id if isinstance(result, Identity) else result.user_id
            await topics.signals.send(key=key.encode(), value=encode_keyed(result))
