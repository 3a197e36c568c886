"""Memory: worker RSS holding the state of BENCH_USERS_SMALL and BENCH_USERS_LARGE users
(default 100k and 1M).

For each size, one follow per user goes to its own topics, `recstream rebuild --bulk` writes the
state (the live path would take most of an hour for 1M users here), a worker under that app id
recovers it from the changelogs, then applies live events for users spread over the whole key
space; RSS is read from /proc after those are applied. State lives in RocksDB, so RSS should
hardly move with the user count."""

from __future__ import annotations

import os
import random
import sys
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import metric, preload, recstream_worker, rss_mb, rss_split_mb, wait_for  # noqa: E402
from bench.rebuild import bulk  # noqa: E402
from streams.core.demo import DemoGenerator, dumps  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402

SMALL = int(os.environ.get("BENCH_USERS_SMALL", "100000"))
LARGE = int(os.environ.get("BENCH_USERS_LARGE", "1000000"))
LIVE_EVENTS = 5000
SETTLE_S = 65
ARTISTS = 500


def follows(users, tag: str):
    ts = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    for u in users:
        ev = {"type": "track", "event": "followedArtist", "userId": f"mem-{u}", "messageId": f"mem-{u}-{tag}",
              "timestamp": ts, "properties": {"owner_id": f"a{(u * 7) % ARTISTS}"}}
        yield f"mem-{u}".encode(), dumps(ev)


def one_size(broker: EmbeddedBroker, demo: DemoGenerator, users: int) -> dict:
    prefix, app_id = f"mem{users}.", f"bench-memory-{users}"
    preload(broker.bootstrap, f"{prefix}catalog.artworks", [(a["id"].encode(), dumps(a)) for a in demo.artworks()])
    preload(broker.bootstrap, f"{prefix}events.segment", list(follows(range(users), "0")))
    report = bulk(broker, prefix, app_id)
    print(f"[memory] {users:,} users: {report.lines()[0]}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    worker = recstream_worker(broker, prefix, app_id)
    try:
        worker.wait_ready(timeout=3600)
        recovered = time.monotonic() - t0
        after_recovery = rss_mb(worker.proc.pid)
        touched = random.Random(users).sample(range(users), LIVE_EVENTS)
        preload(broker.bootstrap, f"{prefix}events.segment", list(follows(touched, "live")))
        wait_for(lambda: metric(worker, "recstream_signals_applied_total") >= LIVE_EVENTS, 900, 0.5)
        time.sleep(2)
        after_live = rss_mb(worker.proc.pid)
        time.sleep(SETTLE_S)  # the worker's once-a-minute housekeeping (gc, malloc_trim) has run
        return {"recovery_s": recovered, "after_recovery": after_recovery, "after_live": after_live,
                "rss": rss_mb(worker.proc.pid), **rss_split_mb(worker.proc.pid), "rocksdb": _rocksdb_cache_mb(worker),
                "malloc_in_use": _gauge_mb(worker, 'recstream_malloc_bytes{kind="in_use"}'),
                "malloc_free": _gauge_mb(worker, 'recstream_malloc_bytes{kind="free"}')}
    finally:
        worker.stop()


def _gauge_mb(worker, series: str) -> float:
    return metric(worker, series, missing=float("nan")) / 2**20


def _rocksdb_cache_mb(worker) -> float:
    """The worker's shared RocksDB cache in use (blocks, index/filters, charged memtables)."""
    return _gauge_mb(worker, 'recstream_rocksdb_memory_bytes{kind="cache"}')


def main() -> dict:
    demo = DemoGenerator(users=1000, artists=ARTISTS, artworks=5000, seed=9, end_time=datetime.now(timezone.utc))
    with EmbeddedBroker() as broker:
        return {size: one_size(broker, demo, size) for size in (SMALL, LARGE)}


def report(r: dict) -> str:
    small, large = r[SMALL]["rss"], r[LARGE]["rss"]
    rows = [f"| {n:,} | {v['recovery_s']:.0f} s | {v['after_recovery']:.0f} MB | {v['after_live']:.0f} MB | "
            f"{v['rss']:.0f} MB | {v['anon']:.0f} / {v['file']:.0f} MB | {v['rocksdb']:.0f} MB | "
            f"{v['malloc_in_use']:.0f} MB | {v['malloc_free']:.0f} MB |"
            for n, v in r.items()]
    return "\n".join([f"Worker RSS by users held (state built with rebuild --bulk, then {LIVE_EVENTS:,} live events "
                      "for users across the key space)", "",
                      f"| users | recovery | RSS after recovery | RSS after live events | RSS {SETTLE_S} s later | "
                      "of which anonymous / file-backed | RocksDB cache | malloc in use | malloc free (held) |",
                      "|---|---|---|---|---|---|---|---|---|", *rows, "",
                      f"growth (settled RSS) {small:.0f} → {large:.0f} MB = {(large - small) / small:+.1%} for {LARGE / SMALL:.0f}× "
                      "the users (target ≤ 10%)"])


if __name__ == "__main__":
    print(report(main()))
