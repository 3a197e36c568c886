"""Event parsing: raw bytes -> `Signal` / `Identity`, or a `Rejected` with a reason code.

Pure functions, no faust. The event map turns real event names into signal kinds; the
defaults cover the art-marketplace names and the Segment e-commerce spec, and
``RECSTREAM_EVENT_MAP`` (JSON object or ``@file.json``) adds or overrides names.

Nothing a producer sends makes a parser raise: bad bytes, invalid UTF-8, deep nesting, huge or
non-finite numbers, ids of the wrong type or length each come back as a `Rejected` with its own
reason (listed in docs/events.md), whose detail says what was wrong, never the value sent.

>>> raw = b'{"type":"track","event":"followedArtist","userId":"u1","messageId":"m1",'
>>> raw += b'"timestamp":"2026-01-01T00:00:00Z","properties":{"owner_id":"a1"}}'
>>> parse_segment(raw)
Signal(kind='follow', user_id='u1', message_id='m1', time=1767225600.0, targets=(Target(artist_id='a1', artwork_id=None, price=None),), order_id=None, source='', offset=-1)
>>> parse_segment(b'{"type":"track"').reason
'invalid_json'
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import msgspec

from streams.records import (
    MAX_ID_CHARS,
    MAX_PRICE,
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
    # experiment exposure: the user saw their recommendations (streams.attribution)
    "experiment_viewed": "exposure",
    "Product List Viewed": "exposure",
}
EXPOSURE = "exposure"  # an event-map kind besides the signal kinds: no affinity, attribution only
RECOMMENDATIONS_LIST = "recommendations"  # Product List Viewed counts with this list_id only


@dataclass(frozen=True)
class Rejected:
    """A message that must go to the dead-letter topic."""

    reason: str
    detail: str


@dataclass(frozen=True)
class Ignored:
    """A well-formed message that carries no signal (e.g. a page view of the home page)."""

    why: str


IMAGE_EVENTS: Mapping[str, str] = {"Image Impression": "impression", "Image Conversion": "conversion"}
Parsed = Signal | Identity | Exposure | ImageEvent | ImageRequest | Rejected | Ignored
Parsed = Signal | Identity | ImageEvent | ImageRequest | Rejected | Ignored


class _Reject(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


_SEGMENT = msgspec.json.Decoder(SegmentEvent)
_TYPED = msgspec.json.Decoder(TypedSignal)
_TYPED_IMAGE = msgspec.json.Decoder(TypedImageEvent)
_IMAGE_REQUEST = msgspec.json.Decoder(ImageRequestIn)


def load_event_map(spec: str = "") -> dict[str, str]:
    """Defaults plus overrides from a JSON object string, or ``@path`` to a JSON file."""
    mapping = dict(DEFAULT_EVENT_MAP)
    if not spec:
        return mapping
    text = open(spec[1:], encoding="utf-8").read() if spec.startswith("@") else spec
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
    """A parser whose checks raise _Reject deep inside returns the Rejected instead."""
    @functools.wraps(parse)
    def parsed(*args, **kwargs) -> Parsed:
        try:
            return parse(*args, **kwargs)
        except _Reject as rej:
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
    ev = _decode(_SEGMENT, raw, max_bytes)
    if isinstance(ev, Rejected):
        return ev
    return _from_segment(ev, raw, event_map, unmapped)


def _decode(decoder: msgspec.json.Decoder, raw: bytes, max_bytes: int):
    """Size and nesting checks, then a validating decode; a Rejected with the reason instead of
    raising. msgspec's messages name the path and the expected type, never the value."""
    if len(raw) > max_bytes:
        return Rejected("oversized", f"{len(raw)} bytes > limit {max_bytes}")
    if too_deep(raw):
        return Rejected("too_deep", f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return Rejected(*decode_problem(exc))


def decode_problem(exc: Exception) -> tuple[str, str]:
    """The dead-letter reason and detail for what a decoder raised (never the values).
    RecursionError cannot come after the depth check; kept as the last line of defence."""
    if isinstance(exc, msgspec.ValidationError):
        return "invalid_field", str(exc)
    if isinstance(exc, msgspec.DecodeError):
        return "invalid_json", str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return "invalid_utf8", f"invalid UTF-8 at byte {exc.start}"
    if isinstance(exc, RecursionError):
        return "too_deep", "JSON nested too deep"
    return "internal_error", f"{type(exc).__name__} while decoding"


MAX_DEPTH = 32  # Segment events nest 3-5 levels; msgspec itself recurses to ~1,000 and then raises
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON arrays/objects nest deeper than `limit` (brackets in strings do not count).
    Almost every message has fewer brackets than the limit, which a count in C shows at once.

    >>> too_deep(b'{"a": [1, {"b": "[[[["}]}', limit=3), too_deep(b'[' * 4 + b']' * 4, limit=3)
    (False, True)
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for bracket in _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS):
        depth += 1 if bracket in b"[{" else -1
        if depth > limit:
            return True
    return False


