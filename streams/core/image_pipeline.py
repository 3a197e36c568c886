"""The image pipeline (pure): a batch of ``images.keyed`` records from one partition -> consumer
state changes (through a plain mapping), global-count increments, and output records.

Events are keyed by **consumer**: everything a request needs about the consumer (views and
locks across merchants) is then one local lookup, while the per-(merchant, image) counts are
small and every worker holds all of them (streams.core.partitioned.Shares, like trending).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field

import msgspec

from streams.core.catalog import check_key
from streams.core.experiments import assign, variant_objects
from streams.core.image_counts import GlobalCounts
from streams.core.images import (
    Choice,
    ConsumerImages,
    Image,
    ImageCatalog,
    MerchantViews,
    PoolRules,
    SelectionParams,
    build_pool,
    choose,
)
from streams.core.jsonguard import spec_text
from streams.core.ledger import Ledger, input_position
from streams.core.positions import counted_when_applied, first_delivery, note_repeat
from streams.core.properties import KEY_JOIN, is_id
from streams.core.records import MAX_ID_CHARS, MAX_TABLE_VALUE_BYTES, ImageEvent, ImageRequest  # noqa: F401 - doctests
from streams.core.seen import Horizon
from streams.core.values import fit_value

CHOSEN, REPLIES = "images.chosen", "images.replies"
MAX_MERCHANTS_PER_CONSUMER = 1000
MAX_IMAGES_PER_MERCHANT = 64  # a consumer's impressions kept per merchant (a pool is a few images; any id can come)

_STATE_ENC = msgspec.msgpack.Encoder()
_STATE_DEC = msgspec.msgpack.Decoder(ConsumerImages)
_CATALOG = msgspec.json.Decoder(ImageCatalog)
_JSON = msgspec.json.Encoder()


@dataclass(frozen=True)
class ImageVariant:
    name: str
    share: float = 0.5
    explore: float = 0.0  # the multiplier C


def default_image_variants() -> dict[str, ImageVariant]:
    return {"A": ImageVariant("A", 0.5, 0.0), "B": ImageVariant("B", 0.5, 0.01)}


def load_image_variants(spec: str) -> dict[str, ImageVariant]:
    if not spec:
        return default_image_variants()
    # checked as the recommendations' variants: [1], "half", -1 were taken
    raw = variant_objects(json.loads(spec_text(spec)), {"share": "float", "explore": "float"})
    out = {name: ImageVariant(name, float(p.get("share", 0.5)), float(p.get("explore", 0.0)))
           for name, p in raw.items()}
    if abs(sum(v.share for v in out.values()) - 1) > 1e-3:
        raise ValueError("image variant shares must add up to 1")
    return out


@dataclass(frozen=True)
class ImageConfig:
    variants: dict[str, ImageVariant] = field(default_factory=default_image_variants)
    experiment: str = "images"
    params: SelectionParams = SelectionParams()
    rules: PoolRules = PoolRules()
    half_life_s: float = 30 * 86400.0
    dedup_window: int = 2048
    dedup_horizon_s: float = 3600.0  # and the ids applied in the last hour, as a user's (streams.core.seen.Horizon)

    def __post_init__(self):  # the messageId window (streams.core.seen.Horizon)
        object.__setattr__(self, "dedup", Horizon.of(self.dedup_window, self.dedup_horizon_s))


MAX_URL_CHARS = 8192


def decode_image_catalog(raw: bytes, key: bytes | None = None) -> ImageCatalog:
    """A catalog.images record; raises msgspec errors on bad input (the agent dead-letters it);
    `key`, the record's, must be the merchant id when there is one (catalog.check_key)."""
    record = _CATALOG.decode(raw)
    if not is_id(record.merchant_id) or KEY_JOIN in record.merchant_id:
        raise msgspec.ValidationError(f"merchant_id must be 1 to {MAX_ID_CHARS} characters, not blank, without "
                                      f"{KEY_JOIN!r}")
    check_key(key, record.merchant_id, "merchant_id")
    ids = [image.image_id for image in record.images]
    if not all(is_id(i) for i in ids) or len(set(ids)) != len(ids):  # events name images by id: one id, one image
        raise msgspec.ValidationError(f"image_id must be 1 to {MAX_ID_CHARS} characters, not blank, and unique "
                                      "within the merchant")
    if any(len(image.url) > MAX_URL_CHARS for image in record.images):  # a choice carries it: 999,000 made 1 MB
        raise msgspec.ValidationError(f"url must be at most {MAX_URL_CHARS} characters")
    return record


