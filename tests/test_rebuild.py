"""The sharded bulk rebuild: its plan, its shard processes, and (on the embedded broker) that
any number of shards writes the same state as one."""

import asyncio
import json
import math
import multiprocessing
import random
import time
from collections import Counter
from datetime import datetime, timezone

import msgspec
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from hypothesis import given
from hypothesis import strategies as st

from streams.cli.devtools import produce, segment_key
from streams.core.affinity import load
from streams.core.catalog import CatalogIndex, decode_artwork
from streams.core.config import core_objects
from streams.core.demo import DemoGenerator, dumps
from streams.core.pipeline import decode_recs
from streams.core.popularity import load_partial
from streams.core.records import SIGNAL_KINDS, Signal, Target
from streams.core.seen import unpacked
from streams.core.settings import Settings
from streams.rebuild.coordinator import bulk_rebuild, plan, shard_count
from streams.rebuild.processes import ShardFailed, ShardProcess
from streams.rebuild.shard import _read_spill, _Spills, catalog_index
from tests.conftest import consume_all

# topics with 0-8 partitions (numbered from 0, as Kafka's are) and their end offsets
topic_ends = st.fixed_dictionaries({t: st.lists(st.integers(0, 10_000), max_size=8)
                                    for t in ("events", "signals.view", "images")}).map(
    lambda topics: {TopicPartition(t, p): end for t, ends in topics.items() for p, end in enumerate(ends)})


