"""The event contract: typed records in and out (msgspec structs, no faust). Inputs are decoded with msgspec,
which validates types while decoding and reports the offending path (``Expected `str`, got `int` - at
`$.userId```): that message becomes the dead-letter reason."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

import msgspec

# --- inputs -------------------------------------------------------------------------------

MAX_ID_CHARS, MAX_PRICE = 256, 1e12  # longer ids are rejected (a user id fits a URL); prices are finite, 0 to this

SIGNAL_KINDS = ("follow", "unfollow", "save", "unsave", "view", "inquiry", "order", "collection")


class SegmentEvent(msgspec.Struct, rename=None):
    """The Segment common fields we read. Unknown fields are ignored."""

    type: str
    event: str | None = None
    userId: str | None = None
    anonymousId: str | None = None
    previousId: str | None = None
    messageId: str | None = None
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None
    properties: dict[str, Any] = {}
    context: dict[str, Any] = {}


class TypedSignal(msgspec.Struct, forbid_unknown_fields=False):
    """A signal on a typed topic (no Segment envelope), e.g. ``signals.follow``."""

    user_id: str
    timestamp: datetime | None = None  # required: missing_timestamp, as on events.segment
    message_id: str | None = None  # the rest checked as a Segment event's properties are: the same reasons
    artist_id: Any = None
    artwork_id: Any = None
    artwork_ids: list[Any] = []
    price: Any = None
    order_id: Any = None


class Artwork(msgspec.Struct, forbid_unknown_fields=False):
    """Catalog record on the compacted artworks topic (key = artwork id)."""

    id: str
    artist_id: str
    published_at: datetime | None = None
    price: float | None = None
    currency: str = "USD"
    is_merch: bool = False
    availability: str = "for sale"  # for sale | sold | unpublished

    def __post_init__(self):  # a naive published_at is UTC, as event times are (as local time, year 1 raised)
        if self.published_at is not None and self.published_at.tzinfo is None:
            self.published_at = self.published_at.replace(tzinfo=timezone.utc)


# --- normalised signals -------------------------------------------------------------------


# a table value is one changelog record, and the producer refuses one over 1 MiB (a worker stopped for good)
MAX_TABLE_VALUE_BYTES = 1_000_000
# event time, epoch seconds: decoding an internal record refuses an infinite, NaN or absurd one (an
# infinite time froze a profile's clock for good: every later signal decayed to nothing)
EventTime = Annotated[float, msgspec.Meta(ge=0.0, le=1e11)]


class Target(msgspec.Struct, array_like=True, omit_defaults=True):
    """What a signal is about: an artist, or an artwork (artist resolved via the catalog)."""

    artist_id: str | None = None
    artwork_id: str | None = None
    price: float | None = None


class Signal(msgspec.Struct, omit_defaults=True, tag="signal"):
    """One user signal after parsing: the unit the affinity model consumes.

    `source`/`offset`: the input record it came from ("topic:partition", offset), stored per
    user with the state so a redelivery after a crash is recognised however long it is
    (streams.core.positions.first_delivery); offset -1 when unknown (retries), then messageId dedup
    alone applies."""

    kind: str
    user_id: str
    message_id: str
    time: EventTime
    targets: tuple[Target, ...] = ()
    order_id: str | None = None
    source: str = ""
    offset: int = -1
    via: tuple[str, ...] = ()  # aliased ids it was forwarded through (streams.core.aliases)
    anonymous: bool = False  # keyed by its anonymousId (no userId): its profile keeps its share (core.shares)
    # a pending retry's input record ("topic:partition", offset): it counted nothing when read (core.positions)
    origin: str = ""
    origin_offset: int = -1


class Identity(msgspec.Struct, tag="identity"):
    """identify/alias: `previous_id` (an anonymousId or old userId) is now `user_id`."""

    user_id: str
    previous_id: str
    message_id: str
    time: EventTime


class Merge(msgspec.Struct, omit_defaults=True, tag="merge"):
    """An aliased profile moving to its new user id (sent keyed by `user_id`)."""

    user_id: str
    previous_id: str
    message_id: str
    profile: bytes  # streams.core.affinity.Profile, msgpack
    via: tuple[str, ...] = ()  # aliased ids it was forwarded through (streams.core.aliases)


class Refresh(msgspec.Struct, tag="refresh"):
    """A catalog change that matters to an artist's fans; sent to every partition."""

    artist_id: str
    artwork: bytes | None = None  # the new artwork's catalog record (JSON)
    start: int = 0  # the first fan it is for: pipeline.REFRESH_CHUNK a record, the rest in the next one


class Exposure(msgspec.Struct, omit_defaults=True, tag="exposure"):
    """A user saw a recommendations list (experiment attribution, streams.core.attribution): an
    explicit exposure event (Segment ``experiment_viewed``), or a list served over HTTP.
    `items`: the (work id, source) pairs shown; None = the user's current list."""

    user_id: str
    exposure_id: str
    time: EventTime
    items: list[tuple[str, str]] | None = None
    variant: str | None = None  # None: the variant of the user's current list


