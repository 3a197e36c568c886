import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.image_counts import GlobalCounts, merge_counts
from streams.core.images import (
    Image,
    ImageCatalog,
    MerchantViews,
    PoolRules,
    SelectionParams,
    build_pool,
    change_probability,
    choose,
    smoothed_cvr,
    views_until_change,
)

POOL = [Image("h", url="u/h", kind="header"), Image("x", url="u/x", tags=["Burger", "beef"])]
# h: 100 conversions / 1000 impressions; x: 90 / 1000. Pooled rate 190/2000 = 0.095, prior k = 20:
#   exploit(h) = (100 + 20·0.095) / 1020 = 101.9/1020,  exploit(x) = 91.9/1020;  gap = 10/1020
STATS = {"m|h": (1000.0, 100.0), "m|x": (1000.0, 90.0)}


def test_smoothed_cvr_exact_and_new_images_start_at_the_merchant_rate():
    cvr = smoothed_cvr(np.array([1000.0, 1000.0, 0.0]), np.array([100.0, 90.0, 0.0]), SelectionParams())
    assert cvr[0] == pytest.approx(101.9 / 1020) and cvr[1] == pytest.approx(91.9 / 1020)
    assert cvr[2] == pytest.approx(0.095)  # no data: the prior mean, not 0
    assert smoothed_cvr(np.zeros(2), np.zeros(2), SelectionParams(default_cvr=0.03))[0] == pytest.approx(0.03)


def test_cold_consumer_gets_the_global_best():
    choice = choose(POOL, STATS, "m", None, C=0.01)
    assert choice.image_id == "h" and choice.url == "u/h" and not choice.locked
    assert choice.exploit == pytest.approx(101.9 / 1020) and choice.explore == 0.0  # ln(1 + 0) = 0


def test_pure_exploitation_never_changes_the_choice():
    assert views_until_change(POOL, STATS, "m", C=0.0, max_views=500) == [False] * 500


def test_exploration_switches_after_the_predicted_number_of_views():
    # After k unconverted views of h: bonus(x) − bonus(h) = C·sqrt(ln(1+k))·(1 − 1/sqrt(1+k)).
    # With C = 0.02 it must exceed the gap 10/1020, i.e. sqrt(ln(1+k))·(1 − 1/sqrt(1+k)) > 0.4902:
    #   k=1: 0.8326·0.2929 = 0.2439;  k=2: 1.0481·0.4226 = 0.4430;  k=3: 1.1774·0.5 = 0.5887  -> k = 3
    assert views_until_change(POOL, STATS, "m", C=0.02, max_views=5) == [False, False, True, True, True]
    views = MerchantViews(impressions={"h": 3})
    choice = choose(POOL, STATS, "m", views, C=0.02)
    assert choice.image_id == "x"
    assert choice.explore == pytest.approx(0.02 * math.sqrt(math.log(4)))


def test_a_converted_image_stays_locked():
    views = MerchantViews(impressions={"x": 50, "h": 1}, converted="x")
    for C in (0.0, 0.01, 1.0):
        choice = choose(POOL, STATS, "m", views, C=C)
        assert choice.image_id == "x" and choice.locked and choice.explore == 0.0


def test_global_best_changes_for_everyone_when_rates_shift():
    shifted = {"m|h": (1000.0, 100.0), "m|x": (1000.0, 140.0)}
    assert choose(POOL, shifted, "m", None, C=0.0).image_id == "x"
    assert choose(POOL, shifted, "m", MerchantViews(impressions={"h": 2}), C=0.0).image_id == "x"


def test_query_boost_prefers_matching_tags():
    assert choose(POOL, STATS, "m", None, C=0.0, query="burger near me").image_id == "x"
    boosted = choose(POOL, STATS, "m", None, C=0.0, query="BURGER")
    assert boosted.boost == SelectionParams().query_boost
    assert choose(POOL, STATS, "m", None, C=0.0, query="salad").image_id == "h"
    # words, not space-separated chunks: punctuation around a word and a word's case do not hide it
    assert choose(POOL, STATS, "m", None, C=0.0, query="cheap burger, near me?").image_id == "x"
    assert choose(POOL, STATS, "m", None, C=0.0, query="(Burger)").boost == SelectionParams().query_boost


def test_ties_break_by_pool_order():
    assert choose(POOL, {}, "m", None, C=0.0).image_id == "h"