@given(topic_ends, st.integers(1, 5), st.integers(1, 8), st.sampled_from([1, 500, 10**9]))
def test_the_plan_reads_every_offset_once_and_owns_every_state_partition_once(ends, shards, partitions, min_split):
    shares = plan(ends, shards, partitions, min_split)
    assert len(shares) == shards
    owned = [p for ps, _ in shares for p in ps]
    assert sorted(owned) == list(range(partitions))
    for tp, end in ends.items():  # the ranges of a partition tile [0, end) exactly
        ranges = sorted(r[tp] for _, r in shares if tp in r)
        assert ranges[0][0] == 0 and ranges[-1][1] == end
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert all(tp in ends for _, r in shares for tp in r)
    loads = [sum(e - s for s, e in r.values()) for _, r in shares]
    if min_split == 1 and shards > 1:  # splitting freely: no shard reads more than its share...
        heavy, light = shares[loads.index(max(loads))][1], shares[loads.index(min(loads))][1]
        # ...unless the lightest already reads a piece of every partition the heaviest reads
        assert max(loads) <= -(-sum(ends.values()) // shards) or set(heavy) <= set(light)
    if min_split == 10**9:  # no split: keyed input is read whole where its users are aggregated
        per_topic = Counter(tp.topic for tp in ends)
        for ps, r in shares:
            assert all(tp.partition in ps and r[tp] == (0, ends[tp]) for tp in r if per_topic[tp.topic] == partitions)


def test_the_plan_balances_records_and_keeps_keyed_input_with_its_state():
    keyed = {TopicPartition("events", p): n for p, n in enumerate([90, 40, 130, 40])}
    shares = plan({**keyed, TopicPartition("typed", 0): 30}, 2, 4, min_split=10**9)
    assert [ps for ps, _ in shares] == [[2, 3], [0, 1]]  # 130+40 / 90+40 records, then typed on the lighter
    assert TopicPartition("typed", 0) in shares[1][1]
    # with splits allowed, the heavy shard hands the tail of its largest partition to the other
    (own_a, reads_a), (own_b, reads_b) = plan({**keyed, TopicPartition("typed", 0): 30}, 2, 4, min_split=5)
    assert (own_a, own_b) == ([2, 3], [0, 1])
    assert reads_a[TopicPartition("events", 2)] == (0, 125) and reads_b[TopicPartition("events", 2)] == (125, 130)
    assert sum(e - s for s, e in reads_a.values()) == sum(e - s for s, e in reads_b.values()) == 165


def test_shards_are_one_per_cpu_at_most_one_per_partition(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert shard_count(Settings(partitions=4)) == 4
    assert shard_count(Settings(partitions=12)) == 8
    assert shard_count(Settings(partitions=12, rebuild_shards=3)) == 3
    assert shard_count(Settings(partitions=4, rebuild_shards=3), 6) == 4 and shard_count(Settings(), 0) == 1


def test_spills_come_back_in_the_order_written(tmp_path):
    sig = [Signal("view", f"u{i}", f"m{i}", float(i), (Target("a", "w"),)) for i in range(5)]
    spills = _Spills(str(tmp_path), shard=1)
    spills.write({2: sig[:2], 3: sig[2:3]})
    spills.write({2: sig[3:]})
    spills.close()
    assert [s for chunk in _read_spill(str(tmp_path), 2, 1) for s in chunk] == sig[:2] + sig[3:]
    assert list(_read_spill(str(tmp_path), 2, 1)) == []  # read once, then gone
    assert list(_read_spill(str(tmp_path), 2, 0)) == []  # nothing spilled by shard 0


def test_a_shard_rebuilds_the_catalog_index_the_parent_read():
    demo = DemoGenerator(users=50, artists=10, artworks=120, seed=2, end_time=datetime.now(timezone.utc))
    works = demo.artworks()
    parent, stored = CatalogIndex(), {}
    for work in works + [dict(works[3], published_at=None, for_sale=False), dict(works[4], title="renamed")]:
        parent.upsert(decode_artwork(dumps(work)))  # later records replace earlier ones
        stored[work["id"]] = dumps(work)
    parent.remove(works[5]["id"])
    del stored[works[5]["id"]]
    parent.curated = [works[0]["id"]]
    shard = catalog_index(list(stored.values()), parent.curated)
    assert shard.works == parent.works and shard.curated == parent.curated and shard.bootstrapped
    assert shard.latest(50) == parent.latest(50) and shard.eligible_count() == parent.eligible_count() < len(works)
    for artist in {w["artist_id"] for w in works}:
        assert shard.recent_by(artist) == parent.recent_by(artist)


def test_a_shard_process_reports_its_errors_and_its_death(tmp_path):
    settings = Settings(broker_url="kafka://127.0.0.1:1")  # never contacted
    _, parser, cfg = core_objects(settings)
    shard = ShardProcess(multiprocessing.get_context("spawn"), 0, 2, settings, cfg, parser, str(tmp_path))
    try:
        with pytest.raises(ShardFailed, match="(?s)failed in no_such_step.*AttributeError"):
            asyncio.run(shard.call("no_such_step"))
        assert not shard.proc.join(10) and shard.proc.exitcode == 0  # a failed shard ends itself
    finally:
        shard.close()
    shard = ShardProcess(multiprocessing.get_context("spawn"), 1, 2, settings, cfg, parser, str(tmp_path))
    try:
        shard.proc.kill()
        with pytest.raises(ShardFailed, match="died"):
            asyncio.run(asyncio.wait_for(shard.call("aggregate"), 30))
    finally:
        shard.close()


# --- on the embedded broker -------------------------------------------------------------

PARTITIONS = 4


def history(seed=5):
    """Demo events keyed by user, plus some of light users' events under other keys (they sit
    in another user's partition, so another shard reads them) and some redelivered under other
    keys (duplicates that two shards read)."""
    demo = DemoGenerator(users=300, artists=40, artworks=400, seed=seed, end_time=datetime.now(timezone.utc))
    events = list(demo.events(4000))
    per_user = Counter(segment_key(e) for e in events)
    light = [e for e in events if per_user[segment_key(e)] <= 10]  # far from every per-user bound
    rnd = random.Random(seed)
    misrouted = {id(e) for e in rnd.sample(light, 300)}
    records = [(f"elsewhere-{i}".encode() if id(e) in misrouted else segment_key(e), dumps(e))
               for i, e in enumerate(events)]
    records += [(f"again-{i}".encode(), dumps(e)) for i, e in enumerate(rnd.sample(light, 100))]
    return demo.artworks(), records


async def _create(bootstrap, names):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()


def rebuilt_state(broker, prefix, app_id, shards, min_split=10_000, **env):
    settings = Settings.from_env({"RECSTREAM_TOPIC_PREFIX": prefix, "RECSTREAM_APP_ID": app_id,
                                  "RECSTREAM_BROKER_URL": broker.url, "RECSTREAM_PARTITIONS": str(PARTITIONS), **env})
    _, parser, cfg = core_objects(settings)
    report = asyncio.run(bulk_rebuild(settings, cfg, parser, shards=shards, min_split=min_split))
    assert len(report.shard_seconds) == shards
    tables = {}
    for table in ("affinity", "recommendations", "fans", "popularity"):
        records = asyncio.run(consume_all(broker.bootstrap, f"{settings.kafka_app_id}-{table}-changelog", 1500, 60))
        tables[table] = {(r.partition, r.key): r.value for r in records}
    return report, tables


def assert_same_state(got, want):
    assert got["affinity"].keys() == want["affinity"].keys()
    for key, raw in want["affinity"].items():
        a, b = load(got["affinity"][key]), load(raw)
        assert a.scores.keys() == b.scores.keys(), key
        assert all(math.isclose(a.scores[k], b.scores[k], rel_tol=1e-12) for k in a.scores), key
        # arrival order differs between shard counts: lists that keep it are compared as multisets
        assert (a.ref, a.events, a.toggles) == (b.ref, b.events, b.toggles), key
        assert (sorted(unpacked(a.seen)), sorted(a.prices), sorted(a.purchased)) == \
            (sorted(unpacked(b.seen)), sorted(b.prices), sorted(b.purchased)), key
    assert got["recommendations"].keys() == want["recommendations"].keys()
    for key, raw in want["recommendations"].items():
        a, b = decode_recs(got["recommendations"][key]), decode_recs(raw)
        assert [i.artwork_id for i in a.items] == [i.artwork_id for i in b.items], key
        assert all(math.isclose(x.score, y.score, rel_tol=1e-9) for x, y in zip(a.items, b.items, strict=True))
    assert got["fans"].keys() == want["fans"].keys()
    for key, raw in want["fans"].items():
        assert sorted(msgspec.msgpack.decode(got["fans"][key])) == sorted(msgspec.msgpack.decode(raw)), key
    for key, raw in want["popularity"].items():
        a, b = load_partial(got["popularity"][key]), load_partial(raw)
        assert a.pairs == b.pairs and a.trending.scores.keys() == b.trending.scores.keys()


def test_any_number_of_shards_writes_the_state_one_shard_writes(broker):
    prefix = "shards."
    catalog, records = history()
    asyncio.run(_create(broker.bootstrap, [f"{prefix}events.segment", f"{prefix}catalog.artworks"]))
    asyncio.run(produce(broker.bootstrap, f"{prefix}catalog.artworks", [(a["id"].encode(), dumps(a)) for a in catalog]))
    asyncio.run(produce(broker.bootstrap, f"{prefix}events.segment", records))

    one, want = rebuilt_state(broker, prefix, "shards-one", 1)
    assert one.events == len(records)
    for n, min_split in ((2, 10_000), (2, 50), (3, 50)):  # 50: partitions split between shards
        report, got = rebuilt_state(broker, prefix, f"shards-{n}-{min_split}", n, min_split)
        assert (report.events, report.outcomes, report.users, report.written, report.forwarded) == \
            (one.events, one.outcomes, one.users, one.written, one.forwarded)
        assert_same_state(got, want)
    # the redelivered copies (read by other shards) were applied once: each user counts its
    # distinct messages (every demo event is a signal)
    assert one.events == sum(one.outcomes[k] for k in SIGNAL_KINDS)
    distinct = {}
    for _, value in records:
        event = json.loads(value)
        distinct.setdefault(event["userId"] or event["anonymousId"], set()).add(event["messageId"])
    assert {k.decode(): load(v).events for (_, k), v in want["affinity"].items()} == \
        {user: len(ids) for user, ids in distinct.items()}


def test_the_rebuild_judges_an_events_lead_from_when_it_reached_kafka(broker):
    """An event may run RECSTREAM_MAX_FUTURE_SKEW_S ahead of the clock: judged by the clock when read, a rebuild
    (or a catch-up) later than the lead applied an event the live worker had dead-lettered (an outside check)."""
    prefix = "lead."
    asyncio.run(_create(broker.bootstrap, [f"{prefix}events.segment", f"{prefix}catalog.artworks"]))
    sent = time.time()

    def follow(user, t):
        stamp = datetime.fromtimestamp(t, timezone.utc).isoformat()
        return user.encode(), dumps({"type": "track", "event": "followedArtist", "userId": user, "messageId": user,
                                     "timestamp": stamp, "properties": {"owner_id": "a1"}})
    asyncio.run(produce(broker.bootstrap, f"{prefix}events.segment", [follow("early", sent + 4), follow("timely", sent)]))
    time.sleep(max(0.0, sent + 3 - time.time()))  # past the lead the early one had when it came: 4 s > 2 s
    report, tables = rebuilt_state(broker, prefix, "lead", 1, RECSTREAM_MAX_FUTURE_SKEW_S="2")
    assert {key for _, key in tables["affinity"]} == {b"timely"}
    assert report.outcomes["rejected"] == 1


def test_the_rebuild_answers_no_image_request_again(broker):
    """Each request was answered when it came: a bulk rebuild forwarded every past one, and the new app's workers
    answered them all again on the live images.replies (an outside check); image events still go on."""
    from streams.core.ingest import IMAGES
    from streams.core.records import decode_image_keyed

    prefix = "requests."
    asyncio.run(_create(broker.bootstrap, [f"{prefix}{t}" for t in ("events.segment", "catalog.artworks",
                                                                      "images.requests")]))
    stamp = datetime.now(timezone.utc).isoformat()
    impression = dumps({"type": "track", "event": "Image Impression", "userId": "c1", "messageId": "i-1",
                        "timestamp": stamp, "properties": {"merchant_id": "m1", "image_id": "i1"}})
    asyncio.run(produce(broker.bootstrap, f"{prefix}events.segment", [(b"c1", impression)]))
    asyncio.run(produce(broker.bootstrap, f"{prefix}images.requests", [
        (b"c1", dumps({"request_id": "r1", "consumer_id": "c1", "merchant_ids": ["m1"]}))]))
    report, _ = rebuilt_state(broker, prefix, "requests", 1)
    keyed = Settings.from_env({"RECSTREAM_TOPIC_PREFIX": prefix, "RECSTREAM_APP_ID": "requests"}).internal_topic(IMAGES)
    forwarded = asyncio.run(consume_all(broker.bootstrap, keyed, 1500, 60))
    assert [type(decode_image_keyed(r.value)).__name__ for r in forwarded] == ["ImageEvent"], forwarded
    assert report.outcomes["image_request"] == 1


def test_the_rebuild_reads_the_catalog_as_the_agent_does(broker):
    """A record keyed by another id than its own, and a tombstone whose key is no UTF-8 id, are
    rejected with the agent's reasons (that tombstone stopped the rebuild); a keyless work is
    stored by its id, as the agent stores it. Fuzzing: a 6 KB work nested 1,000 deep stopped the
    rebuild ("the input nests too deep to read") where the agent dead-letters it, and curated lists
    keyed other than "curated" were taken (the last one read was in effect)."""
    from streams.rebuild.catalog import read_catalog

    prefix = "catalog-keys."
    settings = Settings.from_env({"RECSTREAM_TOPIC_PREFIX": prefix, "RECSTREAM_BROKER_URL": broker.url,
                                  "RECSTREAM_PARTITIONS": str(PARTITIONS)})
    asyncio.run(_create(broker.bootstrap, [f"{prefix}catalog.artworks", f"{prefix}catalog.curated"]))
    work = dumps({"id": "w1", "artist_id": "a1"})
    asyncio.run(produce(broker.bootstrap, f"{prefix}catalog.artworks", [
        (b"w1", work), (b"w2", dumps({"id": "w2", "artist_id": "a2"})),
        (b"w-decoy", dumps({"id": "w1", "artist_id": "a9"})), (b"\xff", None), (None, dumps({"id": "w3", "artist_id": "a3"})),
        (b"w-deep", b'{"a":' * 1000 + b"1" + b"}" * 1000),
    ]))
    curated = dumps({"artwork_ids": ["w2", "w1"]})
    asyncio.run(produce(broker.bootstrap, f"{prefix}catalog.curated", [
        (b"curated", curated), (b"weekly", dumps({"artwork_ids": ["w3"]})), (None, dumps({"artwork_ids": ["w3"]}))]))
    snapshot = asyncio.run(read_catalog(settings, settings.aiokafka_kwargs(), 1.0))
    assert sorted((reason, r.key or b"") for r, reason, _ in snapshot.rejected) == [
        ("invalid_artwork", b"w-decoy"), ("invalid_artwork", b"w-deep"), ("invalid_curated", b""),
        ("invalid_curated", b"weekly"), ("invalid_key", b"\xff")]
    assert {detail for r, _, detail in snapshot.rejected if r.key == b"w-deep"} == {"JSON nested too deep"}
    assert snapshot.index.curated == ["w2", "w1"] and [v for _, _, v in snapshot.rows["editorial"]] == [curated]
    assert {key: raw for _, key, raw in snapshot.rows["artworks"]} == {
        b"w1": work, b"w2": dumps({"id": "w2", "artist_id": "a2"}), b"w3": dumps({"id": "w3", "artist_id": "a3"})}
    assert snapshot.index.get("w1").artist_id == "a1"
