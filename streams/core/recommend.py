"""The recommendation builder (pure): a user's affinity + the catalog -> N items.

Candidates are available, non-merch works published within the variant's window (and not in
the future), never one the user bought (nor, with the budget filter, above the user's budget).
Two rankings (a variant's ``ranking``):

``blend`` (affinity first): the works of the user's top artists, ranked by

    score = affinity(artist)^α · (1 + β · trending(work))        trending normalised to [0, 1]

ties broken by newest first, then artwork id. β = 0 gives the source story's strict order,
affinity descending then newest (variant A, the control).

``popular`` (personalised popularity, the default): on real purchase data item popularity
carries most of the signal, so the user's artists do not filter the candidates, they lift them.
Candidates are the recent works of the user's top artists and of similar artists, and the
globally trending works (as the trending backfill: any publication date up to now); each is
scored by

    score = (trending(work) + ε) · (1 + λ · affinity(artist) / the user's top affinity)

with trending normalised by the global peak (a rate comparable across candidates, not cut to a
global top list), ε = ``trending_floor`` and λ = ``personal_weight``; a similar artist counts
with its similarity-scaled affinity, an artist the user never met with 0.

Either way ``max_per_artist`` caps one artist's works in a list unless nothing else is left.
Short lists are filled by the backfill chain similar artists -> curated -> trending -> latest,
with one exclude set so nothing repeats, and every item says which source it came from. The
list is shorter than N only when the whole catalog has fewer eligible works.
"""

from __future__ import annotations

import heapq
from collections.abc import Container, Iterable, Iterator, Sequence
from sys import float_info

from streams.core.affinity import Bought, Profile
from streams.core.catalog import CatalogIndex, is_eligible, published
from streams.core.experiments import Variant, assign
from streams.core.merge import by_artist_score, merged
from streams.core.popularity import PopularityView
from streams.core.records import Artwork, RecItem, Recommendations

DAY = 86400.0
EPSILON = float_info.epsilon  # 2^-52: the relative gap between neighbouring floats
# Listed scores keep 4 significant digits: a list is "changed" (rewritten, sent) when a client
# would see a difference, and the same inputs give the same bytes whatever float noise the
# order of merging shares left behind.
SCORE_DIGITS = 4
_SCORE_FORMAT = f"%.{SCORE_DIGITS}g"  # one spec: a nested f-string spec was built again for every item
TOP_ARTISTS = 20  # personal candidates come from the user's strongest artists
SIMILAR_PER_ARTIST = 5
MAX_WORKS_PER_ARTIST = 50
# the newest works a list reaches for when nothing else fills it (it scanned the catalog: ~1 s a list of 100k works)
LATEST_SCAN = 1024
SIMILAR_IN_POPULAR = 10  # the strongest similar artists whose works popular ranks (each costs a catalog scan)


def round_score(score: float) -> float:
    """
    >>> round_score(1.234567), round_score(0.000123456)
    (1.235, 0.0001235)
    """
    return float(_SCORE_FORMAT % score)


def blend_score(affinity: float, trending: float, variant: Variant) -> float:
    return affinity ** variant.affinity_power * (1.0 + variant.trending_blend * trending)


