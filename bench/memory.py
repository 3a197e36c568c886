"""Memory: worker RSS after N distinct users, at two sizes (BENCH_USERS_SMALL / _LARGE).

State lives in RocksDB (tables) rather than Python dicts, so RSS should grow far slower than
the user count. Each user gets a few events; RSS is read from /proc after the last is applied."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import metric, pipeline_with_catalog, preload, wait_for  # noqa: E402
from streams.broker import EmbeddedBroker  # noqa: E402
from streams.demo import DemoGenerator, dumps  # noqa: E402

SMALL = int(os.environ.get("BENCH_USERS_SMALL", "10000"))
LARGE = int(os.environ.get("BENCH_USERS_LARGE", "50000"))
EVENTS_PER_USER = 2


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def user_events(demo: DemoGenerator, start: int, stop: int):
    ts = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    for u in range(start, stop):
        for k in range(EVENTS_PER_USER):
            artist = f"a{(u * 7 + k) % 500}"
            ev = {"type": "track", "event": "followedArtist", "userId": f"mem-{u}", "messageId": f"mem-{u}-{k}",
                  "timestamp": ts, "properties": {"owner_id": artist}}
            yield f"mem-{u}".encode(), dumps(ev)


def main() -> dict:
    demo = DemoGenerator(users=1000, artists=500, artworks=5000, seed=9, end_time=datetime.now(timezone.utc))
    out = {}
    with EmbeddedBroker() as broker:
        worker = pipeline_with_catalog(broker, "mem.", "bench-memory", demo)
        try:
            out["idle"] = rss_mb(worker.proc.pid)
            done = 0
            for size in (SMALL, LARGE):
                preload(broker.bootstrap, "mem.events.segment", list(user_events(demo, done, size)))
                wait_for(lambda size=size: metric(worker, "recstream_signals_applied_total") >= size * EVENTS_PER_USER,
                         3600, 1.0)
                out[size] = rss_mb(worker.proc.pid)
                done = size
        finally:
            worker.stop()
    return out


def report(r: dict) -> str:
    growth = (r[LARGE] - r[SMALL]) / r[SMALL]
    return (f"Worker RSS: idle {r['idle']:.0f} MB, {SMALL:,} users {r[SMALL]:.0f} MB, {LARGE:,} users {r[LARGE]:.0f} MB "
            f"(+{growth:.0%} for {LARGE / SMALL:.0f}× the users; target ≤ 10% from 100k to 1M users)")


if __name__ == "__main__":
    print(report(main()))
