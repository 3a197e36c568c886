"""What each message of an anonymous id added to its scores, for the merge into the user's profile.

A client that sends one message under both ids before their link (an anonymousId, then the
userId, with one messageId) has it applied to both profiles, and the merge would add it twice: a
profile keeps decayed sums, not each message's part. An anonymous id's profile therefore keeps its
last MAX_SHARES messages' shares (a toggle's is none, latest-wins, and purchases are a set: they
cannot count twice, only in `events`), and the merge takes out of it those the user's profile
applied too (in its `seen`).

>>> from streams.core.affinity import AffinityModel, Profile
>>> from streams.core.records import Signal, Target
>>> model = AffinityModel(weights={"view": 1.0}, half_life_s=0)
>>> user, anon = Profile(), Profile()
>>> model.learn_one(user, Signal("view", "u", "m1", 5.0, (Target("a"),)))
True
>>> model.learn_one(anon, Signal("view", "anon-1", "m1", 5.0, (Target("a"),), anonymous=True))  # the same message
True
>>> model.learn_one(anon, Signal("view", "anon-1", "m2", 6.0, (Target("b"),), anonymous=True))
True
>>> model.merge(user, anon, "identify-1", "anon-1")
True
>>> model.scores(user), user.events   # m1 once, m2
({'a': 1.0, 'b': 1.0}, 2)
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from streams.core.records import Signal
from streams.core.seen import contains, digest

MAX_SHARES = 64  # an anonymous id's last messages whose share a merge can take back
MAX_SHARED_ARTISTS = 256  # ... and at most this many artist entries in all (a profile is one Kafka record)


class Share(msgspec.Struct, array_like=True):
    """What one message of an anonymous id added: `weight` at `time` to each of `artists`."""

    digest: bytes  # streams.core.seen.digest of its messageId
    time: float
    weight: float
    artists: list[str]


def remember_share(profile, signal: Signal, weight: float) -> None:
    """A message of an anonymous id, applied to `profile` (a streams.core.affinity.Profile) with
    `weight` for each of its targets (0 for a toggle: latest-wins, it cannot count twice; it still
    counts in the profile's `events`). A user's own message ends the shares a merge brought: a
    profile that has its user is merged no further, but by an alias."""
    if signal.anonymous:
        artists = [t.artist_id for t in signal.targets] if weight else []
        shares = [*profile.shares[1 - MAX_SHARES:], Share(digest(signal.message_id), signal.time, weight, artists)]
        total = sum(len(s.artists) for s in shares)
        while total > MAX_SHARED_ARTISTS and len(shares) > 1:  # 64 messages of 3,000 works' 1 KB ids: 190 MB
            total -= len(shares.pop(0).artists)
        profile.shares = shares
    elif profile.shares:
        profile.shares = []


def take_back_shared(other, seen: bytearray, decay: Callable[[float], float]) -> list[Share]:
    """Out of `other` (the anonymous profile a merge absorbs, advanced to the merged reference time):
    every message the merging profile applied too (in its `seen`), so each counts once. Returns the
    other shares, for the merged profile to keep (a chain anon -> anon2 -> user takes them back last)."""
    kept = []
    for share in other.shares:
        if not contains(seen, share.digest):
            kept.append(share)
            continue
        other.events -= 1
        w = share.weight * decay(other.ref - share.time)
        for artist in share.artists:
            left = other.scores.get(artist, 0.0) - w
            if left > 1e-9 * w:  # below: the float residue of a score that held this share alone (or evicted)
                other.scores[artist] = left
            else:
                other.scores.pop(artist, None)
    other.shares = []
    return kept
