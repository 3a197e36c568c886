"""Lazy k-way merges of sorted candidate lists (pure): the list builder's hot loop
(streams.core.recommend). A list takes a few items of hundreds of candidates, so each source stays
a sorted list and one heap over the lists yields the merged order on demand: heapq.merge over
generators cost two generator frames an item, and a 1-artist user's list pulled ~28 works to take 6.

>>> from streams.core.records import Artwork
>>> a1, a2, b1 = Artwork("a1", "a"), Artwork("a2", "a"), Artwork("b1", "b")
>>> streams = [([(-0.5, -2.0, "a1", a1), (-0.25, -1.0, "a2", a2)], 2.0, "affinity", "a"),
...            ([(-0.75, -3.0, "b1", b1)], 1.0, "trending", None)]
>>> [(w.id, score, source) for w, score, source in merged(streams, lifted=(), spent=())]
[('a1', 1.0, 'affinity'), ('b1', 0.75, 'trending'), ('a2', 0.5, 'affinity')]
>>> by_score = by_artist_score([(-2.0, [(-1.0, "a1", a1)], "s"), (-3.0, [(-5.0, "b1", b1)], "s")])
>>> [(w.id, score) for w, score, _ in by_score]
[('b1', 3.0), ('a1', 2.0)]
"""

from __future__ import annotations

import heapq
from collections.abc import Container, Iterator

from streams.core.records import Artwork


def merged(streams: list[tuple[list[tuple[float, float, str, Artwork]], float, str, str | None]],
           lifted: Container[str], spent: Container[str]) -> Iterator[tuple[Artwork, float, str]]:
    """heapq.merge of the streams' entries (each sorted: (−score, −published, id, work)), each score
    scaled by its stream's factor, as (work, score, source); the last stream's works of `lifted`
    artists skipped, and each other stream (one artist's works) ended once its artist is `spent`
    (the caller fills it while it takes). One heap of [scaled, −published, id, stream, position].
    Ties end at the id: a work is in one stream only."""
    last = len(streams) - 1
    heap = []
    for i, (entries, factor, _, _) in enumerate(streams):
        pos = _next_position(entries, 0, lifted) if i == last else 0
        if pos < len(entries):
            e = entries[pos]
            heap.append([e[0] * factor, e[1], e[2], i, pos])
    heapq.heapify(heap)
    while heap:
        top = heap[0]
        scaled, _, _, i, pos = top
        entries, factor, source, artist = streams[i]
        yield entries[pos][3], -scaled, source
        pos = _next_position(entries, pos + 1, lifted) if i == last else pos + 1
        if pos < len(entries) and artist not in spent:
            e = entries[pos]
            top[0], top[1], top[2], top[4] = e[0] * factor, e[1], e[2], pos
            heapq.heapreplace(heap, top)
        else:
            heapq.heappop(heap)


def _next_position(entries: list[tuple[float, float, str, Artwork]], pos: int, lifted: Container[str]) -> int:
    """The first position from `pos` whose work's artist is not lifted (the trending stream)."""
    while pos < len(entries) and entries[pos][3].artist_id in lifted:
        pos += 1
    return pos


def by_artist_score(streams: list[tuple[float, list[tuple[float, str, Artwork]], str]]):
    """heapq.merge of (−score, −published, id) over (−score, an artist's works, source) streams, one
    score each, as (work, score, source): one heap of [−score, −published, id, stream, position] over
    the lists themselves (see `merged`)."""
    heap = [[neg, works[0][0], works[0][1], i, 0] for i, (neg, works, _) in enumerate(streams) if works]
    heapq.heapify(heap)
    while heap:
        top = heap[0]
        neg, _, _, i, pos = top
        _, works, source = streams[i]
        yield works[pos][2], -neg, source
        pos += 1
        if pos < len(works):
            top[1], top[2], top[4] = works[pos][0], works[pos][1], pos
            heapq.heapreplace(heap, top)
        else:
            heapq.heappop(heap)
