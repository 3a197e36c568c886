"""Dead letters (pure): the record that carries a refused or failed message to the dead-letter topic,
with its reason, its input position and its original bytes (cut to fit one produce request)."""

from __future__ import annotations

import base64

from streams.core.properties import Rejected
from streams.core.records import DEAD_LETTER_BYTES, MAX_ID_CHARS, DeadLetter, encode, encode_keyed


def letter_key(key: bytes | None) -> bytes | None:
    """A dead letter's (or a retry's) Kafka key: the input's, cut to an id's longest UTF-8 (a 3 MB key made
    the letter itself too large to produce, and the catalog agents crashed on it)."""
    return None if key is None else key[:MAX_ID_CHARS * 4]


def dead_letter(rejected: Rejected, topic: str, partition: int, offset: int,
                key: bytes | None, value: bytes | None) -> bytes:
    """The dead-letter record: reason, detail, source position and the original bytes."""
    value = value or b""
    key = None if key is None else letter_key(key).decode("utf-8", "replace")
    return encode(DeadLetter(
        reason=rejected.reason, detail=rejected.detail[:1000], topic=topic, partition=partition,
        offset=offset, key=key, value=base64.b64encode(value[:DEAD_LETTER_BYTES]).decode("ascii"),
        size=len(value), truncated=len(value) > DEAD_LETTER_BYTES))


def failure_letter(record, why: str, partition: int, topic: str) -> bytes:
    """The dead letter of a parsed record the pipeline failed on (`why`: the exception's
    name): its input position when known (`failure_position`), keyed by its user or consumer."""
    name, part, offset = failure_position(record, partition, topic)
    return dead_letter(Rejected("internal_error", f"{why} while applying"), name, part, offset,
                       failure_key(record), encode_keyed(record))


def failure_key(record) -> bytes | None:
    """A failed record's letter key: its user's or consumer's id (the input's key is not at hand)."""
    who = getattr(record, "user_id", None) or getattr(record, "consumer_id", None)
    return letter_key(who.encode()) if isinstance(who, str) else None


def failure_position(record, partition: int, topic: str) -> tuple[str, int, int]:
    """(topic, partition, offset) of the input a failed record came from, else the internal `topic`
    partition it was read from (a source absent, or written by whoever could write that topic).

    >>> from streams.core.records import Signal
    >>> [failure_position(Signal("view", "u", "m", 1.0, source=s, offset=7), 5, "keyed") for s in ("in:2", "x")]
    [('in', 2, 7), ('keyed', 5, 7)]
    """
    name, colon, part = (getattr(record, "source", "") or "").rpartition(":")
    if not (colon and part.isdigit()):
        name, part = topic, str(partition)
    return name, int(part), getattr(record, "offset", -1)
