"""Ingest step (pure): one raw input message -> a resolved Signal/Identity, or a dead letter.

The ingest agent calls `ingest_one` and only does I/O with the result.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.events import (
    DEFAULT_EVENT_MAP,
    Ignored,
    Parsed,
    Rejected,
    parse_image_request,
    parse_segment,
    parse_typed,
    parse_typed_image,
    resolve_artists,
)
from streams.records import DeadLetter, Pending, Signal, encode


@dataclass(frozen=True)
class ParserConfig:
    event_map: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_EVENT_MAP))
    max_bytes: int = 65536
    unmapped: str = "dead-letter"


def ingest_one(raw: bytes | None, typed_kind: str | None, artist_of: Any,
               config: ParserConfig) -> Parsed:
    """Parse and resolve artwork -> artist. `typed_kind`: None for Segment, a signal kind for
    signals.<kind>, "image:<kind>" for images.<kind>s, "image_request" for images.requests."""
    if raw is None:
        return Rejected("empty_value", "message has no value (tombstone)")
    if typed_kind == "image_request":
        return parse_image_request(raw, max_bytes=config.max_bytes)
    if typed_kind is not None and typed_kind.startswith("image:"):
        return parse_typed_image(typed_kind[6:], raw, max_bytes=config.max_bytes)
    if typed_kind is None:
        parsed = parse_segment(raw, config.event_map, max_bytes=config.max_bytes,
                               unmapped=config.unmapped)
    else:
        parsed = parse_typed(typed_kind, raw, max_bytes=config.max_bytes)
    if isinstance(parsed, Signal):
        return resolve_artists(parsed, artist_of)
    return parsed


def dead_letter(rejected: Rejected, topic: str, partition: int, offset: int,
                key: bytes | None, value: bytes | None) -> bytes:
    """The dead-letter record: reason, detail, source position and the original bytes."""
    value = value or b""
    return encode(DeadLetter(
        reason=rejected.reason, detail=rejected.detail[:1000], topic=topic, partition=partition,
        offset=offset, key=None if key is None else key.decode("utf-8", "replace"),
        value=base64.b64encode(value).decode("ascii"), size=len(value)))


__all__ = ["Ignored", "ParserConfig", "Rejected", "dead_letter", "ingest_one"]


RETRY_FIRST_S = 0.5


def retry_or_give_up(pending: Pending | None, topic: str, partition: int, offset: int, key: bytes | None,
                     value: bytes, now: float, patience_s: float) -> Pending | None:
    """The next retry of a message whose artwork is unknown, or None once patience ran out.
    Backoff: 0.5 s, 1 s, 2 s, ... from the first sighting."""
    if pending is None:
        pending = Pending(topic, partition, offset, key, value, first_seen=now, due=now, attempt=0)
    attempt = pending.attempt + 1
    due = now + RETRY_FIRST_S * 2 ** (attempt - 1)
    if due - pending.first_seen > patience_s:
        return None
    return Pending(pending.topic, pending.partition, pending.offset, pending.key, pending.value,
                   pending.first_seen, due, attempt)