def test_filtration_rules():
    images = [Image("h", kind="header")] + [
        Image(f"i{r}", category=c, sales_rank=r) for r, c in
        enumerate(["drinks", "mains", "sides", "mains", "desserts", "mains", "mains", "mains"], start=1)]
    pool = build_pool(ImageCatalog("m", images))
    assert [i.image_id for i in pool] == ["h", "i2", "i4", "i5", "i6", "i7"]  # no drinks/sides, top 5 by rank
    bar = ImageCatalog("bar", [Image("h", kind="header"), Image("beer", category="drinks", sales_rank=1),
                                Image("wine", category="drinks", sales_rank=2), Image("chips", category="sides", sales_rank=3)])
    assert [i.image_id for i in build_pool(bar)] == ["h", "beer", "wine"]  # drinks are what it sells
    assert [i.image_id for i in build_pool(bar, PoolRules(top_items=1))] == ["h", "beer"]
    explicit = ImageCatalog("m", images, main_category="sides")
    assert "i3" in [i.image_id for i in build_pool(explicit)]


def test_global_counts_decay_and_merge_across_partitions():
    a, b = GlobalCounts(), GlobalCounts()
    a.add("m", "h", 1, 0, 0.0, half_life_s=10.0)
    b.add("m", "h", 1, 1, 10.0, half_life_s=10.0)
    assert merge_counts([a, b], 10.0) == {"m|h": (1.5, 1.0)}
    c = GlobalCounts()
    c.add("m", "h", 2, 1, 5.0, half_life_s=0)
    c.add("m", "h", 2, 1, 500.0, half_life_s=0)  # no decay
    assert c.counts["m|h"] == [4.0, 2.0]


def test_change_probability_table():
    pools = {"m": POOL, "m2": [Image("a"), Image("b")]}
    stats = {**STATS, "m2|a": (100.0, 50.0), "m2|b": (100.0, 1.0)}  # m2's gap is far too large to explore
    table = change_probability(pools, stats, [0.0, 0.02], max_views=4)
    assert table[0.0] == [0.0] * 4
    assert table[0.02] == [0.0, 0.0, 0.5, 0.5]


def simulate_regret(C: float, rounds: int = 6000, seed: int = 42):
    """An established image (true CVR 3%, long history) and a new, better one (6%, no data)."""
    rng = np.random.default_rng(seed)
    pool = [Image("old", kind="header"), Image("new")]
    truth = {"old": 0.03, "new": 0.06}
    counts = {"m|old": [20000.0, 600.0], "m|new": [0.0, 0.0]}
    consumers = [MerchantViews(impressions={}) for _ in range(300)]
    regret = 0.0
    for _ in range(rounds):
        views = consumers[rng.integers(len(consumers))]
        stats = {k: (v[0], v[1]) for k, v in counts.items()}
        image = choose(pool, stats, "m", views, C).image_id
        views.impressions[image] = views.impressions.get(image, 0) + 1
        converted = rng.random() < truth[image]
        counts[f"m|{image}"][0] += 1
        counts[f"m|{image}"][1] += converted
        if converted:
            views.converted = image
        regret += truth["new"] - truth[image]
    final = choose(pool, {k: (v[0], v[1]) for k, v in counts.items()}, "m", None, 0.0).image_id
    return regret, final


def test_exploration_lowers_regret_and_finds_the_better_new_image():
    regret_exploit, final_exploit = simulate_regret(C=0.0)
    regret_explore, final_explore = simulate_regret(C=0.01)
    assert final_exploit == "old" and regret_exploit == pytest.approx(0.03 * 6000)  # never shown the new one
    assert final_explore == "new"
    assert regret_explore < 0.5 * regret_exploit


def test_a_partitions_counts_keep_the_most_shown_images_when_events_name_endless_new_ones():
    """Impressions may name any merchant and image (found by fuzzing: 40,000 junk ones grew one
    partition's share past the 1 MiB a changelog record may take, and the worker stopped on every
    restart). The share keeps the most shown keys, and its table value always fits."""
    from streams.core.image_counts import MAX_COUNTED_PER_PARTITION, GlobalCounts
    from streams.core.image_pipeline import dump_counts
    from streams.core.records import MAX_TABLE_VALUE_BYTES

    counts = GlobalCounts()
    for _ in range(3):
        counts.add("real", "hero", 1.0, 0.0, 0.0, 3600.0)
    for i in range(int(MAX_COUNTED_PER_PARTITION * 1.25)):  # the last add passes the bound: trimmed
        counts.add(f"junk-{i}", "x" * 200, 1.0, 0.0, 0.0, 3600.0)
    assert len(counts.counts) == MAX_COUNTED_PER_PARTITION and counts.counts["real|hero"] == [3.0, 0.0]
    assert len(dump_counts(counts)) <= MAX_TABLE_VALUE_BYTES and "real|hero" in counts.counts


