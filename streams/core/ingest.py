"""Ingest step (pure): one raw input message -> a resolved Signal/Identity, or a dead letter.

The ingest agent calls `ingest_one` and only does I/O with the result.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from streams.core.events import (
    DEFAULT_EVENT_MAP,
    Ignored,
    Parsed,
    Rejected,
    parse_image_request,
    parse_segment,
    parse_typed,
    parse_typed_image,
)
from streams.core.jsonguard import decode_problem
from streams.core.letters import dead_letter, letter_key
from streams.core.properties import resolve_artists
from streams.core.records import (
    Exposure,
    Identity,
    ImageEvent,
    ImageRequest,
    Pending,
    Signal,
    encode_keyed,
)
from streams.core.retries import retry_or_give_up
from streams.core.values import MAX_CARRIED_BYTES

# Where ingest sends things (logical names; the agent maps them to this app's topics).
SIGNALS, IMAGES, PENDING, DEADLETTER = "signals.keyed", "images.keyed", "pending", "deadletter"
# works one message may name (an order's products, artwork_ids): one "view" of 3,000 works added 3,000 views'
# weight to their artist and made a 3 MB profile (an outside fuzzer); Segment's own messages stop at 32 KB
MAX_TARGETS = 100
# a catalog record is stored whole: its changelog record adds the key and ~70 bytes, which faust's producer counts
# (999,990 bytes of value stopped the worker), and a work's refresh its artist id
MAX_CATALOG_BYTES = MAX_CARRIED_BYTES
_PENDING = msgspec.msgpack.Encoder()


@dataclass(frozen=True)
class ParserConfig:
    event_map: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_EVENT_MAP))
    max_bytes: int = 65536
    unmapped: str = "dead-letter"
    max_future_s: float = 86400.0  # event time may run this far ahead of the wall clock
    time_floor: float = 946684800.0  # 2000-01-01T00:00:00Z: older event times are bad clocks


def ingest_one(raw: bytes | None, typed_kind: str | None, artist_of: Any,
               config: ParserConfig, now: float | None = None) -> Parsed:
    """Parse, check the event time and resolve artwork -> artist. `typed_kind`: None for
    Segment, a signal kind for signals.<kind>, "image:<kind>" for images.<kind>s,
    "image_request" for images.requests. `now`: the wall clock (default: time.time()).

    Never raises: whatever a producer sent comes back as a result or a Rejected (an
    unforeseen failure as ``internal_error``, named by its exception type, never its values).

    >>> ingest_one(b'[' * 5000, None, {}, ParserConfig()).reason
    'too_deep'
    >>> late = b'{"type":"track","event":"followedArtist","userId":"u","timestamp":"9999-12-31T00:00:00Z",'
    >>> ingest_one(late + b'"properties":{"owner_id":"a"}}', None, {}, ParserConfig()).reason
    'invalid_timestamp'
    """
    try:
        result = _ingest(raw, typed_kind, artist_of, config)
        when = getattr(result, "time", None)  # 0.0 on an identity without a timestamp
        latest = (time.time() if now is None else now) + config.max_future_s
        if when is not None and (when or not isinstance(result, Identity)) and not config.time_floor <= when <= latest:
            return Rejected("invalid_timestamp", "event time is before the floor or too far in the future")
        return result
    except Exception as exc:  # the firewall: one message must never stop the stream
        return Rejected("internal_error", f"{type(exc).__name__} while parsing")


def arrival(timestamp: float | None, wall: float) -> float:
    """The clock an input record's event time is judged by (`ingest_one`'s `now`): when the record reached Kafka
    (its timestamp: aiokafka's int milliseconds or faust's float seconds), never past `wall` (a producer's clock
    may run ahead). The verdict is the record's whenever it is read: judged by the clock at reading, a rebuild or
    a catch-up past the allowed lead applied events the live worker had dead-lettered (an outside check).

    >>> arrival(100_000, 250.0), arrival(100.0, 250.0), arrival(None, 250.0), arrival(900_000, 250.0)
    (100.0, 100.0, 250.0, 250.0)
    """
    if timestamp is None or timestamp <= 0:
        return wall
    return min(timestamp / 1000 if isinstance(timestamp, int) else timestamp, wall)


def decode_or_reject(decode: Callable[[bytes], Any], raw: bytes | None, reason: str,
                     limit: int = MAX_CATALOG_BYTES) -> Any:
    """`decode(raw)`, or a Rejected with `reason` whatever goes wrong: the firewall of the
    agents that decode catalog and internal records (the detail names the problem, not values).
    `limit`: a catalog record is stored whole (MAX_CATALOG_BYTES), an internal one we wrote fits a value.

    >>> decode_or_reject(msgspec.json.decode, b'[' * 5000 + b']' * 5000, "invalid_artwork")
    Rejected(reason='invalid_artwork', detail='JSON nested too deep')
    >>> decode_or_reject(msgspec.json.decode, None, "invalid_curated").detail
    'message has no value (tombstone)'
    >>> decode_or_reject(msgspec.json.decode, b" " * (MAX_CATALOG_BYTES + 1), "invalid_image_catalog").reason
    'oversized'
    >>> decode_or_reject(msgspec.json.decode, b" " * (MAX_CATALOG_BYTES - 1) + b"1", "invalid_image_catalog")
    1
    """
    if raw is None:
        return Rejected(reason, "message has no value (tombstone)")
    if len(raw) > limit:  # stored as is, it would stop the worker at its changelog write
        return Rejected("oversized", f"{len(raw):,} bytes: a stored record must stay under {limit:,}")
    try:
        return decode(raw)
    except Exception as exc:
        return Rejected(reason, decode_problem(exc, raw)[1])


def stamp(result: Parsed, topic: str, partition: int, offset: int) -> Parsed:
    """Mark a signal or image event with the input record it came from (exactly-once state:
    streams.core.positions.first_delivery)."""
    if isinstance(result, (Signal, ImageEvent)):
        result.source, result.offset = f"{topic}:{partition}", offset
    return result


def stamp_origin(result: Parsed, pending) -> Parsed:
    """A pending retry's signal names the input record it waited for (a streams.core.records.Pending):
    it reaches the profile through signals.keyed, at a position of its own (`stamp_unpositioned`).

    >>> from streams.core.records import Pending
    >>> late = stamp_origin(Signal("view", "u", "m", 0.0), Pending("events", 2, 17, None, b"", 0.0, 0.0))
    >>> late.origin, late.origin_offset
    ('events:2', 17)
    """
    if isinstance(result, Signal):
        result.origin, result.origin_offset = f"{pending.topic}:{pending.partition}", pending.offset
    return result


def stamp_unpositioned(record: Parsed, topic: str, partition: int, offset: int) -> Parsed:
    """A keyed record (signals.keyed, images.keyed) without an input position (a pending retry, an
    aliased id's forwarded event) takes its keyed record's: its redelivery after a crash is then known
    by position, and the shares count it once (fuzzing: a kill -9 right after retried events were
    applied lost their trending: messageId dedup alone called the redelivery a repeat).

    >>> late = stamp_unpositioned(Signal("view", "u", "m", 0.0), "signals.keyed", 3, 41)
    >>> (late.source, late.offset), stamp_unpositioned(late, "signals.keyed", 3, 99).offset
    (('signals.keyed:3', 41), 41)
    """
    return stamp(record, topic, partition, offset) if getattr(record, "offset", 0) < 0 else record


def _ingest(raw: bytes | None, typed_kind: str | None, artist_of: Any, config: ParserConfig) -> Parsed:
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
        if len(parsed.targets) > MAX_TARGETS:  # each target adds the kind's weight: one view of 3,000 works
            return Rejected("invalid_property", f"{len(parsed.targets)} works in one message: at most {MAX_TARGETS}")
        return resolve_artists(parsed, artist_of)
    return parsed


class KeyPartitioner:
    """The partition Kafka's default partitioner (murmur2, as aiokafka's and faust's producers
    use) picks for a key among `partitions`. Up to `memo` keys' partitions are remembered (the
    memo starts over when full): a worker looks up every event's user and every output record's
    key, mostly the same few. Keyless records (a dead letter of a keyless input) go round-robin.

    >>> spread = KeyPartitioner(3)
    >>> [spread(None) for _ in range(4)], spread(b"u1") == spread(b"u1")
    ([1, 2, 0, 1], True)
    """

    def __init__(self, partitions: int, memo: int = 4096):
        self.partitions, self._memo, self._memo_max = partitions, {}, memo
        self._keyless = 0

    def __call__(self, key: bytes | None) -> int:
        partition = self._memo.get(key)
        if partition is None:
            if key is None:
                self._keyless = (self._keyless + 1) % self.partitions
                return self._keyless
            if len(self._memo) >= self._memo_max:
                self._memo.clear()  # bounded; the keys that come back often are back at once
            partition = self._memo[key] = (murmur2(key) & 0x7FFFFFFF) % self.partitions
        return partition


_M, _MASK = 0x5BD1E995, 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's Utils.murmur2), as aiokafka's pure-Python one computes
    it, in a third less time: the 4-byte words come from one struct call (every partition
    lookup of every event and output record pays for this).

    >>> from aiokafka.partitioner import murmur2 as reference
    >>> [murmur2(k) == reference(k) for k in (b"", b"u", b"us", b"use", b"user-1")]
    [True, True, True, True, True]
    """
    length = len(data)
    h = 0x9747B28C ^ length
    words = length >> 2
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    tail = length & 3
    if tail:
        rest = data[words * 4:]
        if tail == 3:
            h ^= rest[2] << 16
        if tail >= 2:
            h ^= rest[1] << 8
        h = ((h ^ rest[0]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def route(result: Parsed, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
          pending: Pending | None, now: float, patience_s: float,
          catalog_as_of: float | None = None) -> tuple[str, bytes | None, bytes] | None:
    """Where one ingested input message goes: (logical topic, key, value), or None (ignored).

    Signals and identity links go to signals.keyed, keyed by the user they change (an identity
    link by the id being merged away), image events to images.keyed by consumer; an unknown
    artwork waits on the pending topic until patience runs out against the catalog as read
    (`catalog_as_of`: streams.core.retries); other rejects are dead letters."""
    if isinstance(result, Rejected) and result.reason == "unknown_artwork" and value is not None:
        key = letter_key(key)  # held twice by a retry (its key and its record's): a 600 KB key made 1.2 MB
        retry = retry_or_give_up(pending, topic, partition, offset, key, value, now, patience_s, catalog_as_of)
        if retry is not None:
            return PENDING, key, _PENDING.encode(retry)
    if isinstance(result, Rejected):
        return DEADLETTER, letter_key(key), dead_letter(result, topic, partition, offset, key, value)
    if isinstance(result, Ignored):
        return None
    if isinstance(result, (ImageEvent, ImageRequest)):
        return IMAGES, result.consumer_id.encode(), encode_keyed(result)
    user = result.previous_id if isinstance(result, Identity) else result.user_id
    return SIGNALS, user.encode(), encode_keyed(result)


def outcome(result: Parsed) -> str:
    """The metric label of an ingested message: its kind, "ignored" or "rejected"."""
    if isinstance(result, Rejected):
        return "rejected"
    if isinstance(result, Ignored):
        return "ignored"
    if isinstance(result, ImageRequest):
        return "image_request"
    if isinstance(result, ImageEvent):
        return f"image_{result.kind}"
    if isinstance(result, Exposure):
        return "exposure"
    return "identity" if isinstance(result, Identity) else result.kind


__all__ = ["Ignored", "KeyPartitioner", "ParserConfig", "Rejected", "dead_letter", "decode_or_reject", "ingest_one",
           "outcome", "route", "stamp", "stamp_origin", "stamp_unpositioned"]