def build(top_artists: Sequence[tuple[str, float]], purchased: Container[str], prices: Sequence[float],
          variant: Variant, catalog: CatalogIndex, popularity: PopularityView, now: float) -> list[RecItem]:
    """`purchased`: the works the user bought (anything with `in`), never listed."""
    n, cap = variant.n, variant.max_per_artist
    exclude: set[str] = set()
    budget = variant.budget(prices)
    since = now - variant.window_days * DAY
    items: list[RecItem] = []
    per_artist: dict[str, int] = {}
    capped: list[tuple[Artwork, float, str]] = []  # over the per-artist cap: listed only if nothing else is left
    spent: set[str] = set()  # artists capped once `capped` is full: none of their works can change the list

    def take(ranked: Iterable[tuple[Artwork, float, str]]) -> None:
        for work, score, source in ranked:
            if len(items) >= n:
                return
            if work.id in exclude or work.id in purchased or (
                    budget is not None and work.price is not None and work.price > budget):
                continue
            exclude.add(work.id)
            if cap and per_artist.get(work.artist_id, 0) >= cap:
                if len(capped) < n:  # the list takes at most n of them, the first ones
                    capped.append((work, score, source))  # made an item only if listed (rarely)
                else:
                    spent.add(work.artist_id)
                continue
            per_artist[work.artist_id] = per_artist.get(work.artist_id, 0) + 1
            items.append(RecItem(work.id, work.artist_id, round_score(score), source))

    personal = [a for a in top_artists[:TOP_ARTISTS] if a[1] > 0]
    if variant.ranking == "popular":
        take(_popular(personal, catalog, popularity, since, now, variant, spent))
    else:
        take(_rank(((aff, _recent(catalog, a, since, now, popularity), "affinity") for a, aff in personal), variant,
                   popularity))
        if len(items) < n:
            take(_similar(personal, catalog, popularity, since, now, variant))
    if len(items) < n:
        curated = (catalog.get(wid) for wid in catalog.curated)
        take((w, 0.0, "curated") for w in curated if w is not None and is_eligible(w) and published(w) <= now)
    if len(items) < n:
        trending = ((catalog.get(wid), s) for wid, s in popularity.trending)
        take((w, s, "trending") for w, s in trending if w is not None and is_eligible(w) and published(w) <= now)
    k = n + len(exclude)
    while len(items) < n:
        before = len(exclude)
        take((w, 0.0, "latest") for w in catalog.latest(k) if published(w) <= now)
        if len(exclude) == before and k >= catalog.eligible_count() or k >= LATEST_SCAN:
            break  # the catalog has nothing more to give, or nothing recent enough
        k *= 2
    return items + [RecItem(w.id, w.artist_id, round_score(score), source)
                    for w, score, source in capped[: n - len(items)]]


def cold_start(catalog: CatalogIndex, popularity: PopularityView, variant: Variant, now: float) -> list[RecItem]:
    """A brand-new user: curated, then trending, then latest."""
    return build((), (), (), variant, catalog, popularity, now)


def _recent(catalog: CatalogIndex, artist: str, since: float, now: float,
            popularity: PopularityView | None = None) -> list[tuple[float, str, Artwork]]:
    """An artist's recent works (at most MAX_WORKS_PER_ARTIST); memoised in the popularity view
    while the window covers the same slice of them."""
    if popularity is None:
        return catalog.recent_by(artist, since, MAX_WORKS_PER_ARTIST, until=now)
    key = ("recent", id(catalog), catalog.version, artist)
    found = popularity.memo.get(key)
    if found is None or not (found[1] <= now < found[2] and found[3] < since < found[4]):  # see _candidates
        window = catalog.recent_window(artist, since, MAX_WORKS_PER_ARTIST, until=now)
        found = popularity.memo[key] = (catalog.recent_by(artist, since, MAX_WORKS_PER_ARTIST, until=now),
                                        *window[1:])
    return found[0]


def _rank(groups: Iterable[tuple[float, list[tuple[float, str, Artwork]], str]], variant: Variant,
          popularity: PopularityView) -> Iterator[tuple[Artwork, float, str]]:
    """(affinity, that artist's (−published, id, work)s, source) per artist -> (work, score,
    source) best first: score, then newest, then id. The builder's hot loop, lazy: a list takes
    the first few, so each artist's works stay a sorted stream (one score per artist without a
    trending blend: the works' own order) merged across artists, never a sort of them all."""
    trending = popularity.trending_score
    power, blend = variant.affinity_power, variant.trending_blend
    if not (blend and trending):
        return by_artist_score([(-(aff ** power), works, source) for aff, works, source in groups])
    streams = [sorted((-(aff ** power * (1.0 + blend * trending.get(wid, 0.0))), neg_pub, wid, w, source)
                      for neg_pub, wid, w in works) for aff, works, source in groups]
    # a work is listed once (one artist each), so ties end at its id, never at the work
    return ((w, -neg_score, source) for neg_score, _, _, w, source in heapq.merge(*streams))


