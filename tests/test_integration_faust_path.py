"""faust's agents over the inputs (RECSTREAM_DIRECT_INGEST=false), on the embedded broker with real workers: the
shares counted apart from the profiles (trending, co-engagement, image counts) are exact after a restart, as on
direct ingest (streams/worker/faust_shares.py)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import pytest

from streams.cli.devtools import segment_key
from streams.core.demo import DemoGenerator, dumps
from tests.conftest import Cluster, consume_all, metric, wait_until
from tests.test_integration_failover import MODEL

pytestmark = pytest.mark.integration


def committed_to_the_end(cluster, topic: str) -> bool:
    """faust's group committed every record of `topic` (its offsets at the partitions' ends)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    from streams.kafka.offsets import end_offsets

    async def go() -> bool:
        ends = await end_offsets({"bootstrap_servers": cluster.broker.bootstrap}, [cluster.topic(topic)])
        consumer = AIOKafkaConsumer(bootstrap_servers=cluster.broker.bootstrap, group_id=cluster.kafka_app_id,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            committed = {tp: await consumer.committed(TopicPartition(tp.topic, tp.partition)) for tp in ends}
            return all((committed[tp] or 0) >= end for tp, end in ends.items())
        finally:
            await consumer.stop()
    return asyncio.run(go())


def trending(cluster) -> dict[str, float]:
    from streams.core.popularity import load_partial

    last = {r.key: r.value for r in asyncio.run(consume_all(
        cluster.broker.bootstrap, f"{cluster.kafka_app_id}-popularity-changelog", 1500, 60))}
    out: dict[str, float] = {}
    for share in map(load_partial, filter(None, last.values())):
        for work, score in share.trending.scores.items():
            out[work] = round(out.get(work, 0.0) + score, 9)
    return out


def test_trending_is_exact_after_a_stop_and_after_a_kill_9_once_faust_committed_the_input(broker, tmp_path):
    """An outside check: this path wrote a share only after a later batch, at most every
    RECSTREAM_POPULARITY_FLUSH_S, while faust committed the input past every batch: once the input went idle,
    a SIGTERM or a kill -9 lost the last batches' trending for good (2,071 of 2,436 after a stop)."""
    cluster = Cluster(broker, tmp_path, env={"RECSTREAM_DIRECT_INGEST": "false", "RECSTREAM_POPULARITY_FLUSH_S": "60"})
    try:
        worker = cluster.start_worker("w")
        works = DemoGenerator(users=20, artists=10, artworks=40, seed=5).artworks()
        cluster.produce("catalog.artworks", [(a["id"].encode(), dumps(a)) for a in works])
        wait_until(lambda: metric(worker, "recstream_catalog_records_total") >= len(works), 60, what="catalog")
        now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")  # one time: trending adds without decay
        want: dict[str, float] = {}

        def views(first: int, n: int) -> list[tuple[bytes, bytes]]:
            out = []
            for i in range(first, first + n):
                work = works[i % len(works)]["id"]
                ev = {"type": "track", "event": "Product Viewed", "userId": f"u{i % 20}", "messageId": f"v{i}",
                      "timestamp": now, "properties": {"product_id": work}}
                want[work] = round(want.get(work, 0.0) + MODEL.weights["view"], 9)
                out.append((segment_key(ev), dumps(ev)))
            return out

        for first, end in ((0, "stop"), (200, "kill")):
            cluster.produce("events.segment", views(first, 200))
            wait_until(lambda w=worker: metric(w, "recstream_signals_applied_total") >= 200, 60, what="the views")
            wait_until(lambda: committed_to_the_end(cluster, "events.segment"), 60, what="faust's input commit")
            worker.stop() if end == "stop" else worker.kill()
            worker = cluster.start_worker("w")  # same state directory
            got = trending(cluster)
            assert got == want, json.dumps({w: (got.get(w), s) for w, s in want.items() if got.get(w) != s})
    finally:
        cluster.stop()
