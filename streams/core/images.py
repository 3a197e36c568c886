"""Image selection (pure core, numpy): which image to show a consumer for a merchant.

    score(c, m, i) = cvr(m, i) + C · sqrt(ln(1 + N(c, m)) / (1 + n(c, m, i)))  [+ query boost]

- exploit, `cvr`: the image's conversion rate over all consumers, smoothed towards the
  merchant's pooled rate (a Beta prior of `prior_strength` impressions), so a new image starts
  at the merchant's average instead of 0;
- explore: an uncertainty bonus (UCB1-shaped) that grows with the consumer's impressions of the
  merchant's images in its current pool N and shrinks as *this consumer* sees *this image* (n);
  C = 0 is pure exploitation;
- a consumer who converted on an image keeps it for that merchant (locked);
- a search query adds `boost` to images whose item tags match a query word.

The score form lives in `ucb_explore` alone; pass another `explore` function to `choose` to swap
it. Ties go to the earlier image in pool order (the header first), so choices are deterministic.

>>> round(float(ucb_explore(C=0.01, merchant_views=10, image_views=np.array([0.0]))[0]), 6)
0.015485
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
import numpy as np

from streams.core.seen import Dated

# --- pools --------------------------------------------------------------------------------


class Image(msgspec.Struct, forbid_unknown_fields=False):
    image_id: str
    url: str = ""
    kind: Literal["header", "item"] = "item"  # another kind ("footer") was pooled as an item: refused now
    item_id: str | None = None
    category: str | None = None
    # words a search query matches (query_boost, on every request): a pooled image's 200,000 tags made one
    # request for 64 merchants 11 s (an outside fuzz)
    tags: Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=32)] = []
    # 1 = best selling; bounded: a rank past 64 bits was stored, then every stats read failed to encode it
    sales_rank: Annotated[int, msgspec.Meta(ge=0, le=2**53)] | None = None


class ImageCatalog(msgspec.Struct, forbid_unknown_fields=False):
    """catalog.images record, keyed by merchant id."""

    merchant_id: str
    images: list[Image]
    main_category: str | None = None


# header images a pool takes, the first in the catalog's order: every event and request ranks the whole pool
# (an outside fuzz: 25,000 headers made each impression 34 ms, and 300 of them froze a worker 13 s)
MAX_HEADERS = 16


@dataclass(frozen=True)
class PoolRules:
    top_items: int = 5
    filtered_categories: frozenset[str] = frozenset({"drinks", "sides"})


def build_pool(catalog: ImageCatalog, rules: PoolRules = PoolRules()) -> list[Image]:
    """Header image(s) + the top-selling items' images, minus filtered categories unless the
    merchant mainly sells them.

    >>> cat = ImageCatalog("m", [Image("h", kind="header"), Image("fries", category="sides", sales_rank=1),
    ...                          Image("burger", category="mains", sales_rank=2)])
    >>> [i.image_id for i in build_pool(cat)]
    ['h', 'burger']
    """
    main = catalog.main_category or _main_category(catalog.images)
    headers = [i for i in catalog.images if i.kind == "header"][:MAX_HEADERS]
    items = [i for i in catalog.images if i.kind != "header"
             and (i.category not in rules.filtered_categories or i.category == main)]
    items.sort(key=lambda i: (i.sales_rank if i.sales_rank is not None else math.inf, i.image_id))
    return headers + items[: rules.top_items]


def _main_category(images: Sequence[Image]) -> str | None:
    counts: dict[str, int] = {}
    for i in images:
        if i.kind != "header" and i.category:
            counts[i.category] = counts.get(i.category, 0) + 1
    return max(sorted(counts), key=counts.__getitem__) if counts else None


# --- statistics ---------------------------------------------------------------------------


class MerchantViews(msgspec.Struct, array_like=True, omit_defaults=True):
    """One consumer's history with one merchant: the image they last converted on, by event time (`convert`)."""

    impressions: dict[str, int] = {}
    converted: str | None = None
    converted_at: float = 0.0  # its event time

    def convert(self, image_id: str, at: float) -> None:
        """A conversion on `image_id` at event time `at`: the newest conversion holds the lock, whatever order
        they arrive in (a late conversion from a device that was offline moved it: an outside fuzz); at one time,
        the greater image id.

        >>> v = MerchantViews()
        >>> v.convert("b", 20.0); v.convert("a", 10.0); v.convert("a", 20.0); v.converted
        'b'
        """
        if (at, image_id) > (self.converted_at, self.converted or ""):
            self.converted, self.converted_at = image_id, at


class ConsumerImages(Dated, omit_defaults=True):
    """Table value per consumer: their views by merchant, and recent messageIds for dedup (`seen`, dated)."""

    merchants: dict[str, MerchantViews] = {}
    applied: dict[str, int] = {}  # input partition -> last offset applied (streams.core.positions)
    repeats: dict[str, list[int]] = {}  # input partition -> its recent positions that were repeats


# --- selection ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectionParams:
    prior_strength: float = 20.0  # the prior counts as this many impressions
    default_cvr: float = 0.02  # prior mean for a merchant with no history
    query_boost: float = 0.05


class Choice(msgspec.Struct):
    image_id: str
    url: str
    exploit: float
    explore: float
    boost: float
    locked: bool


