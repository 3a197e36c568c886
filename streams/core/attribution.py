"""Experiment attribution (pure): exposures and conversions per variant, exactly once.

- *exposure*: a list shown to a user in a variant at event time tₑ (served, emitted, or an explicit exposure
  event), its items each with a source (affinity / similar / curated / ...);
- *conversion*: an order, inquiry or save of work w at t꜀. It counts for variant v (source s) when an exposure
  of v listed w (under s) with tₑ ≤ t꜀ ≤ tₑ + W, W = `Rules.attribution_days`: once per variant and once per
  source (`sources` need not add up to `conversions`).

`Counters` per group and variant (group "": the whole experiment): distinct users exposed, exposures, distinct
users converted, conversions, per source, per kind. A user lives on one partition (inputs are keyed by user), so
per-partition `Tally` partials add up (`merge_tallies`).

Exactly once: an event's id (messageId; a served list: its trigger) is remembered per user, its input position (if
given) checked by `streams.core.positions.first_delivery`. Arrival order never changes the counts of a set of
distinct events (a credit is a fact: a late exposure credits the stored conversions) unless an event comes after
one of the user's `lateness_days` newer (dropped: a replay from the start counts nothing twice) or a per-user cap.

Per user (`UserLog`): per item, merged intervals [tₑ, tₑ + W] per (group, variant, source) until `lateness_days` past
their end, at most `max_spans` (the latest ending); conversions likewise (`max_conversions`); the last `dedup_window`
ids and all within `lateness_days` of its newest event (up to 16,384). Images (`impress`, `image_convert`): item =
merchant, source = image; counts in "" (per variant) and per merchant.

`Attribution(users, tally, rules)`: one partition's state, `users` any mutable mapping user id -> UserLog
(`load_log` / `dump`), `tally` the partition's partial (`dump` / `load_tally`). Event functions: False: none counted.

>>> state = Attribution()
>>> expose(state, "u1", "B", [("w1", "trending"), ("w2", "similar")], t=0.0, exposure_id="r1")
True
>>> [convert(state, "u1", "w1", "order", 3600.0, message_id="m1") for _ in "12"]  # redelivered
[True, False]
>>> msgspec.structs.astuple(state.tally.variants()["B"])  # users, exposures, converted, ...
(1, 1, 1, 1, {'trending': 1}, {'order': 1})
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field

import msgspec

from streams.core.positions import first_delivery
from streams.core.seen import Dated, Horizon
from streams.core.spans import Span, cover, latest_ending

DAY = 86400.0
CONVERSION_KINDS = ("order", "inquiry", "save")
SEP = "\x1f"  # between group, variant and source in a credit key
MAX_FLAGS = 512  # a log's "group␟variant" keys (exposed, converted): see _flag
Position = tuple[str, int]  # an input record: ("topic:partition", offset)


@dataclass(frozen=True)
class Rules:
    attribution_days: float = 7.0  # RECSTREAM_ATTRIBUTION_DAYS
    lateness_days: float = 7.0  # events older than the user's newest by more are dropped
    max_spans: int = 512  # (item, group, variant, source) intervals per user
    max_conversions: int = 128  # conversions kept per user, for exposures that arrive late
    dedup_window: int = 4096  # ids remembered per user, and all of those within the lateness (up to 16,384)

    def __post_init__(self):  # by event time for the lateness (and its edge): a copy older is dropped anyway: exact
        object.__setattr__(self, "dedup", Horizon.of(self.dedup_window, self.lateness_days * DAY + 1.0))


class Counters(msgspec.Struct, omit_defaults=True):
    """One variant's counts (the shape `streams.core.abstats.report` reads)."""

    users: int = 0
    exposures: int = 0
    converted: int = 0
    conversions: int = 0
    sources: dict[str, int] = {}
    kinds: dict[str, int] = {}

    def add(self, other: Counters) -> None:
        for name in ("users", "exposures", "converted", "conversions"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for mine, theirs in ((self.sources, other.sources), (self.kinds, other.kinds)):
            mine.update({key: mine.get(key, 0) + n for key, n in theirs.items()})


class Tally(msgspec.Struct, omit_defaults=True):
    """One partition's counts: group -> variant -> Counters."""

    groups: dict[str, dict[str, Counters]] = {}
    dropped: int = 0  # groups whose counts went to keep the value within a table value (see `fitted`)

    def counters(self, group: str, variant: str) -> Counters:
        return self.groups.setdefault(group, {}).setdefault(variant, Counters())

    def variants(self, group: str = "") -> dict[str, Counters]:
        return self.groups.get(group, {})


class Conversion(msgspec.Struct, array_like=True):
    item: str
    time: float
    kind: str
    source: str  # credited instead of the listing's source (images: the image converted on)
    credited: list[str] = []  # credit keys already counted


class UserLog(Dated, omit_defaults=True):
    """What attribution keeps per user (one table value), and its recent event ids (`seen`)."""

    newest: float = float("-inf")  # the newest event time seen
    shown: dict[str, list[Span]] = {}  # listed item -> coverage intervals
    conversions: list[Conversion] = []
    exposed: list[str] = []  # "group␟variant" keys counting this user as exposed
    converted: list[str] = []  # ... and as converted
    applied: dict[str, int] = {}  # input partition -> last offset (streams.core.positions.first_delivery)
    listed: str = ""  # the emitted list last counted as an exposure (streams.core.ledger.Ledger.listed)
    earliest: float = float("-inf")  # at most every span's end and conversion's time: `_prune` scans past it only


@dataclass
class Attribution:
    """One partition's state: per-user logs and the partition's partial counts."""

    users: MutableMapping[str, UserLog] = field(default_factory=dict)
    tally: Tally = field(default_factory=Tally)
    rules: Rules = field(default_factory=Rules)


def expose(state: Attribution, user: str, variant: str, items: Iterable[tuple[str, str]], t: float,
           exposure_id: str | None = None, position: Position | None = None) -> bool:
    """A list of (work id, source) shown to `user` in `variant` at `t`. False if seen already
    or too late. Without `exposure_id`, the id is (variant, t, the works)."""
    entries = [("", work, source) for work, source in items]
    eid = exposure_id or f"{variant}|{t!r}|" + ",".join(work for _, work, _ in entries)
    return _exposure(state, user, variant, ("",), entries, t, "x:" + eid, position)


def convert(state: Attribution, user: str, works: str | Iterable[str], kind: str, t: float,
            message_id: str, position: Position | None = None) -> bool:
    """An order, inquiry or save of a work (or of several: one message, one conversion each)
    at `t`. False if seen already, too late, or not a conversion kind (nothing is recorded).

    >>> state = Attribution()
    >>> convert(state, "u", "w1", "save", 10.0, "m1")   # before its exposure: stored, not credited
    True
    >>> expose(state, "u", "A", [("w1", "affinity")], 5.0, "r1")   # arrives late: credits it
    True
    >>> state.tally.variants()["A"].conversions, convert(state, "u", "w1", "view", 11.0, "m2")
    (1, False)
    """
    if kind not in CONVERSION_KINDS:
        return False
    works = [works] if isinstance(works, str) else dict.fromkeys(works)
    return _conversion(state, user, [Conversion(w, t, kind, "") for w in works], "c:" + message_id,
                       position)


def impress(state: Attribution, consumer: str, variant: str, merchant: str, image: str, t: float,
            message_id: str, position: Position | None = None) -> bool:
    """An image of `merchant` shown to `consumer` (in image variant `variant`)."""
    entries = [("", merchant, ""), (merchant, merchant, image)]
    return _exposure(state, consumer, variant, ("", merchant), entries, t, "i:" + message_id,
                     position)


def image_convert(state: Attribution, consumer: str, merchant: str, image: str, t: float,
                  message_id: str, position: Position | None = None) -> bool:
    """A conversion on `image` of `merchant`: counts if the consumer saw the merchant within W.

    >>> s = Attribution()
    >>> impress(s, "c", "B", "m1", "i2", 0.0, "e1"), image_convert(s, "c", "m1", "i2", 60.0, "e2")
    (True, True)
    >>> s.tally.variants()["B"].converted, s.tally.variants("m1")["B"].sources
    (1, {'i2': 1})
    """
    return _conversion(state, consumer, [Conversion(merchant, t, "order", image)], "k:" + message_id, position)


def _exposure(state: Attribution, user: str, variant: str, groups: tuple[str, ...],
              entries: list[tuple[str, str, str]], t: float, event_id: str,
              position: Position | None) -> bool:
    log = state.users.setdefault(user, UserLog())
    if not _fresh(log, state.rules, event_id, t, position):
        return False
    for group in groups:  # an empty list is an exposure too
        counters = state.tally.counters(group, variant)
        counters.exposures += 1
        counters.users += _flag(log.exposed, group + SEP + variant)
    end = t + state.rules.attribution_days * DAY
    waiting: dict[str, list[Conversion]] = {}  # conversions that arrived before this exposure, by item
    for conversion in (c for c in log.conversions if t <= c.time <= end):
        waiting.setdefault(conversion.item, []).append(conversion)
    for group, item, source in entries:
        cover(log.shown.setdefault(item, []), span := Span(group, variant, source, t, end))
        log.earliest = min(log.earliest, span.end)  # merged, its end only grew: still a bound
        for conversion in waiting.get(item, ()):
            _credit(state.tally, log, conversion, span)
    _prune(log, state.rules)
    return True


def _conversion(state: Attribution, user: str, conversions: list[Conversion], event_id: str,
                position: Position | None) -> bool:
    log = state.users.setdefault(user, UserLog())
    if not conversions or not _fresh(log, state.rules, event_id, conversions[0].time, position):
        return False
    for conversion in conversions:
        for span in log.shown.get(conversion.item, ()):
            if span.start <= conversion.time <= span.end:
                _credit(state.tally, log, conversion, span)
        log.conversions.append(conversion)
        log.earliest = min(log.earliest, conversion.time)
    _prune(log, state.rules)
    return True


def _fresh(log: UserLog, rules: Rules, event_id: str, t: float, position: Position | None) -> bool:
    """Not too late, not a redelivered record, not a repeated id; then `newest` moves."""
    fresh = (t >= log.newest - rules.lateness_days * DAY
             and (position is None or first_delivery(log.applied, *position))
             and rules.dedup.remember(log, event_id, at=t))
    if fresh:
        log.newest = max(log.newest, t)
    return fresh


def _flag(keys: list[str], key: str) -> int:
    """1 the first time `key` is added to `keys` (a distinct count moves), else 0. A log holds at
    most MAX_FLAGS keys (a consumer shown 40,000 merchants' images made a value over Kafka's 1 MB
    and stopped the worker for good): past that, a new group's distinct count no longer counts this
    user (a consumer on more than 512 merchants is hardly one person); the experiment's own keys
    (group "": they start with SEP) always go in."""
    if key in keys or (len(keys) >= MAX_FLAGS and not key.startswith(SEP)):
        return 0
    keys.append(key)
    return 1


def _credit(tally: Tally, log: UserLog, conversion: Conversion, span: Span) -> None:
    """Count `conversion` for the span's variant and source, each at most once."""
    counters = tally.counters(span.group, span.variant)
    key = span.group + SEP + span.variant
    if _flag(conversion.credited, key):
        counters.conversions += 1
        counters.kinds[conversion.kind] = counters.kinds.get(conversion.kind, 0) + 1
        if key in log.exposed:  # converted users ⊆ exposed users: past MAX_FLAGS a group may not count this one
            counters.converted += _flag(log.converted, key)
    source = (conversion.source or span.source) if span.source else ""
    if source and _flag(conversion.credited, key + SEP + source):
        counters.sources[source] = counters.sources.get(source, 0) + 1


def _prune(log: UserLog, rules: Rules) -> None:
    """Forget what no event still accepted could use, then apply the caps. This runs after every
    event: nothing is scanned while `earliest` (a bound on every end and time) is within the horizon
    (a heavy user's 512 spans were listed and scanned for every event). Spans under their cap keep
    their order."""
    horizon = log.newest - rules.lateness_days * DAY
    expired = log.earliest < horizon  # maybe: the bound says where to look
    if sum(map(len, log.shown.values())) > rules.max_spans or expired and any(
            s.end < horizon for lst in log.shown.values() for s in lst):
        log.shown = {item: kept for item, lst in log.shown.items() if (kept := [s for s in lst if s.end >= horizon])}
        log.shown = latest_ending(log.shown, rules.max_spans)
    if len(log.conversions) > rules.max_conversions or expired and any(c.time < horizon for c in log.conversions):
        log.conversions = heapq.nlargest(rules.max_conversions, [  # a list: under the cap, one sort
            c for c in log.conversions if c.time >= horizon], key=lambda c: c.time)
    if expired:  # the exact bound again (infinite when nothing is kept)
        log.earliest = min(min((s.end for lst in log.shown.values() for s in lst), default=float("inf")),
                           min((c.time for c in log.conversions), default=float("inf")))


def merge_tallies(parts: Iterable[Tally]) -> Tally:
    """The global counts: every partition's partial, summed (a user lives on one partition).

    >>> a, b = Tally(), Tally()
    >>> a.counters("", "A").users, b.counters("", "A").users = 2, 3
    >>> merge_tallies([a, b]).variants()["A"].users
    5
    """
    out = Tally()
    for part in parts:
        out.dropped += part.dropped
        for group, variants in part.groups.items():
            for variant, counters in variants.items():
                out.counters(group, variant).add(counters)
    return out


_ENC = msgspec.msgpack.Encoder()
_TALLY = msgspec.msgpack.Decoder(Tally)
_LOG = msgspec.msgpack.Decoder(UserLog)


def dump(value: Tally | UserLog) -> bytes:  # msgpack: a partition's partial, or a table value
    return _ENC.encode(value)


def load_tally(raw: bytes | None) -> Tally:
    return Tally() if not raw else _TALLY.decode(raw)


def load_log(raw: bytes | None) -> UserLog:
    return UserLog() if not raw else _LOG.decode(raw)
