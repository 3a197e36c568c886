"""The per-partition pipeline driven with plain dicts as its state (no faust, no Kafka)."""

import json
from datetime import datetime, timezone

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from streams.core.affinity import AffinityModel, Profile, dump, load, message_digest
from streams.core.catalog import CatalogIndex
from streams.core.experiments import Variant
from streams.core.pipeline import PartitionBatch, PipelineConfig, decode_recs, fans_key
from streams.core.popularity import Partial, PopularityView
from streams.core.records import (
    Artwork,
    Identity,
    Merge,
    Refresh,
    Signal,
    Target,
    decode_keyed,
    encode,
)
from streams.core.seen import unpacked

NOW = datetime(2026, 11, 20, tzinfo=timezone.utc).timestamp()
DAY = 86400.0
CFG = PipelineConfig(model=AffinityModel(), variants={"A": Variant("A", share=1.0)})


def art(wid, artist, days_ago=1.0, **kw):
    return Artwork(wid, artist, published_at=datetime.fromtimestamp(NOW - days_ago * DAY, tz=timezone.utc), **kw)


class World:
    def __init__(self, *works, curated=()):
        self.profiles, self.recs, self.fans, self.partial = {}, {}, {}, Partial()
        self.catalog = CatalogIndex()
        for w in works:
            self.catalog.upsert(w)
        self.catalog.curated = list(curated)

    def run(self, records, partition=0, now=NOW):
        batch = PartitionBatch(CFG, partition, self.profiles, self.recs, self.fans, self.partial,
                               self.catalog, PopularityView([self.partial]), now)
        out = batch.run(records)
        return {topic: [o for o in out if o.topic == topic] for topic in ("affinity.updates", "recommendations", "signals.keyed")}


def fans_of(world, artist, partition=0):
    return msgspec.msgpack.decode(world.fans.get(fans_key(artist, partition), b"\x90"))


def follow(user, artist, mid, t=NOW - 3600, kind="follow"):
    return Signal(kind, user, mid, t, (Target(artist),))


WORKS = [art("a1-new", "a", 1), art("a1-old", "a", 3), art("b1", "b", 2)] + [art(f"x{i}", "x", 10 + i) for i in range(6)]


def test_two_follows_give_a_personal_list_with_sources():
    world = World(*WORKS)
    out = world.run([follow("u", "a", "m1")])
    recs = json.loads(out["recommendations"][0].value)
    assert recs["user_id"] == "u" and recs["variant"] == "A" and recs["trigger"] == "m1"
    assert recs["model_version"] == CFG.model_version and recs["generated_at"] == NOW
    assert [(i["artwork_id"], i["source"]) for i in recs["items"][:2]] == [("a1-new", "affinity"), ("a1-old", "affinity")]
    assert len(recs["items"]) == 6
    assert decode_recs(world.recs["u"]).items[0].artwork_id == "a1-new"
    out = world.run([follow("u", "b", "m2", t=NOW - 60)])
    items = json.loads(out["recommendations"][0].value)["items"]
    assert {i["artwork_id"] for i in items if i["source"] == "affinity"} == {"a1-new", "a1-old", "b1"}


def test_burst_for_one_user_coalesces_into_one_record_per_batch():
    world = World(*WORKS)
    out = world.run([follow("u", "a", f"m{i}", t=NOW - 100 + i, kind="follow" if i % 2 else "unfollow")
                     for i in range(10)] + [follow("u", "b", "mb")])
    assert len(out["recommendations"]) == 1 and len(out["affinity.updates"]) == 1


def test_a_messageid_repeated_within_a_batch_counts_once_and_a_merge_resets_the_users_index():
    world = World(*WORKS)
    batch = PartitionBatch(CFG, 0, world.profiles, world.recs, world.fans, world.partial, world.catalog,
                           PopularityView([world.partial]), NOW)
    other = Profile()
    CFG.model.learn_one(other, follow("anon", "b", "m9"))
    # m1 twice; after the merge, m9 is known from the other profile
    batch.run([follow("u", "a", "m1"), follow("u", "a", "m2", kind="view"), follow("u", "a", "m1"),
               Merge("u", "anon", "merge-1", dump(other)), follow("u", "b", "m9")])
    assert (batch.applied, batch.duplicates) == (2, 2)
    assert set(unpacked(load(world.profiles["u"]).seen)) == {message_digest(m) for m in ("m1", "m2", "m9", "merge-1")}


