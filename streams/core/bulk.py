"""Bulk rebuild core (pure, numpy): a partition's whole history of signals -> the state the
live pipeline reaches one event at a time (profiles, fans, recommendations, popularity shares).

Affinity is a sum of decayed weights per (user, artist), so a history does not need replaying
in order: per event we only dedup, remember the newest time and note one row
(user, artist, weight, time); the sums are then one vectorised pass,

    score[u, a] = Σ w · 2^(−(T_u − t)/h)        T_u = the user's newest event time

(`decayed_sums`, also used for trending). Toggles (latest wins), purchases and prices are the
few order-dependent parts and reuse the live model's own code.

Differences from the live path, both in the direction of "more exact":
- a duplicate messageId is applied once over the whole history, not only within the user's
  dedup window (its last `dedup_window` messages and those within `dedup_horizon_s` of their newest);
- the top-k artist bound is applied once at the end, so an artist evicted early and strong
  later is not lost (identical for users with at most top_k artists).

>>> from streams.core.affinity import AffinityModel
>>> from streams.core.records import Target
>>> model = AffinityModel(weights={"view": 1.0, "follow": 5.0}, half_life_s=10.0)
>>> bulk = BulkPartition(PipelineConfig(model=model), partition=0)
>>> bulk.add(Signal("view", "u", "m2", 10.0, (Target("a"),)))  # any order
True
>>> bulk.add(Signal("view", "u", "m1", 0.0, (Target("a"),)))
True
>>> bulk.add(Signal("view", "u", "m1", 0.0, (Target("a"),)))  # duplicate
False
>>> model.scores(bulk.profiles()["u"])   # 1 * 2^-1 + 1, as learn_one gives
{'a': 1.5}
"""

from __future__ import annotations

from array import array

import numpy as np

from streams.core.affinity import TOGGLE_ON, Profile
from streams.core.catalog import CatalogIndex
from streams.core.pipeline import PipelineConfig, fans_key
from streams.core.popularity import MAX_TRENDING_PER_PARTITION, NO_TRENDING, Partial, PopularityView, count_pairs
from streams.core.profile_fit import fitted
from streams.core.recommend import recommendations_for
from streams.core.records import Signal, encode
from streams.core.seen import digest
from streams.core.shares import remember_share
from streams.core.values import fans_value


