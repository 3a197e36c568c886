"""Latency: a new user's first signal -> their recommendations record on the output topic,
with a background load of demo events (p50/p95/p99), at each rate of BENCH_LATENCY_RATES
(default 500 and 5,000 events/s), each on a fresh worker.

The broker's own floor is measured in the same run, the same way: a raw aiokafka forwarder in its
own process (consume the input, produce each record at once to the output topic, no work) in
place of the worker, same load, same probe. What the worker adds is the difference."""

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

FORWARDER = """
import asyncio, json, sys
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
async def main(bootstrap, prefix):
    consumer = AIOKafkaConsumer(prefix + "events.segment", bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="latest", fetch_max_wait_ms=5)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await consumer.start(); await producer.start()
    print("ready", flush=True)
    while True:
        for records in (await consumer.getmany(timeout_ms=100, max_records=500)).values():
            futures = [await producer.send(prefix + "recommendations", json.dumps(
                {"trigger": json.loads(r.value).get("messageId", "")}).encode(), key=r.key) for r in records]
            await asyncio.gather(*futures)
asyncio.run(main(sys.argv[1], sys.argv[2]))
"""
SAMPLES = int(os.environ.get("BENCH_SAMPLES", "200"))
RATES = [float(r) for r in os.environ.get("BENCH_LATENCY_RATES", "500,5000").split(",")]
TARGETS_MS = {500.0: 20.0, 5000.0: 50.0}  # p99 targets (issue 18)


async def run(bootstrap: str, background, rate: float, prefix: str) -> list[float]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from streams.cli.devtools import produce

    consumer = AIOKafkaConsumer(f"{prefix}recommendations", bootstrap_servers=bootstrap, auto_offset_reset="latest",
                                group_id=None, fetch_max_wait_ms=5)  # the default 500 ms would be measured too
    await consumer.start()
    await asyncio.sleep(1)
    bg = asyncio.create_task(produce(bootstrap, f"{prefix}events.segment", background, rate=rate))
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
        await producer.send_and_wait(f"{prefix}events.segment", dumps(ev), key=user.encode())
        await asyncio.sleep(0.05)
    await asyncio.wait_for(receiver, 60)
    bg.cancel()
    await producer.stop()
    await consumer.stop()
    return latencies


def main() -> dict:
    out = {}
    with EmbeddedBroker() as broker:
        for i, rate in enumerate(RATES):
            demo, background = demo_events(int(rate * (SAMPLES * 0.05 + 30)))
            out[rate] = {"worker": _percentiles(_with_worker(broker, demo, background, rate, f"lat{i}.", i)),
                         "floor": _percentiles(_with_forwarder(broker, background, rate, f"floor{i}."))}
    return out


def _with_worker(broker, demo, background, rate: float, prefix: str, i: int) -> list[float]:
    worker = pipeline_with_catalog(broker, prefix, f"bench-latency-{i}", demo)
    try:
        return asyncio.run(run(broker.bootstrap, background, rate, prefix))
    finally:
        worker.stop()


def _with_forwarder(broker, background, rate: float, prefix: str) -> list[float]:
    import subprocess

    from streams.kafka.broker import _die_with_parent

    asyncio.run(_create(broker.bootstrap, [f"{prefix}events.segment", f"{prefix}recommendations"]))
    proc = subprocess.Popen([sys.executable, "-c", FORWARDER, broker.bootstrap, prefix], stdout=subprocess.PIPE,
                            text=True, preexec_fn=_die_with_parent)
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the raw forwarder did not start")
        return asyncio.run(run(broker.bootstrap, background, rate, prefix))
    finally:
        proc.kill()
        proc.wait(10)


async def _create(bootstrap: str, names: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, 4, 1) for n in names])
    finally:
        await admin.close()


def _percentiles(latencies: list[float]) -> dict:
    xs = sorted(latencies)
    q = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))] * 1000  # noqa: E731
    return {"p50": q(0.50), "p95": q(0.95), "p99": q(0.99), "n": len(xs)}


def report(results: dict) -> str:
    lines = []
    for rate, both in results.items():
        r, f = both["worker"], both["floor"]
        lines.append(f"First signal → recommendations record, {r['n']} new users, background {rate:.0f} events/s: "
                     f"p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, p99 {r['p99']:.1f} ms"
                     + (f" (target p99 ≤ {TARGETS_MS[rate]:.0f} ms)" if rate in TARGETS_MS else "")
                     + f"; the broker's floor (raw aiokafka forwarder, same load): p50 {f['p50']:.1f} ms, "
                     f"p95 {f['p95']:.1f} ms, p99 {f['p99']:.1f} ms")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(main()))
