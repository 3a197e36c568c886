"""Operations on the embedded broker: replay, rebuild, emit-all, metrics, auth."""

from __future__ import annotations

import gzip
import json
import math
import random
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone

import pytest

from streams.core.affinity import AffinityModel, Profile
from streams.core.catalog import CatalogIndex
from streams.core.demo import DemoGenerator, dumps
from streams.core.events import parse_segment
from streams.core.experiments import Variant
from streams.core.popularity import PopularityView
from streams.core.properties import resolve_artists
from streams.core.recommend import build
from streams.core.records import Artwork, Signal
from streams.core.settings import Settings
from tests.conftest import get_json, metric, wait_caught_up, wait_until

pytestmark = pytest.mark.integration

N_EVENTS = 20000
MODEL = AffinityModel(weights=Settings.from_env({}).weights)
ONLY_A = json.dumps({"A": {"share": 1.0}})  # strict order: personal picks do not depend on trending


def run_cli(cluster, *args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**__import__("os").environ, **cluster.env, "RECSTREAM_BROKER_URL": cluster.broker.url,
                               **(env or {})})


@pytest.fixture(scope="module")
def replayed(module_cluster, tmp_path_factory):
    module_cluster.env["RECSTREAM_VARIANTS"] = ONLY_A
    worker = module_cluster.start_worker("live")
    demo = DemoGenerator(users=400, artists=60, artworks=900, seed=23, end_time=datetime.now(timezone.utc))
    catalog = demo.artworks()
    module_cluster.produce("catalog.artworks", [(a["id"].encode(), dumps(a)) for a in catalog])
    wait_until(lambda: metric(worker, "recstream_catalog_records_total") >= len(catalog), 60, what="catalog")

    events = list(demo.events(N_EVENTS))
    path = tmp_path_factory.mktemp("replay") / "events.jsonl.gz"
    lines = [dumps(e) for e in events] + [b"{broken", b'{"type": "track", "event": "followedArtist"}', b'{"kind": "nope"}']
    random.Random(1).shuffle(lines)
    with gzip.open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    result = run_cli(module_cluster, "replay", str(path))
    assert result.returncode == 0, result.stderr
    artist_of = {a["id"]: a["artist_id"] for a in catalog}
    signals = [resolve_artists(parse_segment(dumps(e)), artist_of) for e in events]
    assert all(isinstance(s, Signal) for s in signals)
    wait_until(lambda: metric(worker, "recstream_signals_applied_total") >= len(signals), 240, what="replay processed")
    return worker, catalog, signals, result


def reference_profiles(signals):
    profiles: dict[str, Profile] = {}
    for s in signals:
        MODEL.learn_one(profiles.setdefault(s.user_id, Profile()), s)
    return profiles


def assert_same_affinity(worker, profiles, users):
    for user in users:
        status, body = get_json(worker, f"/users/{user}/affinity?n=1000")
        assert status == 200, user
        got = {a["artist_id"]: a["score"] for a in body["artists"]}
        want = {a: s for a, s in MODEL.scores(profiles[user]).items() if s > 0}
        assert got.keys() == want.keys(), user
        assert all(math.isclose(got[a], want[a], rel_tol=1e-9) for a in want), user


def test_replay_summary_and_state_match_the_reference(replayed):
    worker, catalog, signals, result = replayed
    assert f"sent {N_EVENTS}, rejected 3" in result.stdout
    assert "rejected invalid_json: 1" in result.stdout and "rejected unknown_record: 1" in result.stdout
    assert "rejected missing_user: 1" in result.stdout
    assert "replay:" in result.stderr  # progress output

    profiles = reference_profiles(signals)
    users = sorted(profiles)
    sample = users[:5] + random.Random(2).sample(users, 40)
    assert_same_affinity(worker, profiles, sample)

    # recommendations: the personal (affinity) picks equal the pure builder's on the same state
    index = CatalogIndex()
    for a in catalog:
        index.upsert(Artwork(**{**a, "published_at": datetime.fromisoformat(a["published_at"].replace("Z", "+00:00"))}))
    def personal_picks_match(user) -> bool:
        status, recs = get_json(worker, f"/recommendations/{user}")
        assert status == 200 and recs["variant"] == "A"
        p = profiles[user]
        want = build(MODEL.top(p, 20), p.purchased, p.prices, Variant("A"), index, PopularityView(), recs["generated_at"])
        personal = [i["artwork_id"] for i in recs["items"] if i["source"] == "affinity"]
        return personal == [i.artwork_id for i in want if i.source == "affinity"]

    for user in sample:  # a list held by the list window (RECSTREAM_LIST_WINDOW_MS) is sent when it ends
        wait_until(lambda: personal_picks_match(user), 10, what=f"{user}'s list")  # noqa: B023


