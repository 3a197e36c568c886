"""The recommendation builder (pure): a user's affinity + the catalog -> N items.

Candidates are available, non-merch works published within the variant's window by the user's
top artists, never one the user bought (nor, with the budget filter, above the user's budget).
They are ranked by

    score = affinity(artist)^α · (1 + β · trending(work))        trending normalised to [0, 1]

ties broken by newest first, then artwork id. β = 0 gives the source story's strict order,
affinity descending then newest (variant A, the control). Short lists are filled by the
backfill chain similar artists -> curated -> trending -> latest, with one exclude set so nothing
repeats, and every item says which source it came from. The list is shorter than N only when
the whole catalog has fewer eligible works.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from streams.catalog import CatalogIndex, is_eligible
from streams.experiments import Variant
from streams.popularity import PopularityView
from streams.records import Artwork, RecItem

DAY = 86400.0
TOP_ARTISTS = 20  # personal candidates come from the user's strongest artists
SIMILAR_PER_ARTIST = 5
MAX_WORKS_PER_ARTIST = 50


def budget_limit(prices: Sequence[float], variant: Variant) -> float | None:
    """The user's budget, or None (no filter) without price history or when the variant is off."""
    if not variant.budget_filter or not prices:
        return None
    return max(prices) * variant.budget_multiplier


def blend_score(affinity: float, trending: float, variant: Variant) -> float:
    return affinity ** variant.affinity_power * (1.0 + variant.trending_blend * trending)


def build(top_artists: Sequence[tuple[str, float]], purchased: Iterable[str], prices: Sequence[float],
          variant: Variant, catalog: CatalogIndex, popularity: PopularityView, now: float) -> list[RecItem]:
    n = variant.n
    exclude = set(purchased)
    budget = budget_limit(prices, variant)
    since = now - variant.window_days * DAY

    def ok(work: Artwork) -> bool:
        return work.id not in exclude and (budget is None or work.price is None or work.price <= budget)

    items: list[RecItem] = []

    def take(ranked: Iterable[tuple[Artwork, float]], source: str) -> None:
        for work, score in ranked:
            if len(items) >= n:
                return
            if ok(work):
                exclude.add(work.id)
                items.append(RecItem(work.id, work.artist_id, score, source))

    personal = [a for a in top_artists[:TOP_ARTISTS] if a[1] > 0]
    take(_rank(((aff, _recent(catalog, a, since)) for a, aff in personal), variant, popularity), "affinity")
    if len(items) < n:
        take(_similar(personal, catalog, popularity, since, variant), "similar")
    if len(items) < n:
        curated = (catalog.get(wid) for wid in catalog.curated)
        take(((w, 0.0) for w in curated if w is not None and is_eligible(w)), "curated")
    if len(items) < n:
        trending = ((catalog.get(wid), s) for wid, s in popularity.trending)
        take(((w, s) for w, s in trending if w is not None and is_eligible(w)), "trending")
    k = n + len(exclude)
    while len(items) < n:
        before = len(items)
        take(((w, 0.0) for w in catalog.latest(k)), "latest")
        if len(items) == before and k >= catalog.eligible_count():
            break  # the catalog has nothing more to give
        k *= 2
    return items


def cold_start(catalog: CatalogIndex, popularity: PopularityView, variant: Variant, now: float) -> list[RecItem]:
    """A brand-new user: curated, then trending, then latest."""
    return build((), (), (), variant, catalog, popularity, now)


def _recent(catalog: CatalogIndex, artist: str, since: float) -> list[tuple[float, str, Artwork]]:
    return catalog.recent_by(artist, since, MAX_WORKS_PER_ARTIST)


def _rank(groups: Iterable[tuple[float, list[tuple[float, str, Artwork]]]], variant: Variant,
          popularity: PopularityView) -> list[tuple[Artwork, float]]:
    """(affinity, that artist's (−published, id, work)s) per artist -> (work, score) best first:
    score, then newest, then id. The builder's hot loop: the affinity term is computed once per
    artist (the same product as blend_score), and sorting plain tuples keeps comparisons in C."""
    trending = popularity.trending_score
    power, blend = variant.affinity_power, variant.trending_blend
    keyed: list[tuple[float, float, str, Artwork]] = []
    for aff, works in groups:
        base = aff ** power
        if blend and trending:
            keyed += [(-(base * (1.0 + blend * trending.get(wid, 0.0))), neg_pub, wid, w) for neg_pub, wid, w in works]
        else:
            keyed += [(-base, neg_pub, wid, w) for neg_pub, wid, w in works]
    keyed.sort()  # a work is listed once (one artist each), so ties end at its id, never at the work
    return [(w, -neg_score) for neg_score, _, _, w in keyed]


def _similar(personal: Sequence[tuple[str, float]], catalog: CatalogIndex, popularity: PopularityView,
             since: float, variant: Variant) -> list[tuple[Artwork, float]]:
    """Works by artists co-engaged with the user's artists, scored by the user's affinity for
    the artist they are similar to, scaled by how similar they are."""
    mine = {a for a, _ in personal}
    best: dict[str, float] = {}
    for artist, aff in personal:
        neighbours = popularity.similar(artist, SIMILAR_PER_ARTIST)
        total = sum(c for _, c in neighbours) or 1
        for other, count in neighbours:
            if other not in mine:
                best[other] = max(best.get(other, 0.0), aff * count / total)
    return _rank(((s, _recent(catalog, other, since)) for other, s in best.items()), variant, popularity)