def decayed_sums(group: np.ndarray, weight: np.ndarray, time: np.ndarray, ref: np.ndarray | float,
                 half_life_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Σ weight · 2^(−(ref − time)/h) per distinct group id, `ref` per row (or one for all):
    (groups sorted, sums).

    >>> g, s = decayed_sums(np.array([7, 7, 3]), np.array([1.0, 1.0, 2.0]), np.array([0.0, 10.0, 5.0]),
    ...                     np.array([10.0, 10.0, 5.0]), 10.0)
    >>> g.tolist(), s.tolist()
    ([3, 7], [2.0, 1.5])
    """
    weight = np.asarray(weight, dtype=np.float64)
    if half_life_s > 0:
        weight = weight * np.exp2(-(np.asarray(ref) - np.asarray(time)) / half_life_s)
    groups, inverse = np.unique(group, return_inverse=True)
    return groups, np.bincount(inverse, weights=weight, minlength=len(groups))


class BulkPartition:
    """One partition's signals -> its state. `add` every signal (any order), then `partial`
    (this partition's popularity share), then `outputs` once the popularity view over every
    partition is known."""

    def __init__(self, cfg: PipelineConfig, partition: int, arrived: float | None = None):
        self.cfg, self.model, self.partition = cfg, cfg.model, partition
        # the wall clock the messageIds are dated by, as a live worker dates them when it reads them (None: each
        # signal's time). By event time a heavy user's window kept only the history's last hour after a rebuild,
        # and a repeat of an older message counted again on the rebuilt worker (an outside check)
        self.arrived = arrived
        self._weights = dict(cfg.model.weights)  # a plain dict: read once per signal
        self.user_ids: dict[str, int] = {}
        self._profiles: list[Profile] = []
        self._seen: list[set[bytes]] = []  # every messageId digest of a user (the window keeps the last)
        self.artist_ids: dict[str, int] = {}
        self.artwork_ids: dict[str, int] = {}
        # one row per (signal, target) of the additive kinds; array('d') is 8 bytes a value
        self._rows_user, self._rows_artist = array("q"), array("q")
        self._rows_weight, self._rows_time = array("d"), array("d")
        self._trend_work, self._trend_weight, self._trend_time = array("q"), array("d"), array("d")
        self.applied = self.duplicates = 0
        self._finished: dict[str, Profile] | None = None
        self._tops: dict[str, list[tuple[str, float]]] = {}

    def add(self, sig: Signal) -> bool:
        """Note one signal. False for a duplicate messageId (of this user)."""
        u = self.user_ids.get(sig.user_id)
        if u is None:
            u = self.user_ids[sig.user_id] = len(self._profiles)
            self._profiles.append(Profile())
            self._seen.append(set())
        hashed = digest(sig.message_id)
        seen = self._seen[u]
        if hashed in seen:
            self.duplicates += 1
            return False
        seen.add(hashed)
        profile = self._profiles[u]
        self.model.dedup.note(profile, hashed, sig.time if self.arrived is None else self.arrived)
        profile.events += 1
        if sig.time > profile.ref:
            profile.ref = sig.time
        weight = self._weights.get(sig.kind, 0.0)
        if sig.kind in TOGGLE_ON:
            for target in sig.targets:
                self.model.toggle(profile, sig, target)
        else:
            for target in sig.targets:
                self._rows_user.append(u)
                self._rows_artist.append(_index(self.artist_ids, target.artist_id))
                self._rows_weight.append(weight)
                self._rows_time.append(sig.time)
        remember_share(profile, sig, 0.0 if sig.kind in TOGGLE_ON else weight)  # an anonymous id's, for its merge
        if sig.kind not in NO_TRENDING:
            for target in sig.targets:
                if target.artwork_id:
                    self._trend_work.append(_index(self.artwork_ids, target.artwork_id))
                    self._trend_weight.append(weight)
                    self._trend_time.append(sig.time)
        self.model.remember_purchase(profile, sig)
        self.applied += 1
        return True

    def profiles(self) -> dict[str, Profile]:
        """user -> Profile, as the live model would hold it after the same signals."""
        if self._finished is None:
            self._finish_scores()
            for profile in self._profiles:
                self.model.dedup.trim(profile, profile.ref if self.arrived is None else self.arrived)
                self.model.evict(profile)
            self._finished = dict(zip(self.user_ids, self._profiles, strict=True))
            # each user's strongest artists, once: co-engagement, fans and the builder all read them
            self._tops = {user: self.model.top(p, self.cfg.top_needed) for user, p in self._finished.items()}
        return self._finished

    def _finish_scores(self) -> None:
        if not self._rows_user:
            return
        users = np.frombuffer(self._rows_user, dtype=np.int64)
        n_artists = len(self.artist_ids)
        ref = np.fromiter((p.ref for p in self._profiles), dtype=np.float64, count=len(self._profiles))
        pairs = users * n_artists + np.frombuffer(self._rows_artist, dtype=np.int64)
        groups, sums = decayed_sums(pairs, np.frombuffer(self._rows_weight), np.frombuffer(self._rows_time),
                                    ref[users], self.model.half_life_s)  # each row decays to its user's T
        names = list(self.artist_ids)
        profiles = self._profiles
        for pair, total in zip(groups.tolist(), sums.tolist(), strict=True):
            u, a = divmod(pair, n_artists)
            profiles[u].scores[names[a]] = total

    def partial(self, half_life_s: float) -> Partial:
        """This partition's share of trending and co-engagement."""
        partial = Partial()
        if self._trend_work:
            times = np.frombuffer(self._trend_time)
            ref = float(times.max())
            works = np.frombuffer(self._trend_work, dtype=np.int64)
            groups, sums = decayed_sums(works, np.frombuffer(self._trend_weight), times, ref, half_life_s)
            names = list(self.artwork_ids)
            scores = sorted(zip(sums.tolist(), (names[g] for g in groups.tolist()), strict=True), reverse=True)
            partial.trending.ref = ref
            partial.trending.scores = {k: s for s, k in scores[:MAX_TRENDING_PER_PARTITION]}
        m = self.cfg.coengagement_top_m
        partial.pairs = count_pairs([a for a, _ in self._tops[user][:m]] for user in self.profiles())
        return partial

    def outputs(self, catalog: CatalogIndex, popularity: PopularityView, now: float) -> dict[str, dict[str, bytes]]:
        """Table name -> {key: value} for the affinity, fans and recommendations tables."""
        affinity, recs, fans = {}, {}, {}
        for user, profile in self.profiles().items():
            affinity[user] = fitted(self.model, profile)
            top = self._tops[user]
            for artist, _ in top[: self.cfg.fan_top_m]:
                fans.setdefault(fans_key(artist, self.partition), []).append(user)
            if profile.events or profile.scores:
                recs[user] = encode(recommendations_for(self.cfg, user, profile, top, catalog, popularity, now,
                                                        "rebuild"))
        return {"affinity": affinity, "recommendations": recs,
                "fans": {k: fans_value(v, self.cfg.max_fans) for k, v in fans.items()}}


def _index(ids: dict[str, int], key: str) -> int:
    i = ids.get(key)
    if i is None:
        i = ids[key] = len(ids)
    return i