@_rejecting
def parse_typed(kind: str, raw: bytes, *, max_bytes: int = 65536) -> Parsed:
    """Parse a message from a typed signal topic (``signals.<kind>``)."""
    if kind not in SIGNAL_KINDS:
        return Rejected("unmapped_event", "no such signal kind")
    rec = _decode(_TYPED, raw, max_bytes)
    if isinstance(rec, Rejected):
        return rec
    if not rec.user_id:
        return Rejected("missing_user", "user_id is empty")
    _ids_within_limit(rec.user_id, rec.message_id, rec.artist_id, rec.artwork_id, rec.order_id, *rec.artwork_ids)
    _opt_price({"price": rec.price}, "price")
    ids = list(rec.artwork_ids) + ([rec.artwork_id] if rec.artwork_id else [])
    targets = tuple(Target(rec.artist_id, a, rec.price) for a in ids)
    if not targets and rec.artist_id:
        targets = (Target(rec.artist_id, None, rec.price),)
    if not targets:
        return Rejected("missing_property", "one of artist_id, artwork_id, artwork_ids is required")
    return Signal(kind, rec.user_id, rec.message_id or _content_id(raw), _epoch(rec.timestamp),
                  targets, rec.order_id)


# --- Segment details ----------------------------------------------------------------------


def _from_segment(ev: SegmentEvent, raw: bytes, event_map: Mapping[str, str], unmapped: str) -> Parsed:
    message_id = _checked_id(ev.messageId, "messageId") or _content_id(raw)
    when = ev.timestamp or ev.originalTimestamp
    if ev.type in ("identify", "alias"):
        return _identity(ev, message_id, when)
    user = _user_id(ev.userId or ev.anonymousId)
    if not user:
        raise _Reject("missing_user", "neither userId nor anonymousId is set")
    if when is None:
        raise _Reject("missing_timestamp", "neither timestamp nor originalTimestamp is set")
    if ev.type == "track":
        if not ev.event:
            raise _Reject("missing_event", "track without an event name")
        if len(ev.event) > MAX_ID_CHARS:
            raise _Reject("invalid_property", f"event name longer than {MAX_ID_CHARS} characters")
        if ev.event in IMAGE_EVENTS:
            return _image_event(IMAGE_EVENTS[ev.event], user, ev.properties, message_id, _epoch(when))
        kind = event_map.get(ev.event)
        if kind is None:
            if unmapped == "ignore":
                return Ignored(f"unmapped event {ev.event!r}")
            raise _Reject("unmapped_event", "the event name is not in the event map")
        if kind == "ignore":
            return Ignored(f"event {ev.event!r} mapped to ignore")
        if kind == EXPOSURE:
            return _exposure(ev, user, message_id, _epoch(when))
        targets = _TARGETS[kind](ev.properties)
        order_id = _opt_id(ev.properties, "order_id") if kind == "order" else None
        return Signal(kind, user, message_id, _epoch(when), targets, order_id)
    if ev.type in ("screen", "page"):
        owner_type = ev.properties.get("context_screen_owner_type")
        owner_id = _opt_id(ev.properties, "context_screen_owner_id")
        if owner_type not in ("artwork", "artist") or not owner_id:
            return Ignored(f"{ev.type} without an artwork/artist owner")
        target = Target(artist_id=owner_id) if owner_type == "artist" else Target(artwork_id=owner_id)
        return Signal("view", user, message_id, _epoch(when), (target,))
    raise _Reject("unknown_type", "type is not track, screen, page, identify or alias")


