"""Segment's HTTP Tracking API, the pure half: a request in, the records to produce out.

The tracking SDKs people already use (Segment's and RudderStack's, for every language) post to
``/v1/batch`` (or one message to ``/v1/track``, ``/v1/identify``, ``/v1/page``, ``/v1/screen``,
``/v1/alias``, ``/v1/group``; the browser's analytics.js and the mobile SDKs use ``/v1/b``, ``/v1/t``,
...), with the source's write key as the HTTP Basic user (or a ``writeKey`` field in the body),
often gzipped. `collect` checks what Segment itself rejects with a 400 (no JSON object, NaN or
Infinity, a message over 32 KB, a batch over 500 KB, a message with no ``type`` or no user), stamps
``receivedAt`` (and, when missing, a ``messageId``, the message's digest when it carries its device's time, and
``timestamp`` = ``receivedAt`` when it carries none; a device's clock is corrected from ``sentAt``, as Segment
does, a whole-number id made its decimal string) and
returns one ``(key, value)`` per message for ``events.segment``, keyed by user id (else anonymous id;
none when neither is an id) like every other producer. Everything past the envelope (unknown events,
bad ids, prices, times) is the worker's firewall's job
(streams.core.ingest): it dead-letters those with a reason, so a collector never has two opinions.

>>> req = collect("/v1/track", b'{"userId": "u1", "event": "artworkSave", "properties": {"artwork_id": "a1"}}',
...               now=0.0)
>>> [(key, json.loads(value)["type"], json.loads(value)["receivedAt"]) for key, value in req.records]
[(b'u1', 'track', '1970-01-01T00:00:00.000Z')]
>>> try:
...     collect("/v1/batch", b'{"batch": [{"type": "track", "event": "x"}]}', now=0.0)
... except Rejected as exc:
...     print(exc)
batch[0]: needs userId or anonymousId
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import msgspec

from streams.core.properties import blank, epoch, first_id

MAX_MESSAGE_BYTES = 32 * 1024  # Segment's limits, which its SDKs also enforce on their side
MAX_BATCH_BYTES = 500 * 1024
# what the collector adds to a message (receivedAt, and a messageId and timestamp when missing): a message the SDK
# measured at 32 KB was over it once stamped, and its whole batch refused (an outside check with the SDKs)
STAMPS_BYTES = 256
MIN_SKEW_S = 1.0  # a device clock closer than this to ours is taken as it is (the difference is the network's)
_ID_FIELDS = frozenset({"userId", "anonymousId", "previousId"})
MESSAGE_TYPES = ("track", "identify", "page", "screen", "alias", "group")
ENDPOINTS = ("batch", "import", *MESSAGE_TYPES)  # /v1/import is the older name of /v1/batch
# the browser's and the mobile SDKs' short paths (analytics.js 2.0 posts to /v1/t, and /v1/b when batching)
SHORT_PATHS = {"t": "track", "i": "identify", "p": "page", "s": "screen", "a": "alias", "g": "group", "b": "batch"}


class Rejected(ValueError):
    """The request cannot be accepted (HTTP 400): the message names the part at fault."""


class Unauthorized(ValueError):
    """No write key, or one that is not accepted (HTTP 401)."""


@dataclass(frozen=True)
class Collected:
    write_key: str
    records: list[tuple[bytes | None, bytes]]  # (user key, message JSON) for events.segment


def write_key(authorization: str | None, body: dict) -> str:
    """The write key: HTTP Basic user (password empty), else the body's ``writeKey``.

    >>> write_key("Basic " + base64.b64encode(b"wk1:").decode(), {})
    'wk1'
    >>> write_key(None, {"writeKey": "wk2"})
    'wk2'
    """
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() == "basic" and token.strip():
        try:
            user, _, _ = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            raise Unauthorized("the Authorization header is not valid HTTP Basic") from None
        return user
    key = body.get("writeKey")
    return key if isinstance(key, str) else ""


def check_key(key: str, accepted: frozenset[str]) -> None:
    """An empty accepted set takes any key (a private network); otherwise the key must be in it."""
    if accepted and key not in accepted:
        raise Unauthorized("unknown write key" if key else "no write key: send it as the HTTP Basic user")


def collect(endpoint: str, body: bytes, now: float, authorization: str | None = None,
            accepted_keys: frozenset[str] = frozenset()) -> Collected:
    """A request to ``/v1/{endpoint}`` (its body already inflated: aiohttp gunzips
    ``Content-Encoding: gzip`` itself, within its request size limit) -> the records to produce;
    raises `Rejected` (400) or `Unauthorized` (401) and then nothing of the request is produced."""
    name = endpoint.strip("/").removeprefix("v1/")
    name = SHORT_PATHS.get(name, name)
    if name not in ENDPOINTS:
        raise Rejected(f"unknown endpoint /v1/{name}; known: {', '.join(ENDPOINTS)}")
    if len(body) > MAX_BATCH_BYTES:
        raise Rejected(f"the batch is over {MAX_BATCH_BYTES // 1024} KB")
    try:
        # strict UTF-8, as the topic's decoder: json.loads of bytes would guess UTF-16 and skip a BOM
        payload = json.loads(body.decode("utf-8"), parse_constant=_not_json, parse_float=_finite)
    except _NotJson as exc:
        raise Rejected(f"the body is not JSON: {exc}") from None
    except (ValueError, RecursionError):
        raise Rejected("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise Rejected("the body is not a JSON object")
    key = write_key(authorization, payload)
    check_key(key, accepted_keys)
    if name in ("batch", "import"):
        messages = payload.get("batch")
        if not isinstance(messages, list):
            raise Rejected("a batch needs a 'batch' array of messages")
        labels = [f"batch[{i}]" for i in range(len(messages))]
    else:
        messages, labels = [{"type": name, **payload}], ["the message"]
    received, batch_skew = _iso(now), _skew(payload.get("sentAt"), now)
    return Collected(key, [_record(m, label, received, _skew(m["sentAt"], now) if _has_sent_at(m) else batch_skew)
                           for m, label in zip(messages, labels, strict=True)])


class _NotJson(ValueError):
    pass


def _not_json(constant: str) -> None:
    """json.loads takes NaN and Infinity, and json.dumps writes them back: invalid JSON on the topic."""
    raise _NotJson(f"{constant} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 would be written back as Infinity
        raise _NotJson(f"{text[:32]} is out of a double's range")
    return value


def _time(value: object) -> float | None:
    """An RFC 3339 time (naive: UTC) as epoch seconds, read as the worker reads it (msgspec), or None: Python's
    ISO parser refused `t`/`z` in lower case, which the worker takes, and took forms the worker refuses.

    >>> _time("2026-01-01t00:00:00z"), _time("2026-01-01T00:00:00"), _time("2026-01-01"), _time(5)
    (1767225600.0, 1767225600.0, None, None)
    """
    try:
        return epoch(msgspec.convert(value, datetime)) if isinstance(value, str) and len(value) <= 64 else None
    except (msgspec.ValidationError, OverflowError, ValueError, OSError):
        return None


def _has_sent_at(message: object) -> bool:  # analytics.js sets it on each message, the server SDKs on the batch
    return isinstance(message, dict) and bool(message.get("sentAt"))


def _skew(sent_at: object, now: float) -> float:
    """How far the sending device's clock is behind ours: receivedAt − sentAt, 0 within a second (the
    network's delay) or without a sentAt that is an ISO time."""
    sent = _time(sent_at)
    return 0.0 if sent is None or abs(now - sent) < MIN_SKEW_S else now - sent


