"""Lists stay fresh without the user's own events, and the same input gives the same lists
(issue 14), on real workers and the embedded broker."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest

from streams.core.demo import dumps
from tests.conftest import Cluster, get_json, metric, wait_until

pytestmark = pytest.mark.integration

POPULAR_ONLY = json.dumps({"B": {"share": 1.0}})  # the default personal ranking for everyone


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def catalog_records(now: datetime):
    works = [("wa1", "a"), ("wa2", "a")] + [(f"wb{i}", "b") for i in range(8)] + [(f"wc{i}", "c") for i in range(8)]
    return [(wid.encode(), dumps({"id": wid, "artist_id": artist, "published_at": iso(now - timedelta(days=2))}))
            for wid, artist in works]


def view(user: str, work: str, i: int, t: datetime) -> tuple[bytes, bytes]:
    return user.encode(), dumps({"type": "track", "event": "Product Viewed", "userId": user, "messageId": f"{user}-{i}",
                                 "timestamp": iso(t), "properties": {"product_id": work}})


def listed(worker, user: str) -> list[tuple[str, str]]:
    status, body = get_json(worker, f"/recommendations/{user}")
    assert status == 200
    return [(i["artwork_id"], i["source"]) for i in body["items"]]


def test_an_idle_users_list_follows_trending_without_their_events(broker, tmp_path):
    cluster = Cluster(broker, tmp_path, env={"RECSTREAM_VARIANTS": POPULAR_ONLY, "RECSTREAM_REFRESH_INTERVAL_S": "2"})
    try:
        w = cluster.start_worker()
        now = datetime.now(timezone.utc)
        cluster.produce("catalog.artworks", catalog_records(now))
        wait_until(lambda: metric(w, "recstream_catalog_records_total") >= 18, 60, what="catalog")
        cluster.produce("events.segment", [view("idle", "wa1", 0, now - timedelta(hours=1))])
        wait_until(lambda: ("wa1", "affinity") in listed(w, "idle"), 60, what="the idle user's first list")
        assert not any(work == "wc5" for work, _ in listed(w, "idle"))
        # other users make wc5 the week's best seller; the idle user sends nothing
        crowd = [view(f"fan{i}", "wc5", i, now - timedelta(minutes=30)) for i in range(60)]
        cluster.produce("events.segment", crowd)
        wait_until(lambda: ("wc5", "trending") in listed(w, "idle"), 60, what="a refresh brought wc5 in")
        # counted once the refresh's acks are in: its list is readable from the store before that
        wait_until(lambda: metric(w, "recstream_lists_changed_by_refresh_total") >= 1, 30, what="the refresh counted")
        assert get_json(w, "/users/idle/affinity")[1]["events"] == 1  # no event of theirs was needed
    finally:
        cluster.stop()


def test_the_same_input_and_clock_give_the_same_lists(broker, tmp_path):
    """Two deployments, one input, the event clock: once both are idle and a refresh pass has
    run, every user's list is byte-identical (lists built mid-stream saw trending shares merged
    at timing-dependent moments; the refresh rebuilds them from the settled state). The first
    is read before any event: its first popularity view is then dated by the wall clock, after
    the replayed history, and must still give way to the views of that history."""
    now = datetime.now(timezone.utc) - timedelta(days=3)
    events = [view(f"u{i % 40}", f"w{'abc'[i % 3]}{i % 7 if i % 3 else 1}", i, now + timedelta(seconds=i))
              for i in range(1500)]
    lists = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        cluster = Cluster(broker, tmp_path / name, env={"RECSTREAM_VARIANTS": POPULAR_ONLY, "RECSTREAM_CLOCK": "event",
                                                        "RECSTREAM_REFRESH_INTERVAL_S": "2"})
        try:
            w = cluster.start_worker(name)
            cluster.produce("catalog.artworks", catalog_records(now))
            wait_until(lambda w=w: metric(w, "recstream_catalog_records_total") >= 18, 60, what="catalog")
            if name == "one":
                assert w.get("/recommendations/a-reader-before-the-replay")[0] == 200  # cold start: the first view
            cluster.produce("events.segment", events)
            wait_until(lambda w=w: metric(w, "recstream_signals_applied_total") >= len(events), 120, what="events")
            settled = metric(w, "recstream_lists_refreshed_total")
            # three passes: one may have begun before the last batch, and the next, rebuilding the view then
            # gone stale, still used the old one; the third sees the settled history
            wait_until(lambda w=w, settled=settled: metric(w, "recstream_lists_refreshed_total") >= settled + 120, 60,
                       what="three refresh passes after the input settled")
            lists.append({f"u{i}": w.get(f"/recommendations/u{i}")[1] for i in range(40)})
        finally:
            cluster.stop()
    one, two = ({u: json.loads(v) for u, v in run.items()} for run in lists)
    for user in one:
        for run in (one, two):
            run[user].pop("generated_at")  # when the refresh ran: event clock, same for both
            run[user].pop("trigger")
    assert one == two
    # the history's trending is in them (a view frozen before the replay listed every work at the floor)
    assert all(any(item["score"] > 0.1 for item in run["u0"]["items"]) for run in (one, two))


def test_a_refresh_killed_between_its_local_write_and_its_send_leaves_no_list_the_changelog_lacks(broker, tmp_path):
    """A refresh batch has no input behind it. Killed (as kill -9) after its RocksDB write and before
    its changelog acks, its lists were in the local store alone, and a restart in place served them
    for good: the next refresh, from the same state, found them unchanged and wrote nothing, so the
    changelog (what any other worker recovers) never got them. Its stores are now noted as in flight
    until the acks, and the next start recovers them from their changelogs."""
    from streams.cli.devtools import WorkerProcess
    from streams.worker.failpoints import EXIT_CODE
    from tests.test_integration_failover import consume_all_raw

    # one partition: every list a refresh changes is in the batch the kill lands in; no refresh until the input settled
    cluster = Cluster(broker, tmp_path, env={"RECSTREAM_VARIANTS": POPULAR_ONLY, "RECSTREAM_CLOCK": "event",
                                             "RECSTREAM_REFRESH_INTERVAL_S": "0", "RECSTREAM_PARTITIONS": "1"})
    try:
        w = cluster.start_worker("w")
        now = datetime.now(timezone.utc)
        cluster.produce("catalog.artworks", catalog_records(now))
        wait_until(lambda: metric(w, "recstream_catalog_records_total") >= 18, 60, what="catalog")
        cluster.produce("events.segment", [view("idle", "wa1", 0, now - timedelta(hours=1))])
        wait_until(lambda: ("wa1", "affinity") in listed(w, "idle"), 60, what="the idle user's first list")
        # the crowd makes wc5 trending: a refresh would change the idle user's list (and the crowd's)
        cluster.produce("events.segment", [view(f"fan{i}", "wc5", i, now - timedelta(minutes=30)) for i in range(60)])
        wait_until(lambda: metric(w, "recstream_signals_applied_total") >= 61, 60, what="the crowd applied")
        w.stop()  # graceful: its input committed, so the next starts apply nothing and begin from one state
        assert ("wc5", "trending") not in listed_from(cluster, "idle")

        cluster.env["RECSTREAM_REFRESH_INTERVAL_S"] = "2"
        crashing = WorkerProcess(cluster.broker.url, str(tmp_path / "w" / "state"), log_path=tmp_path / "crash.log",
                                 env={**cluster.env, "RECSTREAM_FAILPOINT": "unreplayable_batch_stored"}).start()
        cluster.workers.append(crashing)
        assert crashing.proc.wait(timeout=90) == EXIT_CODE  # the first refresh that changed lists stored them

        w = cluster.start_worker("w")  # in place: the store holds the refreshed lists, never sent
        wait_until(lambda: ("wc5", "trending") in listed(w, "idle"), 60, what="wc5 in the idle user's list")
        passes = metric(w, "recstream_lists_refreshed_total")
        wait_until(lambda: metric(w, "recstream_lists_refreshed_total") >= passes + 2 * 61, 60, what="two refresh passes")
        assert ("wc5", "trending") in listed_from(cluster, "idle")
        latest = {r.key.decode(): r.value
                  for r in asyncio.run(consume_all_raw(cluster, f"{cluster.kafka_app_id}-recommendations-changelog"))}
        assert len(latest) == 61
        wrong = [user for user in sorted(latest) if w.get(f"/recommendations/{user}")[1] != latest[user]]
        assert wrong == [], "lists served that the changelog never got"
    finally:
        cluster.stop()


def listed_from(cluster, user: str) -> list[tuple[str, str]]:
    """`user`'s latest list in the recommendations changelog (what another worker would recover)."""
    from tests.test_integration_failover import consume_all_raw

    records = asyncio.run(consume_all_raw(cluster, f"{cluster.kafka_app_id}-recommendations-changelog"))
    value = [r.value for r in records if r.key == user.encode()][-1]
    return [(i["artwork_id"], i["source"]) for i in json.loads(value)["items"]]