def _exposure(ev: SegmentEvent, user: str, message_id: str, time: float) -> Parsed:
    """The user saw their recommendations: `experiment_viewed`, or `Product List Viewed` with
    ``list_id: "recommendations"`` (other product lists are not ours). ``products[]`` with
    ``product_id``/``artwork_id`` name the works shown; without them, the user's current list."""
    if ev.event == "Product List Viewed" and ev.properties.get("list_id") != RECOMMENDATIONS_LIST:
        return Ignored("a product list other than the recommendations")
    products = ev.properties.get("products")
    if not isinstance(products, list) or not products:
        return Exposure(user, message_id, time)
    works = [_opt_id(p, "artwork_id") or _opt_id(p, "product_id") for p in products if isinstance(p, dict)]
    return Exposure(user, message_id, time, [(w, "") for w in works if w])


def _image_event(kind: str, user: str, p: dict, message_id: str, time: float) -> ImageEvent:
    consumer = _opt_id(p, "consumer_id") or user
    merchant, image = _opt_id(p, "merchant_id"), _opt_id(p, "image_id")
    if not merchant or not image:
        raise _Reject("missing_property", "image events need merchant_id and image_id")
    return ImageEvent(kind, consumer, merchant, image, message_id, time, _opt_id(p, "order_id"))


@_rejecting
def parse_typed_image(kind: str, raw: bytes, *, max_bytes: int = 65536) -> Parsed:
    """images.impressions / images.conversions records."""
    rec = _decode(_TYPED_IMAGE, raw, max_bytes)
    if isinstance(rec, Rejected):
        return rec
    if not (rec.consumer_id and rec.merchant_id and rec.image_id):
        return Rejected("missing_property", "consumer_id, merchant_id and image_id must be non-empty")
    _ids_within_limit(rec.consumer_id, rec.merchant_id, rec.image_id, rec.message_id, rec.order_id)
    return ImageEvent(kind, rec.consumer_id, rec.merchant_id, rec.image_id, rec.message_id or _content_id(raw),
                      _epoch(rec.timestamp), rec.order_id)


@_rejecting
def parse_image_request(raw: bytes, *, max_bytes: int = 65536) -> Parsed:
    req = _decode(_IMAGE_REQUEST, raw, max_bytes)
    if isinstance(req, Rejected):
        return req
    if not req.consumer_id or not req.request_id or not req.merchant_ids:
        return Rejected("missing_property", "request_id, consumer_id and merchant_ids are required")
    _ids_within_limit(req.request_id, req.consumer_id, req.query, *req.merchant_ids)
    return ImageRequest(req.request_id, req.consumer_id, req.merchant_ids, req.query)


def _identity(ev: SegmentEvent, message_id: str, when: datetime | None) -> Parsed:
    previous = _user_id(ev.previousId if ev.type == "alias" else ev.anonymousId)
    if not _user_id(ev.userId):
        raise _Reject("missing_user", f"{ev.type} without userId")
    if ev.type == "alias" and not previous:
        raise _Reject("missing_previous_id", "alias without previousId")
    if not previous or previous == ev.userId:
        return Ignored(f"{ev.type} links no other id")
    return Identity(ev.userId, previous, message_id, _epoch(when) if when else 0.0)


def _follow_targets(p: dict) -> tuple[Target, ...]:
    owner_type = p.get("owner_type", "artist")
    artist = _opt_id(p, "owner_id") if owner_type == "artist" else None
    artist = artist or _opt_id(p, "artist_id")
    if not artist:
        raise _Reject("missing_property", "follow needs owner_id (owner_type artist) or artist_id")
    return (Target(artist_id=artist),)


def _artwork_targets(p: dict) -> tuple[Target, ...]:
    artist = _opt_id(p, "artist_id")
    price = _opt_price(p, "price")
    ids = p.get("artwork_ids")
    if ids is not None:
        if not isinstance(ids, list) or not all(type(i) is str and 0 < len(i) <= MAX_ID_CHARS for i in ids):
            raise _Reject("invalid_id", f"artwork_ids must be a list of string ids of 1 to {MAX_ID_CHARS} characters")
        artworks = ids
    else:
        one = _opt_id(p, "artwork_id") or _opt_id(p, "product_id")
        if not one and p.get("item_type") in ("artwork", "artist"):
            one = _opt_id(p, "item_id")
            if p["item_type"] == "artist" and one:
                return (Target(artist_id=one),)
        artworks = [one] if one else []
    if artworks:
        return tuple(Target(artist, a, price) for a in artworks)
    if artist:
        return (Target(artist_id=artist, price=price),)
    raise _Reject("missing_property", "needs artwork_id, artwork_ids, product_id or artist_id")


