"""Throughput: events/s through the full pipeline vs three baselines, one broker, one run.

Each consumer is started and ready first, then N events are produced as fast as the producer
goes (well above any consumer here), and the rate is measured from its first processed event
to its N-th."""

from __future__ import annotations

import asyncio
import os
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import (  # noqa: E402
    demo_events,
    get_json,
    metric,
    pipeline_with_catalog,
    preload,
    start_baseline,
    wait_for,
)
from streams.broker import EmbeddedBroker  # noqa: E402

N = int(os.environ.get("BENCH_EVENTS", "30000"))


def measure(count_fn, n: int, timeout: float = 600) -> float:
    """Rate from the first observed progress to n, polling count_fn."""
    first = wait_for(lambda: (lambda c: (c, time.monotonic()) if c > 0 else None)(count_fn()), timeout, 0.02)
    c0, t0 = first
    wait_for(lambda: count_fn() >= n, timeout, 0.05)
    return (n - c0) / (time.monotonic() - t0)


async def raw_forward(bootstrap: str, topic: str, n: int) -> float:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id="raw-fwd",
                                enable_auto_commit=True, max_poll_records=2000)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=262144)
    await consumer.start()
    await producer.start()
    done, t0 = 0, None
    try:
        while done < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for records in batch.values():
                if t0 is None:
                    t0 = time.monotonic()
                for r in records:
                    await producer.send(topic + "-out", value=r.value, key=r.key)
                    done += 1
        await producer.flush()
        return n / (time.monotonic() - t0)
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> dict:
    demo, records = demo_events(N)
    results = {}
    with EmbeddedBroker() as broker:
        preload(broker.bootstrap, "raw-in", records)
        results["raw aiokafka consume→produce"] = asyncio.run(raw_forward(broker.bootstrap, "raw-in", N))
        for mode in ("forward", "consume"):
            proc, port = start_baseline(broker, mode, f"{mode}-in", "1")
            try:
                url = f"http://127.0.0.1:{port}/count"
                wait_for(lambda url=url: _try(lambda: get_json(url)), 90, 0.2)
                time.sleep(8)  # let the group settle before load
                preload(broker.bootstrap, f"{mode}-in", records)
                name = "naive faust forwarder (await send per event)" if mode == "forward" else "faust consume-only agent"
                results[name] = measure(lambda url=url: get_json(url)["count"], N)
            finally:
                proc.kill()
        worker = pipeline_with_catalog(broker, "bench.", "bench-pipeline", demo)
        try:
            preload(broker.bootstrap, "bench.events.segment", records)
            results["recstream full pipeline (parse → affinity → recommendations)"] = measure(
                lambda: metric(worker, "recstream_signals_applied_total") + metric(worker, "recstream_duplicates_total"), N)
        finally:
            worker.stop()
    return results


def _try(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - not up yet
        return None


def report(results: dict) -> str:
    pipeline = results["recstream full pipeline (parse → affinity → recommendations)"]
    lines = [f"| {name} | {rate:,.0f} |" for name, rate in results.items()]
    ratio_naive = pipeline / results["naive faust forwarder (await send per event)"]
    ratio_consume = pipeline / results["faust consume-only agent"]
    return "\n".join([f"Throughput ({N:,} demo Segment events, one worker)", "", "| path | events/s |", "|---|---|", *lines, "",
                      f"pipeline / naive forwarder = {ratio_naive:.2f}× (target ≥ 2×); "
                      f"pipeline / consume-only = {ratio_consume:.2f}×"])


if __name__ == "__main__":
    print(report(main()))