def _similar_artists(personal: Sequence[tuple[str, float]], popularity: PopularityView) -> dict[str, float]:
    """Artists co-engaged with the user's artists (not among them): the user's affinity for the
    artist they are similar to, scaled by how similar they are."""
    mine = {a for a, _ in personal}
    best: dict[str, float] = {}
    near = popularity.memo.get("similar")  # artist -> (neighbours, their total count), once per view
    if near is None:
        near = popularity.memo["similar"] = {}
    for artist, aff in personal:
        found = near.get(artist)
        if found is None:
            neighbours = popularity.similar(artist, SIMILAR_PER_ARTIST)
            found = near[artist] = (neighbours, sum(c for _, c in neighbours) or 1)
        neighbours, total = found
        for other, count in neighbours:
            if other not in mine:
                best[other] = max(best.get(other, 0.0), aff * count / total)
    return best


def _similar(personal: Sequence[tuple[str, float]], catalog: CatalogIndex, popularity: PopularityView,
             since: float, now: float, variant: Variant) -> list[tuple[Artwork, float, str]]:
    similar = _similar_artists(personal, popularity)
    return _rank(((s, _recent(catalog, other, since, now, popularity), "similar") for other, s in similar.items()),
                 variant, popularity)


def _popular(personal: Sequence[tuple[str, float]], catalog: CatalogIndex, popularity: PopularityView,
             since: float, now: float, variant: Variant,
             spent: Container[str] = ()) -> Iterator[tuple[Artwork, float, str]]:
    """Personalised popularity (see the module doc): (work, score, source) best first, then
    newest, then id. Lazy: each lifted artist's candidates, sorted once per view (`_candidates`),
    scaled by the user's lift and merged with the hot works of the artists the user never met (in
    the view's order), so a list costs the few items it takes, not a sort of every candidate.
    `spent` (the caller's, filled as it takes): artists none of whose further works can change the
    list (capped); their streams end early, a 1-artist user's list pulled ~28 works to take 6."""
    peak = max((aff for _, aff in personal), default=0.0) or 1.0
    lift = {a: (aff / peak, "affinity") for a, aff in personal}
    similar = _similar_artists(personal, popularity)
    for artist in heapq.nsmallest(SIMILAR_IN_POPULAR, similar, key=lambda a: (-similar[a], a)):
        aff = similar[artist]
        lift.setdefault(artist, (aff / peak, "similar"))
    k, floor, weight = variant.trending_candidates, variant.trending_floor, variant.personal_weight
    key = ("candidates", id(catalog), catalog.version, k, floor)
    memo = popularity.memo.get(key)
    if memo is None:
        memo = popularity.memo[key] = {}
    streams: list[tuple[list, float, str, str | None]] = []
    for artist, (aff, source) in lift.items():
        entries, apart = _candidates(catalog, popularity, artist, since, now, k, floor, memo)
        factor = 1.0 + weight * aff
        if not apart or not factor > 0:  # a negative personal_weight can make it one
            entries, factor = sorted((neg * factor, neg_pub, wid, w) for neg, neg_pub, wid, w in entries), 1.0
        streams.append((entries, factor, source, artist))
    streams.append((_hot(popularity, catalog, k, floor, now), 1.0, "trending", None))  # skips the lifted artists
    return merged(streams, lift, spent)