def test_metrics_count_exactly_what_went_in(replayed):
    worker, _, signals, _ = replayed
    by_kind = Counter(s.kind for s in signals)
    for kind, count in by_kind.items():
        assert metric(worker, "recstream_events_total", kind=kind) == count, kind
    assert metric(worker, "recstream_signals_applied_total") == len(signals)
    assert metric(worker, "recstream_duplicates_total") == 0
    users_with_lists = metric(worker, "recstream_records_sent_total", topic="recommendations")
    assert users_with_lists >= len({s.user_id for s in signals})
    assert metric(worker, "recstream_recompute_seconds_count") > 0
    assert metric(worker, "recstream_input_age_seconds_count") >= len(signals)  # every input record read, timed
    wait_caught_up(worker, 60)
    status, body = worker.get("/metrics")
    assert b'recstream_recompute_seconds_bucket{le="+Inf"}' in body and b"recstream_consumer_lag{topic=" in body
    assert b'recstream_event_loop{loop="uvloop"} 1' in body  # RECSTREAM_EVENT_LOOP's default


def test_rebuild_equals_live(module_cluster, replayed):
    live, _, signals, _ = replayed
    published = {t: len(module_cluster.consume_all(t)) for t in ("recommendations", "affinity.updates")}
    module_cluster.env.update({"RECSTREAM_APP_ID": module_cluster.env["RECSTREAM_APP_ID"] + "-v2", "RECSTREAM_REBUILD": "1"})
    rebuilt = module_cluster.start_worker("rebuilt")
    wait_until(lambda: metric(rebuilt, "recstream_signals_applied_total") >= len(signals), 240, what="rebuild")
    profiles = reference_profiles(signals)
    sample = random.Random(3).sample(sorted(profiles), 60)
    assert_same_affinity(rebuilt, profiles, sample)
    for user in sample[:20]:  # rebuilt == live, to float rounding (events arrived in another order)
        a = get_json(rebuilt, f"/users/{user}/affinity?n=1000")[1]["artists"]
        b = get_json(live, f"/users/{user}/affinity?n=1000")[1]["artists"]
        assert [x["artist_id"] for x in a] == [x["artist_id"] for x in b]
        assert all(math.isclose(x["score"], y["score"], rel_tol=1e-12) for x, y in zip(a, b, strict=True))
    log = wait_until(lambda: (lambda text: "caught up, serving live" in text and text)(
        (module_cluster.root / "rebuilt.log").read_text()), 30, what="rebuild progress line")
    assert "rebuild:" in log and "records behind" in log
    # an outside check: the rebuild republished every user's history, partial states included, to the topics the
    # live workers' clients read; it holds them back until it caught up, as the bulk phase sends none
    assert {t: len(module_cluster.consume_all(t)) for t in published} == published
    assert metric(rebuilt, "recstream_records_held_total", topic="recommendations") >= len(sample)
    assert metric(rebuilt, "recstream_records_sent_total", topic="recommendations") == 0
    # an outside check: the line came again every 5 s for as long as the worker ran, and a second per-event
    # rebuild into this app id (its workers ran) resumed its state instead of being refused, as --bulk is
    rebuilt_id = module_cluster.env["RECSTREAM_APP_ID"]
    again = run_cli(module_cluster, "rebuild", "--app-id", rebuilt_id,
                    env={"RECSTREAM_APP_ID": rebuilt_id.removesuffix("-v2"), "RECSTREAM_REBUILD": "0"})
    assert again.returncode == 2 and f"app id {rebuilt_id!r} already has committed offsets" in again.stderr, again
    time.sleep(6)  # more than a progress period
    assert (module_cluster.root / "rebuilt.log").read_text().count("caught up, serving live") == 1