def dump_state(state: ConsumerImages) -> bytes:
    """A consumer's msgpack within one table value: the longest-known merchants go until it fits
    (1,000 merchants of 64 images with 1 KB ids would be 64 MB).

    >>> state = ConsumerImages(merchants={f"m{i}": MerchantViews({"x" * 900: 1}) for i in range(2000)})
    >>> len(dump_state(state)) <= MAX_TABLE_VALUE_BYTES, "m1999" in state.merchants, "m0" in state.merchants
    (True, True, False)
    """
    def forget_oldest(s: ConsumerImages) -> bool:
        for merchant in list(s.merchants)[: max(1, len(s.merchants) // 4)]:
            del s.merchants[merchant]
        return bool(s.merchants)

    return fit_value(state, _STATE_ENC.encode, forget_oldest)


def load_state(raw: bytes | None) -> ConsumerImages:
    return ConsumerImages() if not raw else _STATE_DEC.decode(raw)


class Pools:
    """merchant -> pool, decoded from the image catalog table only when the record changed. The
    table is read again at most every `recheck_s` a merchant (each event read the whole record: a
    900 KB catalog made every impression 7 ms, an outside fuzz), or at once after `forget`: a pool
    change takes effect on this worker's next choice, on another worker's within `recheck_s`."""

    def __init__(self, table: Mapping[str, bytes], rules: PoolRules, recheck_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.table, self.rules, self.recheck_s, self.clock = table, rules, recheck_s, clock
        self._cache: dict[str, tuple[float, bytes, list[Image]]] = {}  # merchant -> (until, record, pool)

    def get(self, merchant_id: str) -> list[Image]:
        cached, now = self._cache.get(merchant_id), self.clock()
        if cached is not None and now < cached[0]:
            return cached[2]
        raw = self.table.get(merchant_id)
        if raw is None:
            self._cache.pop(merchant_id, None)
            return []
        pool = cached[2] if cached is not None and cached[1] == raw else None
        if pool is None:
            try:
                pool = build_pool(_CATALOG.decode(raw), self.rules)
            except msgspec.ValidationError:  # stored before a rule that now rejects it (sales_rank past 2^53)
                pool = []
        self._cache[merchant_id] = (now + self.recheck_s, raw, pool)
        return pool

    def forget(self, merchant_id: str) -> None:
        """The merchant's record changed here: read it at the next choice."""
        self._cache.pop(merchant_id, None)


def choice_record(consumer: str, merchant: str, choice: Choice, variant: str, trigger: str) -> dict:
    return {"consumer_id": consumer, "merchant_id": merchant, "image_id": choice.image_id, "url": choice.url,
            "exploit": choice.exploit, "explore": choice.explore, "boost": choice.boost,
            "locked": choice.locked, "variant": variant, "trigger": trigger}


def answer(cfg: ImageConfig, request: ImageRequest, state: ConsumerImages, pools: Pools,
           stats: dict[str, tuple[float, float]]) -> dict:
    """The reply to a request (also what GET /images/{consumer} returns)."""
    variant = assign(cfg.experiment, request.consumer_id, cfg.variants)
    choices = []
    for merchant in request.merchant_ids:
        choice = choose(pools.get(merchant), stats, merchant, state.merchants.get(merchant), variant.explore,
                        cfg.params, request.query)
        if choice is None:
            choices.append({"merchant_id": merchant, "image_id": None, "error": "no image pool for merchant"})
        else:
            choices.append(choice_record(request.consumer_id, merchant, choice, variant.name, request.request_id))
    return {"request_id": request.request_id, "consumer_id": request.consumer_id, "variant": variant.name,
            "choices": choices}


class ImageBatch:
    def __init__(self, cfg: ImageConfig, consumers: MutableMapping[str, bytes], partial: GlobalCounts,
                 pools: Pools, stats: Callable[[], dict[str, tuple[float, float]]], ledger: Ledger | None = None,
                 arrived: float | None = None, floor: Mapping[str, int] | None = None):
        self.cfg, self.consumers, self.partial, self.pools, self.stats = cfg, consumers, partial, pools, stats
        self.arrived = arrived  # the wall clock: dates messageIds (default: their event time)
        self.floor = floor or {}  # the share's positions in an acknowledged write (streams.core.partitioned.Shares)
        self.ledger = ledger  # impressions and conversions per image variant and merchant
        self._states: dict[str, ConsumerImages] = {}
        self._shared: list[tuple[ImageEvent, bool, bool]] = []  # offered to the share once the batch is done
        self.out: list[tuple[str, bytes, bytes]] = []
        self.applied = self.duplicates = 0

    def run(self, records: Iterable[ImageEvent | ImageRequest]) -> list[tuple[str, bytes, bytes]]:
        for rec in records:
            if isinstance(rec, ImageEvent):
                self._event(rec)
            else:
                reply = answer(self.cfg, rec, self._state(rec.consumer_id), self.pools, self.stats())
                self.out.append((REPLIES, rec.consumer_id.encode(), _JSON.encode(reply)))
        for consumer, state in self._states.items():
            self.consumers[consumer] = dump_state(state)
        if self.ledger is not None:
            self.ledger.flush()
        for ev, fresh, counted in self._shared:  # the share last: a batch that raises (core.guarded) leaves it be
            if self.partial.takes(ev, fresh, counted):
                self.partial.count(ev, self.cfg.half_life_s)
        return self.out

    def _state(self, consumer: str) -> ConsumerImages:
        if consumer not in self._states:
            self._states[consumer] = load_state(self.consumers.get(consumer))
        return self._states[consumer]

    def _event(self, ev: ImageEvent) -> None:
        state = self._state(ev.consumer_id)
        variant = assign(self.cfg.experiment, ev.consumer_id, self.cfg.variants)
        if self.ledger is not None:  # whether or not the consumer's views have it (see Ledger)
            self._attribute(ev, variant.name)
        if first_delivery(state.applied, ev.source, ev.offset):
            at = ev.time if self.arrived is None else self.arrived
            fresh = counted = self.cfg.dedup.remember(state, ev.message_id, at)
            if not fresh:
                note_repeat(state.repeats, ev.source, ev.offset, self.floor)  # so is its redelivery
        else:
            fresh, counted = False, counted_when_applied(state, ev)
        self._shared.append((ev, fresh, counted))  # a repeat too: applied before a crash that lost the share's count
        if not fresh:
            self.duplicates += 1
            return
        self.applied += 1
        pool = self.pools.get(ev.merchant_id)
        first_time = ev.merchant_id not in state.merchants
        views = state.merchants.setdefault(ev.merchant_id, MerchantViews(impressions={}))
        before = choose(pool, self.stats(), ev.merchant_id, views, variant.explore, self.cfg.params)
        if ev.kind == "impression":
            if ev.image_id not in views.impressions and len(views.impressions) >= MAX_IMAGES_PER_MERCHANT:
                del views.impressions[min(views.impressions, key=views.impressions.get)]  # the least seen goes
            views.impressions[ev.image_id] = views.impressions.get(ev.image_id, 0) + 1
        else:
            views.convert(ev.image_id, ev.time)
        if len(state.merchants) > MAX_MERCHANTS_PER_CONSUMER:
            state.merchants.pop(next(iter(state.merchants)))  # the longest-known merchant goes first
        after = choose(pool, self.stats(), ev.merchant_id, views, variant.explore, self.cfg.params)
        was_shown = None if before is None else (before.image_id, before.locked)
        now_shown = None if after is None else (after.image_id, after.locked)
        if after is not None and (first_time or now_shown != was_shown):
            record = choice_record(ev.consumer_id, ev.merchant_id, after, variant.name, ev.message_id)
            self.out.append((CHOSEN, f"{ev.consumer_id}|{ev.merchant_id}".encode(), _JSON.encode(record)))

    def _attribute(self, ev: ImageEvent, variant: str) -> None:
        position = input_position(ev.source, ev.offset)
        if ev.kind == "impression":
            self.ledger.impressed(ev.consumer_id, variant, ev.merchant_id, ev.image_id, ev.time, ev.message_id,
                                  position)
        else:
            self.ledger.image_converted(ev.consumer_id, ev.merchant_id, ev.image_id, ev.time, ev.message_id,
                                        position)


def dump_counts(counts: GlobalCounts) -> bytes:
    """msgpack, within one table value: the least shown keys go until it fits (long ids can make even
    MAX_COUNTED_PER_PARTITION keys too large; 40,000 junk impressions stopped the worker for good).

    >>> counts = GlobalCounts(counts={f"m{i}|{'x' * 200}": [float(i), 0.0] for i in range(8000)})
    >>> len(dump_counts(counts)) <= MAX_TABLE_VALUE_BYTES, len(counts.counts), "m7999|" + "x" * 200 in counts.counts
    (True, 4000, True)
    """
    return fit_value(counts, _STATE_ENC.encode, lambda c: c.keep(len(c.counts) // 2))


_COUNTS = msgspec.msgpack.Decoder(GlobalCounts)


def load_counts(raw: bytes | None) -> GlobalCounts:
    return GlobalCounts() if not raw else _COUNTS.decode(raw)
