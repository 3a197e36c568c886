"""Event parsing: raw bytes -> `Signal` / `Identity`, or a `Rejected` with a reason code.

Pure functions, no faust. The event map turns real event names into signal kinds; the


defaults cover the art-marketplace names and the Segment e-commerce spec, and
``RECSTREAM_EVENT_MAP`` (JSON object or ``@file.json``) adds or overrides names.

Nothing a producer sends makes a parser raise: bad bytes, invalid UTF-8, deep nesting, huge or
non-finite numbers, ids of the wrong type or length each come back as a `Rejected` with its own
reason (listed in docs/events.md), whose detail says what was wrong, never the value sent.

>>> raw = b'{"type":"track","event":"followedArtist","userId":"u1","messageId":"m1",'
>>> raw += b'"timestamp":"2026-01-01T00:00:00Z","properties":{"owner_id":"a1"}}'
>>> signal = parse_segment(raw)
>>> signal.kind, signal.user_id, signal.message_id, signal.time, signal.targets
('follow', 'u1', 'm1', 1767225600.0, (Target(artist_id='a1', artwork_id=None, price=None),))
>>> parse_segment(b'{"type":"track"').reason
'invalid_json'
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import msgspec

from streams.core.jsonguard import decode_checked, spec_text
from streams.core.properties import (
    TARGETS,
    Reject,
    Rejected,
    checked_id,
    clean_user_id,
    content_id,
    epoch,
    ids_within_limit,
    is_id,
    joinable,
    opt_id,
    opt_price,
)
from streams.core.records import (
    MAX_ID_CHARS,
    SIGNAL_KINDS,
    Exposure,
    Identity,
    ImageEvent,
    ImageRequest,
    ImageRequestIn,
    SegmentEvent,
    Signal,
    Target,
    TypedImageEvent,
    TypedSignal,
)

DEFAULT_EVENT_MAP: Mapping[str, str] = {
    # art marketplace
    "followedArtist": "follow",
    "unfollowedArtist": "unfollow",
    "addedArtworkToArtworkList": "save",
    "removedArtworkFromArtworkList": "unsave",
    "artworkSave": "save",
    "artworkUnsave": "unsave",
    "item_viewed": "view",
    "clickedMainArtworkGrid": "view",
    "sentArtworkInquiry": "inquiry",
    "submittedOrder": "order",
    "submittedOffer": "order",
    "addCollectedArtwork": "collection",
    "saveCollectedArtwork": "collection",
    # Segment e-commerce spec
    "Product Added to Wishlist": "save",
    "Product Removed from Wishlist": "unsave",
    "Product Viewed": "view",
    "Product Clicked": "view",
    "Order Completed": "order",
    # experiment exposure: the user saw their recommendations (streams.core.attribution)
    "experiment_viewed": "exposure",
    "Product List Viewed": "exposure",
}
EXPOSURE = "exposure"  # an event-map kind besides the signal kinds: no affinity, attribution only
RECOMMENDATIONS_LIST = "recommendations"  # Product List Viewed counts with this list_id only


@dataclass(frozen=True)
class Ignored:
    """A well-formed message that carries no signal (e.g. a page view of the home page)."""

    why: str


IMAGE_EVENTS: Mapping[str, str] = {"Image Impression": "impression", "Image Conversion": "conversion"}

Parsed = Signal | Identity | Exposure | ImageEvent | ImageRequest | Rejected | Ignored


_SEGMENT = msgspec.json.Decoder(SegmentEvent)
_TYPED = msgspec.json.Decoder(TypedSignal)
_TYPED_IMAGE = msgspec.json.Decoder(TypedImageEvent)
_IMAGE_REQUEST = msgspec.json.Decoder(ImageRequestIn)
MAX_REQUEST_MERCHANTS = 64  # one reply: 64 choices of an 8 KB url and 1 KB ids stay under Kafka's 1 MB


def load_event_map(spec: str = "") -> dict[str, str]:
    """Defaults plus overrides from a JSON object string, or ``@path`` to a JSON file."""
    mapping = dict(DEFAULT_EVENT_MAP)
    if not spec:
        return mapping
    text = spec_text(spec)
    extra = json.loads(text)
    if not isinstance(extra, dict):
        raise ValueError("event map must be a JSON object {eventName: kind}")
    for name, kind in extra.items():
        if kind not in SIGNAL_KINDS and kind not in ("ignore", EXPOSURE):
            raise ValueError(f"event map: {name!r} -> {kind!r}; kind must be one of {SIGNAL_KINDS}, "
                             f"'{EXPOSURE}' or 'ignore'")
        mapping[name] = kind
    return mapping


def _rejecting(parse: Callable[..., Parsed]) -> Callable[..., Parsed]:
    """A parser whose checks raise Reject deep inside returns the Rejected instead; ids that
    would collide in table keys are rejected here, once for every parser."""
    @functools.wraps(parse)
    def parsed(*args, **kwargs) -> Parsed:
        try:
            return joinable(parse(*args, **kwargs))
        except Reject as rej:
            return Rejected(rej.reason, rej.detail)
    return parsed


@_rejecting
def parse_segment(
    raw: bytes,
    event_map: Mapping[str, str] = DEFAULT_EVENT_MAP,
    *,
    max_bytes: int = 65536,
    unmapped: str = "dead-letter",
) -> Parsed:
    """Parse one Segment JSON message. Never raises on bad input."""
    ev = decode_checked(_SEGMENT, raw, max_bytes)
    if isinstance(ev, Rejected):
        return ev
    return _from_segment(ev, raw, event_map, unmapped)


@_rejecting
def parse_typed(kind: str, raw: bytes, *, max_bytes: int = 65536) -> Parsed:
    """Parse a message from a typed signal topic (``signals.<kind>``)."""
    if kind not in SIGNAL_KINDS:
        return Rejected("unmapped_event", "no such signal kind")
    rec = decode_checked(_TYPED, raw, max_bytes)
    if isinstance(rec, Rejected):
        return rec
    user = clean_user_id(rec.user_id)
    if not user:
        return Rejected("missing_user", "user_id is empty")
    if rec.timestamp is None:
        return Rejected("missing_timestamp", "timestamp is not set")
    if not all(is_id(i) for i in rec.artwork_ids):
        return Rejected("invalid_id", f"artwork_ids must be string ids of 1 to {MAX_ID_CHARS} characters")
    fields = {"artist_id": rec.artist_id, "artwork_id": rec.artwork_id, "price": rec.price, "order_id": rec.order_id}
    price, work = opt_price(fields, "price"), opt_id(fields, "artwork_id")
    ids = list(rec.artwork_ids) + ([work] if work else [])
    # "" or blanks is no artist (as on Segment): the catalog names the artwork's
    artist = opt_id(fields, "artist_id")
    targets = tuple(Target(artist, a, price) for a in ids) or ((Target(artist, None, price),) if artist else ())
    if not targets:
        return Rejected("missing_property", "one of artist_id, artwork_id, artwork_ids is required")
    return Signal(kind, user, checked_id(rec.message_id, "message_id") or content_id(raw), epoch(rec.timestamp),
                  targets, opt_id(fields, "order_id") if kind == "order" else None)  # read for orders, as on Segment


# --- Segment details ----------------------------------------------------------------------


def _from_segment(ev: SegmentEvent, raw: bytes, event_map: Mapping[str, str], unmapped: str) -> Parsed:
    message_id = checked_id(ev.messageId, "messageId") or content_id(raw)
    when = ev.timestamp or ev.originalTimestamp
    if ev.type in ("identify", "alias"):
        return _identity(ev, message_id, when)
    if ev.type == "group":  # Segment's SDKs send it (user -> account): no signal, and no fault of the sender
        return Ignored("group calls carry no signal")
    named = clean_user_id(ev.userId)
    user, anonymous = named or clean_user_id(ev.anonymousId), not named  # a blank userId is none
    if not user:
        raise Reject("missing_user", "neither userId nor anonymousId is set")
    if when is None:
        raise Reject("missing_timestamp", "neither timestamp nor originalTimestamp is set")
    if ev.type == "track":
        if not ev.event:
            raise Reject("missing_event", "track without an event name")
        if len(ev.event) > MAX_ID_CHARS:
            raise Reject("invalid_property", f"event name longer than {MAX_ID_CHARS} characters")
        if ev.event in IMAGE_EVENTS:
            return _image_event(IMAGE_EVENTS[ev.event], user, ev.properties, message_id, epoch(when))
        kind = event_map.get(ev.event)
        if kind is None:
            if unmapped == "ignore":
                return Ignored(f"unmapped event {ev.event!r}")
            raise Reject("unmapped_event", "the event name is not in the event map")
        if kind == "ignore":
            return Ignored(f"event {ev.event!r} mapped to ignore")
        if kind == EXPOSURE:
            return _exposure(ev, user, message_id, epoch(when))
        targets = TARGETS[kind](ev.properties)
        order_id = opt_id(ev.properties, "order_id") if kind == "order" else None
        return Signal(kind, user, message_id, epoch(when), targets, order_id, anonymous=anonymous)
    if ev.type in ("screen", "page"):
        owner_type = ev.properties.get("context_screen_owner_type")
        owner_id = opt_id(ev.properties, "context_screen_owner_id")
        if owner_type not in ("artwork", "artist") or not owner_id:
            return Ignored(f"{ev.type} without an artwork/artist owner")
        target = Target(artist_id=owner_id) if owner_type == "artist" else Target(artwork_id=owner_id)
        return Signal("view", user, message_id, epoch(when), (target,), anonymous=anonymous)
    raise Reject("unknown_type", "type is not track, screen, page, identify, alias or group")


def _exposure(ev: SegmentEvent, user: str, message_id: str, time: float) -> Parsed:
    """The user saw their recommendations: `experiment_viewed`, or `Product List Viewed` with
    ``list_id: "recommendations"`` (other product lists are not ours). ``products[]`` with
    ``product_id``/``artwork_id`` name the works shown; without them, the user's current list."""
    if ev.event == "Product List Viewed" and ev.properties.get("list_id") != RECOMMENDATIONS_LIST:
        return Ignored("a product list other than the recommendations")
    products = ev.properties.get("products")
    if not isinstance(products, list) or not products:
        return Exposure(user, message_id, time)
    works = [opt_id(p, "artwork_id") or opt_id(p, "product_id") for p in products if isinstance(p, dict)]
    return Exposure(user, message_id, time, [(w, "") for w in works if w])


