"""The bulk rebuild core against the live per-event pipeline on the same history."""

import json
import math
import random
from datetime import datetime, timezone

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.affinity import AffinityModel, Profile, load
from streams.core.bulk import BulkPartition, decayed_sums
from streams.core.catalog import CatalogIndex
from streams.core.coengagement import MARK, read_mark
from streams.core.demo import DemoGenerator, dumps
from streams.core.events import parse_segment
from streams.core.experiments import Variant
from streams.core.pipeline import PartitionBatch, PipelineConfig, decode_recs
from streams.core.popularity import Partial, PopularityView
from streams.core.properties import resolve_artists
from streams.core.records import Signal, Target
from streams.core.seen import unpacked

NOW = datetime(2026, 11, 20, tzinfo=timezone.utc).timestamp()
CFG = PipelineConfig(model=AffinityModel(), variants={"A": Variant("A", share=1.0)})


def demo_history(n=6000, seed=11):
    demo = DemoGenerator(users=300, artists=40, artworks=400, seed=seed,
                         end_time=datetime.fromtimestamp(NOW, tz=timezone.utc))
    catalog = demo.artworks()
    artist_of = {a["id"]: a["artist_id"] for a in catalog}
    signals = [resolve_artists(parse_segment(dumps(e)), artist_of) for e in demo.events(n)]
    assert all(isinstance(s, Signal) for s in signals)
    signals += random.Random(seed).sample(signals, 200)  # redelivered duplicates
    index = CatalogIndex()
    index.load(json.dumps(a).encode() for a in catalog)
    return signals, index


def sequential(signals, catalog, view):
    """The live pipeline: one PartitionBatch per 50 records, state in dicts."""
    profiles, recs, fans, partial = {}, {}, {}, Partial()
    for i in range(0, len(signals), 50):
        PartitionBatch(CFG, 0, profiles, recs, fans, partial, catalog, view, NOW).run(signals[i:i + 50])
    return profiles, recs, fans, partial


def bulk(signals):
    b = BulkPartition(CFG, 0)
    for s in signals:
        b.add(s)
    return b, b.profiles()


def assert_same_profile(got: Profile, want: Profile, ordered=True):
    model = CFG.model
    a, b = model.scores(got), model.scores(want)
    assert a.keys() == b.keys()
    assert all(math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-12) for k in a)
    assert (got.ref, got.events, got.toggles) == (want.ref, want.events, want.toggles)
    if ordered:
        assert (got.seen, got.purchased, got.prices) == (want.seen, want.purchased, want.prices)
    else:
        assert sorted(unpacked(got.seen)) == sorted(unpacked(want.seen)) and sorted(got.purchased) == sorted(want.purchased)


def test_profiles_fans_recommendations_and_shares_equal_the_live_pipeline():
    signals, catalog = demo_history()
    b, profiles = bulk(signals)
    partial = b.partial(CFG.trending_half_life_s)
    view = PopularityView([partial], CFG.trending_half_life_s)
    live_profiles, live_recs, live_fans, live_partial = sequential(signals, catalog, view)
    # the live batches mark the profiles with the share's number (streams.core.coengagement): no user
    assert read_mark(live_profiles.pop(MARK)) == live_partial.seq > 0 and partial.seq == 0

    assert b.applied == len(signals) - 200 and b.duplicates == 200
    assert profiles.keys() == live_profiles.keys()
    for user, profile in profiles.items():
        assert_same_profile(profile, load(live_profiles[user]))

    out = b.outputs(catalog, view, NOW)
    assert {u: load(v) for u, v in out["affinity"].items()} == profiles
    assert out["recommendations"].keys() == live_recs.keys()
    for user, raw in out["recommendations"].items():
        got, want = decode_recs(raw), decode_recs(live_recs[user])
        assert [(i.artwork_id, i.source) for i in got.items] == [(i.artwork_id, i.source) for i in want.items], user
        assert got.trigger == "rebuild" and got.generated_at == NOW
    decode = msgspec.msgpack.Decoder(list[str]).decode
    assert {k: sorted(decode(v)) for k, v in out["fans"].items()} == \
           {k: sorted(decode(v)) for k, v in live_fans.items() if decode(v)}

    assert partial.pairs == live_partial.pairs
    t = max(s.time for s in signals)
    for work in live_partial.trending.scores:
        got = partial.trending.value_at(work, t, CFG.trending_half_life_s)
        want = live_partial.trending.value_at(work, t, CFG.trending_half_life_s)
        assert math.isclose(got, want, rel_tol=1e-9), work


@settings(max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False))
def test_any_arrival_order_gives_the_same_profiles(rnd):
    signals, _ = demo_history(n=800, seed=5)
    _, in_order = bulk(signals)
    shuffled = list(signals)
    rnd.shuffle(shuffled)
    _, profiles = bulk(shuffled)
    for user, profile in profiles.items():
        assert_same_profile(profile, in_order[user], ordered=False)


def test_top_k_bound_holds_and_keeps_the_strongest():
    model = AffinityModel(top_k=3)
    b = BulkPartition(PipelineConfig(model=model), 0)
    for i, artist in enumerate("abcdef"):
        for j in range(i + 1):  # f strongest, a weakest
            b.add(Signal("view", "u", f"{artist}{j}", NOW, (Target(artist),)))
    b.add(Signal("follow", "u", "fa", NOW, (Target("a"),)))  # a follow (5) lifts a to 6
    assert sorted(model.scores(b.profiles()["u"])) == ["a", "e", "f"]


def test_decay_sums_match_the_closed_form():
    groups, sums = decayed_sums([2, 0, 2, 2], [1.0, 4.0, 2.0, 8.0], [0.0, 5.0, 10.0, 20.0], 20.0, 10.0)
    assert groups.tolist() == [0, 2]
    assert sums.tolist() == [4.0 * 2 ** -1.5, 1.0 / 4 + 2.0 / 2 + 8.0]
    _, undecayed = decayed_sums([1, 1], [1.0, 2.0], [0.0, 1e9], 1e9, 0.0)
    assert undecayed.tolist() == [3.0]


def test_a_rebuilt_window_dates_the_messages_by_when_they_were_read_as_a_live_worker_does():
    """A heavy user's 3,000 messages over 30 days, read at NOW: a live worker reading them now dates
    each id by its arrival and keeps every one within the horizon; the bulk rebuild dated them by
    event time and kept only the last hour's and the last `dedup_window` (an outside check: after the
    hand-over, a repeat of the user's older messages counted again on the rebuilt worker)."""
    model = AffinityModel(weights={"view": 1.0}, dedup_window=256)
    cfg = PipelineConfig(model=model, variants={"A": Variant("A", share=1.0)})
    history = [Signal("view", "heavy", f"h-{i}", NOW - 30 * 86400 + i * 840, (Target(f"a{i % 10}"),))
               for i in range(3000)]
    live = Profile()
    for sig in history:
        assert model.learn_one(live, sig, NOW)
    rebuilt = BulkPartition(cfg, 0, arrived=NOW)
    for sig in history:
        rebuilt.add(sig)
    got = rebuilt.profiles()["heavy"]
    assert sorted(unpacked(got.seen)) == sorted(unpacked(live.seen)) and len(unpacked(got.seen)) == 3000
    assert not model.learn_one(got, history[0], NOW + 60)  # the oldest message, repeated: a duplicate
    dated_by_event = BulkPartition(cfg, 0)
    for sig in history:
        dated_by_event.add(sig)
    assert len(unpacked(dated_by_event.profiles()["heavy"].seen)) < 3000  # what the rebuild kept before
