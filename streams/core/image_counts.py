"""Decayed image impressions and conversions per "merchant|image" (pure): each partition's share, and the shares
merged into the counts the image choice reads (streams.core.images)."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import msgspec

from streams.core.affinity import decay
from streams.core.popularity import anchor_moves
from streams.core.positions import share_takes

MAX_COUNTED_PER_PARTITION = 20000  # "merchant|image" keys one partition's share keeps


class GlobalCounts(msgspec.Struct):
    """Decayed impressions and conversions per "merchant|image" valued at time `ref`, an anchor (one partition's
    share; shares add up, read at their newest event time: `merge_counts`). A newer event is added with a growth
    factor instead of rescaling every key (an outside check: each image event cost O(keys), 56 events/s and 26 s
    reads at 44k keys); the anchor moves, with one rescale, only once it is old (`anchor_moves`)."""

    ref: float = 0.0
    counts: dict[str, list[float]] = {}  # key -> [impressions, conversions]
    counted: dict[str, int] = {}  # input source -> the last offset this share took or passed (see `takes`)
    newest: float = 0.0  # the newest event time counted (shares written before it: their `ref`)

    def takes(self, ev, fresh: bool, counted_before: bool) -> bool:
        """Whether this share counts an image event (a streams.core.records.ImageEvent): see
        `streams.core.positions.share_takes`; records its position as decided."""
        return share_takes(self.counted, ev.source, ev.offset, fresh, counted_before)

    def add(self, merchant: str, image: str, impressions: float, conversions: float, t: float,
            half_life_s: float) -> None:
        if anchor_moves(self.ref, t, half_life_s, empty=not self.counts):
            factor = decay(t - self.ref, half_life_s)
            for c in self.counts.values():
                c[0] *= factor
                c[1] *= factor
            self.ref = t
        self.newest = max(self.newest, self.ref, t)
        w = decay(self.ref - t, half_life_s)
        c = self.counts.setdefault(f"{merchant}|{image}", [0.0, 0.0])
        c[0] += impressions * w
        c[1] += conversions * w
        if len(self.counts) > MAX_COUNTED_PER_PARTITION * 1.25:  # amortised trim
            self.keep(MAX_COUNTED_PER_PARTITION)

    def count(self, ev, half_life_s: float) -> None:
        """Add one impression or conversion (a streams.core.records.ImageEvent) that `takes` took."""
        impression = ev.kind == "impression"
        self.add(ev.merchant_id, ev.image_id, float(impression), float(not impression), ev.time, half_life_s)

    def keep(self, n: int) -> None:
        """Only the n keys with the most impressions and conversions (ties: the larger key): events
        may name any image, and this share is one table value (streams.core.records.MAX_TABLE_VALUE_BYTES)."""
        self.counts = dict(heapq.nlargest(n, self.counts.items(), key=lambda i: (i[1][0] + i[1][1], i[0])))


def merge_counts(shares: Sequence[GlobalCounts], half_life_s: float) -> dict[str, tuple[float, float]]:
    """Every share's counts valued at the newest event time any of them counted (the prior's weight is in
    impressions: counts valued at an older anchor would be too large)."""
    ref = max((max(s.ref, s.newest) for s in shares), default=0.0)
    out: dict[str, list[float]] = {}
    for s in shares:
        f = decay(ref - s.ref, half_life_s)
        for key, (imp, conv) in s.counts.items():
            acc = out.setdefault(key, [0.0, 0.0])
            acc[0] += imp * f
            acc[1] += conv * f
    return {k: (v[0], v[1]) for k, v in out.items()}
