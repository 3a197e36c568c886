"""The per-user pipeline (pure): a batch of ``signals.keyed`` records from one partition -> state changes (through
plain mappings) and output records. The worker hands in its tables (any MutableMapping[str, bytes]: the tests use
dicts) and sends what `run` returns. Each user is recomputed once per batch, so bursts coalesce: one affinity update
and at most one recommendations record per user per batch, only when they changed.

State per partition: profiles (user -> Profile: affinity, dedup ids, purchases, prices, alias pointer; the
co-engagement mark under a blank key), recs (user -> Recommendations, which the topic mirrors), fans ("<artist>@<p>"
-> users with the artist among their top artists: a new work reaches them at once) and partial (this partition's
share of trending and co-engagement, streams.core.popularity)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field

import msgspec

from streams.core import positions, topcache
from streams.core.affinity import AffinityModel, Profile, load, same_top
from streams.core.aliases import forwarded, pointers, unpointed
from streams.core.attribution import Rules
from streams.core.catalog import CatalogIndex, decode_artwork
from streams.core.coengagement import MARK, PairCounts, counted
from streams.core.experiments import Variant, assign, default_variants
from streams.core.ledger import Ledger, input_position
from streams.core.popularity import Partial, PopularityView
from streams.core.positions import counted_when_applied, delivered_before, forwarded_position, note_repeat
from streams.core.profile_fit import carried, fitted
from streams.core.recommend import TOP_ARTISTS, recommendations_for
from streams.core.records import (
    AffinityUpdate,
    ArtistScore,
    Exposure,
    Identity,
    Merge,
    Refresh,
    Signal,
    decode_fans,
    decode_recs,
    encode,
    encode_keyed,
    fans_key,
)
from streams.core.values import fans_value

AFFINITY_UPDATES, RECOMMENDATIONS, SIGNALS_KEYED = "affinity.updates", "recommendations", "signals.keyed"
REFRESH_CHUNK = 100  # fans a refresh rebuilds in a read: 250 a read held HTTP reads p99 0.5 s behind a backlog


@dataclass(frozen=True)
class Output:
    topic: str  # logical name, without the topic prefix
    key: bytes
    value: bytes
    partition: int | None = None  # None: the key's


@dataclass(frozen=True)
class PipelineConfig:
    model: AffinityModel = field(default_factory=AffinityModel)
    variants: dict[str, Variant] = field(default_factory=default_variants)
    experiment: str = "recs"
    model_version: str = "affinity-blend-1"
    affinity_top_n: int = 20  # artists in each affinity.updates record
    fan_top_m: int = 10  # a user is a fan of each of their top-m artists
    coengagement_top_m: int = 5  # artists of a user's that count as co-engaged
    max_fans: int = 2000  # per artist per partition
    trending_half_life_s: float = 7 * 86400.0
    attribution: Rules = field(default_factory=Rules)  # experiment attribution (streams.core.ledger)
    tops: topcache.TopCache = field(default_factory=topcache.TopCache, compare=False, repr=False)  # across batches

    @property
    def top_needed(self) -> int:
        """How many of a user's strongest artists every consumer of them needs at most."""
        return max(self.affinity_top_n, self.fan_top_m, self.coengagement_top_m, TOP_ARTISTS)


