"""A user's profile shrunk until it is one changelog record Kafka takes (pure).

Every part of a profile is bounded, but ids may be 256 characters (1 KB in 4-byte UTF-8): a user who bought
300 works with such ids and saved 600 had a 1.25 MB profile, over Apache Kafka's default 1 MB
(`message.max.bytes`): its changelog write failed and the worker stopped, on every restart. `fitted` encodes
a profile after dropping, in this order and only as far as it must, what matters least: the messageIds
kept past the window's count (the horizon's), older purchases into their 8-byte digests (nothing lost), the
older active saves folded into plain weight (the same scores), the older toggle tombstones, an anonymous
id's shares, the older merged ids, the weaker half of the artists, at last the window's older ids.

>>> from streams.core.affinity import AffinityModel, Bought, Profile, dump
>>> from streams.core.records import MAX_TABLE_VALUE_BYTES, Signal, Target
>>> model, p, long = AffinityModel(), Profile(), lambda k, i: (f"{k}{i}-" + "\\U0001D11E" * 256)[:256]
>>> for i in range(900):
...     work = Target(long("a", i % 250), long("w", i))
...     _ = model.learn_one(p, Signal("order" if i < 300 else "save", "u", long("m", i), 1e9, (work,)))
>>> top = model.top(p, 20)
>>> len(dump(p)) > MAX_TABLE_VALUE_BYTES, len(p.purchased), len(p.seen) // 8
(True, 256, 900)
>>> len(fitted(model, p)) <= MAX_TABLE_VALUE_BYTES, len(p.purchased), len(p.bought_before), len(p.seen) // 8
(True, 64, 236, 900)
>>> model.top(p, 20) == top, all(long("w", i) in Bought(p) for i in range(300))  # nothing lost but ids
(True, True)
"""

from __future__ import annotations

import dataclasses

from streams.core.affinity import AffinityModel, Profile, active_saves, dump, overflow_purchases
from streams.core.records import MAX_TABLE_VALUE_BYTES
from streams.core.seen import CHUNK, SIZE, drop_oldest
from streams.core.values import MAX_CARRIED_BYTES, fit_value


def fitted(model: AffinityModel, profile: Profile, limit: int = MAX_TABLE_VALUE_BYTES) -> bytes:
    """`profile` encoded, shrunk in place first when it is over `limit`."""
    return fit_value(profile, dump, lambda p: shrink(model, p), limit)


def carried(model: AffinityModel, profile: Profile) -> bytes:
    """`fitted` with room for the record that carries it (a Merge adds three ids: a 998,975-byte profile made
    a 1,001,046-byte Merge, dead-lettered when read back, and the user's history was lost)."""
    return fitted(model, profile, MAX_CARRIED_BYTES)


def shrink(model: AffinityModel, p: Profile) -> bool:
    """One step of what `fitted` drops (the first that finds something); False when nothing is left to drop."""
    extra = (len(p.seen) // SIZE - model.dedup.size) // CHUNK  # chunks past the count: the horizon's
    if extra > 0 and drop_oldest(p, (extra + 1) // 2):
        return True
    if p.purchased:
        overflow_purchases(p, keep=len(p.purchased) // 2)
        return True
    saves = len(active_saves(p))
    if saves and model.fold_saves(p, saves // 2):
        return True
    tombstones = sorted((t.time, k) for k, t in p.toggles.items() if not t.on)
    for _, key in tombstones[: (len(tombstones) + 1) // 2]:
        del p.toggles[key]
    if tombstones:
        return True
    for name in ("shares", "merged"):
        if kept := getattr(p, name):
            setattr(p, name, kept[len(kept) // 2 + 1:])
            return True
    artists = len(set(p.scores) | {t.artist_id for t in p.toggles.values()})
    if artists > 1:
        dataclasses.replace(model, top_k=artists // 2).evict(p)
        return True
    return drop_oldest(p, len(p.seen_times) // 2)  # at last the count's ids