def test_emit_all_republishes_every_users_list(module_cluster, replayed):
    live, _, signals, _ = replayed
    env = {"RECSTREAM_APP_ID": module_cluster.env["RECSTREAM_APP_ID"].removesuffix("-v2")}
    before = len(module_cluster.consume_all("recommendations"))
    result = run_cli(module_cluster, "emit-all", env=env)
    assert result.returncode == 0, result.stderr
    users = {s.user_id for s in signals}
    assert f"emitted {len(users)} recommendation lists" in result.stdout
    after = module_cluster.consume_all("recommendations")
    assert len(after) >= before + len(users)
    some = sorted(users)[0]
    latest = [json.loads(r.value) for r in after if r.key == some.encode()][-1]
    assert latest["user_id"] == some and latest["items"]
    # a users file with a byte-order mark keeps its first id, and ids without a list are counted
    listed = module_cluster.root / "emit-users.txt"
    listed.write_text(f"{some}\nnobody-at-all\n", encoding="utf-8-sig")
    result = run_cli(module_cluster, "emit-all", "--users", str(listed), env=env)
    assert result.returncode == 0 and "emitted 1 recommendation lists" in result.stdout, result.stdout + result.stderr
    assert "1 of the listed users have no list" in result.stderr, result.stderr


def test_bulk_rebuild_writes_the_state_and_hands_over_to_live_agents(module_cluster, replayed):
    live, catalog, signals, _ = replayed
    base = module_cluster.env["RECSTREAM_APP_ID"].removesuffix("-v2")
    new_id = f"{base}-bulk"
    result = run_cli(module_cluster, "rebuild", "--app-id", new_id, "--bulk", "--no-worker",
                     env={"RECSTREAM_APP_ID": base, "RECSTREAM_REBUILD": "0"})
    assert result.returncode == 0, result.stderr
    users = {s.user_id for s in signals}
    assert f"rebuilt {N_EVENTS:,} events into {len(users):,} users" in result.stdout, result.stdout
    assert f"wrote affinity: {len(users):,}" in result.stdout and "rebuild (bulk):" in result.stderr
    assert f"wrote artworks: {len(catalog):,}" in result.stdout

    module_cluster.env.update({"RECSTREAM_APP_ID": new_id, "RECSTREAM_REBUILD": "0"})
    worker = module_cluster.start_worker("bulk")
    profiles = reference_profiles(signals)
    sample = random.Random(4).sample(sorted(profiles), 60)
    wait_until(lambda: get_json(worker, f"/users/{sample[0]}/affinity")[0] == 200, 120, what="tables recovered")
    assert_same_affinity(worker, profiles, sample)
    # the catalog was handed over too: the worker recovered it rather than replaying it (which
    # would refresh every fan's list), so the lists are still the bulk-built ones
    assert metric(worker, "recstream_catalog_records_total") == 0
    for user in sample[:10]:
        status, recs = get_json(worker, f"/recommendations/{user}")
        assert status == 200 and recs["trigger"] == "rebuild" and recs["items"], user

    # hand-over: the committed offsets mean nothing is applied twice, and new events are applied live
    demo = DemoGenerator(users=400, artists=60, artworks=900, seed=23, end_time=datetime.now(timezone.utc))
    more = [dict(e, messageId=f"after-{i}") for i, e in enumerate(demo.events(300))]
    module_cluster.produce("events.segment", [((e["userId"] or e["anonymousId"]).encode(), dumps(e)) for e in more])
    artist_of = {a["id"]: a["artist_id"] for a in catalog}
    wait_until(lambda: metric(worker, "recstream_signals_applied_total") >= len(more), 120, what="live events applied")
    assert metric(worker, "recstream_signals_applied_total") == len(more)
    assert metric(worker, "recstream_duplicates_total") == 0
    after = reference_profiles(signals + [resolve_artists(parse_segment(dumps(e)), artist_of) for e in more])
    touched = sorted({e["userId"] or e["anonymousId"] for e in more})
    assert_same_affinity(worker, after, touched[:40])

    # the new app id is now in use: a second bulk rebuild into it is refused, nothing written
    again = run_cli(module_cluster, "rebuild", "--app-id", new_id, "--bulk", "--no-worker",
                    env={"RECSTREAM_APP_ID": base})
    assert again.returncode == 2 and "already has committed offsets" in again.stderr, again.stderr