def smoothed_cvr(impressions: np.ndarray, conversions: np.ndarray, params: SelectionParams) -> np.ndarray:
    """(conversions + k·p) / (impressions + k), p = the merchant's pooled rate; an image's
    conversions count up to its impressions (conversions whose impressions were never counted, a
    client that lost them, made a "rate" of 1.55 that won every choice).

    >>> smoothed_cvr(np.array([1000.0, 0.0]), np.array([20.0, 30.0]), SelectionParams(prior_strength=10)).tolist()
    [0.02, 0.02]
    """
    conversions = np.minimum(conversions, impressions)
    total_imp = impressions.sum()
    prior = conversions.sum() / total_imp if total_imp > 0 else params.default_cvr
    k = params.prior_strength
    return (conversions + k * prior) / (impressions + k)


def ucb_explore(C: float, merchant_views: float, image_views: np.ndarray) -> np.ndarray:
    """The exploration bonus: C · sqrt(ln(1 + N) / (1 + n))."""
    return C * np.sqrt(np.log1p(merchant_views) / (1.0 + image_views))


def choose(pool: Sequence[Image], stats: dict[str, tuple[float, float]], merchant_id: str,
           views: MerchantViews | None, C: float, params: SelectionParams = SelectionParams(),
           query: str = "", explore: Callable[[float, float, np.ndarray], np.ndarray] = ucb_explore) -> Choice | None:
    if not pool:
        return None
    views = views or MerchantViews()
    imp = np.array([stats.get(f"{merchant_id}|{i.image_id}", (0.0, 0.0))[0] for i in pool])
    conv = np.array([stats.get(f"{merchant_id}|{i.image_id}", (0.0, 0.0))[1] for i in pool])
    exploit = smoothed_cvr(imp, conv, params)
    seen = np.array([float(views.impressions.get(i.image_id, 0)) for i in pool])
    bonus = explore(C, float(seen.sum()), seen)
    boost = query_boost(pool, query, params.query_boost)
    if views.converted is not None:
        for idx, image in enumerate(pool):
            if image.image_id == views.converted:
                return Choice(image.image_id, image.url, float(exploit[idx]), 0.0, 0.0, True)
    # Rounded so that exact ties (e.g. a new image at the merchant's pooled rate) don't fall to
    # float noise; argmax then takes the first maximum, i.e. pool order.
    best = int(np.argmax(np.round(exploit + bonus + boost, 12)))
    image = pool[best]
    return Choice(image.image_id, image.url, float(exploit[best]), float(bonus[best]), float(boost[best]), False)


def query_boost(pool: Sequence[Image], query: str, boost: float) -> np.ndarray:
    """`boost` for each image with a tag all of whose words are among the query's (words: runs of
    letters and digits, any case), else 0. Split on spaces only, "sofa," and "sofa?" matched no "sofa"
    tag; a tag of several words ("mid-century") matches a query holding them all.

    >>> pool = [Image("i1", "u", tags=["Sofa"]), Image("i2", "u", tags=["mid-century"]), Image("i3", "u")]
    >>> query_boost(pool, "red sofa, mid century?", 0.05).tolist()
    [0.05, 0.05, 0.0]
    >>> query_boost(pool, "CAFÉ sofas", 0.05).tolist(), query_boost(pool, "", 0.05).tolist()
    ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    """
    words = set(_words(query))
    if not words:
        return np.zeros(len(pool))
    return np.array([boost if any(tag and words.issuperset(tag) for tag in map(_words, i.tags)) else 0.0
                     for i in pool])


_WORD = re.compile(r"[^\W_]+")


@functools.lru_cache(maxsize=1 << 16)  # a pool's tags come back with every request (64 pools of 21 x 32: 43,008)
def _words(text: str) -> tuple[str, ...]:
    """Words without case, accents or compatibility forms: a composed "café" missed a decomposed one, "İstanbul"
    missed "istanbul" and "ＢＵＲＧＥＲ" missed "burger" (an outside check).

    >>> _words("Café́ İstanbul ＢＵＲＧＥＲ, crème-brûlée") == _words("cafe istanbul burger creme brulee")
    True
    """
    plain = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return tuple(_WORD.findall(plain.casefold()))


# --- the multiplier simulator ---------------------------------------------------------------


def views_until_change(pool: Sequence[Image], stats: dict[str, tuple[float, float]], merchant_id: str,
                       C: float, max_views: int = 20, params: SelectionParams = SelectionParams()) -> list[bool]:
    """A consumer keeps seeing the chosen image without converting: changed[x-1] says whether
    the first image has been replaced at least once within x views."""
    views = MerchantViews(impressions={})
    first = choose(pool, stats, merchant_id, views, C, params)
    changed, ever = [], False
    current = first
    for _ in range(max_views):
        views.impressions[current.image_id] = views.impressions.get(current.image_id, 0) + 1
        current = choose(pool, stats, merchant_id, views, C, params)
        ever = ever or current.image_id != first.image_id
        changed.append(ever)
    return changed


def change_probability(pools: dict[str, Sequence[Image]], stats: dict[str, tuple[float, float]],
                       multipliers: Sequence[float], max_views: int = 20,
                       params: SelectionParams = SelectionParams()) -> dict[float, list[float]]:
    """For each C: the share of merchants whose image has changed after x = 1..max_views views."""
    out = {}
    merchants = [m for m, pool in pools.items() if len(pool) > 1]
    for C in multipliers:
        table = np.array([views_until_change(pools[m], stats, m, C, max_views, params) for m in merchants], dtype=float)
        out[C] = list(table.mean(axis=0)) if len(merchants) else [0.0] * max_views
    return out