def test_no_emission_when_nothing_changed():
    world = World(*WORKS)
    world.run([follow("u", "a", "m1")])
    again = world.run([follow("u", "a", "m1")])  # duplicate
    assert again == {"affinity.updates": [], "recommendations": [], "signals.keyed": []}
    # a new signal that leaves the list as it was: affinity changes, no recommendations record
    more = world.run([Signal("view", "u", "v1", NOW - 50, (Target("a", "a1-old"),))])
    assert len(more["affinity.updates"]) == 1 and more["recommendations"] == []


def test_a_new_work_by_a_followed_artist_reaches_the_fans():
    world = World(*WORKS)
    world.run([follow("fan", "a", "m1"), follow("other", "x", "m2")])
    assert fans_of(world, "a") == ["fan"] and fans_of(world, "x") == ["other"]
    new = art("a-brand-new", "a", 0.01)
    out = world.run([Refresh("a", encode(new))])
    assert [o.key for o in out["recommendations"]] == [b"fan"]
    recs = json.loads(out["recommendations"][0].value)
    assert recs["items"][0]["artwork_id"] == "a-brand-new" and recs["trigger"] == "catalog:a-brand-new"


def test_a_refresh_read_again_sends_its_fans_lists_again_even_unchanged():
    """An outside check: a kill -9 inside a refresh batch's acks left the fans' new lists in the local store only;
    the refresh, read again, rebuilt the same lists, found them stored and sent nothing, so the recommendations
    topic and the table's changelog kept the old lists for good (a failover served them)."""
    world = World(*WORKS)
    world.run([follow("fan", "a", "m1")])
    refresh = Refresh("a", encode(art("a-brand-new", "a", 0.01)))
    first = world.run([refresh])  # stored; its outputs lost with the worker
    again = world.run([refresh])
    assert [(o.key, o.value) for o in again["recommendations"]] == [(o.key, o.value) for o in first["recommendations"]]
    assert again["affinity.updates"] == []  # the fan's affinity did not change: nothing to send there


def test_a_refresh_shows_its_work_to_the_fans_without_feeding_the_shared_catalog():
    """The work reaches the fans even when this worker's catalog has not caught up (test above), but the
    index is fed in catalog order only (fuzzing: a refresh read after the work's tombstone, behind a
    backlog or after a kill -9, brought the deleted work back for every user of the worker)."""
    world = World(*WORKS)
    world.run([follow("fan", "a", "m1")])
    new = art("a-brand-new", "a", 0.01)
    world.run([Refresh("a", encode(new))])
    assert world.catalog.get("a-brand-new") is None  # this batch only: its changelog record brings it for good
    # deleted meanwhile: the stale refresh, then the tombstone's own refresh (after it on every partition),
    # in two batches or in one (as both are read again after a kill -9)
    for stale_then_gone in ([Refresh("a", None)], [Refresh("a", encode(new)), Refresh("a", None)]):
        world.run([Refresh("a", encode(new))])  # the fan's list shows it again
        out = world.run(stale_then_gone)
        assert "a-brand-new" not in [i["artwork_id"] for i in json.loads(out["recommendations"][0].value)["items"]]
        assert world.catalog.get("a-brand-new") is None
    # a work the catalog holds in a newer version keeps that version
    world.catalog.upsert(art("a1-new", "a", 1, availability="sold"))
    world.run([Refresh("a", encode(art("a1-new", "a", 1)))])
    assert world.catalog.get("a1-new").availability == "sold"