def _image_event(kind: str, user: str, p: dict, message_id: str, time: float) -> ImageEvent:
    consumer = opt_id(p, "consumer_id") or user
    merchant, image = opt_id(p, "merchant_id"), opt_id(p, "image_id")
    if not merchant or not image:
        raise Reject("missing_property", "image events need merchant_id and image_id")
    return ImageEvent(kind, consumer, merchant, image, message_id, time, opt_id(p, "order_id"))


@_rejecting
def parse_typed_image(kind: str, raw: bytes, *, max_bytes: int = 65536) -> Parsed:
    """images.impressions / images.conversions records."""
    rec = decode_checked(_TYPED_IMAGE, raw, max_bytes)
    if isinstance(rec, Rejected):
        return rec
    ids_within_limit(rec.consumer_id, rec.merchant_id, rec.image_id, rec.message_id, rec.order_id)
    if not all(is_id(i) for i in (rec.consumer_id, rec.merchant_id, rec.image_id)):
        return Rejected("missing_property", "consumer_id, merchant_id and image_id must be non-empty")
    return ImageEvent(kind, rec.consumer_id, rec.merchant_id, rec.image_id,
                      checked_id(rec.message_id, "message_id") or content_id(raw), epoch(rec.timestamp),
                      checked_id(rec.order_id, "order_id") or None)


