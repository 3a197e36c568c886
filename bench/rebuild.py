"""Rebuild: events/s of `recstream rebuild --bulk` over BENCH_REBUILD_EVENTS (default 1M) demo
events, next to the live per-event path measured on a slice of the same events and a bare
aiokafka consumer merely reading the same events (the read's physical limit: issue 18 asks for
>= 0.75x of it), in the same run; then the hand-over: how long a worker under the new app id
takes to recover that state."""

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


async def bare_read(bootstrap: str, topic: str | list[str]) -> float:
    """Records/s of a plain aiokafka consumer reading every record of `topic` (or topics) and doing nothing
    with them (the rebuild's fetch sizes; the ends from streams.kafka.offsets.end_offsets, which
    corrects the embedded broker's under-reported ends)."""
    from aiokafka import AIOKafkaConsumer

    from streams.kafka.offsets import end_offsets

    ends = await end_offsets({"bootstrap_servers": bootstrap}, [topic] if isinstance(topic, str) else topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        count, started, remaining = 0, time.monotonic(), {tp for tp, end in ends.items() if end > 0}
        while remaining:
            for records in (await consumer.getmany(*remaining, timeout_ms=500, max_records=20000)).values():
                count += len(records)
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
        return count / (time.monotonic() - started)
    finally:
        await consumer.stop()


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
        out["bare_read"] = asyncio.run(bare_read(broker.bootstrap, "rb.events.segment"))
        report = bulk(broker, "rb.", "bench-rebuild")
        out["report"] = report
        out["bulk"] = report.rate
        out["bare_read_after"] = asyncio.run(bare_read(broker.bootstrap, "rb.events.segment"))

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
             f"| `recstream rebuild --bulk` | {r['bulk']:,.0f} |",
             f"| bare aiokafka consumer reading the same events, before / after the rebuild | "
             f"{r['bare_read']:,.0f} / {r['bare_read_after']:,.0f} |", "",
             f"bulk / live = {r['bulk'] / r['live']:.1f}× (target ≥ 30k events/s and ≥ 10×); bulk / bare read = "
             f"{r['bulk'] / max(r['bare_read'], r['bare_read_after']):.2f}× of the faster read (target ≥ 0.75×)", "",
             "```", *r["report"].lines(), "```", "",
             f"Hand-over: a worker under the new app id recovered that state and was ready in {r['recovery_s']:.0f} s "
             f"(RSS {r['rss_mb']:.0f} MB)."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(main()))
