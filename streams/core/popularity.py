"""Global popularity (pure): trending artworks and artist co-engagement.

Both are aggregated per input partition (a `Partial`, stored in a global table keyed by
partition) and merged on read into a `PopularityView` that every worker holds.

Trending is a decayed interaction count, Σ w · 2^(−age/h), kept like affinity as (score at T, T).
Co-engagement counts, for each pair of artists, the users who currently have both among their
top artists; it moves by +1/−1 as users' top sets change.

>>> part = Partial()
>>> part.trending.add("w1", 3.0, 0.0, half_life_s=10.0)
>>> part.trending.add("w1", 1.0, 10.0, half_life_s=10.0)
>>> part.trending.value_at("w1", 10.0, half_life_s=10.0)   # 3 * 2^-1 + 1
2.5
>>> part.update_pairs({"a", "b"}, {"a", "b", "c"})
>>> sorted(part.pairs.items())
[('a|c', 1), ('b|c', 1)]
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import msgspec

from streams.core.affinity import decay
from streams.core.positions import share_takes
from streams.core.values import fit_value

MAX_TRENDING_PER_PARTITION = 2000
MAX_PAIRS_PER_PARTITION = 20000
NO_TRENDING = {"unfollow", "unsave", "follow"}  # kinds that add no trending (a follow names an artist, not a work)
REANCHOR_HALF_LIVES = 64.0


def anchor_moves(ref: float, t: float, half_life_s: float, empty: bool) -> bool:
    """Whether decayed sums valued at anchor `ref` (newer values added with a growth factor) move the anchor to `t`,
    with one rescale of every key: when there are none yet, or once it is REANCHOR_HALF_LIVES old (every factor stays
    within 2^±64 of 1). Trending (DecayedScores) and image counts (streams.core.image_counts) share it.

    >>> anchor_moves(0.0, 5.0, 1.0, True), anchor_moves(0.0, 64.0, 1.0, False), anchor_moves(0.0, 65.0, 1.0, False)
    (True, False, True)
    """
    return empty or (half_life_s > 0 and t - ref > REANCHOR_HALF_LIVES * half_life_s)


class DecayedScores(msgspec.Struct):
    """Σ w · 2^(−(ref − t)/h) per key, valued at time `ref`.

    `ref` is an anchor, not the newest time: newer events are added with a growth factor
    2^((t − ref)/h) instead of rescaling every key on every event (that made each add cost
    O(keys)). The anchor moves, with one rescale, only once it is old (`anchor_moves`). Readers rescale to a
    common time anyway."""

    ref: float = 0.0
    scores: dict[str, float] = {}

    def add(self, key: str, weight: float, t: float, half_life_s: float) -> None:
        if anchor_moves(self.ref, t, half_life_s, empty=not self.scores):
            factor = decay(t - self.ref, half_life_s)
            for k in self.scores:
                self.scores[k] *= factor
            self.ref = t
        self.scores[key] = self.scores.get(key, 0.0) + weight * decay(self.ref - t, half_life_s)
        if len(self.scores) > MAX_TRENDING_PER_PARTITION * 1.25:  # amortised trim
            self.scores = _strongest(self.scores, MAX_TRENDING_PER_PARTITION)

    def value_at(self, key: str, t: float, half_life_s: float) -> float:
        return self.scores.get(key, 0.0) * decay(t - self.ref, half_life_s)


class Partial(msgspec.Struct):
    """One partition's share of the global popularity."""

    trending: DecayedScores = msgspec.field(default_factory=DecayedScores)
    pairs: dict[str, int] = {}
    counted: dict[str, int] = {}  # input source -> the last offset whose trending this share decided
    seq: int = 0  # the last batch that moved its pairs (streams.core.coengagement)
    newest: float = 0.0  # the newest event time counted: where the event clock resumes after a restart

    def count(self, sig, weights: Mapping[str, float], half_life_s: float, fresh: bool, counted_before: bool) -> None:
        """A signal's (streams.core.records.Signal) artworks trend by its kind's weight, if this
        share takes its position (streams.core.positions.share_takes)."""
        if sig.time > self.newest:
            self.newest = sig.time
        if share_takes(self.counted, sig.source, sig.offset, fresh, counted_before) and sig.kind not in NO_TRENDING:
            weight = weights.get(sig.kind, 0.0)
            for t in sig.targets:
                if t.artwork_id:
                    self.trending.add(t.artwork_id, weight, sig.time, half_life_s)

    def count_all(self, signals: Iterable[tuple], weights: Mapping[str, float], half_life_s: float) -> None:
        """`count` for each (signal, fresh, counted_before), in order: a batch's, once it is done."""
        for sig, fresh, counted_before in signals:
            self.count(sig, weights, half_life_s, fresh, counted_before)

    def update_pairs(self, old_top: Iterable[str], new_top: Iterable[str]) -> None:
        old, new = _pairs(old_top), _pairs(new_top)
        for p in new - old:
            self.pairs[p] = self.pairs.get(p, 0) + 1
        for p in old - new:
            count = self.pairs.get(p, 0) - 1
            if count > 0:
                self.pairs[p] = count
            else:
                self.pairs.pop(p, None)
        if len(self.pairs) > MAX_PAIRS_PER_PARTITION * 1.25:  # amortised trim
            self.pairs = _strongest(self.pairs)


