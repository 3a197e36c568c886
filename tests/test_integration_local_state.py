"""Local state against the cluster it belongs to (a newcomer's checks): a worker whose broker was
recreated under its data dir crashed for good in faust's recovery (ConsistencyError: a local
offset past the changelog's end), and `recstream rebuild` opened the live app's RocksDB files
(every app id's tables shared `<data dir>/v1`)."""

from __future__ import annotations

import pytest

from streams.cli.devtools import segment_key
from streams.core.demo import DemoGenerator, dumps
from streams.kafka.broker import EmbeddedBroker
from tests.conftest import Cluster, get_json, wait_until
from tests.test_integration_failover import setup_catalog

pytestmark = pytest.mark.integration
AHEAD = "local state ahead of its changelog, removed"


def applied(worker, users) -> bool:
    return all(get_json(worker, f"/users/{u}/affinity")[0] == 200 for u in users)


def test_a_worker_on_a_recreated_broker_drops_the_old_state_and_starts(tmp_path):
    demo = DemoGenerator(users=20, artists=10, artworks=60, seed=5)
    events = list(demo.events(400))
    users = sorted({e["userId"] for e in events if e.get("userId")})[:5]
    with EmbeddedBroker(log_path=tmp_path / "first.log") as first:
        cluster = Cluster(first, tmp_path)
        try:
            w = cluster.start_worker("w")
            setup_catalog(cluster, w, demo)
            cluster.produce("events.segment", [(segment_key(e), dumps(e)) for e in events])
            wait_until(lambda: applied(w, users), 90, what="the events applied")
            w.stop()
            w = cluster.start_worker("w")  # in place, same broker: nothing is ahead, nothing removed
            assert applied(w, users)
            w.stop()
            assert AHEAD not in (tmp_path / "w.log").read_text()
        finally:
            cluster.stop()
    stores = tmp_path / "w" / "state" / cluster.kafka_app_id / "v1" / "tables"
    assert sorted(p.name for p in stores.glob("affinity-*.db")) == [f"affinity-{p}.db" for p in range(4)]
    with EmbeddedBroker(log_path=tmp_path / "second.log") as second:  # the same address's cluster, recreated
        cluster.broker = second
        before = (tmp_path / "w.log").stat().st_size
        try:
            w = cluster.start_worker("w")  # before: faust's ConsistencyError, exit, for good
            logs = (tmp_path / "w.log").read_bytes()[before:].decode()
            assert logs.count(AHEAD) >= 4 and "ConsistencyError" not in logs, logs[-3000:]
            assert f"{cluster.kafka_app_id}-affinity-changelog[0]: applied offset" in logs
            for user in users:  # the new cluster's state: none, not the old one's
                assert get_json(w, f"/users/{user}/affinity")[0] == 404
            setup_catalog(cluster, w, demo)
            cluster.produce("events.segment", [(segment_key(e), dumps(e)) for e in events])
            wait_until(lambda: applied(w, users), 90, what="the events applied on the new cluster")
        finally:
            cluster.stop()


def test_two_app_ids_keep_their_tables_apart_in_one_data_dir(broker, tmp_path):
    """A rebuild's worker (another app id) in the live worker's data dir while the live one runs:
    it waited on the live one's RocksDB locks, then crashed."""
    live = Cluster(broker, tmp_path)
    rebuilt = Cluster(broker, tmp_path, env={"RECSTREAM_APP_ID": live.env["RECSTREAM_APP_ID"] + "-v2"})
    rebuilt.prefix = live.prefix  # the same topics, as a rebuild reads them
    rebuilt.env["RECSTREAM_TOPIC_PREFIX"] = live.prefix
    try:
        live.start_worker("w")
        rebuilt.start_worker("w")  # same <root>/w/state data dir
        state = tmp_path / "w" / "state"
        assert sorted(p.name for p in state.iterdir()) == sorted([live.kafka_app_id, rebuilt.kafka_app_id])
        assert "is locked" not in (tmp_path / "w.log").read_text()
    finally:
        rebuilt.stop()
        live.stop()