def _order_targets(p: dict) -> tuple[Target, ...]:
    products = p.get("products")
    if products is None:
        return _artwork_targets(p)
    if not isinstance(products, list) or not products:
        raise _Reject("invalid_property", "products must be a non-empty list")
    targets = []
    for i, prod in enumerate(products):
        if not isinstance(prod, dict):
            raise _Reject("invalid_property", f"products[{i}] must be an object")
        try:
            targets.extend(_artwork_targets(prod))
        except _Reject as rej:
            raise _Reject(rej.reason, f"products[{i}]: {rej.detail}") from None
    return tuple(targets)


def _inquiry_targets(p: dict) -> tuple[Target, ...]:
    targets = _artwork_targets(p)
    products = p.get("products")
    if isinstance(products, list) and products and isinstance(products[0], dict):
        price = _opt_price(products[0], "price")
        targets = tuple(Target(t.artist_id, t.artwork_id, t.price if t.price is not None else price) for t in targets)
    return targets


def _collection_targets(p: dict) -> tuple[Target, ...]:
    artist = _opt_id(p, "artist_id")
    if not artist:
        raise _Reject("missing_property", "collection needs artist_id")
    return (Target(artist_id=artist),)


_TARGETS = {
    "follow": _follow_targets,
    "unfollow": _follow_targets,
    "save": _artwork_targets,
    "unsave": _artwork_targets,
    "view": _artwork_targets,
    "inquiry": _inquiry_targets,
    "order": _order_targets,
    "collection": _collection_targets,
}


def _opt_id(p: dict, name: str) -> str | None:
    """An optional id property: a non-empty JSON string of at most MAX_ID_CHARS (ids are
    type-exact: 5 and "5" are different JSON, and true is no id)."""
    value = p.get(name)
    if value is None or value == "":
        return None
    if type(value) is not str:
        raise _Reject("invalid_id", f"{name} must be a string id, got {type(value).__name__}")
    return _checked_id(value, name)


def _checked_id(value: str | None, name: str) -> str | None:
    if value is not None and len(value) > MAX_ID_CHARS:
        raise _Reject("invalid_id", f"{name} is longer than {MAX_ID_CHARS} characters")
    return value


def _ids_within_limit(*ids: str | None) -> None:
    for value in ids:
        _checked_id(value, "an id")


def _user_id(value: str | None) -> str | None:
    return _checked_id(value, "user id")


def _opt_price(p: dict, name: str) -> float | None:
    """A finite price from 0 to MAX_PRICE, as a JSON number or a numeric string."""
    value = p.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (
            isinstance(value, str) and len(value) > 40):
        raise _Reject("invalid_property", f"{name} must be a number")
    try:
        price = float(value)
    except (ValueError, OverflowError):  # OverflowError: an int too large for a float
        raise _Reject("invalid_property", f"{name} must be a number") from None
    if not 0 <= price <= MAX_PRICE:  # also rejects NaN and the infinities
        raise _Reject("invalid_property", f"{name} must be a finite number from 0 to {MAX_PRICE:g}")
    return price


def _epoch(when: datetime) -> float:
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _content_id(raw: bytes) -> str:
    # Without a messageId, identical bytes (a producer retry) still dedup.
    return "sha1:" + hashlib.sha1(raw).hexdigest()


def resolve_artists(signal: Signal, artist_of: Mapping[str, str] | Any) -> Signal | Rejected:
    """Fill each artwork target's artist from the catalog; reject if an artwork is unknown."""
    for t in signal.targets:  # a plain loop: this runs for every signal (all() took a generator)
        if not t.artist_id:
            break
    else:
        return signal
    resolved = []
    for i, t in enumerate(signal.targets):
        if t.artist_id is None:
            artist = artist_of.get(t.artwork_id)
            if artist is None:
                return Rejected("unknown_artwork", f"artwork {i + 1} of {len(signal.targets)} is not in the catalog")
            t = Target(artist, t.artwork_id, t.price)
        resolved.append(t)
    return msgspec.structs.replace(signal, targets=tuple(resolved))