def test_a_sales_rank_past_2_to_53_is_rejected_and_one_stored_before_gives_an_empty_pool():
    """Fuzzing: a catalog.images record with sales_rank 10**30 was stored, then msgpack could not
    encode it and every GET /images/stats answered 500."""
    import msgspec

    from streams.core.image_pipeline import Pools, decode_image_catalog

    record = {"merchant_id": "m2", "images": [{"image_id": "h", "kind": "header", "sales_rank": 10**30}]}
    with pytest.raises(msgspec.ValidationError, match="sales_rank"):
        decode_image_catalog(msgspec.json.encode(record))
    assert decode_image_catalog(msgspec.json.encode({**record, "images": [{"image_id": "h", "sales_rank": 2**53}]}))
    good = msgspec.json.encode({"merchant_id": "m1", "images": [{"image_id": "h", "kind": "header"}]})
    pools = Pools({"m1": good, "m2": msgspec.json.encode(record)}, PoolRules())
    assert pools.get("m2") == [] and [i.image_id for i in pools.get("m1")] == ["h"]


@pytest.mark.parametrize("images", [[{"image_id": ""}], [{"image_id": "   "}], [{"image_id": "h"}, {"image_id": "h"}],
                                    [{"image_id": "x" * 300}]])
def test_a_catalog_record_with_an_image_no_event_can_name_is_rejected(images):
    """Fuzzing: an image with id "" was pooled and could be chosen, but every impression or
    conversion naming it is rejected (ids must be non-blank), so the bandit could never learn it;
    two images with one id would share their counts."""
    import msgspec

    from streams.core.image_pipeline import decode_image_catalog

    with pytest.raises(msgspec.ValidationError, match="image_id must be"):
        decode_image_catalog(msgspec.json.encode({"merchant_id": "m1", "images": images}))
    assert decode_image_catalog(msgspec.json.encode({"merchant_id": "m1", "images": [{"image_id": "h|x"}]}))


def test_an_image_of_a_kind_other_than_header_or_item_is_rejected():
    """An outside fuzz: kind "footer" was stored and pooled as an item."""
    import msgspec

    from streams.core.image_pipeline import decode_image_catalog

    with pytest.raises(msgspec.ValidationError, match="kind"):
        decode_image_catalog(msgspec.json.encode({"merchant_id": "m1", "images": [{"image_id": "f", "kind": "footer"}]}))
    pool = decode_image_catalog(msgspec.json.encode({"merchant_id": "m1", "images": [
        {"image_id": "h", "kind": "header"}, {"image_id": "i", "kind": "item"}, {"image_id": "j"}]})).images
    assert [i.kind for i in pool] == ["header", "item", "item"]


def test_a_pool_reads_its_record_at_most_every_recheck_or_at_once_when_forgotten():
    """An outside fuzz: every impression read the merchant's whole record from the table to see whether it
    changed (a 900 KB catalog: 7 ms an impression, 1,000 of them froze a worker 7 s)."""
    import msgspec

    from streams.core.image_pipeline import Pools

    def record(*ids):
        return msgspec.json.encode({"merchant_id": "m1", "images": [{"image_id": i} for i in ids]})

    class Table(dict):
        reads = 0

        def get(self, key, default=None):
            Table.reads += 1
            return super().get(key, default)

    now = [0.0]
    table = Table(m1=record("a"))
    pools = Pools(table, PoolRules(), recheck_s=1.0, clock=lambda: now[0])
    assert [i.image_id for _ in range(100) for i in pools.get("m1")] == ["a"] * 100 and Table.reads == 1
    table["m1"] = record("b")  # written by another worker: seen once the recheck is due
    now[0] = 0.9
    assert [i.image_id for i in pools.get("m1")] == ["a"]
    now[0] = 1.0
    assert [i.image_id for i in pools.get("m1")] == ["b"] and Table.reads == 2
    table["m1"] = record("c")  # written here: forgotten, so read at the next choice
    pools.forget("m1")
    assert [i.image_id for i in pools.get("m1")] == ["c"] and Table.reads == 3
    del table["m1"]
    now[0] = 5.0
    assert pools.get("m1") == [] and pools.get("m1") == [] and Table.reads == 5  # an absent merchant costs a read


