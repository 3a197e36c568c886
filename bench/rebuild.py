"""Rebuild: events/s of `recstream rebuild --bulk` over BENCH_REBUILD_EVENTS (default 1M) demo
events, next to the live per-event path measured on a slice of the same events in the same run,
then the hand-over: how long a worker under the new app id takes to recover that state."""

from __future__ import annotations

import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import (  # noqa: E402
    demo_events,
    pipeline_with_catalog,
    preload,
    processed,
    recstream_worker,
    rss_mb,
)
from bench.throughput import measure  # noqa: E402
from streams.core.demo import dumps  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402

N = int(os.environ.get("BENCH_REBUILD_EVENTS", "1000000"))
USERS = int(os.environ.get("BENCH_REBUILD_USERS", str(max(1000, N // 10))))
LIVE_SLICE = int(os.environ.get("BENCH_LIVE_EVENTS", "20000"))


def bulk(broker: EmbeddedBroker, prefix: str, app_id: str):
    from streams.cli.common import Progress
    from streams.core.config import core_objects
    from streams.core.settings import Settings
    from streams.rebuild.coordinator import bulk_rebuild

    settings = Settings.from_env({**os.environ, "RECSTREAM_TOPIC_PREFIX": prefix, "RECSTREAM_APP_ID": app_id,
                                  "RECSTREAM_BROKER_URL": broker.url})
    _, parser, pipeline = core_objects(settings)
    return asyncio.run(bulk_rebuild(settings, pipeline, parser, Progress("bulk rebuild")))


def main() -> dict:
    t0 = time.monotonic()
    demo, records = demo_events(N, users=USERS)
    print(f"[rebuild] generated {N:,} events in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    out: dict = {"events": N, "users": USERS}
    with EmbeddedBroker() as broker:
        # the live path on a slice, same events, same broker
        worker = pipeline_with_catalog(broker, "live.", "bench-live", demo)
        try:
            preload(broker.bootstrap, "live.events.segment", records[:LIVE_SLICE])
            out["live"] = measure(lambda: processed(worker), LIVE_SLICE)
        finally:
            worker.stop()

        t0 = time.monotonic()
        preload(broker.bootstrap, "rb.catalog.artworks", [(a["id"].encode(), dumps(a)) for a in demo.artworks()])
        preload(broker.bootstrap, "rb.events.segment", records)
        print(f"[rebuild] produced in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        del records
        report = bulk(broker, "rb.", "bench-rebuild")
        out["report"] = report
        out["bulk"] = report.rate

        t0 = time.monotonic()
        worker = recstream_worker(broker, "rb.", "bench-rebuild")
        try:
            worker.wait_ready(timeout=1800)
            out["recovery_s"] = time.monotonic() - t0
            out["rss_mb"] = rss_mb(worker.proc.pid)
        finally:
            worker.stop()
    return out


def report(r: dict) -> str:
    shards = len(r["report"].shard_seconds)
    lines = [f"Rebuild of {r['events']:,} demo events ({r['users']:,} users); the bulk path in {shards} shard "
             f"process{'es' if shards > 1 else ''} (RECSTREAM_REBUILD_SHARDS, default one per CPU), the live path in "
             "one worker:", "",
             "| path | events/s |", "|---|---|",
             f"| live per-event pipeline ({LIVE_SLICE:,}-event slice) | {r['live']:,.0f} |",
             f"| `recstream rebuild --bulk` | {r['bulk']:,.0f} |", "",
             f"bulk / live = {r['bulk'] / r['live']:.1f}× (target ≥ 30k events/s and ≥ 10×)", "",
             "```", *r["report"].lines(), "```", "",
             f"Hand-over: a worker under the new app id recovered that state and was ready in {r['recovery_s']:.0f} s "
             f"(RSS {r['rss_mb']:.0f} MB)."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(main()))