def test_a_bulk_rebuild_of_a_prefix_with_no_topics_yet_rebuilds_nothing_cleanly(broker):
    """Fuzzing: a fresh deployment's first rebuild ended in a CancelledError traceback (aiokafka's
    coordinator, stopping a consumer that found no topics), then in ValueError({}) committing nothing."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    env.update(RECSTREAM_BROKER_URL=broker.url, RECSTREAM_TOPIC_PREFIX="never-used.", RECSTREAM_APP_ID="never-used")
    result = subprocess.run([sys.executable, "-m", "streams.cli", "rebuild", "--app-id", "never-used-2", "--bulk",
                             "--no-worker"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "rebuilt 0 events into 0 users" in result.stdout and "Traceback" not in result.stderr


def test_a_worker_creates_the_catalog_topics_with_its_partitions_and_refuses_mismatched_ones(broker, tmp_path):
    """The catalog agents write tables of RECSTREAM_PARTITIONS partitions, and faust stops an agent
    whose source topic differs (PartitionsMismatch). A fresh deployment at 8 partitions had its
    catalog topics auto-created at the broker's default (4) by faust's subscription: the catalog
    never loaded while /health said ok (a fuzzing helper). The worker now creates every topic it
    uses first, and a catalog topic that exists with another count stops it with the reason."""
    import asyncio

    from streams.cli.devtools import WorkerProcess
    from streams.kafka.admin import COMPACT, ensure_topics, topic_partitions
    from tests.conftest import Cluster

    (tmp_path / "eight").mkdir()
    eight = Cluster(broker, tmp_path / "eight", env={"RECSTREAM_PARTITIONS": "8"})
    try:
        worker = eight.start_worker("w")
        # every topic the worker uses exists from its start, outputs too (asked for with 1 partition: a
        # missing one would be created so), not declared at a first send that can race a reader's metadata
        outputs = [eight.topic(t) for t in ("recommendations", "affinity.updates", "images.chosen", "deadletter")]
        client = {"bootstrap_servers": broker.bootstrap}
        asyncio.run(ensure_topics(client, {t: (1, {}) for t in outputs}))
        assert asyncio.run(topic_partitions(client, outputs)) == {t: 8 for t in outputs}
        works = DemoGenerator(users=10, artists=5, artworks=40, seed=3).artworks()
        eight.produce("catalog.artworks", [(w["id"].encode(), dumps(w)) for w in works])
        wait_until(lambda: metric(worker, "recstream_catalog_records_total") >= len(works), 60, what="the catalog")
    finally:
        eight.stop()

    clash = Cluster(broker, tmp_path / "clash")
    asyncio.run(ensure_topics({"bootstrap_servers": broker.bootstrap},
                              {clash.topic("catalog.curated"): (3, COMPACT)}))  # the worker wants 4
    worker = WorkerProcess(broker.url, str(tmp_path / "clash" / "state"), env=clash.env,
                           log_path=tmp_path / "clash.log").start()
    try:
        assert worker.proc.wait(90) != 0
    finally:
        worker.kill()
    log = (tmp_path / "clash.log").read_text()
    assert f"RECSTREAM_PARTITIONS is 4, but {clash.topic('catalog.curated')} has 3" in log, log[-2000:]
