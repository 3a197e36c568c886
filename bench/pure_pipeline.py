"""The pure pipeline alone (no broker, no faust): µs per signal on demo data, as a worker runs it.

30,000 demo signals (5,000 users, 250 artists, 2,500 works) through `PartitionBatch` over plain
dicts, 4 partitions, batches of BENCH_BATCH signals (default 500; a loaded worker's batches are
often far smaller, and each user's list is built once per batch), the popularity view rebuilt
from the partitions' shares every 5,000 signals, the clock moving BENCH_STEP s per batch. Prints
CPU µs per signal (best of BENCH_REPEAT runs, default 3) and a digest of the profiles and lists (equal inputs, equal digest: a speed change
must not move it). BENCH_PROFILE=1 prints cProfile's top functions instead (BENCH_PROFILE=cumulative: by cumulative time).
BENCH_USERS=heavy (or light) keeps only the signals of users with more (at most) HEAVY_EVENTS of them: the demo's
top 50 users send half the events, and their cost per signal depends on the batch size far more than the others'
(a batch decodes, ranks and encodes each user it touches once, however many of its signals it holds).

BENCH_LIST_WINDOW_MS (default 0) runs the list window as direct ingest does (streams.core.throttle), the wall
clock moving as if BENCH_RATE signals a second (default 8,000) arrived: lists held are built when their window ends
and at the end; the digest may then differ (a held list is built with a later popularity view).

Run: `.venv/bin/python bench/pure_pipeline.py`; `BENCH_BATCH=46 BENCH_STEP=0.02 ...` for a loaded worker's batches.
"""

from __future__ import annotations

import cProfile
import hashlib
import os
import pstats
import sys
import time
from collections import Counter
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import msgspec  # noqa: E402

from streams.core.affinity import load  # noqa: E402
from streams.core.catalog import CatalogIndex  # noqa: E402
from streams.core.coengagement import MARK  # noqa: E402
from streams.core.config import core_objects  # noqa: E402
from streams.core.demo import DemoGenerator, dumps  # noqa: E402
from streams.core.ingest import KeyPartitioner, ingest_one  # noqa: E402
from streams.core.pipeline import PartitionBatch  # noqa: E402
from streams.core.popularity import Partial, PopularityView  # noqa: E402
from streams.core.records import Signal  # noqa: E402
from streams.core.settings import Settings  # noqa: E402
from streams.core.throttle import PartitionThrottles  # noqa: E402

N = int(os.environ.get("BENCH_EVENTS", "30000"))
BATCH = int(os.environ.get("BENCH_BATCH", "500"))
STEP = float(os.environ.get("BENCH_STEP", "0"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
USERS = os.environ.get("BENCH_USERS", "all")
WINDOW_S = float(os.environ.get("BENCH_LIST_WINDOW_MS", "0")) / 1000
RATE = float(os.environ.get("BENCH_RATE", "8000"))
HEAVY_EVENTS = 100
PARTITIONS = 4
END = datetime(2026, 11, 1, tzinfo=timezone.utc)


def setup():
    demo = DemoGenerator(users=5000, artists=250, artworks=2500, seed=3, end_time=END)
    catalog = CatalogIndex()
    catalog.load([dumps(a) for a in demo.artworks()])
    _, parser, cfg = core_objects(Settings.from_env({}))
    artist_of = {w.id: w.artist_id for w in catalog.works.values()}
    now = END.timestamp() + 60
    signals = [r for r in (ingest_one(dumps(e), None, artist_of, parser, now) for e in demo.events(N))
               if isinstance(r, Signal)]
    return catalog, cfg, users(signals), now


def users(signals: list[Signal]) -> list[Signal]:
    """All signals, or only the heavy or the light users' (BENCH_USERS)."""
    if USERS == "all":
        return signals
    counts = Counter(s.user_id for s in signals)
    return [s for s in signals if (counts[s.user_id] > HEAVY_EVENTS) == (USERS == "heavy")]


def run(catalog, cfg, signals, now) -> list[tuple[dict, ...]]:
    part_of = KeyPartitioner(PARTITIONS)
    tables = [({}, {}, {}, {}) for _ in range(PARTITIONS)]
    partials = [Partial() for _ in range(PARTITIONS)]
    view, t, lists = PopularityView([], cfg.trending_half_life_s), now, PartitionThrottles(WINDOW_S)

    def batch(p: int, wall: float) -> PartitionBatch:
        profiles, recs, fans, attribution = tables[p]
        return PartitionBatch(cfg, p, profiles, recs, fans, partials[p], catalog, view, t, attribution=attribution,
                              hold=lists.hold_for(p, wall))

    for start in range(0, len(signals), BATCH):
        chunk, t, wall = signals[start:start + BATCH], t + STEP, start / RATE
        groups: dict[int, list[Signal]] = {}
        for s in chunk:
            groups.setdefault(part_of(s.user_id.encode()), []).append(s)
        for p, records in groups.items():
            batch(p, wall).run(records)
        for p, owed in lists.due(wall).items():
            batch(p, wall).owed(owed)
        if (start + len(chunk)) // 5000 != start // 5000:
            view = PopularityView(partials, cfg.trending_half_life_s)
    for p, owed in lists.drain().items():
        batch(p, len(signals) / RATE).owed(owed)
    return tables


def digest(tables) -> str:
    """Of the profiles (decoded: their encoding may change, not their content) and the lists."""
    h = hashlib.sha256()
    for part in tables:
        profiles, lists = part[:2]
        for key in sorted(profiles.keys() - {MARK}):  # the co-engagement mark is no profile
            fields = msgspec.structs.asdict(load(profiles[key]))
            if not fields.get("repeats", True):
                del fields["repeats"]  # added later, and empty without input positions: digests stay comparable
            fields.pop("shares", None)  # added later (an anonymous id's shares, for a merge): the scores they move are in
            fields["seen"] = [int.from_bytes(fields["seen"][i:i + 8], "big", signed=True)
                              for i in range(0, len(fields["seen"]), 8)] if isinstance(fields["seen"], bytearray) else fields["seen"]
            # added later: the ids' dates, and the ids the last hour keeps past the count (streams.core.seen.Horizon)
            fields["seen"] = fields["seen"][-2048:]
            fields.pop("seen_times", None)
            h.update(key.encode() + msgspec.json.encode(fields, order="sorted"))
        for key in sorted(lists):
            h.update(key.encode() + lists[key])
    return h.hexdigest()[:16]


def main() -> None:
    catalog, cfg, signals, now = setup()
    if os.environ.get("BENCH_PROFILE"):
        profile = cProfile.Profile()
        profile.runcall(run, catalog, cfg, signals, now)
        order = os.environ["BENCH_PROFILE"]
        pstats.Stats(profile).sort_stats(order if order in ("cumulative", "tottime") else "tottime").print_stats(30)
        return
    times = []
    for _ in range(REPEAT):  # the fastest of REPEAT runs: this machine's noise only ever adds time
        started = time.process_time()
        tables = run(catalog, cfg, signals, now)
        times.append(time.process_time() - started)
    window = f", list window {WINDOW_S * 1000:g} ms at {RATE:g}/s" if WINDOW_S else ""
    print(f"pure pipeline: {len(signals):,} signals ({USERS} users) in batches of {BATCH}{window}: "
          f"{min(times) / len(signals) * 1e6:.1f} µs "
          f"per signal (CPU, best of {REPEAT}); profiles and lists digest {digest(tables)}")


if __name__ == "__main__":
    main()