def _pair_keys(artists: Iterable[str]) -> Iterator[str]:
    """"a|b" for each pair of distinct artists, a < b, in sorted order."""
    return (f"{a}|{b}" for a, b in itertools.combinations(sorted(set(artists)), 2))


def _pairs(artists: Iterable[str]) -> set[str]:
    return set(_pair_keys(artists))


def count_pairs(tops: Iterable[Iterable[str]]) -> dict[str, int]:
    """Co-engagement counts from scratch, one top set per user (the bulk rebuild): what
    `update_pairs((), top)` per user gives, counted in one pass and bounded once at the end.

    >>> count_pairs([["b", "a"], ["a", "b", "c"], ["c"]])
    {'a|b': 2, 'a|c': 1, 'b|c': 1}
    """
    counts = Counter(pair for top in tops for pair in _pair_keys(top))
    return _strongest(counts) if len(counts) > MAX_PAIRS_PER_PARTITION else dict(counts)


def _strongest(values: dict[str, Any], n: int = MAX_PAIRS_PER_PARTITION) -> dict[str, Any]:
    """The n largest values (ties: the larger key)."""
    return dict(heapq.nlargest(n, values.items(), key=lambda i: (i[1], i[0])))


_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder(Partial)


def dump_partial(p: Partial) -> bytes:
    """msgpack, within one table value (events may name artists and works with ids of any length):
    the weakest pairs and trending works go until it fits."""
    return fit_value(p, _ENC.encode, _halve)


def _halve(p: Partial) -> None:
    p.pairs = _strongest(p.pairs, len(p.pairs) // 2)
    p.trending.scores = _strongest(p.trending.scores, len(p.trending.scores) // 2)


def load_partial(raw: bytes | None) -> Partial:
    return Partial() if not raw else _DEC.decode(raw)


class _Newest(msgspec.Struct):
    newest: float = 0.0


_NEWEST = msgspec.msgpack.Decoder(_Newest)  # reads a share's `newest`, skipping the rest


def newest_counted(raws: Iterable[bytes | None]) -> float:
    """The newest event time any of these shares (dump_partial) counted; 0.0 if none.

    >>> share = Partial(); share.newest = 1.7e9
    >>> newest_counted([dump_partial(share), dump_partial(Partial()), None])
    1700000000.0
    """
    return max((_NEWEST.decode(raw).newest for raw in raws if raw), default=0.0)


class PopularityView:
    """The merged, read-only view used by the recommendation builder."""

    def __init__(self, partials: Iterable[Partial] = (), half_life_s: float = 7 * 86400.0, top_k: int = 500):
        ref = 0.0
        parts = list(partials)
        for p in parts:
            ref = max(ref, p.trending.ref)
        trending: dict[str, float] = {}
        pairs: dict[str, int] = {}
        for p in parts:
            factor = decay(ref - p.trending.ref, half_life_s)
            for k, s in p.trending.scores.items():
                trending[k] = trending.get(k, 0.0) + s * factor
            for k, c in p.pairs.items():
                pairs[k] = pairs.get(k, 0) + c
        top = heapq.nlargest(top_k, trending.items(), key=lambda i: (i[1], i[0]))
        peak = top[0][1] if top else 0.0
        # normalised to [0, 1] so the rankers' trending term has a stable scale; the list is the
        # global top k (backfill, cold start), the scores cover every work (a user's candidates
        # far down the global ranking still compare by their own trending)
        self.trending: list[tuple[str, float]] = [(k, s / peak) for k, s in top] if peak > 0 else []
        self.trending_score = {k: s / peak for k, s in trending.items()} if peak > 0 else {}
        self.memo: dict = {}  # what every user's builder derives from this view alone (recommend._hot)
        self.neighbours: dict[str, list[tuple[str, int]]] = {}
        for key, count in pairs.items():
            a, b = key.split("|", 1)
            self.neighbours.setdefault(a, []).append((b, count))
            self.neighbours.setdefault(b, []).append((a, count))
        for lst in self.neighbours.values():
            lst.sort(key=lambda i: (-i[1], i[0]))

    def similar(self, artist_id: str, k: int = 10) -> list[tuple[str, int]]:
        """Artists most co-engaged with `artist_id`: count descending, then id."""
        return self.neighbours.get(artist_id, [])[:k]