def test_a_pool_takes_the_first_headers_and_tags_are_bounded():
    """An outside fuzz: 25,000 header images were all pooled (each impression ranked them: 34 ms), and an
    image's 200,000 tags were matched against the query on every request (64 merchants: 11 s)."""
    import msgspec

    from streams.core.image_pipeline import decode_image_catalog
    from streams.core.images import MAX_HEADERS

    headers = [Image(f"h{i}", kind="header") for i in range(MAX_HEADERS + 10)]
    pool = build_pool(ImageCatalog("m", headers + [Image("i", sales_rank=1)]))
    assert [i.image_id for i in pool] == [f"h{i}" for i in range(MAX_HEADERS)] + ["i"]
    for tags, problem in ((["t"] * 33, "length <= 32"), (["x" * 65], "length <= 64")):
        with pytest.raises(msgspec.ValidationError, match=problem):
            decode_image_catalog(msgspec.json.encode({"merchant_id": "m", "images": [{"image_id": "i", "tags": tags}]}))
    assert decode_image_catalog(msgspec.json.encode({"merchant_id": "m", "images": [
        {"image_id": "i", "tags": ["t" * 64] * 32}]})).images[0].tags == ["t" * 64] * 32


def test_a_share_that_lost_counts_in_a_crash_counts_their_redelivery_and_nothing_else():
    """The share (image_stats) is written apart from the consumers' states, so after a kill -9 either
    can be ahead. A redelivery (same input position) past what the share decided is counted again;
    a duplicate (another position, same messageId) and a redelivery the share did count are not; a
    fresh event at a position the share passed without it (it waited elsewhere) is."""
    import copy

    import msgspec

    from streams.core.image_counts import GlobalCounts
    from streams.core.image_pipeline import ImageBatch, ImageConfig, Pools
    from streams.core.records import ImageEvent

    pools = Pools({"m1": msgspec.json.encode({"merchant_id": "m1", "images": [{"image_id": "h"}]})}, PoolRules())
    cfg = ImageConfig(half_life_s=0.0)

    def impressions(offsets, first_id=0):  # consumer and messageId from the offset (or from first_id on)
        return [ImageEvent("impression", f"c{i % 3}", "m1", "h", f"i{i}", 100.0, source="images:0", offset=n)
                for i, n in enumerate(offsets, start=first_id if first_id else offsets[0])]

    consumers, share = {}, GlobalCounts()
    ImageBatch(cfg, consumers, share, pools, dict).run(impressions(range(4)))
    written = copy.deepcopy(share)  # as of offset 3
    ImageBatch(cfg, consumers, share, pools, dict).run(impressions(range(4, 10)))
    assert share.counts["m1|h"] == [10.0, 0.0]
    # kill -9: the consumers' states (every batch's transaction) survive, the share falls back to its last write
    share = written
    ImageBatch(cfg, consumers, share, pools, dict).run(impressions(range(2, 10)))  # read again from offset 2
    assert share.counts["m1|h"] == [10.0, 0.0] and share.counted == {"images:0": 9}
    ImageBatch(cfg, consumers, share, pools, dict).run(impressions(range(10, 12), first_id=1))
    assert share.counts["m1|h"] == [10.0, 0.0]  # i1 and i2 of the same consumers at new positions: duplicates
    ImageBatch(cfg, consumers, share, pools, dict).run(impressions(range(12, 13)))
    assert share.counts["m1|h"] == [11.0, 0.0]
    # a fresh event at a position the share passed: it never reached the share (the share is only written
    # once the states it counted are acknowledged, so it is never ahead of them)
    diverted = ImageEvent("impression", "c-new", "m1", "h", "i50", 100.0, source="images:0", offset=11)
    ImageBatch(cfg, consumers, share, pools, dict).run([diverted])
    assert share.counts["m1|h"] == [12.0, 0.0] and share.counted == {"images:0": 12}


