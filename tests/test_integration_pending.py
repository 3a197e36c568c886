"""A message waiting on the pending topic for its artwork survives a crash at the worst moment of its batch.

An outside chaos run (two workers, kill -9 at random moments, works published late) lost 4 events of 3
users for good, without a dead letter: the batch that parked a message also applied its user's later
messages, so the profile's input position passed it, and a kill -9 after the batch's RocksDB write and
before its retry record landed left nothing to apply it (read again once its work was known, it was
taken for a redelivery). The crash is put exactly there with a failpoint (streams/worker/failpoints.py).
"""

from __future__ import annotations

import base64
import json
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


def test_an_event_waits_past_its_patience_while_the_owner_of_its_works_catalog_partition_is_frozen(cluster):
    """The catalog record of a work reached Kafka before an event naming it, but the worker owning its
    catalog partition is frozen (SIGSTOP: a stall, a long batch, a restore) for longer than the patience.
    An outside soak lost 470 such events as unknown_artwork: patience ran on the wall clock. It now runs
    against the catalog as the group applied it (streams.worker.catalog_progress): the event waits and is
    applied once the owner resumes, while an event on a work that never comes is still dead-lettered."""
    import signal

    from streams.core.ingest import KeyPartitioner

    cluster.env.update(RECSTREAM_UNKNOWN_ARTWORK_PATIENCE_S="1")
    a = cluster.start_worker("a")
    works = DemoGenerator(users=2, artists=4, artworks=40, seed=5).artworks()
    cluster.produce("catalog.artworks", [(w["id"].encode(), dumps(w)) for w in works[:2]])
    b = cluster.start_worker("b")
    wait_until(lambda: all(get_json(w, "/health")[0] == 200 and not get_json(w, "/health")[1]["rebalancing"]
                           and get_json(w, "/health")[1]["assigned_partitions"] for w in (a, b)), 90, what="settled")
    home = KeyPartitioner(4)  # the producers' default partitioner, over the 4 partitions of every topic here
    of_b = set(get_json(b, "/health")[1]["partitions"])
    late = next(w for w in works[2:] if home(w["id"].encode()) in of_b)  # its catalog record read by b only
    user = next(u for u in (f"u{i}" for i in range(100)) if home(u.encode()) not in of_b)  # its events by a
    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    views = [{"type": "track", "event": "Product Viewed", "userId": user, "messageId": f"m-{work}", "timestamp": now,
              "properties": {"product_id": work}} for work in (late["id"], "never-published")]

    b.proc.send_signal(signal.SIGSTOP)
    try:
        cluster.produce("catalog.artworks", [(late["id"].encode(), dumps(late))])
        cluster.produce("events.segment", [(user.encode(), dumps(v)) for v in views])
        wait_until(lambda: metric(a, "recstream_pending_retries_total") >= 2, 10, what="a holding both views")
        time.sleep(2.5)  # > 2x the patience: a wall-clock patience dead-lettered the first by now
    finally:
        b.proc.send_signal(signal.SIGCONT)  # within the session timeout (6 s): b keeps its partitions

    def applied():
        status, body = get_json(a, "/users/" + user + "/affinity")
        return body if status == 200 and body["events"] >= 1 else None

    body = wait_until(applied, 60, what="the view of the work b applied late")
    assert [x["artist_id"] for x in body["artists"]] == [late["artist_id"]], body
    wait_until(lambda: metric(a, "recstream_dead_letters_total", reason="unknown_artwork") >= 1, 60,
               what="the view of a work that never comes dead-lettered")
    letters = [json.loads(r.value) for r in cluster.consume_all("deadletter")]
    assert [(x["reason"], json.loads(base64.b64decode(x["value"]))["messageId"]) for x in letters] == \
        [("unknown_artwork", "m-never-published")], letters
    assert metric(a, "recstream_catalog_read_through_age_seconds") < 30
