"""User -> artist affinity: exponentially decayed, order-independent, bounded. Pure core.

A user's affinity for an artist is  Σ wᵢ · 2^(−(T − tᵢ)/h)  over the user's signals about
that artist, with tᵢ the event time and h the half-life. We keep it as (score at reference
time T, T) with T = the newest event time seen: an event newer than T rescales every score
by 2^(−(t−T)/h) and moves T; an older (late) one is added already decayed. Either way the
result is the same sum, so live, late and replayed events give the same state (to float rounding).

follow/unfollow and save/unsave are *toggles*: the latest by event time wins (ties broken by
messageId), and an active toggle contributes its weight decayed from its own time. An
unfollow therefore removes exactly what the follow added, whichever arrives first (a save
folded into the scores past MAX_SAVES excepted).

Exactly once: the profile stores, per input partition, the offset of the last input record
applied to it, in the same table write as the state: a record delivered again after a crash
(at or below that offset) is recognised however many came again, which a window of ids cannot
promise for a heavy user. It also stores recently applied messageIds, for producer retries (the
same event sent twice lands at two offsets). Plus purchases and recent prices.

>>> model = AffinityModel(weights={"view": 1.0, "follow": 5.0}, half_life_s=10.0)
>>> p = Profile()
>>> model.learn_one(p, Signal("view", "u", "m1", 0.0, (Target("a"),)))
True
>>> model.learn_one(p, Signal("view", "u", "m2", 10.0, (Target("a"),)))
True
>>> model.learn_one(p, Signal("view", "u", "m2", 10.0, (Target("a"),)))  # duplicate
False
>>> model.scores(p)   # 1 * 2^-1 + 1
{'a': 1.5}
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

from streams.core.positions import first_delivery
from streams.core.records import Signal, Target
from streams.core.seen import Dated, Horizon, contains, digest, message_digest
from streams.core.settings import DEFAULT_WEIGHTS
from streams.core.shares import MAX_SHARES, Share, remember_share, take_back_shared

TOGGLE_ON = {"follow": True, "unfollow": False, "save": True, "unsave": False}
TOGGLE_OFF = {kind for kind, on in TOGGLE_ON.items() if not on}
TOGGLE_WEIGHT = {"follow": "follow", "unfollow": "follow", "save": "save", "unsave": "save"}
MAX_PRICES = 32
MAX_PURCHASES = 256
# active saves kept as toggles: past it the oldest quarter fold into the scores (unchanged) so a value stays
# under Kafka's 1 MB (450 saves, 1 KB ids: 1.38 MB, an outside fuzzer); a folded save's unsave takes nothing back
MAX_SAVES = 256


class Toggle(msgspec.Struct, array_like=True):
    time: float
    on: bool
    artist_id: str
    message_id: str


class Profile(Dated, omit_defaults=True):
    """Everything the affinity agent keeps per user (one table value); `seen`: recent messageIds, dated."""

    ref: float = 0.0  # reference time T of `scores`
    scores: dict[str, float] = {}  # additive signals, decayed to T
    toggles: dict[str, Toggle] = {}  # "f:<artist>" / "s:<artwork>" -> latest toggle
    purchased: list[str] = []  # the last MAX_PURCHASES artwork ids bought (never recommended)
    bought_before: list[int] = []  # older purchases: sorted 64-bit digests of their ids (8 bytes each)
    prices: list[float] = []  # recent inquiry/order prices (budget inference)
    events: int = 0
    alias_of: str = ""  # set once this id was merged into another (identify/alias); its state stays, to resend
    merged: list[str] = []  # the ids merged into this profile: a merge sent again is applied once
    applied: dict[str, int] = {}  # "topic:partition" -> offset of the last input record applied
    repeats: dict[str, list[int]] = {}  # "topic:partition" -> recent offsets that were repeats (streams.core.positions)
    shares: list[Share] = []  # an anonymous id's last MAX_SHARES messages, and a merge's (streams.core.shares)


class Bought:
    """Every work a user bought, for `in`, however many: the recent ids as a set, older ones
    by their digests (a heavy buyer's profile grows by 8 bytes a purchase, not by an id).

    >>> model, p = AffinityModel(), Profile()
    >>> for i in range(MAX_PURCHASES + 2):
    ...     _ = model.learn_one(p, Signal("order", "u", f"o{i}", float(i), (Target("a", f"w{i}"),)))
    >>> len(p.purchased), len(p.bought_before), "w0" in Bought(p), "w1" in Bought(p), "w9999" in Bought(p)
    (256, 2, True, True, False)
    """

    __slots__ = ("ids", "digests")

    def __init__(self, profile: Profile):
        self.ids, self.digests = set(profile.purchased), profile.bought_before

    def __contains__(self, work_id: str) -> bool:
        if work_id in self.ids:
            return True
        if not self.digests:
            return False
        digest = message_digest(work_id)
        i = bisect.bisect_left(self.digests, digest)
        return i < len(self.digests) and self.digests[i] == digest


def overflow_purchases(profile: Profile, keep: int = MAX_PURCHASES) -> None:
    """Keep the last `keep` ids; older ones move into the sorted digests."""
    over = max(0, len(profile.purchased) - keep)
    for old in profile.purchased[:over]:
        bisect.insort(profile.bought_before, message_digest(old))
    del profile.purchased[:over]


def active_saves(profile: Profile) -> list[str]:
    """The toggle keys of the works the user has saved and not unsaved."""
    return [k for k, t in profile.toggles.items() if t.on and k[0] == "s"]


def decay(age_s: float, half_life_s: float) -> float:
    """Weight left after `age_s` seconds: 2^(−age/h); no decay when the half-life is 0."""
    return 2.0 ** (-age_s / half_life_s) if half_life_s > 0 else 1.0


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Profile)


def dump(profile: Profile) -> bytes:
    return _ENCODER.encode(profile)


def load(data: bytes | None) -> Profile:
    return Profile() if not data else _DECODER.decode(data)


@dataclass(frozen=True)
class AffinityModel:
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    half_life_s: float = 30 * 86400.0
    top_k: int = 256
    dedup_window: int = 2048
    dedup_horizon_s: float = 3600.0

    def __post_init__(self):  # the messageId window (streams.core.seen.Horizon)
        object.__setattr__(self, "dedup", Horizon.of(self.dedup_window, self.dedup_horizon_s))

    def decay(self, age_s: float) -> float:
        """Weight left after `age_s` seconds: 2^(−age/h)."""
        return decay(age_s, self.half_life_s)

    def learn_one(self, profile: Profile, signal: Signal, at: float | None = None) -> bool:
        """Apply one signal in place. Returns False for a redelivered input record or a
        duplicate messageId. `at`: when it reached the profile (the worker's clock; default its event time)."""
        if signal.offset >= 0 and not first_delivery(profile.applied, signal.source, signal.offset):
            return False
        if not self.dedup.remember(profile, signal.message_id, signal.time if at is None else at):
            return False
        profile.events += 1
        # evict restores both bounds; only a new artist or a new tombstone can break them again
        may_grow = signal.kind in TOGGLE_OFF or any(t.artist_id not in profile.scores for t in signal.targets)
        self._advance(profile, signal.time)
        if signal.kind in TOGGLE_ON:
            weight = 0.0  # latest-wins, not added
            for target in signal.targets:
                self.toggle(profile, signal, target)
        else:
            weight = self.weights.get(signal.kind, 0.0)
            w = weight * self.decay(profile.ref - signal.time)
            for target in signal.targets:
                profile.scores[target.artist_id] = profile.scores.get(target.artist_id, 0.0) + w
        remember_share(profile, signal, weight)
        self.remember_purchase(profile, signal)
        if may_grow or len(profile.toggles) > MAX_SAVES:
            self.evict(profile)
        return True

    def scores(self, profile: Profile) -> dict[str, float]:
        """Affinity per artist at the profile's reference time."""
        out = dict(profile.scores)
        # weights looked up once, the module's decay called directly: this runs over every toggle a batch touches
        follow, save = self.weights.get("follow", 0.0), self.weights.get("save", 0.0)
        ref, h = profile.ref, self.half_life_s
        for key, tog in profile.toggles.items():
            if tog.on:
                weight = follow if key[0] == "f" else save
                if h > 0:  # decay(ref - t, h) inlined, the same float (-(ref - t) is t - ref): a call cost a tenth
                    weight *= 2.0 ** ((tog.time - ref) / h)
                out[tog.artist_id] = out.get(tog.artist_id, 0.0) + weight
        return out

    def top(self, profile: Profile, n: int) -> list[tuple[str, float]]:
        """The n strongest artists: score descending, then artist id (deterministic)."""
        # (-score, artist) tuples compare in C; a key function was a Python call per artist
        ranked = heapq.nsmallest(n, [(-s, a) for a, s in self.scores(profile).items() if s > 0])
        return [(a, -negated) for negated, a in ranked]

    @staticmethod
    def knows(profile: Profile, message_id: str) -> bool:
        """Whether the profile applied this messageId (within its dedup window): a record read again."""
        return contains(profile.seen, digest(message_id))

    def merge(self, into: Profile, other: Profile, message_id: str, other_id: str, at: float | None = None) -> bool:
        """Fold `other` (id `other_id`'s profile) into `into`. Sums commute, toggles are LWW, so
        the result does not depend on when the merge happens. False if already merged."""
        if other_id in into.merged or contains(into.seen, hashed := digest(message_id)):
            return False
        into.merged = [*into.merged, *other.merged, other_id][-MAX_PURCHASES:]
        other = load(dump(other))  # never alias the caller's object
        self._advance(into, other.ref)
        self._advance(other, into.ref)
        into.shares = [*into.shares, *take_back_shared(other, into.seen, self.decay)][-MAX_SHARES:]
        for artist, score in other.scores.items():
            into.scores[artist] = into.scores.get(artist, 0.0) + score
        for key, tog in other.toggles.items():
            old = into.toggles.get(key)
            if old is None or (tog.time, tog.message_id) > (old.time, old.message_id):
                into.toggles[key] = tog
        self.dedup.union(into, other.seen + hashed, into.ref if at is None else at)
        into.purchased = list(dict.fromkeys(into.purchased + other.purchased))
        into.bought_before = sorted(set(into.bought_before) | set(other.bought_before))
        overflow_purchases(into)
        into.prices = (into.prices + other.prices)[-MAX_PRICES:]
        into.events += other.events
        self.evict(into)
        return True

    # --- the steps of learn_one (toggle, remember_purchase and evict are shared with streams.core.bulk) ---
    def _advance(self, profile: Profile, t: float) -> None:
        if t > profile.ref:
            if profile.scores:
                factor = self.decay(t - profile.ref)
                for artist in profile.scores:
                    profile.scores[artist] *= factor
            profile.ref = t

    def toggle(self, profile: Profile, signal: Signal, target: Target) -> None:
        """Latest toggle by (event time, messageId) wins, whatever the arrival order."""
        key = f"f:{target.artist_id}" if signal.kind in ("follow", "unfollow") else f"s:{target.artwork_id}"
        new = Toggle(signal.time, TOGGLE_ON[signal.kind], target.artist_id, signal.message_id)
        old = profile.toggles.get(key)
        if old is None or (new.time, new.message_id) > (old.time, old.message_id):
            profile.toggles[key] = new

    def remember_purchase(self, profile: Profile, signal: Signal) -> None:
        """Orders and inquiries: recent prices (budget) and bought works (never recommended)."""
        if signal.kind not in ("order", "inquiry"):
            return
        for t in signal.targets:
            if t.price is not None:
                profile.prices.append(t.price)
            if signal.kind == "order" and t.artwork_id and t.artwork_id not in Bought(profile):
                profile.purchased.append(t.artwork_id)
        del profile.prices[:-MAX_PRICES]
        overflow_purchases(profile)

    def evict(self, profile: Profile) -> None:
        """Keep at most top_k artists (and as many toggle tombstones)."""
        if len(profile.scores) + len(profile.toggles) <= self.top_k:
            return  # a bound on the distinct artists: skips the exact count on almost every event
        artists = set(profile.scores) | {t.artist_id for t in profile.toggles.values()}
        if len(artists) > self.top_k:
            keep = {a for a, _ in heapq.nsmallest(
                self.top_k, self.scores(profile).items(), key=lambda i: (-i[1], i[0]))}
            profile.scores = {a: s for a, s in profile.scores.items() if a in keep}
            profile.toggles = {k: t for k, t in profile.toggles.items() if t.artist_id in keep}
        tombstones = [k for k, t in profile.toggles.items() if not t.on]
        if len(tombstones) > self.top_k:
            tombstones.sort(key=lambda k: profile.toggles[k].time)
            for k in tombstones[: len(tombstones) - self.top_k]:
                del profile.toggles[k]
        if len(active_saves(profile)) > MAX_SAVES:
            self.fold_saves(profile, MAX_SAVES * 3 // 4)

    def fold_saves(self, profile: Profile, keep: int) -> bool:
        """All but the newest `keep` active saves become plain weight: the same scores, a smaller value (an
        unsave of a folded save takes nothing back). False if there were no more than `keep`."""
        saves = sorted(active_saves(profile), key=lambda k: (profile.toggles[k].time, k))
        for tog in [profile.toggles.pop(k) for k in saves[: max(0, len(saves) - keep)]]:
            folded = self.weights.get("save", 0.0) * self.decay(profile.ref - tog.time)
            profile.scores[tog.artist_id] = profile.scores.get(tog.artist_id, 0.0) + folded
        return len(saves) > keep


def same_top(before: list[tuple[str, float]], after: list[tuple[str, float]]) -> bool:
    """The same artists in the same order with the same scores to 9 significant digits (no update to send)."""
    return len(before) == len(after) and all(a == b and (s == t or float(f"{s:.9g}") == float(f"{t:.9g}"))
                                             for (a, s), (b, t) in zip(before, after, strict=True))


def reference_scores(model: AffinityModel, signals: list[Signal]) -> dict[str, dict[str, float]]:
    """Affinity per user from a list of signals, computed from scratch (tests, rebuild checks)."""
    profiles: dict[str, Profile] = {}
    for s in signals:
        model.learn_one(profiles.setdefault(s.user_id, Profile()), s)
    return {user: model.scores(p) for user, p in profiles.items()}