KeyedRecord = Signal | Identity | Merge | Refresh | Exposure


class ImageEvent(msgspec.Struct, tag="image"):
    """An image impression or conversion, keyed by consumer on images.keyed."""

    kind: str  # impression | conversion
    consumer_id: str
    merchant_id: str
    image_id: str
    message_id: str
    time: EventTime
    order_id: str | None = None
    source: str = ""  # the input record, as on Signal
    offset: int = -1


class ImageRequest(msgspec.Struct, tag="image_request", forbid_unknown_fields=False):
    """A session asks which images to show: images.requests in, images.replies out."""

    request_id: str
    consumer_id: str
    merchant_ids: list[str]
    query: str = ""


class ImageRequestIn(msgspec.Struct, forbid_unknown_fields=False):
    """An images.requests record as clients send it (no tag)."""

    request_id: str
    consumer_id: str
    merchant_ids: list[str]
    query: Annotated[str, msgspec.Meta(max_length=MAX_ID_CHARS)] = ""  # search words, not a document


class TypedImageEvent(msgspec.Struct, forbid_unknown_fields=False):
    """A record on images.impressions / images.conversions (no Segment envelope)."""

    consumer_id: str
    merchant_id: str
    image_id: str
    timestamp: datetime
    message_id: str | None = None
    order_id: str | None = None


ImageKeyed = ImageEvent | ImageRequest


class Pending(msgspec.Struct):
    """An input message waiting for the catalog (an artwork it names is not known yet)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    first_seen: EventTime
    due: EventTime
    attempt: Annotated[int, msgspec.Meta(ge=0, le=64)] = 1  # 5000 overflowed the backoff: a crash at every start

# --- outputs ------------------------------------------------------------------------------


class ArtistScore(msgspec.Struct, array_like=False):
    artist_id: str
    score: float


class AffinityUpdate(msgspec.Struct, omit_defaults=True):
    """``affinity.updates`` record, keyed by user id."""

    user_id: str
    as_of: float | None  # the event time the scores are expressed at (None: an id merged into another)
    artists: list[ArtistScore]
    trigger: str  # messageId of the signal that caused the change
    alias_of: str = ""  # an id merged into another: no artists of its own from then on (core.aliases)


class DeadLetter(msgspec.Struct):
    """``deadletter`` record: why a message was rejected, where it came from, its bytes."""

    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str  # original bytes, base64 (the first DEAD_LETTER_BYTES of them)
    size: int  # of the original value
    truncated: bool = False  # value holds only the first DEAD_LETTER_BYTES


# A dead letter must fit the producer's 1 MB request whatever came in (base64 adds a third):
# a larger original keeps its first 512 KB, and its source position says where the rest is.
DEAD_LETTER_BYTES = 512 * 1024


class RecItem(msgspec.Struct):
    artwork_id: str
    artist_id: str
    score: float
    source: str  # affinity | similar | curated | trending | latest


class Recommendations(msgspec.Struct, omit_defaults=True):
    """``recommendations`` record and table value, keyed by user id."""

    user_id: str
    variant: str
    generated_at: float
    model_version: str
    trigger: str
    items: list[RecItem]
    alias_of: str = ""  # an id merged into another: its last list, and the id whose list is now its (core.aliases)

    def listing(self) -> list[tuple[str, str]]:
        """(artwork id, source) per item: what a client sees of the list, scores aside."""
        return [(i.artwork_id, i.source) for i in self.items]


ENCODER = msgspec.json.Encoder()
_MSGPACK = msgspec.msgpack.Encoder()
_KEYED = msgspec.msgpack.Decoder(KeyedRecord)
_IMAGE_KEYED = msgspec.msgpack.Decoder(ImageKeyed)


def encode_keyed(record) -> bytes:
    """signals.keyed values: msgpack tagged union (internal topic, so compact and fast)."""
    return _MSGPACK.encode(record)


decode_keyed, decode_image_keyed = _KEYED.decode, _IMAGE_KEYED.decode  # signals.keyed, images.keyed values


_RECS = msgspec.json.Decoder(Recommendations)
_FANS_DEC = msgspec.msgpack.Decoder(list[str])


def decode_recs(raw: bytes | None) -> Recommendations | None:
    return None if raw is None else _RECS.decode(raw)


def fans_key(artist_id: str, partition: int) -> str:
    """The fans table's key: an artist's fans on one partition."""
    return f"{artist_id}@{partition}"


def encode_fans(users: list[str]) -> bytes:
    return _MSGPACK.encode(users)


def decode_fans(raw: bytes | None) -> list[str]:
    return _FANS_DEC.decode(raw or b"\x90")


def encode(record: msgspec.Struct) -> bytes:
    return ENCODER.encode(record)