def test_a_refresh_rebuilds_its_fans_a_chunk_a_read_and_sends_the_rest_on_to_its_own_partition(monkeypatch):
    """An outside fuzz: one new work of an artist with 8,000 fans rebuilt every partition's 2,000 lists in one
    read (2.4-4 s; a worker holding 16 partitions would pass its session timeout). A refresh rebuilds
    REFRESH_CHUNK fans and sends the rest on as a record to its own partition; every fan is reached once."""
    import streams.core.pipeline as pipeline
    from streams.core.records import decode_keyed

    monkeypatch.setattr(pipeline, "REFRESH_CHUNK", 2)
    world = World(*WORKS)
    fans = [f"fan{i}" for i in range(5)]
    world.run([follow(user, "a", f"m-{user}") for user in fans], partition=3)
    assert sorted(fans_of(world, "a", 3)) == fans
    pending, reached = [Refresh("a", encode(art("a-brand-new", "a", 0.01)))], []
    while pending:
        out = world.run(pending, partition=3)
        reached += [o.key.decode() for o in out["recommendations"]]
        assert all(o.partition == 3 and o.key == b"a" for o in out["signals.keyed"])
        pending = [decode_keyed(o.value) for o in out["signals.keyed"]]
        assert [(r.start, r.artwork is not None) for r in pending] in ([], [(len(reached), True)])
    assert sorted(reached) == fans  # each once


def test_fans_index_follows_the_top_artists():
    world = World(*WORKS)
    world.run([follow("u", "a", "f1")])
    assert fans_of(world, "a") == ["u"]
    world.run([follow("u", "a", "uf1", t=NOW - 10, kind="unfollow")])
    assert fans_of(world, "a") == []
    out = world.run([Refresh("a", encode(art("a-later", "a", 0.001)))])
    assert out["recommendations"] == []  # no longer a fan


def test_identity_moves_the_anonymous_profile_and_later_events_follow_it():
    anon_world, user_world = World(*WORKS), World(*WORKS)  # two partitions
    anon_world.run([follow("anon-1", "a", "f1")])
    out = anon_world.run([Identity("user-1", "anon-1", "id1", NOW)])
    (merge_out,) = out["signals.keyed"]
    assert merge_out.key == b"user-1"
    merge = decode_keyed(merge_out.value)
    assert isinstance(merge, Merge) and merge.previous_id == "anon-1"
    assert load(anon_world.profiles["anon-1"]).alias_of == "user-1"
    user_world.run([follow("user-1", "b", "f2")])
    out = user_world.run([merge])
    assert set(CFG.model.scores(load(user_world.profiles["user-1"]))) == {"a", "b"}
    assert len(out["recommendations"]) == 1
    # a late anonymous event is forwarded to the merged profile
    late = anon_world.run([follow("anon-1", "x", "f3")])
    (fwd,) = late["signals.keyed"]
    assert fwd.key == b"user-1" and decode_keyed(fwd.value).user_id == "user-1"
    # a replayed identify, or a later one for the same pair, sends the merge again; the user applies it once, and
    # sends its outputs again only for the replay (they may have been lost with the crash that replays it)
    scores, listed = CFG.model.scores(load(user_world.profiles["user-1"])), user_world.recs["user-1"]
    for again, resent_lists in (("id1", [listed]), ("id2", [])):
        (resent,) = anon_world.run([Identity("user-1", "anon-1", again, NOW)])["signals.keyed"]
        assert [o.value for o in user_world.run([decode_keyed(resent.value)])["recommendations"]] == resent_lists
        assert CFG.model.scores(load(user_world.profiles["user-1"])) == scores
    # an identify linking the merged id to another user moves nothing
    assert anon_world.run([Identity("user-2", "anon-1", "id3", NOW)])["signals.keyed"] == []


