"""How far can any ranking get on bench/quality.py's protocol? Offline reference models.

bench/quality.py judges recstream through the real pipeline; this script asks what the data
allows at all, with the same data, cuts, held-out future and metric (HitRate@6 of new-to-user
items, bench/quality_data.py), but with models computed offline from every event before the cut:

- count popularity and the trending list at several half-lives (the baselines, and how much
  the baselines themselves move with their one parameter);
- item-to-item co-occurrence (users who engaged with the user's last M items also engaged with):
  the classic streaming-friendly personal signal;
- EASE (Steck 2019, a closed-form linear item-item model, among the strongest published models
  on MovieLens), with and without recency weighting;
- co-occurrence blended into the trending list (the shape of recstream's ``popular`` ranking).

No broker, no worker: numpy only, about a minute.

    .venv/bin/python bench/quality_ceiling.py [--cuts 1997-12-15,1998-02-15]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.quality_data import (  # noqa: E402
    DAY,
    CutData,
    MovieLens,
    count_ranking,
    hit,
    parse_day,
    split,
    top_new,
    trending_ranking,
)

WEIGHTS = {"view": 1.0, "save": 3.0}  # the worker's default signal weights (view, save)
Ranker = Callable[[str], list[str]]  # user -> ranking (seen items are skipped by the scorer)


def hit_rate(cd: CutData, rank: Ranker) -> float:
    return sum(hit(top_new(rank(u), cd.seen[u]), cd.relevant[u]) for u in cd.users) / len(cd.users)


def decayed(cd: CutData, half_life_days: float) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for r in cd.before:
        out[r.item] += WEIGHTS[r.kind] * 2.0 ** (-(cd.cut - r.t) / (half_life_days * DAY))
    return out


def cooccurrence(cd: CutData, span: int = 30, half_life_days: float = 7.0) -> dict[str, dict[str, float]]:
    """Each event pairs with the user's previous `span` events, weighted by its recency."""
    history: dict[str, list] = defaultdict(list)
    for r in cd.before:
        history[r.user].append(r)
    co: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for events in history.values():
        for a, later in enumerate(events):
            w = 2.0 ** (-(cd.cut - later.t) / (half_life_days * DAY))
            for earlier in events[max(0, a - span):a]:
                co[earlier.item][later.item] += w
                co[later.item][earlier.item] += w
    return co


def recent_items(cd: CutData, m: int) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for r in cd.before:
        out[r.user].append(r.item)
    return {u: items[-m:] for u, items in out.items()}


def cooc_ranker(cd: CutData, co, recent: dict[str, list[str]], fallback: list[str]) -> Ranker:
    def rank(user: str) -> list[str]:
        score: dict[str, float] = defaultdict(float)
        for item in recent[user]:
            for other, c in co[item].items():
                score[other] += c
        return sorted(score, key=lambda j: (-score[j], j)) + fallback
    return rank


def blend_ranker(co, recent: dict[str, list[str]], trend: dict[str, float], lam: float, top: int = 300) -> Ranker:
    """recstream's popular shape: (trending/peak + 0.01) · (1 + λ · personal/the user's peak)."""
    hot = sorted(trend, key=lambda j: (-trend[j], j))[:top]
    peak = trend[hot[0]]

    def rank(user: str) -> list[str]:
        personal: dict[str, float] = defaultdict(float)
        for item in recent[user]:
            for other, c in co[item].items():
                personal[other] += c
        best = max((personal.get(j, 0.0) for j in hot), default=0.0) or 1.0
        return sorted(hot, key=lambda j: -(trend[j] / peak + 0.01) * (1 + lam * personal.get(j, 0.0) / best))
    return rank


def ease_ranker(cd: CutData, lam: float, half_life_days: float | None) -> Ranker:
    items = sorted({r.item for r in cd.before})
    users = sorted(cd.seen)
    ix, ux = {i: k for k, i in enumerate(items)}, {u: k for k, u in enumerate(users)}
    x = np.zeros((len(users), len(items)))
    for r in cd.before:
        w = 1.0 if half_life_days is None else 2.0 ** (-(cd.cut - r.t) / (half_life_days * DAY))
        x[ux[r.user], ix[r.item]] = max(x[ux[r.user], ix[r.item]], w)
    p = np.linalg.inv(x.T @ x + lam * np.eye(len(items)))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    scores = x @ b

    def rank(user: str) -> list[str]:
        return [items[k] for k in np.argsort(-scores[ux[user]], kind="stable")]
    return rank


def models(cd: CutData) -> dict[str, Ranker]:
    count = count_ranking(cd.before, cd.cut)
    out: dict[str, Ranker] = {"count popularity (30 d)": lambda u: count}
    for hl in (3, 7, 14, 30):
        trend = trending_ranking(cd.before, cd.cut, WEIGHTS, hl * DAY)
        out[f"trending, half-life {hl} d"] = lambda u, t=trend: t
    co = cooccurrence(cd)
    trend7 = decayed(cd, 7.0)
    fallback = trending_ranking(cd.before, cd.cut, WEIGHTS, 7 * DAY)
    for m in (5, 20):
        out[f"co-occurrence, last {m} items"] = cooc_ranker(cd, co, recent_items(cd, m), fallback)
    for lam in (1.0, 4.0):
        out[f"trending x (1 + {lam:g} co-occurrence)"] = blend_ranker(co, recent_items(cd, 30), trend7, lam)
    for lam in (50.0, 200.0):
        out[f"EASE lambda {lam:g}"] = ease_ranker(cd, lam, None)
        out[f"EASE lambda {lam:g}, 30 d recency"] = ease_ranker(cd, lam, 30.0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cuts", default="1997-12-15,1998-02-15")
    args = ap.parse_args(argv)
    ml = MovieLens.load()
    table: dict[str, list[float]] = {}
    cuts = args.cuts.split(",")
    for cut in cuts:
        cd = split(ml, parse_day(cut))
        print(f"[ceiling] {cut}: {len(cd.users)} users evaluated", file=sys.stderr, flush=True)
        for name, rank in models(cd).items():
            table.setdefault(name, []).append(hit_rate(cd, rank))
    base = table["count popularity (30 d)"]
    print(f"{'HitRate@6, new-to-user':42}" + "".join(f"{c:>22}" for c in cuts))
    for name, rates in table.items():
        print(f"{name:42}" + "".join(f"{r:>13.3f} ({r / b:4.2f}x)" for r, b in zip(rates, base, strict=True)))
    print("(x = ratio to count popularity at the same cut)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