def test_a_repeat_whose_decision_the_share_lost_stays_a_repeat_on_redelivery():
    """A retried event (same messageId, a later position) is a duplicate when first read. If a
    kill -9 loses the share's decisions on both the original and the repeat, both are redelivered
    past what the share decided: the original is counted again, the repeat not (fuzzing with two
    kills and retried events: 6-8% over, the repeats counted once more)."""
    import copy

    import msgspec

    from streams.core.image_counts import GlobalCounts
    from streams.core.image_pipeline import ImageBatch, ImageConfig, Pools
    from streams.core.records import ImageEvent

    pools = Pools({"m1": msgspec.json.encode({"merchant_id": "m1", "images": [{"image_id": "h"}]})}, PoolRules())
    cfg = ImageConfig(half_life_s=0.0)

    def at(offset, mid, kind="impression"):
        return ImageEvent(kind, "c", "m1", "h", mid, 100.0, source="images:0", offset=offset)

    history = [at(0, "a"), at(1, "b"), at(2, "a"), at(3, "c", "conversion"), at(4, "c", "conversion"), at(5, "b")]
    consumers, share = {}, GlobalCounts()
    ImageBatch(cfg, consumers, share, pools, dict).run(history[:1])
    written = copy.deepcopy(share)  # the share's last write: offset 0
    ImageBatch(cfg, consumers, share, pools, dict).run(history[1:])
    assert share.counts["m1|h"] == [2.0, 1.0]
    share = copy.deepcopy(written)  # kill -9: the consumer's state holds offsets 1-5 (repeats included), the share not
    ImageBatch(cfg, consumers, share, pools, dict).run(history)  # read again from offset 0
    assert share.counts["m1|h"] == [2.0, 1.0] and share.counted == {"images:0": 5}
    share = copy.deepcopy(written)  # and a second kill -9 before the share was written again
    ImageBatch(cfg, consumers, share, pools, dict).run(history[1:])
    assert share.counts["m1|h"] == [2.0, 1.0]


def test_a_consumer_retrying_hundreds_of_times_between_two_share_writes_is_counted_exactly_after_a_kill_9():
    """Every repeat past its share's acknowledged position can be counted again, however many (fuzzing:
    3 consumers retrying ~54 times each in a burst ended 54 over with only the last 32 kept); the ones
    at or below it are forgotten, so the list stays short."""
    import copy

    import msgspec

    from streams.core.image_counts import GlobalCounts
    from streams.core.image_pipeline import ImageBatch, ImageConfig, Pools, load_state
    from streams.core.records import ImageEvent

    pools = Pools({"m1": msgspec.json.encode({"merchant_id": "m1", "images": [{"image_id": "h"}]})}, PoolRules())
    cfg = ImageConfig(half_life_s=0.0)

    def at(offset, mid):
        return ImageEvent("impression", "c", "m1", "h", mid, 100.0, source="images:0", offset=offset)

    burst = [at(i, f"m{i // 2}") for i in range(600)]  # each impression sent twice: 300 distinct, 300 repeats
    consumers, share = {}, GlobalCounts()
    written = copy.deepcopy(share)  # the share's last write: before the burst
    ImageBatch(cfg, consumers, share, pools, dict).run(burst)
    assert share.counts["m1|h"] == [300.0, 0.0]
    share = written  # kill -9: the consumer's state holds the burst, the share nothing of it
    ImageBatch(cfg, consumers, share, pools, dict).run(burst)
    assert share.counts["m1|h"] == [300.0, 0.0] and share.counted == {"images:0": 599}
    # the share written with the burst, acknowledged: none of its repeats can count again
    ImageBatch(cfg, consumers, share, pools, dict, floor=dict(share.counted)).run([at(600, "m0")])  # a repeat past it
    assert load_state(consumers["c"]).repeats == {"images:0": [600]} and share.counts["m1|h"] == [300.0, 0.0]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 7), min_size=1, max_size=40), st.data())