def test_a_merge_lost_in_a_crash_is_sent_again_when_the_identify_is_redelivered():
    """The batch's profile write landed (the pointer) and its Merge record did not (killed before
    the ack); the input was not committed, so the identify comes again: the anonymous history
    must still reach the user, exactly once."""
    anon_world, user_world = World(*WORKS), World(*WORKS)
    anon_world.run([follow("anon-1", "a", "f1")])
    anon_world.run([Identity("user-1", "anon-1", "id1", NOW)])  # its Merge output lost
    assert load(anon_world.profiles["anon-1"]).alias_of == "user-1"
    (merge,) = anon_world.run([Identity("user-1", "anon-1", "id1", NOW)])["signals.keyed"]
    user_world.run([follow("user-1", "b", "f2"), decode_keyed(merge.value)])
    assert set(CFG.model.scores(load(user_world.profiles["user-1"]))) == {"a", "b"}


def test_trending_and_coengagement_are_counted_in_the_partial():
    world = World(*WORKS)
    world.run([Signal("order", "u", "o1", NOW, (Target("a", "a1-new", 100.0),)),
               follow("u", "b", "f1"), follow("u", "x", "f2")])
    assert world.partial.trending.scores == {"a1-new": CFG.model.weights["order"]}
    assert set(world.partial.pairs) == {"a|b", "a|x", "b|x"}


def _views(user, n, offset0=0, source="events.segment:0"):
    return [Signal("view", user, f"{source}/{offset0 + i}", NOW - 3600 + i, (Target("a" if i % 3 else "b"),), source=source, offset=offset0 + i)
            for i in range(n)]


def test_a_redelivery_longer_than_the_dedup_window_is_applied_once():
    """A worker killed after applying a heavy user's backlog but before committing the input
    offsets reads it all again: the per-partition offset stored in the profile (same write as
    the state) skips every record, however far past the messageId window."""
    small_window = PipelineConfig(model=AffinityModel(dedup_window=8, dedup_horizon_s=0.0), variants=CFG.variants)
    world = World(*WORKS)

    def run(records):
        batch = PartitionBatch(small_window, 0, world.profiles, world.recs, world.fans, world.partial,
                               world.catalog, PopularityView([world.partial]), NOW)
        out = batch.run(records)
        return batch, out

    run(_views("heavy", 200))
    once = load(world.profiles["heavy"])
    assert once.events == 200 and once.applied == {"events.segment:0": 199}
    batch, out = run(_views("heavy", 200))  # the whole backlog again
    assert batch.duplicates == 200 and batch.applied == 0
    assert load(world.profiles["heavy"]).scores == once.scores and load(world.profiles["heavy"]).events == 200
    assert [o.topic for o in out] == ["affinity.updates", "recommendations"]  # outputs lost in the crash go again
    batch, _ = run(_views("heavy", 10, offset0=200))  # then new records apply
    assert batch.applied == 10 and load(world.profiles["heavy"]).events == 210
    # the same records without a position (the old guarantee): the 8-id window (its chunk of 64) holds none
    batch, _ = run([msgspec.structs.replace(s, offset=-1) for s in _views("heavy", 50)])
    assert batch.applied == 50


def test_trending_is_counted_once_per_input_position_whatever_a_kill_9_lost_of_the_share():
    """The share (trending) is written apart from the profiles, before each input commit: a kill -9 can
    lose its counts of records the profiles applied. Their redelivery is counted again, a repeat's
    (a retried messageId at a later position) not, and a position the share decided never again."""
    import copy

    def order(user, mid, offset):
        return Signal("order", user, mid, NOW - 60, (Target("a", "a1-new", 10.0),), source="events.segment:0",
                      offset=offset)

    history = [order("u", "o1", 0), order("v", "o2", 1), order("u", "o1", 2), order("v", "o3", 4), order("v", "o2", 5)]
    world = World(*WORKS)
    world.run(history[:1])
    written = copy.deepcopy(world.partial)  # the share's last write
    world.run(history[1:])
    exact = copy.deepcopy(world.partial.trending.scores)
    assert exact == {"a1-new": 3 * CFG.model.weights["order"]}
    for _ in "12":  # kill -9 (twice): the profiles hold offsets 1-4, the share offset 0; read again from 0
        world.partial = copy.deepcopy(written)
        world.run(history)
        assert world.partial.trending.scores == exact and world.partial.counted == {"events.segment:0": 5}
    # offset 3 never reached the share (it waited on the pending topic for its artwork); read again after a
    # crash, resolvable now, it counts (the share is never written ahead of the profiles it counted)
    world.run([order("w", "o4", 3)])
    assert world.partial.trending.scores == {"a1-new": 4 * CFG.model.weights["order"]}


