"""The list builder alone: µs per list for users with 1, 5 and 20 artists, per ranking.

A catalog of 60 artists with 80 works each (published over the last 40 days, so ~60 per artist in
the 30-day window), trending from 3,000 random sales, and a new clock for every list (as for a
worker's small batches, where the builder's per-batch memos rarely help). Demo users have about
two artists, real buyers many more: the builder's cost per list grows with the candidates of the
user's artists. Prints CPU µs per list (best of BENCH_REPEAT rounds, default 5) and a digest of
the lists (a speed change must not move it).

Run: `.venv/bin/python bench/list_builder.py`."""

from __future__ import annotations

import hashlib
import os
import random
import sys
import time
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from streams.core.catalog import CatalogIndex  # noqa: E402
from streams.core.experiments import default_variants  # noqa: E402
from streams.core.popularity import Partial, PopularityView  # noqa: E402
from streams.core.recommend import build  # noqa: E402
from streams.core.records import Artwork  # noqa: E402

REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
LISTS = 200
NOW = datetime(2026, 11, 20, tzinfo=timezone.utc)


def setup():
    rnd = random.Random(1)
    catalog = CatalogIndex()
    for a in range(60):
        for i in range(80):
            catalog.upsert(Artwork(f"w{a}-{i}", f"a{a}", published_at=NOW - timedelta(days=rnd.random() * 40)))
    partial = Partial()
    for _ in range(3000):
        partial.trending.add(f"w{rnd.randrange(60)}-{rnd.randrange(80)}", 1.0, NOW.timestamp(), 7 * 86400)
    return catalog, partial


def main() -> None:
    catalog, partial = setup()
    digest = hashlib.sha256()
    for artists in (1, 5, 20):
        top = [(f"a{a}", 20.0 - a * 0.7) for a in range(artists)]
        for name, variant in default_variants().items():
            best = float("inf")
            for _ in range(REPEAT):
                view = PopularityView([partial])  # a fresh view: its memos start empty, as after a view rebuild
                started = time.process_time()
                for j in range(LISTS):
                    items = build(top, set(), [], variant, catalog, view, NOW.timestamp() + j * 0.02)
                best = min(best, (time.process_time() - started) / LISTS * 1e6)
            digest.update(repr(items).encode())
            print(f"list builder: {artists:>2} artists, variant {name} ({variant.ranking}): {best:.1f} µs per list")
    print(f"lists digest {digest.hexdigest()[:16]}")


if __name__ == "__main__":
    main()
