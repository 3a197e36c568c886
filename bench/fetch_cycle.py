"""The embedded broker's fetch cycle without recstream: a plain aiokafka consumer of 18 topics × 4
partitions (a worker's inputs), 500 events/s produced to one of them, that spends BENCH_WORK_MS per
non-empty poll (half CPU, half awaiting, as a worker applies a batch and waits for its acks).
Prints, per fetch wait, produce → poll-returned latency (p50/p95/p99): the part of first-signal
latency a worker's batch cycle costs before any recstream code runs.

Run: `.venv/bin/python bench/fetch_cycle.py` (BENCH_WAITS_MS=20,5 BENCH_WORK_MS=8 BENCH_SECONDS=8)."""

from __future__ import annotations

import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from streams.kafka.broker import EmbeddedBroker  # noqa: E402

WAITS_MS = [int(w) for w in os.environ.get("BENCH_WAITS_MS", "20,5").split(",")]
WORK_S = float(os.environ.get("BENCH_WORK_MS", "8")) / 1000
SECONDS, RATE, TOPICS, PARTITIONS = float(os.environ.get("BENCH_SECONDS", "8")), 500, 18, 4


async def trial(bootstrap: str, name: str, wait_ms: int) -> list[float]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    names = [f"{name}-{t}" for t in range(TOPICS)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=wait_ms,
                                auto_offset_reset="latest")
    await producer.start()
    await consumer.start()
    consumer.assign([TopicPartition(n, p) for n in names for p in range(PARTITIONS)])
    await consumer.getmany(timeout_ms=500)
    latencies: list[float] = []

    async def load():
        for i in range(int(SECONDS * RATE)):
            await producer.send(names[0], str(time.perf_counter()).encode(), key=f"k{i}".encode())
            await asyncio.sleep(1 / RATE)

    loading = asyncio.create_task(load())
    while not loading.done():
        batch = await consumer.getmany(timeout_ms=100)
        now = time.perf_counter()
        records = [r for part in batch.values() for r in part]
        latencies.extend(now - float(r.value) for r in records)
        if records:
            time.sleep(WORK_S / 2)
            await asyncio.sleep(WORK_S / 2)
    await producer.stop()
    await consumer.stop()
    return sorted(latencies)


def main() -> None:
    with EmbeddedBroker() as broker:
        for i, wait_ms in enumerate(WAITS_MS):
            xs = asyncio.run(trial(broker.bootstrap, f"cycle{i}", wait_ms))
            q = [xs[int(p * (len(xs) - 1))] * 1000 for p in (0.5, 0.95, 0.99)]
            print(f"fetch wait {wait_ms} ms, {WORK_S * 1000:.0f} ms of work per poll, {TOPICS}x{PARTITIONS} partitions: "
                  f"produce -> poll p50 {q[0]:.1f}, p95 {q[1]:.1f}, p99 {q[2]:.1f} ms ({len(xs)} events)")


if __name__ == "__main__":
    main()
