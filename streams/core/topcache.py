"""A cache of users' top artists across batches (pure core: no I/O)."""

from __future__ import annotations

from streams.core.affinity import AffinityModel, Profile


class TopCache:
    """user -> their stored profile's top artists, keyed by the profile bytes' length and hash: a
    batch ranks each user it touches before and after its signals, and the "before" is the last
    batch's "after" (the same bytes give the same ranking). The newest `size` users are kept.

    >>> from streams.core.affinity import dump
    >>> model, cache, p = AffinityModel(), TopCache(size=1), Profile(ref=5.0, scores={"a": 1.0, "b": 2.0})
    >>> cache.top("u", dump(p), p, model, 1), cache.top("u", dump(p), Profile(), model, 1)  # the 2nd: cached
    ([('b', 2.0)], [('b', 2.0)])
    >>> cache.top("u", dump(Profile()), Profile(), model, 1), cache.top("v", None, Profile(), model, 1)
    ([], [])
    """

    def __init__(self, size: int = 4096):
        self.size, self._tops = size, {}

    def top(self, user: str, raw: bytes | None, profile: Profile, model: AffinityModel,
            n: int) -> list[tuple[str, float]]:
        """`profile` (decoded from `raw`, its stored bytes)'s n strongest artists (AffinityModel.top)."""
        if not raw:
            return model.top(profile, n)
        stamp = (len(raw), hash(raw), n)
        hit = self._tops.pop(user, None)
        top = hit[1] if hit is not None and hit[0] == stamp else model.top(profile, n)
        self._tops[user] = (stamp, top)
        if len(self._tops) > self.size:
            del self._tops[next(iter(self._tops))]  # the least recently ranked
        return top

