"""Latency: a new user's first signal -> their recommendations record on the output topic,
with a background load of demo events (p50/p95/p99), at each rate of BENCH_LATENCY_RATES
(default 500 and 5,000 events/s) and each arrival pattern of BENCH_ARRIVALS, each on a fresh worker:

- `bursts` (default): one producer capped at the rate (`recstream produce --rate`), which checks the
  rate every 50 messages, so the load comes as a burst of 50 events in one produce request every
  50/rate s (every 100 ms at 500 events/s);
- `poisson`: events sent one at a time at exponentially distributed gaps (seeded), each in its own
  produce request, as many independent clients send them.

The two load a worker differently: a burst is applied as one batch, while evenly spread events are
read a few at a time, each read paying a state transaction's round trip to the broker. The load is
sent from its own process, so that sending it never delays the probes' sends or their clock.

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
ARRIVALS = os.environ.get("BENCH_ARRIVALS", "bursts").split(",")
if not set(ARRIVALS) <= {"bursts", "poisson"}:
    sys.exit(f"BENCH_ARRIVALS: arrival patterns are bursts and poisson, not {ARRIVALS}")
RATES = [float(r) for r in os.environ.get("BENCH_LATENCY_RATES", "500,5000").split(",")]
TARGETS_MS = {500.0: 20.0, 5000.0: 50.0}  # p99 targets (issue 18)


async def poisson(bootstrap: str, topic: str, records, rate: float, seed: int = 7) -> None:
    """Each record sent when due, the gaps exponential with mean 1/rate (open loop: a late send
    does not push the next ones back), in its own produce request."""
    import random

    from aiokafka import AIOKafkaProducer

    gaps = random.Random(seed)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        due = time.monotonic()
        for key, value in records:
            due += gaps.expovariate(rate)
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            await producer.send(topic, value, key=key)
    finally:
        await producer.stop()


def background_load(bootstrap: str, topic: str, records, rate: float, arrivals: str):
    from streams.cli.devtools import produce

    if arrivals == "bursts":
        return produce(bootstrap, topic, records, rate=rate)
    if arrivals == "poisson":
        return poisson(bootstrap, topic, records, rate)
    raise ValueError(f"BENCH_ARRIVALS: unknown arrival pattern {arrivals!r} (bursts, poisson)")


def start_background(bootstrap: str, topic: str, records, rate: float, arrivals: str):
    """`background_load` in a child process (killed with this one); returns the process."""
    import pickle
    import tempfile

    with tempfile.NamedTemporaryFile("wb", suffix=".pickle", delete=False) as f:
        pickle.dump(records, f)
    # the probes start under load, not before it
    return _start_child([os.path.abspath(__file__), "background", f.name, bootstrap, topic, str(rate), arrivals],
                        "sending", "the background load")


def _start_child(argv: list[str], ready: str, what: str):
    """A Python child process (killed with this one), once it printed `ready`."""
    import subprocess

    from streams.kafka.broker import _die_with_parent

    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
    if proc.stdout.readline().strip() != ready:
        proc.kill()
        raise RuntimeError(f"{what} did not start")
    return proc


def _send_background(path: str, bootstrap: str, topic: str, rate: str, arrivals: str) -> None:
    import pickle

    import aiokafka  # noqa: F401  (imported before "sending")

    with open(path, "rb") as f:
        records = pickle.load(f)
    os.unlink(path)
    print("sending", flush=True)
    asyncio.run(background_load(bootstrap, topic, records, float(rate), arrivals))


async def run(bootstrap: str, background, rate: float, prefix: str, arrivals: str = "bursts") -> list[float]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(f"{prefix}recommendations", bootstrap_servers=bootstrap, auto_offset_reset="latest",
                                group_id=None, fetch_max_wait_ms=5)  # the default 500 ms would be measured too
    await consumer.start()
    await asyncio.sleep(1)
    bg = start_background(bootstrap, f"{prefix}events.segment", background, rate, arrivals)
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
    try:
        await asyncio.wait_for(receiver, 60)
    finally:
        bg.kill()
        bg.wait(10)
    await producer.stop()
    await consumer.stop()
    return latencies


def main() -> dict:
    out = {}
    with EmbeddedBroker() as broker:
        for i, (rate, arrivals) in enumerate((r, a) for r in RATES for a in ARRIVALS):
            demo, background = demo_events(int(rate * (SAMPLES * 0.05 + 30)))
            out[rate, arrivals] = {
                "worker": _percentiles(_with_worker(broker, demo, background, rate, arrivals, f"lat{i}.", i)),
                "floor": _percentiles(_with_forwarder(broker, background, rate, arrivals, f"floor{i}."))}
    return out


def _with_worker(broker, demo, background, rate: float, arrivals: str, prefix: str, i: int) -> list[float]:
    worker = pipeline_with_catalog(broker, prefix, f"bench-latency-{i}", demo)
    try:
        return asyncio.run(run(broker.bootstrap, background, rate, prefix, arrivals))
    finally:
        worker.stop()


def _with_forwarder(broker, background, rate: float, arrivals: str, prefix: str) -> list[float]:
    asyncio.run(_create(broker.bootstrap, [f"{prefix}events.segment", f"{prefix}recommendations"]))
    proc = _start_child(["-c", FORWARDER, broker.bootstrap, prefix], "ready", "the raw forwarder")
    try:
        return asyncio.run(run(broker.bootstrap, background, rate, prefix, arrivals))
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
    for (rate, arrivals), both in results.items():
        r, f = both["worker"], both["floor"]
        lines.append(f"First signal → recommendations record, {r['n']} new users, background {rate:.0f} events/s "
                     f"({arrivals}): "
                     f"p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, p99 {r['p99']:.1f} ms"
                     + (f" (target p99 ≤ {TARGETS_MS[rate]:.0f} ms)" if rate in TARGETS_MS else "")
                     + f"; the broker's floor (raw aiokafka forwarder, same load): p50 {f['p50']:.1f} ms, "
                     f"p95 {f['p95']:.1f} ms, p99 {f['p99']:.1f} ms")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["background"]:
        _send_background(*sys.argv[2:])
    else:
        print(report(main()))
