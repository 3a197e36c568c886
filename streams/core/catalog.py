"""Catalog (pure): artwork records, the artwork -> artist lookup, and the in-memory index the
recommendation builder reads (eligible works per artist newest first, latest, curated).

>>> idx = CatalogIndex()
>>> idx.upsert(Artwork("w1", "a1", published_at=None))  # newly recommendable?
True
>>> idx.upsert(Artwork("w2", "a1", is_merch=True))
False
>>> [w.id for w in idx.works_by("a1")]
['w1']
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Iterator, Mapping

import msgspec

from streams.core.properties import KEY_JOIN, is_id
from streams.core.records import MAX_ID_CHARS, MAX_PRICE, Artwork

_ARTWORK = msgspec.json.Decoder(Artwork)
_CURATED = msgspec.json.Decoder(dict[str, list[str]])


def decode_artwork(raw: bytes, key: bytes | None = None) -> Artwork:
    """Raises msgspec.ValidationError / DecodeError on bad input (the agent dead-letters it);
    `key`, the record's, must be the artwork id when there is one (check_key).

    >>> decode_artwork(b'{"id": "w1", "artist_id": "a|b"}')
    Traceback (most recent call last):
    msgspec.ValidationError: artist_id may not contain '|': it joins ids in table keys
    """
    artwork = _ARTWORK.decode(raw)
    if not is_id(artwork.id) or not is_id(artwork.artist_id):
        raise msgspec.ValidationError(f"artwork id and artist_id must be 1 to {MAX_ID_CHARS} characters, not blank")
    if KEY_JOIN in artwork.artist_id:
        raise msgspec.ValidationError(f"artist_id may not contain {KEY_JOIN!r}: it joins ids in table keys")
    check_key(key, artwork.id, "artwork id")
    if artwork.price is not None and not 0 <= artwork.price <= MAX_PRICE:
        raise msgspec.ValidationError(f"price must be a finite number from 0 to {MAX_PRICE:g}")
    return artwork


def check_key(key: bytes | None, record_id: str, name: str) -> None:
    """A compacted catalog record keyed by another id than its own is refused: compaction keeps
    the last record of each key and a tombstone removes the id its key names, so the table, the
    topic and a rebuild from it would disagree. A keyless record is stored by its id.

    >>> check_key(b"w2", "w1", "artwork id")
    Traceback (most recent call last):
    msgspec.ValidationError: the record's key must be its artwork id ('w1'), got 'w2'
    """
    if key is not None and key != record_id.encode():
        shown = key.decode(errors="replace")[:64]
        raise msgspec.ValidationError(f"the record's key must be its {name} ({record_id[:64]!r}), got {shown!r}")


CURATED_KEY = b"curated"
# an editor's list; a list is built by walking it until full (an outside fuzz: 110,000 ids, none in the
# catalog, made each list 17 ms, and one new work's 8,000 fans' lists froze a worker 130 s)
MAX_CURATED_IDS = 1000


def decode_curated(raw: bytes, key: bytes | None = CURATED_KEY, limit: int | None = MAX_CURATED_IDS) -> list[str]:
    """``{"artwork_ids": [...]}`` on catalog.curated, keyed ``curated``: compaction keeps the last
    record of each key, so a list under another key (or none) would stay on the topic beside the
    real one, and a restart or a rebuild could take it for the current list. At most `limit` ids
    (None: a stored list, taken as it is).

    >>> decode_curated(b'{"artwork_ids": ["w1"]}', key=b"weekly")
    Traceback (most recent call last):
    msgspec.ValidationError: a curated list's key must be 'curated', got 'weekly'
    """
    if key != CURATED_KEY:
        shown = "no key" if key is None else repr(key.decode(errors="replace")[:64])
        raise msgspec.ValidationError(f"a curated list's key must be 'curated', got {shown}")
    ids = _CURATED.decode(raw).get("artwork_ids")
    if ids is None:
        raise msgspec.ValidationError("curated record needs artwork_ids")
    if limit is not None and len(ids) > limit:
        raise msgspec.ValidationError(f"a curated list holds at most {limit:,} artwork ids, got {len(ids):,}")
    return ids


def published(artwork: Artwork) -> float:
    return artwork.published_at.timestamp() if artwork.published_at else 0.0


def newness(artwork: Artwork) -> tuple[float, str]:
    """The order of `CatalogIndex.latest`: publication time, then id."""
    return published(artwork), artwork.id


_LATEST_HELD = 256  # the fewest newest works `latest` computes


def is_eligible(artwork: Artwork) -> bool:
    """Recommendable at all: for sale and not merchandise."""
    return artwork.availability == "for sale" and not artwork.is_merch


def leaves_lists(old: Artwork | None, new: Artwork | None) -> bool:
    """Whether a catalog change (`new` None: a delete) takes a work out of every list that holds it.

    >>> sold = Artwork("w1", "a1", published_at=None, availability="sold")
    >>> leaves_lists(Artwork("w1", "a1", published_at=None), sold), leaves_lists(sold, None), leaves_lists(None, None)
    (True, False, False)
    """
    return old is not None and is_eligible(old) and (new is None or not is_eligible(new))


class ArtistLookup:
    """``.get(artwork_id) -> artist_id``: from `index` once it mirrors the table of encoded
    artworks (bootstrapped: every worker's index follows its artworks table), from the table
    before that. A table read went through faust's table layer, RocksDB and a decode of the
    whole record: 8% of a loaded worker, for every artwork an event names.

    >>> table = {"w1": b'{"id": "w1", "artist_id": "a1"}'}
    >>> index = CatalogIndex()
    >>> lookup = ArtistLookup(table, index)
    >>> lookup.get("w1"), lookup.get("w2")     # not bootstrapped: the table answers
    ('a1', None)
    >>> index.load([b'{"id": "w2", "artist_id": "a2"}']); index.bootstrapped = True
    >>> lookup.get("w2"), lookup.get("w3")     # bootstrapped: the index answers
    ('a2', None)
    """

    def __init__(self, table: Mapping[str, bytes], index: CatalogIndex | None = None):
        self.table, self.index = table, index

    def get(self, artwork_id: str) -> str | None:
        if self.index is not None and self.index.bootstrapped:
            work = self.index.works.get(artwork_id)
            return None if work is None else work.artist_id
        raw = self.table.get(artwork_id)
        return None if raw is None else _ARTWORK.decode(raw).artist_id


class CatalogIndex:
    """Every worker's view of the catalog. Upserts are idempotent, so it can be fed from a
    table scan and from changelog events in any overlap."""

    def __init__(self) -> None:
        self.works: dict[str, Artwork] = {}
        # (-published, id, work), eligible only: sorted newest first (ids are unique, so the
        # work itself is never compared), and a recent slice is ready for rankers as it is
        self._by_artist: dict[str, list[tuple[float, str, Artwork]]] = {}
        self._latest: list[Artwork] | None = None  # the newest eligible works, oldest first (`latest`)
        self._held_size = _LATEST_HELD  # how many `latest` computed: up to twice as many are held as new ones come
        self.curated: list[str] = []
        self.bootstrapped = False  # loaded from the table after recovery (see tables.ensure_catalog_loaded)
        self.version = 0  # moves on every change: memos of what the index answered key on it

    def upsert(self, artwork: Artwork) -> bool:
        """Add or replace; returns True when the work is newly eligible (worth a refresh)."""
        old = self.works.get(artwork.id)
        self.version += 1
        if old is not None:
            self.remove(artwork.id)
        self.works[artwork.id] = artwork
        if is_eligible(artwork):
            bisect.insort(self._by_artist.setdefault(artwork.artist_id, []), (-published(artwork), artwork.id, artwork))
            held = self._latest
            if held and newness(artwork) > newness(held[0]):  # among the newest held: they stay the newest
                bisect.insort(held, artwork, key=newness)
                if len(held) > 2 * self._held_size:
                    del held[:-self._held_size]
            return old is None or not is_eligible(old)
        return False

    def remove(self, artwork_id: str) -> None:
        old = self.works.pop(artwork_id, None)
        self.version += 1
        if old is not None and is_eligible(old):
            entries = self._by_artist.get(old.artist_id, [])
            entry = (-published(old), old.id)
            i = bisect.bisect_left(entries, entry)
            if i < len(entries) and entries[i][:2] == entry:
                del entries[i]
            held = self._latest
            if held and newness(old) >= newness(held[0]):  # held: the others are still the newest
                i = bisect.bisect_left(held, newness(old), key=newness)
                if i < len(held) and held[i].id == old.id:
                    del held[i]

    def put_back(self, artwork_id: str, entry: Artwork | None) -> None:
        """Make `entry` (what `get` gave before a change; None: absent) the work's entry again."""
        if entry is None:
            self.remove(artwork_id)
        else:
            self.upsert(entry)

    def get(self, artwork_id: str) -> Artwork | None:
        return self.works.get(artwork_id)

    def works_by(self, artist_id: str, since: float = float("-inf")) -> Iterator[Artwork]:
        """Eligible works by an artist published at or after `since`, newest first."""
        for _, _, work in self.recent_by(artist_id, since):
            yield work

    def recent_by(self, artist_id: str, since: float = float("-inf"), limit: int | None = None,
                  until: float = float("inf")) -> list[tuple[float, str, Artwork]]:
        """(−published, id, work) of an artist's eligible works published from `since` to
        `until` (a work announced for later is not recent yet), newest first, at most `limit`
        (the sort keys come along so rankers need not recompute them)."""
        start, end = self.recent_span(artist_id, since, limit, until)
        return self._by_artist.get(artist_id, [])[start:end]

    def recent_span(self, artist_id: str, since: float = float("-inf"), limit: int | None = None,
                    until: float = float("inf")) -> tuple[int, int]:
        """Where `recent_by`'s slice lies in the artist's list: with `version`, it names the slice
        without building it (a memo key for what is derived from it)."""
        entries = self._by_artist.get(artist_id, ())
        start = bisect.bisect_left(entries, (-until, "")) if until != float("inf") else 0
        end = bisect.bisect_right(entries, (-since, "\uffff")) if since != float("-inf") else len(entries)
        if limit is not None:
            end = min(end, start + limit)
        return start, end

    def recent_window(self, artist_id: str, since: float, limit: int | None,
                      until: float) -> tuple[tuple[int, int], float, float, float, float]:
        """`recent_span`, and how far the window can move with the same answer: the span holds for every
        `until` in [until_lo, until_hi) and `since` in (since_lo, since_hi), open where a work's id could
        break a tie (a memo of it stays valid while the clock moves between two works' publication times).

        >>> from datetime import datetime, timezone
        >>> c = CatalogIndex()
        >>> for wid, day in (("w1", 1), ("w2", 3), ("w3", 5)):
        ...     _ = c.upsert(Artwork(wid, "a", published_at=datetime.fromtimestamp(day * 86400.0, tz=timezone.utc)))
        >>> c.recent_window("a", since=2 * 86400.0, limit=None, until=4 * 86400.0)
        ((1, 2), 259200.0, 432000.0, 86400.0, 259200.0)
        """
        entries = self._by_artist.get(artist_id, ())
        start = bisect.bisect_left(entries, (-until, ""))  # as recent_span's, without its shortcuts
        end = bisect.bisect_right(entries, (-since, "\uffff"))
        inf, n = float("inf"), len(entries)
        return ((start, end if limit is None else min(end, start + limit)),
                -entries[start][0] if start < n else -inf, -entries[start - 1][0] if start else inf,
                -entries[end][0] if end < n else -inf, -entries[end - 1][0] if end else inf)

    def latest(self, k: int) -> list[Artwork]:
        """The k newest eligible works in the whole catalog, newest first. The newest are held across
        catalog changes (each recomputed them from the whole catalog: 0.1-0.6 s a list of 100,000 works).

        >>> from datetime import datetime, timezone
        >>> c = CatalogIndex()
        >>> for wid, day in (("w1", 1), ("w2", 3), ("w3", 2)):
        ...     _ = c.upsert(Artwork(wid, "a", published_at=datetime.fromtimestamp(day * 86400.0, tz=timezone.utc)))
        >>> [w.id for w in c.latest(2)], c.upsert(Artwork("w4", "b")), [w.id for w in c.latest(9)]
        (['w2', 'w3'], True, ['w2', 'w3', 'w1', 'w4'])
        >>> c.remove("w2"); [w.id for w in c.latest(2)]
        ['w3', 'w1']
        """
        held = self._latest
        if held is None or len(held) < k:
            pool = (entry for entries in self._by_artist.values() for entry in entries)
            self._held_size = max(2 * k, _LATEST_HELD)
            newest = heapq.nlargest(self._held_size, pool, key=lambda e: (-e[0], e[1]))  # newness, at hand
            held = self._latest = [work for _, _, work in reversed(newest)]
        return held[:-k - 1:-1]

    def eligible_count(self) -> int:
        return sum(len(v) for v in self._by_artist.values())

    def load(self, records: Iterable[bytes]) -> None:
        """Upsert every record, as `upsert` one at a time would (an id's last record wins), each artist's
        works sorted once: inserted one at a time, a worker's catalog load after a start was quadratic
        in an artist's works (400,000 of one artist: 16 s on the event loop; an outside fuzz)."""
        works = {work.id: work for work in map(_ARTWORK.decode, records)}
        if len(works) < 64:
            for work in works.values():
                self.upsert(work)
            return
        for artwork_id in works.keys() & self.works.keys():
            self.remove(artwork_id)  # while every artist's works are still in order
        touched = set()
        for work in works.values():
            self.works[work.id] = work
            if is_eligible(work):
                self._by_artist.setdefault(work.artist_id, []).append((-published(work), work.id, work))
                touched.add(work.artist_id)
        for artist_id in touched:
            self._by_artist[artist_id].sort()  # ids are unique: no two entries compare their works
        self._latest = None
        self.version += 1

    def bootstrap(self, records: Iterable[bytes], curated: list[str] | None) -> None:
        """Load the stored artwork records and curated list (None: keep the current one) and
        mark the index as mirroring the artworks table (a worker after recovery, a rebuild shard)."""
        self.load(records)
        if curated is not None:
            self.curated = curated
        self.bootstrapped = True
