"""Throughput: events/s through the full pipeline vs three baselines, one broker, one run.

Each consumer is started and ready first, then N events are produced as fast as the producer
goes (well above any consumer here), and the rate is measured from its first processed event
to its N-th."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import (  # noqa: E402
    demo_events,
    get_json,
    pipeline_with_catalog,
    preload,
    processed,
    start_baseline,
    wait_for,
)
from streams.kafka.broker import EmbeddedBroker  # noqa: E402

N = int(os.environ.get("BENCH_EVENTS", "30000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def measure(count_fn, n: int, timeout: float = 600, every: float = 0.25) -> float:
    """Rate from the first observed progress to n, polling count_fn: every 20 ms until the first
    progress, then every `every` s, the moment n was passed interpolated between the two polls
    around it. (Polling recstream's /metrics every 50 ms cost its worker ~5% of its CPU; the Quix
    peer's counter is a shared integer, free to read.)"""
    c0, t0 = wait_for(lambda: (lambda c: (c, time.monotonic()) if c > 0 else None)(count_fn()), timeout, 0.02)
    prev, deadline = (c0, t0), t0 + timeout
    while time.monotonic() < deadline:
        time.sleep(every)
        c, t = count_fn(), time.monotonic()
        if c >= n:
            pc, pt = prev
            reached = pt + (t - pt) * (n - pc) / (c - pc) if c > pc else t
            return (n - c0) / (reached - t0)
        prev = (c, t)
    raise TimeoutError(f"no {n} events within {timeout} s")


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


RAW, FORWARDER, CONSUMER = ("raw aiokafka consume→produce", "naive faust forwarder (await send per event)",
                             "faust consume-only agent")
PIPELINE = "recstream full pipeline (parse → affinity → recommendations)"


def main() -> dict:
    """Every path measured ROUNDS times, alternating, each round on fresh topics and processes;
    the report gives each path's median round and every round (a single 30k-event round moved
    by up to 1.5× between runs on this shared machine)."""
    demo, records = demo_events(N)
    runs: dict[str, list[float]] = {RAW: [], FORWARDER: [], CONSUMER: [], PIPELINE: []}
    with EmbeddedBroker() as broker:
        for r in range(ROUNDS):
            print(f"[throughput] round {r + 1}/{ROUNDS}", file=sys.stderr, flush=True)
            preload(broker.bootstrap, f"raw-in-{r}", records)
            runs[RAW].append(asyncio.run(raw_forward(broker.bootstrap, f"raw-in-{r}", N)))
            for mode, name in (("forward", FORWARDER), ("consume", CONSUMER)):
                proc, port = start_baseline(broker, mode, f"{mode}-in-{r}", str(r))
                try:
                    url = f"http://127.0.0.1:{port}/count"
                    wait_for(lambda url=url: _try(lambda: get_json(url)), 90, 0.2)
                    time.sleep(8)  # let the group settle before load
                    preload(broker.bootstrap, f"{mode}-in-{r}", records)
                    runs[name].append(measure(lambda url=url: get_json(url)["count"], N))
                finally:
                    proc.kill()
            worker = pipeline_with_catalog(broker, f"bench{r}.", f"bench-pipeline-{r}", demo)
            try:
                preload(broker.bootstrap, f"bench{r}.events.segment", records)
                runs[PIPELINE].append(measure(lambda w=worker: processed(w), N))
            finally:
                worker.stop()
    return runs


def _try(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - not up yet
        return None


def report(runs: dict) -> str:
    median = {name: statistics.median(rates) for name, rates in runs.items()}
    lines = [f"| {name} | {median[name]:,.0f} | {', '.join(f'{x:,.0f}' for x in rates)} |" for name, rates in runs.items()]
    per_round = ", ".join(f"{p / f:.2f}×" for p, f in zip(runs[PIPELINE], runs[FORWARDER], strict=True))
    return "\n".join([f"Throughput ({N:,} demo Segment events, one worker; {ROUNDS} alternating rounds, median round)", "",
                      "| path | events/s | every round |", "|---|---|---|", *lines, "",
                      f"pipeline / naive forwarder = {median[PIPELINE] / median[FORWARDER]:.2f}× (target ≥ 2×; "
                      f"round by round: {per_round}); pipeline / consume-only = {median[PIPELINE] / median[CONSUMER]:.2f}×"])


if __name__ == "__main__":
    print(report(main()))