def test_with_the_floor_at_an_acknowledged_write_a_kill_9_anywhere_counts_each_message_once(mids, data):
    """A consumer's impressions, repeats among them (a producer's retries), a share write acknowledged after
    `acked` of them, a kill -9 after `crashed`, and reading again from `read_again` (at most `acked`: an input
    commit comes after the share's write): each messageId counts once. The floor once was the input's
    committed offset, which a record forwarded through images.keyed is read after: a repeat forgotten at
    that commit was read again past the share and counted twice (a chaos run, commits every 0.1 s)."""
    import copy

    import msgspec

    from streams.core.image_counts import GlobalCounts
    from streams.core.image_pipeline import ImageBatch, ImageConfig, Pools
    from streams.core.records import ImageEvent

    pools = Pools({"m1": msgspec.json.encode({"merchant_id": "m1", "images": [{"image_id": "h"}]})}, PoolRules())
    cfg = ImageConfig(half_life_s=0.0)
    history = [ImageEvent("impression", "c", "m1", "h", f"m{m}", 100.0, source="events:0", offset=o)
               for o, m in enumerate(mids)]
    acked = data.draw(st.integers(0, len(history)))
    crashed = data.draw(st.integers(acked, len(history)))
    read_again = data.draw(st.integers(0, acked))
    consumers, share = {}, GlobalCounts()
    ImageBatch(cfg, consumers, share, pools, dict).run(history[:acked])
    written = copy.deepcopy(share)
    for one in history[acked:crashed]:  # a batch at a time, each with the acknowledged write's positions as floor
        ImageBatch(cfg, consumers, share, pools, dict, floor=dict(written.counted)).run([one])
    share = written  # kill -9
    ImageBatch(cfg, consumers, share, pools, dict).run(history[read_again:])
    assert share.counts["m1|h"][0] == len(set(mids))


def test_a_consumers_impressions_of_one_merchant_keep_the_most_seen_images_when_events_name_endless_new_ones():
    """An outside fuzzer: 1,500 distinct image ids for one merchant made one consumer's value 1.5 MB."""
    import msgspec

    from streams.core.image_counts import GlobalCounts
    from streams.core.image_pipeline import MAX_IMAGES_PER_MERCHANT, ImageBatch, ImageConfig, Pools, load_state
    from streams.core.records import ImageEvent

    pools = Pools({"m1": msgspec.json.encode({"merchant_id": "m1", "images": [{"image_id": "h"}]})}, PoolRules())
    consumers = {}
    seen_h = [ImageEvent("impression", "c", "m1", "h", f"h{i}", 100.0) for i in range(3)]
    junk = [ImageEvent("impression", "c", "m1", f"junk{i}" + "x" * 200, f"j{i}", 100.0) for i in range(1500)]
    ImageBatch(ImageConfig(), consumers, GlobalCounts(), pools, dict).run(seen_h + junk)
    views = load_state(consumers["c"]).merchants["m1"].impressions
    assert len(views) == MAX_IMAGES_PER_MERCHANT and views["h"] == 3 and len(consumers["c"]) < 30_000  # 64 of 1 KB + 1,503 ids


def test_an_impressions_copy_far_behind_it_within_the_hour_counts_once():
    """As a user's (streams.core.seen.Horizon): a copy that took another path (unkeyed, through images.keyed)
    reached the consumer's state more than its id window's impressions after the first, in a backlog."""
    import msgspec

    from streams.core.image_counts import GlobalCounts
    from streams.core.image_pipeline import ImageBatch, ImageConfig, Pools
    from streams.core.records import ImageEvent

    pools = Pools({"m1": msgspec.json.encode({"merchant_id": "m1", "images": [{"image_id": "h"}]})}, PoolRules())

    def counted(cfg: ImageConfig) -> float:
        consumers, share = {}, GlobalCounts()
        events = [ImageEvent("impression", "c", "m1", "h", f"i{i}", 100.0 + i) for i in range(300)]
        for at, batch in enumerate([events, events[:1]]):  # the copy of the first, a minute later
            ImageBatch(cfg, consumers, share, pools, dict, arrived=1e9 + 60 * at).run(batch)
        return share.counts["m1|h"][0]

    assert counted(ImageConfig(half_life_s=0.0, dedup_window=16)) == 300
    assert counted(ImageConfig(half_life_s=0.0, dedup_window=16, dedup_horizon_s=0.0)) == 301  # the window alone