def _corrected(message: dict, skew: float) -> None:
    """Segment's correction of a device's clock: timestamp = receivedAt − (sentAt − originalTimestamp),
    the device's own time kept as originalTimestamp (a clock two days ahead dead-lettered every event
    as invalid_timestamp, an outside check with analytics-python)."""
    device = message.get("timestamp") or message.get("originalTimestamp")
    if not skew or (when := _time(device)) is None:
        return
    try:
        corrected = _iso(when + skew)
    except (OverflowError, ValueError, OSError):  # past year 9999: left for the worker to refuse
        return
    message.setdefault("originalTimestamp", device)
    message["timestamp"] = corrected


def _record(message: object, label: str, received_at: str, skew: float = 0.0) -> tuple[bytes | None, bytes]:
    if not isinstance(message, dict):
        raise Rejected(f"{label}: not a JSON object")
    kind = message.get("type")
    if kind not in MESSAGE_TYPES:
        raise Rejected(f"{label}: type must be one of {', '.join(MESSAGE_TYPES)}")
    # a credential stays out of Kafka; a whole-number id is its decimal string, as Segment takes it
    message = {k: _id_text(v) if k in _ID_FIELDS else v for k, v in message.items() if k != "writeKey"}
    user = first_id(message.get("userId"), message.get("anonymousId"))  # the id the worker will take
    if user is None and not (_named(message.get("userId")) or _named(message.get("anonymousId"))):
        raise Rejected(f"{label}: needs userId or anonymousId")
    if _no_id(message.get("messageId")):  # before the stamps: a retry of the same message gets the same id
        message["messageId"] = _message_id(message)
    message["receivedAt"] = received_at
    _corrected(message, skew)
    if message.get("timestamp") is None and message.get("originalTimestamp") is None:
        message["timestamp"] = received_at  # no device time at all: the time it arrived, as Segment's API does
    try:
        value = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800" in the body): kept escaped, the worker dead-letters it
        value = json.dumps(message, separators=(",", ":")).encode()
    if len(value) > MAX_MESSAGE_BYTES + STAMPS_BYTES:
        raise Rejected(f"{label}: over {MAX_MESSAGE_BYTES // 1024} KB")
    # keyed by that id like every producer; one the worker refuses (a number, an object, 300
    # characters) is dead-lettered there, and goes unkeyed, not keyed by its Python repr
    return (None if user is None else user.encode("utf-8", "backslashreplace")), value


