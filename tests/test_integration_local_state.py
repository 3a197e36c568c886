"""Local state against the cluster it belongs to (a newcomer's checks): a worker whose broker was
recreated under its data dir crashed for good in faust's recovery (ConsistencyError: a local
offset past the changelog's end), and `recstream rebuild` opened the live app's RocksDB files
(every app id's tables shared `<data dir>/v1`)."""

from __future__ import annotations

import pytest

from streams.cli.devtools import segment_key
from streams.core.demo import DemoGenerator, dumps
from streams.kafka.broker import EmbeddedBroker
from tests.conftest import Cluster, get_json, metric, wait_until
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
        assert sorted(p.name for p in state.iterdir() if p.is_dir()) == sorted([live.kafka_app_id, rebuilt.kafka_app_id])
        # each app id's lock (a second worker of one app id on one data dir is refused: streams.cli.worker)
        assert sorted(p.name for p in state.iterdir() if p.is_file()) == sorted(
            [f".{live.kafka_app_id}.lock", f".{rebuilt.kafka_app_id}.lock"])
        assert "is locked" not in (tmp_path / "w.log").read_text()
    finally:
        rebuilt.stop()
        live.stop()


def test_an_unreadable_note_of_unsent_writes_recovers_every_store_instead_of_failing_every_start(broker, tmp_path):
    """A kill -9 between the note's open and its write (an outside chaos run with refreshes every 2 s)
    left an empty writes-in-flight.json, and every start after it exited 2, unable to read it: a crash
    loop. Notes are now written whole or not at all, and one that cannot be read costs a full recovery."""
    from streams.worker.local_state import IN_FLIGHT_FILE

    demo = DemoGenerator(users=20, artists=10, artworks=60, seed=5)
    events = list(demo.events(400))
    users = sorted({e["userId"] for e in events if e.get("userId")})[:5]
    cluster = Cluster(broker, tmp_path)
    try:
        w = cluster.start_worker("w")
        setup_catalog(cluster, w, demo)
        cluster.produce("events.segment", [(segment_key(e), dumps(e)) for e in events])
        wait_until(lambda: metric(w, "recstream_signals_applied_total") >= len(events), 90, what="the events applied")
        before = {u: get_json(w, f"/users/{u}/affinity")[1] for u in users}
        w.stop()
        tables = tmp_path / "w" / "state" / cluster.kafka_app_id / "v1" / "tables"
        (tables / IN_FLIGHT_FILE).write_text("")
        w = cluster.start_worker("w")
        logs = (tmp_path / "w.log").read_text()
        assert "writes-in-flight.json cannot be read: every local store is removed" in logs
        assert f"removed: {cluster.kafka_app_id}-affinity-changelog[0]" in logs
        assert {u: get_json(w, f"/users/{u}/affinity")[1] for u in users} == before  # from the changelogs
    finally:
        cluster.stop()