@_rejecting
def parse_image_request(raw: bytes, *, max_bytes: int = 65536) -> Parsed:
    req = decode_checked(_IMAGE_REQUEST, raw, max_bytes)
    if isinstance(req, Rejected):
        return req
    ids_within_limit(req.request_id, req.consumer_id, *req.merchant_ids)
    if not (is_id(req.consumer_id) and is_id(req.request_id) and req.merchant_ids):
        return Rejected("missing_property", "request_id, consumer_id and merchant_ids are required")
    merchants = requested_merchants(req.merchant_ids)
    if isinstance(merchants, Rejected):
        return merchants
    return ImageRequest(req.request_id, req.consumer_id, merchants, req.query)


def requested_merchants(ids: list) -> list[str] | Rejected:
    """A request's merchants, each once (the request topic's and `GET /images/{consumer}`'s rule), or
    why they are refused: one named 30 times made a 30 MB reply, 2,700 held the event loop 0.3 s.

    >>> requested_merchants(["m1", "m2", "m1"]), requested_merchants([f"m{i}" for i in range(65)]).reason
    (['m1', 'm2'], 'invalid_property')
    """
    if not all(is_id(m) for m in ids):
        return Rejected("invalid_id", "merchant_ids must be non-blank string ids")
    merchants = list(dict.fromkeys(ids))
    if len(merchants) > MAX_REQUEST_MERCHANTS:
        return Rejected("invalid_property", f"merchant_ids names more than {MAX_REQUEST_MERCHANTS} merchants")
    return merchants


def _identity(ev: SegmentEvent, message_id: str, when: datetime | None) -> Parsed:
    user, previous = clean_user_id(ev.userId), clean_user_id(ev.previousId if ev.type == "alias" else ev.anonymousId)
    if not user and (ev.type == "alias" or not previous):
        raise Reject("missing_user", f"{ev.type} without userId")
    if ev.type == "alias" and not previous:
        raise Reject("missing_previous_id", "alias without previousId")
    if not (user and previous) or previous == user:  # an anonymous visitor's traits, or itself: no link
        return Ignored(f"{ev.type} links no other id")
    return Identity(user, previous, message_id, epoch(when) if when else 0.0)