def test_an_image_url_longer_than_8192_characters_rejects_its_catalog_record():
    """A choice carries its image's url: one of 999,000 characters made a 1 MB images.chosen record."""
    import msgspec

    from streams.core.image_pipeline import MAX_URL_CHARS, decode_image_catalog

    def catalog(url):
        return msgspec.json.encode({"merchant_id": "m", "images": [{"image_id": "i", "url": url}]})

    assert decode_image_catalog(catalog("h" * MAX_URL_CHARS)).images[0].url == "h" * 8192
    with pytest.raises(msgspec.ValidationError, match="url must be at most 8192 characters"):
        decode_image_catalog(catalog("h" * (MAX_URL_CHARS + 1)))


def test_the_locked_image_is_the_newest_conversions_whatever_order_they_arrive_in():
    """An outside fuzz: a conversion from a device that was offline, arriving late, moved the consumer's lock
    to the older conversion's image (the last to arrive won)."""
    import itertools

    import msgspec

    from streams.core.image_counts import GlobalCounts
    from streams.core.image_pipeline import ImageBatch, ImageConfig, Pools, load_state
    from streams.core.records import ImageEvent

    images = [{"image_id": i} for i in ("a", "b", "c")]
    pools = Pools({"m1": msgspec.json.encode({"merchant_id": "m1", "images": images})}, PoolRules())
    events = [ImageEvent("conversion", "c", "m1", image, f"o-{image}", t)
              for image, t in (("a", 300.0), ("b", 100.0), ("c", 200.0))]
    locked = set()
    for order in itertools.permutations(events):
        consumers = {}
        for ev in order:  # one batch each, as they would arrive
            ImageBatch(ImageConfig(), consumers, GlobalCounts(), pools, dict).run([ev])
        views = load_state(consumers["c"]).merchants["m1"]
        locked.add((views.converted, views.converted_at))
    assert locked == {("a", 300.0)}


def test_an_image_event_leaves_the_other_keys_alone_and_the_merged_counts_stay_exact():
    """An outside check: each newer image event rescaled every counted key (O(keys) an event: 56 events/s and 26 s
    HTTP reads at 44,000 keys). The share keeps an anchor; what it adds up to, valued at its newest event, is the
    same decayed sum."""
    import math
    import random

    from streams.core.affinity import decay
    from streams.core.image_counts import GlobalCounts, merge_counts

    rng, half_life = random.Random(5), 30 * 86400.0
    shares, events = [GlobalCounts(), GlobalCounts()], []
    for i in range(3000):
        t = 1.7e9 + i * 3600 + rng.uniform(-86400, 0)  # late ones too
        ev = (f"m{rng.randrange(20)}", f"i{rng.randrange(50)}", float(rng.random() < 0.9), float(rng.random() < 0.1), t)
        shares[i % 2].add(*ev, half_life)
        events.append(ev)
    stored = {k: list(v) for k, v in shares[0].counts.items()}
    shares[0].add("m0", "a-new-image", 1.0, 0.0, 1.7e9 + 3001 * 3600, half_life)  # the newest event yet
    assert all(shares[0].counts[k] == v for k, v in stored.items())  # nothing else rewritten
    events.append(("m0", "a-new-image", 1.0, 0.0, 1.7e9 + 3001 * 3600))
    newest = max(t for *_, t in events)
    want: dict[str, list[float]] = {}
    for merchant, image, imp, conv, t in events:
        acc = want.setdefault(f"{merchant}|{image}", [0.0, 0.0])
        acc[0] += imp * decay(newest - t, half_life)
        acc[1] += conv * decay(newest - t, half_life)
    got = merge_counts(shares, half_life)
    assert got.keys() == want.keys()
    assert all(math.isclose(got[k][i], want[k][i], rel_tol=1e-9, abs_tol=1e-12) for k in want for i in (0, 1))


def test_a_query_matches_tags_whatever_their_accents_case_or_width():
    """An outside check: a composed "café" missed a decomposed tag, "istanbul" missed "İstanbul", "burger" missed a
    fullwidth "ＢＵＲＧＥＲ"."""
    from streams.core.images import Image, query_boost

    pool = [Image("i1", "u", tags=["cafe\u0301"]), Image("i2", "u", tags=["İstanbul"]), Image("i3", "u", tags=["ＢＵＲＧＥＲ"]),
            Image("i4", "u", tags=["crème brûlée"])]
    for query, want in (("café", "i1"), ("ISTANBUL", "i2"), ("burger", "i3"), ("Creme Brulee", "i4")):
        assert [i.image_id for i, b in zip(pool, query_boost(pool, query, 1.0), strict=True) if b] == [want], query
