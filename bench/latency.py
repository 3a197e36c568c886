"""Latency: a new user's first signal -> their recommendations record on the output topic,
with a background load of 500 events/s (p50/p95/p99)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import demo_events, pipeline_with_catalog  # noqa: E402
from streams.core.demo import dumps  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402

SAMPLES = int(os.environ.get("BENCH_SAMPLES", "200"))
BACKGROUND_RATE = 500.0


async def run(bootstrap: str, background) -> list[float]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from streams.cli.devtools import produce

    consumer = AIOKafkaConsumer("lat.recommendations", bootstrap_servers=bootstrap, auto_offset_reset="latest",
                                group_id=None, fetch_max_wait_ms=5)  # the default 500 ms would be measured too
    await consumer.start()
    await asyncio.sleep(1)
    bg = asyncio.create_task(produce(bootstrap, "lat.events.segment", background, rate=BACKGROUND_RATE))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    sent: dict[bytes, float] = {}
    latencies: list[float] = []

    async def receive():
        while len(latencies) < SAMPLES:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for records in batch.values():
                for r in records:
                    if r.key in sent and json.loads(r.value)["trigger"].startswith("lat-"):
                        latencies.append(now - sent.pop(r.key))

    receiver = asyncio.create_task(receive())
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for i in range(SAMPLES):
        user = f"newcomer-{i}"
        ev = {"type": "track", "event": "followedArtist", "userId": user, "messageId": f"lat-{i}", "timestamp": ts,
              "properties": {"owner_id": "a1"}}
        sent[user.encode()] = time.perf_counter()
        await producer.send_and_wait("lat.events.segment", dumps(ev), key=user.encode())
        await asyncio.sleep(0.05)
    await asyncio.wait_for(receiver, 60)
    bg.cancel()
    await producer.stop()
    await consumer.stop()
    return latencies


def main() -> dict:
    demo, background = demo_events(int(BACKGROUND_RATE * (SAMPLES * 0.05 + 30)))
    with EmbeddedBroker() as broker:
        worker = pipeline_with_catalog(broker, "lat.", "bench-latency", demo)
        try:
            latencies = sorted(asyncio.run(run(broker.bootstrap, background)))
        finally:
            worker.stop()
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000  # noqa: E731
    return {"p50": q(0.50), "p95": q(0.95), "p99": q(0.99), "n": len(latencies)}


def report(r: dict) -> str:
    return (f"First signal → recommendations record, {r['n']} new users, background {BACKGROUND_RATE:.0f} events/s: "
            f"p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, p99 {r['p99']:.1f} ms (target p99 ≤ 50 ms)")


if __name__ == "__main__":
    print(report(main()))