def _named(value: object) -> bool:
    """An id given: a blank one (" ", U+200B) is none, as ""; one the worker refuses (a number too large, an object)
    is given, for it to dead-letter."""
    return bool(value) and not (isinstance(value, str) and blank(value))


def _no_id(value: object) -> bool:
    return value is None or (isinstance(value, str) and blank(value))  # the worker reads these as no messageId


def _message_id(message: dict) -> str:
    """A messageId for a message sent without one: its content's digest when it carries its device's time (a
    retry of it is the same message, as identical bytes are on the topic), else a fresh one (two arrivals).

    >>> timed = {"type": "track", "timestamp": "2026-01-01T00:00:00Z", "sentAt": "2026-01-01T00:00:01Z"}
    >>> _message_id(timed) == _message_id({**timed, "sentAt": "2026-01-01T00:05:00Z"}), _message_id({})[:10]
    (True, 'recstream-')
    """
    if message.get("timestamp") is None and message.get("originalTimestamp") is None:
        return f"recstream-{uuid.uuid4()}"
    content = {k: v for k, v in message.items() if k not in ("sentAt", "messageId")}  # a retry may send a new sentAt
    return "recstream-sha1:" + hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _id_text(value: object) -> object:
    """A whole-number id as its decimal string (Rails' user.id from analytics-ruby or -php; `5.0` from a
    client whose numbers are floats: accepted with a 200, then dead-lettered, an outside check); anything
    else as it is (not a bool; not a float past 2**53, which no longer names one whole number).

    >>> _id_text(7), _id_text(7187516023.0), _id_text(-0.0), _id_text(True), _id_text(1e25), _id_text(5.5)
    ('7', '7187516023', '0', True, 1e+25, 5.5)
    """
    if type(value) is int:
        return str(value)
    if type(value) is float and value.is_integer() and abs(value) <= 2**53:
        return str(int(value))
    return value


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