class PartitionBatch:
    def __init__(self, cfg: PipelineConfig, partition: int, profiles: MutableMapping[str, bytes],
                 recs: MutableMapping[str, bytes], fans: MutableMapping[str, bytes], partial: Partial,
                 catalog: CatalogIndex, popularity: PopularityView, now: float, arrived: float | None = None,
                 attribution: MutableMapping[str, bytes] | None = None, hold: Callable[[str, str], bool] | None = None,
                 floor: Mapping[str, int] | None = None):  # the share's acknowledged positions (Shares.floor)
        self.cfg, self.partition, self.hold, self.floor = cfg, partition, hold, floor or {}  # hold: core.throttle
        self.profiles, self.recs, self.fans = profiles, recs, fans  # recs: an aliased id's list is a pointer
        self.arrived = now if arrived is None else arrived  # the wall clock (now may be event time): dates messageIds
        self.ledger = None if attribution is None else Ledger(attribution, partition, cfg.attribution)
        self.partial, self.catalog, self.popularity, self.now = partial, catalog, popularity, now
        self._loaded: dict[str, Profile] = {}
        self._raw: dict[str, bytes | None] = {}  # each loaded user's profile as stored (TopCache's key)
        self._before: dict[str, list[tuple[str, float]]] = {}
        self._pairs = PairCounts(partial, cfg.coengagement_top_m, cfg.fan_top_m)  # co-engagement and fans follow tops
        self._written: set[str] = set()
        self._dirty: dict[str, str] = {}  # user -> trigger
        self._resend: dict[str, str] = {}  # user -> trigger: outputs sent again even if unchanged
        self._signalled, self._overlaid = set(), {}  # user events' triggers; refreshed works -> the catalog's entry
        self._trending: list[tuple[Signal, bool, bool]] = []  # counted into the share once the batch is done
        self.out: list[Output] = []
        self.applied, self.duplicates, self._rescoring = 0, 0, False  # rescoring (refresh): a moved score is a change

    def run(self, records: Iterable[Signal | Identity | Merge | Refresh]) -> list[Output]:
        apply = {Signal: self._signal, Identity: self._identity, Merge: self._merge, Exposure: self._exposure}
        try:
            for rec in records:
                apply.get(type(rec), self._refresh)(rec)
            self._finish()
        finally:
            self._lift_overlay()
        return self.out

    def refresh(self, users: Iterable[str]) -> list[Output]:
        """These users' lists rebuilt with the current catalog, trending and clock; sent if a client sees a change."""
        self._rescoring = True
        return self.owed(dict.fromkeys(users, "refresh"))

    def owed(self, triggers: dict[str, str]) -> list[Output]:
        """Build the lists `hold` held back (user -> trigger), with the current catalog, trending and clock."""
        self._dirty.update(triggers)
        self._finish()
        return self.out

    def _signal(self, sig: Signal) -> None:
        profile = self._profile(sig.user_id)
        if delivered_before(profile.applied, sig.source, sig.offset):  # redelivered after a crash
            self._trend(sig, profile, False, counted_when_applied(profile, sig))  # the share may have lost it
            self._attribute(sig)  # the attribution log may not have it (see streams.core.ledger.Ledger)
            self.duplicates += 1
            self._written.add(sig.user_id)  # heals a changelog write lost in the crash
            self._resend.setdefault(sig.user_id, sig.message_id)  # and outputs lost with it
            return
        # an aliased id's events go on to the merged profile, at a position of their own, kept after a crash
        if self._forwarded(sig, profile, **forwarded_position(sig)):
            return
        self._written.add(sig.user_id)  # also on a duplicate: heals a changelog write lost in a crash
        self._attribute(sig)  # judged against the lists shown before this event
        if positions.retried_before(profile.repeats, sig) or not self.cfg.model.learn_one(profile, sig, self.arrived):
            note_repeat(profile.repeats, sig.source, sig.offset, self.floor)  # its redelivery is one too
            self._trend(sig, profile, False, False)
            self.duplicates += 1
            return
        self.applied += 1
        self._dirty[sig.user_id] = sig.message_id
        self._signalled.add(sig.message_id)
        self._trend(sig, profile, True, False)

    def _trend(self, sig: Signal, profile: Profile, fresh: bool, counted_before: bool) -> None:  # once per position
        positions.note_retry(profile.repeats, sig, self.floor, fresh)  # a pending retry's (core.positions)
        self._trending.append((sig, fresh, counted_before))

    def _attribute(self, sig: Signal) -> None:  # a conversion for the experiment logs, which judge repeats themselves
        if self.ledger is not None:
            self.ledger.converted(sig.user_id, [t.artwork_id for t in sig.targets if t.artwork_id], sig.kind,
                                  sig.time, sig.message_id, input_position(sig.source, sig.offset))

    def _identity(self, ident: Identity) -> None:
        """Keyed by the previous id: hand its profile to the new id, leave a pointer. Every identify of the pair sends
        it (the new id merges once): after a crash the pointer may have landed while the Merge did not."""
        profile = self._profile(ident.previous_id if ident.user_id != MARK else MARK)  # no pointer to the mark
        if profile.alias_of not in ("", ident.user_id) or ident.user_id in (*profile.merged, ident.previous_id):
            return  # merged into another id already, or the new id was merged into this one (no ring), or itself
        moving = Merge(ident.user_id, ident.previous_id, ident.message_id,
                       carried(self.cfg.model, msgspec.structs.replace(profile, alias_of="")))
        self._send(SIGNALS_KEYED, ident.user_id, encode_keyed(moving))
        profile.alias_of = ident.user_id
        value, update = pointers(self.recs.get(ident.previous_id), ident, self.now)
        self.recs[ident.previous_id] = value
        self._send(RECOMMENDATIONS, ident.previous_id, value)
        self._send(AFFINITY_UPDATES, ident.previous_id, update)
        self._written.add(ident.previous_id)
        self._dirty.pop(ident.previous_id, None)

    def _merge(self, merge: Merge) -> None:
        profile = self._profile(merge.user_id)
        # an id absorbed before this one's link went on inside its merge: a second merge of it would count twice
        if profile.alias_of and merge.previous_id in profile.merged or self._forwarded(merge, profile):
            return
        if merge.previous_id == merge.user_id:
            return  # back at the profile it left (a ring broke there), which still holds it
        self._written.add(merge.user_id)  # a repeat too, as a signal's: heals a changelog write lost in a crash
        if self.cfg.model.merge(profile, load(merge.profile), merge.message_id, merge.previous_id, self.arrived):
            self._dirty[merge.user_id] = merge.message_id
            self._signalled.add(merge.message_id)  # its list is shown from the merged events' time, as a signal's
        elif self.cfg.model.knows(profile, merge.message_id):  # read again (not another identify of the pair): its
            self._resend.setdefault(merge.user_id, merge.message_id)  # outputs may be lost (a kill -9 in their acks)

    def _forwarded(self, rec: Signal | Merge, profile: Profile, **changes) -> bool:
        """An aliased id's record sent on to its merged profile; False if not aliased or a ring broke (core.aliases)"""
        moved = profile.alias_of and forwarded(rec, profile.alias_of, **changes)
        if moved:
            self._send(SIGNALS_KEYED, moved.user_id, encode_keyed(moved))
        elif profile.alias_of:
            profile.alias_of = ""
            self._written.add(rec.user_id)
            self._dirty.setdefault(rec.user_id, rec.message_id)  # a list of its own again
            if (own := unpointed(self.recs, rec.user_id)) is not None:
                self._send(RECOMMENDATIONS, rec.user_id, own)
        return bool(moved)

    def _exposure(self, exposure: Exposure) -> None:
        """The user saw a list: the given works (sources from the current list), or the current list itself."""
        if self.ledger is None:
            return
        current = decode_recs(self.recs.get(exposure.user_id))
        listed = dict(current.listing()) if current else {}
        items = list(listed.items()) if exposure.items is None else [
            (work, source or listed.get(work, "other")) for work, source in exposure.items]
        given = exposure.variant if exposure.variant in self.cfg.variants else None  # a hand-written one: no "Z"
        variant = given or (current.variant if current and current.variant else  # none: a pointer's
                            assign(self.cfg.experiment, exposure.user_id, self.cfg.variants).name)
        self.ledger.exposed(exposure.user_id, variant, items, exposure.time, exposure.exposure_id)

    def _refresh(self, refresh: Refresh) -> None:
        trigger = "catalog"
        if refresh.artwork:
            artwork = decode_artwork(refresh.artwork)
            if (current := self.catalog.get(artwork.id)) != artwork:
                # the catalog here lags the record or moved past it: this batch's lists see the work, the index is fed
                # only in catalog order (a refresh read after the work's tombstone brought it back for everyone)
                self._overlaid.setdefault(artwork.id, current)
                self.catalog.upsert(artwork)
            trigger = f"catalog:{artwork.id}"
        else:  # a work of the artist left the catalog: this batch's lists go by the catalog's own entries again
            self._lift_overlay(refresh.artist_id)
        fans = decode_fans(self.fans.get(fans_key(refresh.artist_id, self.partition)))
        end = refresh.start + REFRESH_CHUNK
        self._dirty.update({user: self._dirty.get(user, trigger) for user in fans[refresh.start:end]})
        if len(fans) > end:  # the rest in later reads (one read rebuilt a partition's 2,000 fans at once)
            rest = encode_keyed(msgspec.structs.replace(refresh, start=end))
            self.out.append(Output(SIGNALS_KEYED, refresh.artist_id.encode(), rest, self.partition))

    def _lift_overlay(self, artist: str | None = None) -> None:
        for work_id in [w for w in self._overlaid if artist is None or self.catalog.get(w).artist_id == artist]:
            self.catalog.put_back(work_id, self._overlaid.pop(work_id))

    def _profile(self, user: str) -> Profile:
        profile = self._loaded.get(user)
        if profile is None:
            if user == MARK:  # only an internal record written by hand can name it: dead-lettered (core.guarded)
                raise ValueError("a record for the co-engagement mark's key, which is no user id")
            raw = self._raw[user] = self.profiles.get(user)
            profile = self._loaded[user] = load(raw)
            before = self._before[user] = self.cfg.tops.top(user, raw, profile, self.cfg.model, self.cfg.top_needed)
            self._pairs.loaded(user, profile, before)
        return profile

    def _finish(self) -> None:
        for user in self._written:
            self.profiles[user] = self._raw[user] = fitted(self.cfg.model, self._loaded[user])
        tops = {}
        for user, trigger in {**self._resend, **self._dirty}.items():
            profile = self._profile(user)
            if not counted(profile):
                continue
            resend, before = user in self._resend, self._before[user]
            after = tops[user] = self._rank(user)
            self._emit_affinity(user, profile, before, after, trigger, resend)
            # a refresh's fans' lists even if unchanged: read again after a kill -9 in its acks, it sent none (outside)
            self._emit_recommendations(user, profile, after, trigger, resend or trigger.startswith("catalog"))
        self._pairs.finish(self._written, self._loaded, tops, self._rank, self.profiles, self._update_fans,
                           again=self._resend)
        if self.ledger is not None:
            self.ledger.flush()
        self._pairs.commit()  # the share last, after all that can raise: a failed batch (core.guarded) leaves it be
        self.partial.count_all(self._trending, self.cfg.model.weights, self.cfg.trending_half_life_s)

    def _rank(self, user: str) -> list[tuple[str, float]]:
        return self.cfg.tops.top(user, self._raw[user], self._loaded[user], self.cfg.model, self.cfg.top_needed)

    def _emit_affinity(self, user, profile, before, after, trigger, resend=False) -> None:
        n = self.cfg.affinity_top_n
        if resend or not same_top(before[:n], after[:n]):
            update = AffinityUpdate(user, profile.ref, [ArtistScore(a, s) for a, s in after[:n]], trigger)
            self._send(AFFINITY_UPDATES, user, encode(update))

    def _update_fans(self, user: str, before: list[str] | None, now: list[str] | None) -> None:
        m = self.cfg.fan_top_m  # a fan of each of the top m artists it counts (an alias of none)
        old, new = set((before or ())[:m]), set((now or ())[:m])
        for artist in old ^ new:
            key = fans_key(artist, self.partition)
            fans = [u for u in decode_fans(self.fans.get(key)) if u != user]
            if artist in new:
                fans.append(user)
            self.fans[key] = fans_value(fans, self.cfg.max_fans)

    def _emit_recommendations(self, user, profile, top, trigger, resend=False) -> None:
        if not resend and self.hold and self.hold(user, trigger):
            return  # built once its window ends, or before the input offsets are committed
        fresh = recommendations_for(self.cfg, user, profile, top, self.catalog, self.popularity, self.now, trigger)
        old = decode_recs(self.recs.get(user))
        if not resend and old is not None and old.variant == fresh.variant and old.listing() == fresh.listing() and (
                not self._rescoring or [i.score for i in old.items] == [i.score for i in fresh.items]):
            return  # nothing a client would see changed
        self.recs[user] = value = encode(fresh)
        self._send(RECOMMENDATIONS, user, value)
        if self.ledger is not None:  # an exposure when shown anew, from the event it answers (or now: a refresh)
            shown = min(self.now, profile.ref) if trigger in self._signalled else self.now
            self.ledger.listed(user, fresh.variant, fresh.listing(), shown, again=resend)

    def _send(self, topic: str, key: str, value: bytes) -> None:
        self.out.append(Output(topic, key.encode(), value))
