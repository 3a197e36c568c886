"""streams.core.profile_fit: every profile fits one changelog record, and loses the least it can."""

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.affinity import AffinityModel, Bought, Profile, dump, load
from streams.core.profile_fit import fitted
from streams.core.records import MAX_TABLE_VALUE_BYTES, Signal, Target
from streams.core.seen import SIZE

MODEL = AffinityModel()


def long_id(kind: str, i: int) -> str:
    return (f"{kind}{i}-" + "\U0001D11E" * 256)[:256]  # 256 characters, 1 KB of UTF-8: the longest id taken


def test_a_profile_that_fits_is_written_as_it_is():
    p = Profile()
    for i in range(3000):
        MODEL.learn_one(p, Signal("view", "u", f"m{i}", 1e9, (Target(f"a{i % 300}"),)), at=1e9)
    before = dump(p)
    assert fitted(MODEL, p) == before and dump(p) == before


def test_the_horizons_ids_go_before_anything_counted():
    """A collector's 900 long-id orders and saves, then a bot-like hour of 20,000 views: 1.29 MB."""
    p = Profile()
    for i in range(900):
        work = Target(long_id("a", i % 250), long_id("w", i))
        MODEL.learn_one(p, Signal("order" if i < 300 else "save", "u", long_id("m", i), 1e9, (work,)), at=1e9)
    for i in range(20000):
        MODEL.learn_one(p, Signal("view", "u", f"v{i}", 1e9, (Target(long_id("a", 1)),)), at=1e9)
    size, ids = len(dump(p)), len(p.seen) // SIZE
    assert size > MAX_TABLE_VALUE_BYTES and ids > 16000, (size, ids)
    top, scores = MODEL.top(p, 250), MODEL.scores(p)
    raw = fitted(MODEL, p)
    assert len(raw) <= MAX_TABLE_VALUE_BYTES and load(raw) == p
    assert MODEL.dedup.size <= len(p.seen) // SIZE < 16384  # the last 2,048 ids still dedup
    assert not MODEL.learn_one(p, Signal("view", "u", "v19999", 1e9, (Target(long_id("a", 1)),)), at=1e9)
    assert MODEL.top(p, 250) == top and MODEL.scores(p) == scores  # purchases went to digests, saves to weight
    assert all(long_id("w", i) in Bought(p) for i in range(300))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["view", "order", "save", "unsave", "follow", "unfollow", "inquiry"]),
                          st.integers(0, 600), st.integers(0, 2000)), min_size=300, max_size=1500))
def test_any_profile_of_the_longest_ids_fits(events):
    p = Profile()
    for n, (kind, artist, work) in enumerate(events):
        target = Target(long_id("a", artist), long_id("w", work), price=1.0)
        MODEL.learn_one(p, Signal(kind, "u", long_id("m", n), 1e9 + n, (target,)), at=1e9 + n)
    raw = fitted(MODEL, p)
    assert len(raw) <= MAX_TABLE_VALUE_BYTES and load(raw) == p


def test_a_merge_carrying_the_largest_profile_fits_one_internal_record():
    """An outside fuzzer: a profile fitted to 998,975 bytes and three 1 KB ids made a 1,001,046-byte Merge,
    dead-lettered as oversized when read back: the user's whole history was lost."""
    from streams.core.profile_fit import carried
    from streams.core.records import Merge, encode_keyed

    p = Profile()
    for i in range(900):
        work = Target(long_id("a", i % 250), long_id("w", i))
        MODEL.learn_one(p, Signal("order" if i < 300 else "save", "u", long_id("m", i), 1e9, (work,)), at=1e9)
    merge = encode_keyed(Merge(long_id("new", 0), long_id("old", 0), long_id("identify", 0), carried(MODEL, p)))
    assert len(merge) <= MAX_TABLE_VALUE_BYTES
