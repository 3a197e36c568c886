"""A message waiting on the pending topic for its artwork survives a crash at the worst moment of its batch.

An outside chaos run (two workers, kill -9 at random moments, works published late) lost 4 events of 3
users for good, without a dead letter: the batch that parked a message also applied its user's later
messages, so the profile's input position passed it, and a kill -9 after the batch's RocksDB write and
before its retry record landed left nothing to apply it (read again once its work was known, it was
taken for a redelivery). The crash is put exactly there with a failpoint (streams/worker/failpoints.py).
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timezone

import pytest

from streams.cli.devtools import WorkerProcess
from streams.core.demo import DemoGenerator, dumps
from streams.worker.failpoints import EXIT_CODE
from tests.conftest import get_json, metric, wait_until

pytestmark = pytest.mark.integration


def test_a_parked_message_is_applied_after_a_crash_right_after_its_batch_stored_its_state(cluster):
    cluster.env.update(RECSTREAM_UNKNOWN_ARTWORK_PATIENCE_S="60")
    worker = cluster.start_worker("w")
    works = DemoGenerator(users=2, artists=4, artworks=6, seed=3).artworks()
    late, known = works[0], works[1:]
    cluster.produce("catalog.artworks", [(a["id"].encode(), dumps(a)) for a in known])
    wait_until(lambda: metric(worker, "recstream_catalog_records_total") >= len(known), 60, what="catalog")
    worker.stop()  # the events below wait for the next start: one batch reads them together

    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    events = [{"type": "track", "event": "Product Viewed", "userId": "u1", "messageId": f"m{i}", "timestamp": now,
               "properties": {"product_id": work["id"]}} for i, work in enumerate([late, known[0], known[1]])]
    cluster.produce("events.segment", [(b"u1", dumps(e)) for e in events], linger_ms=200)

    crashing = WorkerProcess(cluster.broker.url, str(cluster.root / "w" / "state"), log_path=cluster.root / "crash.log",
                             env={**cluster.env, "RECSTREAM_FAILPOINT": "parked_batch_stored"}).start()
    cluster.workers.append(crashing)
    assert crashing.proc.wait(timeout=90) == EXIT_CODE  # the late view parked, the other two applied and stored

    cluster.produce("catalog.artworks", [(late["id"].encode(), dumps(late))])
    worker = cluster.start_worker("w")  # the same data dir: its store holds the batch that was never sent

    def affinity():
        status, body = get_json(worker, "/users/u1/affinity?n=100")
        return body if status == 200 and body["events"] >= 3 else None

    wait_until(affinity, 60, what="the three views applied")
    time.sleep(3)  # a retry applied twice would show by now (the pending topic retries within a second)
    body = affinity()
    viewed = Counter(w["artist_id"] for w in (late, known[0], known[1]))
    assert body["events"] == 3 and {a["artist_id"]: a["score"] for a in body["artists"]} == viewed, body
