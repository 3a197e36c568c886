"""Coverage intervals (pure): when a listed item counts a conversion, per (group, variant, source).

An exposure covers each listed item for [tₑ, tₑ + W]; a user's log keeps them per item, merged when
they overlap (`cover`), and at most a cap of them, the latest ending (`latest_ending`).

>>> spans = []
>>> cover(spans, Span("", "A", "trending", 0.0, 10.0)); cover(spans, Span("", "A", "trending", 5.0, 15.0))
>>> [(s.start, s.end) for s in spans]
[(0.0, 15.0)]
"""

from __future__ import annotations

import msgspec


class Span(msgspec.Struct, array_like=True):
    group: str
    variant: str
    source: str
    start: float
    end: float


def cover(spans: list[Span], new: Span) -> None:
    """Add [start, end] to the same-labelled intervals, merging those it overlaps."""
    same = (new.group, new.variant, new.source)
    for old in [s for s in spans if (s.group, s.variant, s.source) == same
                and s.start <= new.end and new.start <= s.end]:
        new.start, new.end = min(new.start, old.start), max(new.end, old.end)
        spans.remove(old)
    spans.append(new)


def latest_ending(shown: dict[str, list[Span]], cap: int) -> dict[str, list[Span]]:
    """The `cap` latest-ending spans, in their order; of those ending at the cut, the first met
    (the set `heapq.nlargest` keeps, without ranking every span by a Python key).

    >>> shown = {"w1": [Span("", "A", "", 0.0, 5.0)], "w2": [Span("", "A", "", 0.0, 9.0), Span("", "B", "", 0.0, 5.0)]}
    >>> {item: [(s.variant, s.end) for s in lst] for item, lst in latest_ending(shown, 2).items()}
    {'w1': [('A', 5.0)], 'w2': [('A', 9.0)]}
    """
    ends = sorted((s.end for lst in shown.values() for s in lst), reverse=True)
    if len(ends) <= cap:
        return shown
    cut = ends[cap - 1]
    room = cap - ends.index(cut)  # how many ending exactly at the cut stay
    kept: dict[str, list[Span]] = {}
    for item, lst in shown.items():
        mine = [s for s in lst if s.end > cut or (s.end == cut and (room := room - 1) >= 0)]
        if mine:
            kept[item] = mine
    return kept