def _candidates(catalog: CatalogIndex, popularity: PopularityView, artist: str, since: float, now: float, k: int,
                floor: float, memo: dict) -> tuple[list[tuple[float, float, str, Artwork]], bool]:
    """An artist's popular candidates: their recent works and their hot works of any age, as
    (−(trending + ε), −published, id, work) sorted, memoised per view and window in `memo` (the
    view's, per catalog version, k and floor); and whether neighbouring distinct scores are far
    enough apart that no positive scale rounds two to one float (then the scaled list is still
    sorted; else `_popular` re-sorts)."""
    found = memo.get(artist)
    # while the clock moves and no work crosses either end of the window, the same slice of the
    # artist's works, ranked once (each read moves the clock: its users found it here)
    if found is None or not (found[1] <= now < found[2] and found[3] < since < found[4]):
        window = catalog.recent_window(artist, since, MAX_WORKS_PER_ARTIST, until=now)
        found = memo[artist] = (_ranked_candidates(catalog, popularity, artist, window[0], since, now, k, floor),
                                *window[1:])
    return found[0]


def _ranked_candidates(catalog: CatalogIndex, popularity: PopularityView, artist: str, span: tuple[int, int],
                       since: float, now: float, k: int, floor: float) -> tuple[list, bool]:
    """`_candidates` computed, memoised by the slice of the artist's works (`span`) it ranks."""
    key = ("candidates-span", id(catalog), catalog.version, artist, span, k, floor)
    found = popularity.memo.get(key)
    if found is None:
        recent = catalog.recent_by(artist, since, MAX_WORKS_PER_ARTIST, until=now)
        trending = popularity.trending_score
        listed = {wid for _, wid, _ in recent}
        entries = [(-(trending.get(wid, 0.0) + floor), neg_pub, wid, w) for neg_pub, wid, w in recent]
        entries += [e for e in _hot_by_artist(popularity, catalog, k, floor, now).get(artist, ())
                    if e[2] not in listed]
        entries.sort()
        scores = [e[0] for e in entries]
        apart = all(a == b or b - a > 4 * EPSILON * max(-a, b) for a, b in zip(scores, scores[1:], strict=False))
        found = popularity.memo[key] = (entries, apart)
    return found


def _hot(popularity: PopularityView, catalog: CatalogIndex, k: int, floor: float,
         now: float) -> list[tuple[float, float, str, Artwork]]:
    """The k most trending eligible works published by now, as (−(trending + ε), −published,
    id, work), best first: the same for every user of one view, so built once per view."""
    key = ("hot", id(catalog), catalog.version, k, floor)
    found = popularity.memo.get(key)
    if found is None:
        found = []
        for wid, t in popularity.trending:
            w = catalog.get(wid)
            if w is not None and is_eligible(w) and published(w) <= now:  # any age, as the trending backfill
                found.append((-(t + floor), -published(w), wid, w))
                if len(found) >= k:
                    break
        found.sort()  # ties: newest, then id (the view lists ties by id descending)
        popularity.memo[key] = found
    return found


def _hot_by_artist(popularity: PopularityView, catalog: CatalogIndex, k: int, floor: float,
                   now: float) -> dict[str, list[tuple[float, float, str, Artwork]]]:
    """`_hot`'s works by artist (built once per view)."""
    key = ("hot-by-artist", id(catalog), catalog.version, k, floor)
    found = popularity.memo.get(key)
    if found is None:
        found = popularity.memo[key] = {}
        for entry in _hot(popularity, catalog, k, floor, now):
            found.setdefault(entry[3].artist_id, []).append(entry)
    return found


def recommendations_for(cfg, user_id: str, profile: Profile, top: list[tuple[str, float]], catalog: CatalogIndex,
                        popularity: PopularityView, now: float, trigger: str) -> Recommendations:
    """A user's list. `cfg`: a streams.core.pipeline.PipelineConfig (its experiment, variants, model version);
    `top`: the user's strongest artists (at least TOP_ARTISTS of them, when they exist)."""
    variant = assign(cfg.experiment, user_id, cfg.variants)
    items = build(top, Bought(profile), profile.prices, variant, catalog, popularity, now)
    return Recommendations(user_id, variant.name, now, cfg.model_version, trigger, items)
