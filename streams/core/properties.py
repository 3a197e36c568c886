"""Reading Segment properties (pure): ids, prices and times, the targets of each signal kind, and
the artist of an artwork; every check raises Reject with a dead-letter reason."""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import msgspec

from streams.core.records import (
    MAX_ID_CHARS,
    MAX_PRICE,
    ImageEvent,
    ImageRequest,
    Signal,
    Target,
)


@dataclass(frozen=True)
class Rejected:
    """A message that must go to the dead-letter topic."""

    reason: str
    detail: str


class Reject(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _follow_targets(p: dict) -> tuple[Target, ...]:
    owner_type = p.get("owner_type", "artist")
    artist = opt_id(p, "owner_id") if owner_type == "artist" else None
    artist = artist or opt_id(p, "artist_id")
    if not artist:
        raise Reject("missing_property", "follow needs owner_id (owner_type artist) or artist_id")
    return (Target(artist_id=artist),)


def _artwork_targets(p: dict) -> tuple[Target, ...]:
    artist = opt_id(p, "artist_id")
    price = opt_price(p, "price")
    ids = p.get("artwork_ids")
    if ids is not None:
        if not isinstance(ids, list) or not all(is_id(i) for i in ids):
            raise Reject("invalid_id", f"artwork_ids must be a list of string ids of 1 to {MAX_ID_CHARS} characters")
        artworks = ids
    else:
        one = opt_id(p, "artwork_id") or opt_id(p, "product_id")
        if not one and p.get("item_type") in ("artwork", "artist"):
            one = opt_id(p, "item_id")
            if p["item_type"] == "artist" and one:
                return (Target(artist_id=one),)
        artworks = [one] if one else []
    if artworks:
        return tuple(Target(artist, a, price) for a in artworks)
    if artist:
        return (Target(artist_id=artist, price=price),)
    raise Reject("missing_property", "needs artwork_id, artwork_ids, product_id or artist_id")


def _order_targets(p: dict) -> tuple[Target, ...]:
    products = p.get("products")
    if products is None:
        return _artwork_targets(p)
    if not isinstance(products, list) or not products:
        raise Reject("invalid_property", "products must be a non-empty list")
    targets = []
    for i, prod in enumerate(products):
        if not isinstance(prod, dict):
            raise Reject("invalid_property", f"products[{i}] must be an object")
        try:
            targets.extend(_artwork_targets(prod))
        except Reject as rej:
            raise Reject(rej.reason, f"products[{i}]: {rej.detail}") from None
    return tuple(targets)


def _inquiry_targets(p: dict) -> tuple[Target, ...]:
    targets = _artwork_targets(p)
    products = p.get("products")
    if isinstance(products, list) and products and isinstance(products[0], dict):
        price = opt_price(products[0], "price")
        targets = tuple(Target(t.artist_id, t.artwork_id, t.price if t.price is not None else price) for t in targets)
    return targets


def _collection_targets(p: dict) -> tuple[Target, ...]:
    artist = opt_id(p, "artist_id")
    if not artist:
        raise Reject("missing_property", "collection needs artist_id")
    return (Target(artist_id=artist),)


TARGETS = {
    "follow": _follow_targets,
    "unfollow": _follow_targets,
    "save": _artwork_targets,
    "unsave": _artwork_targets,
    "view": _artwork_targets,
    "inquiry": _inquiry_targets,
    "order": _order_targets,
    "collection": _collection_targets,
}


def opt_id(p: dict, name: str) -> str | None:
    """An optional id property: a non-empty JSON string of at most MAX_ID_CHARS (ids are
    type-exact: 5 and "5" are different JSON, and true is no id)."""
    value = p.get(name)
    if value is None or value == "":
        return None
    if type(value) is not str:
        raise Reject("invalid_id", f"{name} must be a string id, got {type(value).__name__}")
    return checked_id(value, name)


# printable letters and symbols drawn as nothing (Hangul fillers, the blank braille pattern): an outside fuzz
_BLANK_GLYPHS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def blank(value: str) -> bool:
    """Nothing a person could see or type back: empty, whitespace, or only invisible characters
    (controls and format characters such as U+200B, the zero-width space, and U+FEFF; combining
    marks with nothing to mark; letters drawn as nothing, such as U+3164, the Hangul filler), which
    would make ids that print alike but key different users.

    >>> blank(""), blank(" \t"), blank("\u200b"), blank("\ufeff\u200d "), blank("a\u200b"), blank("é")
    (True, True, True, True, False, False)
    >>> blank("\u3164\u3164"), blank("\u2800"), blank("\u0301"), blank("e\u0301"), blank("\u3164x")
    (True, True, True, False, False)
    """
    if value.isascii() and value.isprintable():  # the common case, at C speed
        return not value.strip()
    return all(c.isspace() or c in _BLANK_GLYPHS or unicodedata.category(c) in ("Cc", "Cf", "Mn", "Me")
               for c in value)


def checked_id(value: str | None, name: str) -> str | None:
    """`value`, None when it is blank (no id, as ""), Reject when too long.

    >>> checked_id("a1", "artist_id"), checked_id(" \t", "artist_id"), checked_id("\u200b", "user id")
    ('a1', None, None)
    """
    if value is not None:
        if len(value) > MAX_ID_CHARS:
            raise Reject("invalid_id", f"{name} is longer than {MAX_ID_CHARS} characters")
        if blank(value):
            return None
    return value


def first_id(*values: object) -> str | None:
    """The first of `values` that is an id (a blank userId does not hide the anonymousId).

    >>> first_id(" ", None, "anon-1"), first_id("", 5)
    ('anon-1', None)
    """
    return next((v for v in values if is_id(v)), None)


def is_id(value: object) -> bool:
    """A string id of 1 to MAX_ID_CHARS characters, not blank (an item of a list of ids).

    >>> is_id("w1"), is_id(" "), is_id("\u200b"), is_id(7)
    (True, False, False, False)
    """
    return type(value) is str and 0 < len(value) <= MAX_ID_CHARS and not blank(value)


KEY_JOIN = "|"  # joins ids in table keys: artist|artist (co-engagement), merchant|image, consumer|merchant


def joinable(parsed):
    """`parsed`, or a Rejected when an artist or merchant id holds KEY_JOIN: two such ids could
    make the same key ("a|b" + "c" and "a" + "b|c"), and one's counts would land on the other."""
    if isinstance(parsed, Signal):
        ids, name = [t.artist_id for t in parsed.targets if t.artist_id], "artist_id"
    elif isinstance(parsed, ImageEvent):
        ids, name = [parsed.merchant_id], "merchant_id"
    elif isinstance(parsed, ImageRequest):
        ids, name = parsed.merchant_ids, "merchant_ids"
    else:
        return parsed
    if any(KEY_JOIN in i for i in ids):
        return Rejected("invalid_id", f"{name} may not contain {KEY_JOIN!r}: it joins ids in table keys")
    return parsed


def ids_within_limit(*ids: str | None) -> None:
    for value in ids:
        checked_id(value, "an id")


def clean_user_id(value: str | None) -> str | None:
    return checked_id(value, "user id")


def opt_price(p: dict, name: str) -> float | None:
    """A finite price from 0 to MAX_PRICE, as a JSON number or a numeric string."""
    value = p.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (
            isinstance(value, str) and len(value) > 40):
        raise Reject("invalid_property", f"{name} must be a number")
    try:
        price = float(value)
    except (ValueError, OverflowError):  # OverflowError: an int too large for a float
        raise Reject("invalid_property", f"{name} must be a number") from None
    if not 0 <= price <= MAX_PRICE:  # also rejects NaN and the infinities
        raise Reject("invalid_property", f"{name} must be a finite number from 0 to {MAX_PRICE:g}")
    return price


def epoch(when: datetime) -> float:
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def content_id(raw: bytes) -> str:
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
        if not t.artist_id:  # None, or "" from a producer that wrote no artist
            artist = artist_of.get(t.artwork_id)
            if artist is None:
                return Rejected("unknown_artwork", f"artwork {i + 1} of {len(signal.targets)} is not in the catalog")
            t = Target(artist, t.artwork_id, t.price)
        resolved.append(t)
    return msgspec.structs.replace(signal, targets=tuple(resolved))