def test_the_event_clock_resumes_at_the_states_newest_event_after_a_kill_9(broker, tmp_path):
    """With the event clock, now is the newest event time seen, and a restarted worker had seen none:
    until the next event it used the wall clock, years after a replayed history, and its refresh
    rebuilt lists unlike the ones it served before (an outside check: 15 of 200 after a kill -9).
    It now resumes at the newest event time its popularity shares counted. And once the input ended,
    the clock stood still, so the trending view built as the last batch began (without its counts)
    stayed for good: every list here lacked trending works; views now also age on the wall clock."""
    then = datetime.now(timezone.utc) - timedelta(days=300)
    events = [view(f"u{i % 30}", f"w{'abc'[i % 3]}{i % 7 if i % 3 else 1}", i, then + timedelta(minutes=i))
              for i in range(600)]
    cluster = Cluster(broker, tmp_path, env={"RECSTREAM_VARIANTS": POPULAR_ONLY, "RECSTREAM_CLOCK": "event",
                                             "RECSTREAM_REFRESH_INTERVAL_S": "1"})
    try:
        w = cluster.start_worker("w")
        cluster.produce("catalog.artworks", catalog_records(then))
        wait_until(lambda: metric(w, "recstream_catalog_records_total") >= 18, 60, what="catalog")
        cluster.produce("events.segment", events)
        wait_until(lambda: metric(w, "recstream_signals_applied_total") >= len(events), 120, what="events")

        def settled_lists(w):
            # three passes (test_the_same_input_and_clock_give_the_same_lists): the third sees the settled view
            passes = metric(w, "recstream_lists_refreshed_total")
            wait_until(lambda: metric(w, "recstream_lists_refreshed_total") >= passes + 90, 60, what="three passes")
            return {f"u{i}": json.loads(w.get(f"/recommendations/u{i}")[1]) for i in range(30)}

        before = settled_lists(w)
        assert all(any(item["source"] == "trending" for item in body["items"]) for body in before.values())
        w.proc.kill()
        w.proc.wait(30)
        w = cluster.start_worker("w")
        after = settled_lists(w)
        assert metric(w, "recstream_lists_changed_by_refresh_total") == 0
        for body in (*before.values(), *after.values()):
            body.pop("trigger")  # the input replayed after the kill rebuilt some lists: their trigger is an event
        assert after == before
        assert max(body["generated_at"] for body in after.values()) < (then + timedelta(days=1)).timestamp()
    finally:
        cluster.stop()