def test_a_pending_retrys_input_record_read_again_after_a_kill_9_counts_no_trending():
    """An order read while its artwork was unknown waited on the pending topic; its retry reached the
    profile through signals.keyed (a position of its own) after the user's later events. After a
    kill -9 that lost the share's counts, the input record is read again, resolvable now, and behind
    the user's later records: a redelivery that counted nothing when read, so it counts nothing now."""
    import copy

    def order(mid, source, offset, **origin):
        return Signal("order", "u", mid, NOW - 60, (Target("a", "a1-new", 10.0),), source=source, offset=offset,
                      **origin)

    later = order("o2", "events.segment:0", 8)
    retry = order("o1", "signals.keyed:0", 3, origin="events.segment:0", origin_offset=5)
    world = World(*WORKS)
    written = copy.deepcopy(world.partial)
    world.run([later, retry])
    exact = copy.deepcopy(world.partial.trending.scores)
    world.partial = written  # kill -9: everything read again, the input record of o1 resolvable now
    world.run([order("o1", "events.segment:0", 5), later, retry])
    assert world.partial.trending.scores == exact == {"a1-new": 2 * CFG.model.weights["order"]}


def test_a_pending_events_input_record_read_again_before_its_retry_ever_came_counts_once():
    """The artwork came only after a kill -9: the event's retry never reached the profile before it.
    Read again, resolvable now and behind the user's later records, the input record looks like a
    redelivery of a counted position, but its messageId was never applied: its retry counts it."""
    import copy

    def order(mid, source, offset, **origin):
        return Signal("order", "u", mid, NOW - 60, (Target("a", "a1-new", 10.0),), source=source, offset=offset,
                      **origin)

    later = order("o2", "events.segment:0", 8)
    world = World(*WORKS)
    written = copy.deepcopy(world.partial)
    world.run([later])  # offset 5 (o1) waited on the pending topic
    world.partial = written  # kill -9; everything read again, o1 resolvable now, then its retry
    world.run([order("o1", "events.segment:0", 5), later])
    world.run([order("o1", "signals.keyed:0", 3, origin="events.segment:0", origin_offset=5)])
    assert world.partial.trending.scores == {"a1-new": 2 * CFG.model.weights["order"]}


def test_two_retries_of_one_input_record_count_once_however_many_events_come_between():
    """Read again after a crash while its first retry waited on the pending topic, an input record is
    parked a second time; both retries come back, each through signals.keyed at a position of its own,
    and a burst of the user's past the messageId window between them (an outside chaos check: 2,100
    views) let the second count too."""
    small_window = PipelineConfig(model=AffinityModel(dedup_window=8, dedup_horizon_s=0.0), variants=CFG.variants)
    world = World(*WORKS)

    def run(records):
        PartitionBatch(small_window, 0, world.profiles, world.recs, world.fans, world.partial, world.catalog,
                       PopularityView([world.partial]), NOW).run(records)

    def retry(offset):
        return Signal("order", "u", "o1", NOW - 60, (Target("a", "a1-new", 10.0),), source="signals.keyed:0",
                      offset=offset, origin="events.segment:1", origin_offset=5)

    run([retry(3)])
    run(_views("u", 50, offset0=100))  # 50 ids: the 8-id window no longer holds o1
    run([retry(90)])
    profile = load(world.profiles["u"])
    assert profile.events == 51  # the order once, the 50 views
    other = Signal("order", "u", "o2", NOW - 60, (Target("a", "a1-new", 10.0),), source="signals.keyed:0",
                   offset=91, origin="events.segment:1", origin_offset=6)
    run([other])  # another input record's retry still counts
    assert load(world.profiles["u"]).events == 52


