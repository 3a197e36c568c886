"""A/B variants (pure): stable assignment by hash and per-variant ranking parameters.

>>> variants = default_variants()
>>> assign("recs", "user-1", variants) == assign("recs", "user-1", variants)
True
>>> variants["A"].trending_blend, variants["B"].ranking
(0.0, 'popular')
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

from streams.core.jsonguard import spec_text


@dataclass(frozen=True)
class Variant:
    name: str
    share: float = 0.5  # fraction of users in this variant
    affinity_power: float = 1.0  # α in affinity^α · (1 + β · trending)
    trending_blend: float = 0.0  # β; 0 = strict order: affinity descending, then newest
    window_days: float = 30.0  # personal candidates published within this window
    n: int = 6  # items per list
    budget_filter: bool = False  # drop works above the user's inferred budget
    budget_multiplier: float = 1.2  # budget = multiplier × highest inquiry/order price
    ranking: str = "blend"  # blend: affinity first (the formula above); popular: see streams.core.recommend
    personal_weight: float = 4.0  # λ in popular: trending · (1 + λ · affinity / the user's top affinity)
    trending_floor: float = 0.01  # popular: added to every candidate's trending, so unsold works still rank
    trending_candidates: int = 100  # popular: the globally trending recent works every user's list considers
    max_per_artist: int = 0  # works of one artist in a list (0: no cap), unless nothing else is left

    def budget(self, prices: Sequence[float]) -> float | None:
        """The user's budget, or None (no filter) when the variant has none or no price in the history is
        positive. A price of 0 is no budget ("price on request" works are sent as 0): one inquiry at 0
        emptied the list (an outside check).

        >>> on = Variant("B", budget_filter=True, budget_multiplier=1.5)
        >>> on.budget([0.0, 100.0]), on.budget([0.0]), Variant("A").budget([100.0])
        (150.0, None, None)
        """
        top = max(prices, default=0.0) if self.budget_filter else 0.0
        return top * self.budget_multiplier if top > 0 else None


def default_variants() -> dict[str, Variant]:
    """A = the source story's strict order (control); B = personalised popularity, at most two
    works per artist."""
    return {"A": Variant("A", 0.5, trending_blend=0.0),
            "B": Variant("B", 0.5, ranking="popular", max_per_artist=2)}


def load_variants(spec: str) -> dict[str, Variant]:
    """``{"A": {"share": 0.5}, "B": {"share": 0.5, "trending_blend": 2, "budget_filter": true}}``;
    keys not given keep the defaults of the same-named default variant."""
    if not spec:
        return default_variants()
    spec = spec_text(spec)
    types = {f.name: f.type for f in fields(Variant) if f.name != "name"} | {"ranking": ("blend", "popular")}
    raw = variant_objects(json.loads(spec), types)
    base = default_variants()
    out = {}
    for name, params in raw.items():
        out[name] = replace(base.get(name, Variant(name)), name=name, **params)
    total = sum(v.share for v in out.values())
    if not 0.999 <= total <= 1.001:
        raise ValueError(f"variant shares must add up to 1, got {total}")
    return out


# every number finite and >= 0, n >= 1, a share at most 1, these > 0: a number past its range was taken (shares -1
# and 2, summing to 1, sent every user to one variant; window_days -5 left no candidates; JSON's NaN made scores NaN)
POSITIVE = ("window_days", "budget_multiplier")


def variant_objects(raw, types: dict) -> dict:
    """`raw` (parsed JSON) checked to be {non-empty name: {param: value}}, the form both experiments take,
    each param one of `types` (name -> a `check_param` kind) with a value of that kind in its range."""
    if not isinstance(raw, dict) or not raw:
        raise ValueError("variants must be a non-empty JSON object {name: {param: value}}")
    for name, params in raw.items():
        if not name:
            raise ValueError("a variant's name must not be empty")
        if not isinstance(params, dict):
            raise ValueError(f"variant {name!r} must be a JSON object {{param: value}}, got {params!r}")
        unknown = set(params) - set(types)
        if unknown:
            raise ValueError(f"variant {name!r}: unknown parameters {sorted(unknown)}; known: {sorted(types)}")
        for key, value in params.items():
            check_param(name, key, value, types[key])
    return raw


def check_param(variant: str, key: str, value, kind) -> None:
    """ValueError naming the variant and the parameter unless `value` is a `kind` ('float', 'int', 'bool',
    'str' or a tuple of choices) in its range."""
    if isinstance(kind, tuple):
        ok, form = value in kind, " or ".join(kind)
    elif kind in ("bool", "str"):
        ok, form = isinstance(value, bool if kind == "bool" else str), "true or false" if kind == "bool" else "text"
    else:
        low, high = (1 if key == "n" else 0), (1 if key == "share" else math.inf)
        ok = (isinstance(value, int if kind == "int" else (int, float)) and not isinstance(value, bool)
              and math.isfinite(value) and low <= value <= high and (key not in POSITIVE or value > 0))
        form = ("an integer" if kind == "int" else "a number") + (
            " from 0 to 1" if key == "share" else " > 0" if key in POSITIVE else f" >= {low}")
    if not ok:
        raise ValueError(f"variant {variant!r}: {key} must be {form}, got {value!r}")


def bucket(experiment: str, user_id: str) -> float:
    """A stable, uniform number in [0, 1) for (experiment, user)."""
    digest = hashlib.blake2b(f"{experiment}\x00{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign(experiment: str, user_id: str, variants: dict[str, Variant]) -> Variant:
    u = bucket(experiment, user_id)
    acc = 0.0
    for name in sorted(variants):
        acc += variants[name].share
        if u < acc:
            return variants[name]
    return variants[sorted(variants)[-1]]
