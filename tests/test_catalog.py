"""The catalog index (streams/core/catalog.py)."""

from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.catalog import CatalogIndex, is_eligible, newness
from streams.core.records import Artwork

_work = st.builds(lambda i, artist, day, sold: Artwork(
    f"w{i}", f"a{artist}", published_at=None if day is None else datetime.fromtimestamp(day * 86400.0, tz=timezone.utc),
    availability="sold" if sold else "for sale"),
    st.integers(0, 40), st.integers(0, 3), st.none() | st.integers(0, 30), st.booleans())
_step = st.one_of(st.tuples(st.just("upsert"), _work), st.tuples(st.just("remove"), st.integers(0, 40)),
                  st.tuples(st.just("latest"), st.integers(1, 3) | st.integers(1, 60)))


@settings(max_examples=400)
@given(st.lists(_step, max_size=120))
def test_latest_held_across_changes_is_what_a_full_sort_gives(steps):
    """`latest` keeps the newest works across upserts and removals instead of recomputing them at
    every change (an outside fuzz: 0.1-0.6 s a list on a catalog of 100,000 works); any sequence of
    changes gives what sorting the whole catalog gives."""
    import streams.core.catalog as catalog

    catalog._LATEST_HELD = 2  # small enough for the held slice to fill, grow and be cut within a few steps
    try:
        index = CatalogIndex()
        for action, arg in steps:
            if action == "upsert":
                index.upsert(arg)
            elif action == "remove":
                index.remove(f"w{arg}")
            else:
                eligible = sorted((w for w in index.works.values() if is_eligible(w)), key=newness, reverse=True)
                assert [w.id for w in index.latest(arg)] == [w.id for w in eligible[:arg]]
    finally:
        catalog._LATEST_HELD = 256


def test_the_held_newest_works_are_cut_to_the_newest_as_new_ones_come(monkeypatch):
    import streams.core.catalog as catalog

    monkeypatch.setattr(catalog, "_LATEST_HELD", 2)
    index = CatalogIndex()
    day = lambda d: datetime.fromtimestamp(d * 86400.0, tz=timezone.utc)  # noqa: E731
    for d in range(5):
        index.upsert(Artwork(f"w{d}", "a", published_at=day(d)))
    assert [w.id for w in index.latest(1)] == ["w4"]
    for d in range(5, 30):  # each newer than every work held: held in order, the slice cut past 2 x 2
        index.upsert(Artwork(f"w{d}", "b", published_at=day(d)))
        assert len(index._latest) <= 4 and [w.id for w in index.latest(2)] == [f"w{d}", f"w{d - 1}"]


def test_a_curated_list_longer_than_the_bound_is_refused_and_a_stored_one_is_cut_to_it():
    """An outside fuzz: 110,000 curated ids (none in the catalog) made each list walk them all (17 ms),
    and one new work's refresh of its artist's 8,000 fans froze a worker 130 s."""
    import json

    import msgspec
    import pytest

    from streams.core.catalog import MAX_CURATED_IDS, decode_curated

    def curated(n):
        return json.dumps({"artwork_ids": [f"w{i}" for i in range(n)]}).encode()

    assert len(decode_curated(curated(MAX_CURATED_IDS))) == MAX_CURATED_IDS
    with pytest.raises(msgspec.ValidationError, match="at most 1,000 artwork ids, got 1,001"):
        decode_curated(curated(MAX_CURATED_IDS + 1))
    assert len(decode_curated(curated(5000), limit=None)) == 5000  # a stored list, before the bound


@settings(max_examples=60)
@given(st.lists(_work, max_size=30), st.lists(_work, min_size=0, max_size=150))
def test_loading_many_records_at_once_gives_what_upserting_them_one_at_a_time_gives(before, records):
    """`load` sorts each artist's works once (inserting them one at a time was quadratic: 400,000 works of
    one artist took 16 s after a restart); the index is the same, an id's last record winning, whatever
    the index held before."""
    import msgspec

    raws = [msgspec.json.encode(w) for w in records]
    one_by_one, at_once = CatalogIndex(), CatalogIndex()
    for index in (one_by_one, at_once):
        for work in before:
            index.upsert(work)
    for raw in raws:
        one_by_one.upsert(msgspec.json.decode(raw, type=Artwork))
    at_once.load(raws)
    def by_artist(index):  # an artist whose last work left keeps an empty list one way, none the other
        return {artist: [e[:2] for e in entries] for artist, entries in index._by_artist.items() if entries}

    assert at_once.works == one_by_one.works and by_artist(at_once) == by_artist(one_by_one)
    assert [w.id for w in at_once.latest(50)] == [w.id for w in one_by_one.latest(50)]


def test_a_naive_published_at_is_utc_at_the_ends_of_the_calendar_and_in_any_local_zone(monkeypatch):
    """A published_at without an offset is UTC, as event times are. It was local time: the artworks
    table stored `0001-01-01T00:00:00` and the index then raised ValueError ("year 0 is out of range")
    on it, at the record and at every start's catalog load; and a worker's TZ moved every such work."""
    import time

    from streams.core.catalog import decode_artwork, published

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        records = [b'{"id": "w%d", "artist_id": "a", "published_at": "%s"}' % (i, when) for i, when in enumerate(
            [b"0001-01-01T00:00:00", b"9999-12-31T23:59:59", b"2026-01-01T00:00:00", b"2026-01-01T00:00:00Z"])]
        works = [decode_artwork(r) for r in records]
        assert [published(w) for w in works] == [-62135596800.0, 253402300799.0, 1767225600.0, 1767225600.0]
        index = CatalogIndex()
        for work in works:
            index.upsert(work)
        loaded = CatalogIndex()
        loaded.bootstrap(records * 20, None)  # the bulk load (64 records and more) of a start
        assert [w.id for w in loaded.latest(4)] == [w.id for w in index.latest(4)] == ["w1", "w3", "w2", "w0"]
        index.remove("w0")
        assert "w0" not in index.works
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