def test_positions_are_per_input_partition_and_a_retry_without_one_still_dedups_by_id():
    world = World(*WORKS)
    world.run(_views("u", 5) + _views("u", 3, source="signals.view:2"))
    assert load(world.profiles["u"]).applied == {"events.segment:0": 4, "signals.view:2": 2}
    retry = Signal("view", "u", "events.segment:0/1", NOW, (Target("a"),))  # a pending retry: no position, known id
    world.run([retry])
    assert load(world.profiles["u"]).events == 8


def test_refresh_rebuilds_lists_whose_works_aged_out_or_whose_scores_moved_and_only_those():
    works = [art("a-fresh", "a", 2), art("a-aging", "a", 29)] + [art(f"x{i}", "x", 3 + i) for i in range(6)]
    world = World(*works)
    world.run([follow("u", "a", "m1"), follow("v", "a", "m2")])
    listed = [i.artwork_id for i in decode_recs(world.recs["u"]).items]
    assert "a-aging" in listed

    def refresh(users, now):
        batch = PartitionBatch(CFG, 0, world.profiles, world.recs, world.fans, world.partial,
                               world.catalog, PopularityView([world.partial]), now)
        return batch.refresh(users)

    assert refresh(["u", "v", "nobody"], NOW) == []  # nothing changed: nothing written or sent
    out = refresh(["u"], NOW + 2 * DAY)  # a-aging left the 30-day window two days later
    assert [o.topic for o in out] == ["recommendations"]
    assert "a-aging" not in [i["artwork_id"] for i in json.loads(out[0].value)["items"]]
    assert decode_recs(world.recs["u"]).generated_at == NOW + 2 * DAY and decode_recs(world.recs["v"]).generated_at == NOW


def test_messageids_are_dated_by_the_wall_clock_whatever_clock_the_lists_use():
    """RECSTREAM_CLOCK=event makes now the newest event time: a backlog of weeks read in seconds moved it
    weeks on, and a copy that took another path was past the hour's horizon (an outside chaos check: 6,114
    events of 6,000 in a rebuild). The worker dates ids by `arrived`, its wall clock."""
    cfg = PipelineConfig(model=AffinityModel(dedup_window=8), variants=CFG.variants)

    def events(arrived):
        world = World(*WORKS)
        for i, now in enumerate([NOW, NOW + 14 * 86400, NOW + 15 * 86400]):  # the event clock, batch by batch
            records = _views("heavy", 200, offset0=200 * i) if i < 2 else [
                msgspec.structs.replace(_views("heavy", 1)[0], source="signals.keyed:3", offset=0)]  # the copy
            PartitionBatch(cfg, 0, world.profiles, world.recs, world.fans, world.partial, world.catalog,
                           PopularityView([world.partial]), now, arrived=None if arrived is None else arrived + i,
                           ).run(records)
        return load(world.profiles["heavy"]).events

    assert events(arrived=2e9) == 400
    assert events(arrived=None) == 401  # dated by the event clock: two weeks past the horizon


SCORES = st.floats(-1e6, 1e6) | st.sampled_from([0.0, -0.0, 1.0, 1.0 + 1e-12, 1.0 + 1e-8])


@given(st.lists(st.tuples(st.sampled_from("abc"), SCORES), max_size=5), st.data())
def test_an_affinity_update_is_sent_exactly_when_the_top_rounded_to_9_digits_moved(before, data):
    """`same_top` formats only the scores that differ; the answer is the full rounding's."""
    from streams.core.affinity import same_top

    def rounded(top):
        return [(a, float(f"{s:.9g}")) for a, s in top]

    nudged = [(a, data.draw(st.sampled_from([s, s * (1 + 1e-12), s * (1 + 1e-7), -s, s + 1.0]))) for a, s in before]
    for after in (nudged, data.draw(st.lists(st.tuples(st.sampled_from("abc"), SCORES), max_size=5))):
        assert same_top(before, after) == (rounded(before) == rounded(after))
    assert same_top(before, before)
