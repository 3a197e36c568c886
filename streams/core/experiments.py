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
from dataclasses import dataclass, fields, replace


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
    if spec.startswith("@"):
        with open(spec[1:], encoding="utf-8") as f:
            spec = f.read()
    raw = json.loads(spec)
    if not isinstance(raw, dict) or not raw:
        raise ValueError("variants must be a non-empty JSON object {name: {param: value}}")
    known = {f.name for f in fields(Variant)} - {"name"}
    base = default_variants()
    out = {}
    for name, params in raw.items():
        unknown = set(params) - known
        if unknown:
            raise ValueError(f"variant {name!r}: unknown parameters {sorted(unknown)}; known: {sorted(known)}")
        out[name] = replace(base.get(name, Variant(name)), name=name, **params)
        if out[name].ranking not in ("blend", "popular") or out[name].n < 1 or out[name].max_per_artist < 0:
            raise ValueError(f"variant {name!r}: ranking must be blend or popular, n >= 1, max_per_artist >= 0")
    total = sum(v.share for v in out.values())
    if not 0.999 <= total <= 1.001:
        raise ValueError(f"variant shares must add up to 1, got {total}")
    return out


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
