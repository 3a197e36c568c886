"""Per-partition shares merged into one view (pure): each worker keeps live shares of the partitions
it owns, writes them to a global table now and then, and reads a view merged from every
partition's (trending and co-engagement: streams.core.popularity; image counts:
streams.core.image_pipeline)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from streams.core.positions import floor_of


def flush_due(flushed_at: dict, key, now: float, every_s: float) -> bool:
    """Whether `key`'s periodic write is due at `now` (then marked written at `now`): `every_s`
    since its last, either way (a wall clock set back must not stall it; see `stale`).

    >>> at = {}
    >>> [flush_due(at, 0, t, 1.0) for t in (2e9, 2e9 + 0.5, 1.7e9, 1.7e9 + 0.5, 1.7e9 + 1)]
    [True, False, True, False, True]
    """
    if abs(now - flushed_at.get(key, float("-inf"))) >= every_s:
        flushed_at[key] = now
        return True
    return False


class Shares:
    """A worker's live per-partition partials for the partitions it owns, plus the merged view
    it reads (used for trending/co-engagement and for image statistics).

    Partials are written to a global table at most every `flush_s`; the view is rebuilt from the
    table (others' partitions) and the live partials (ours) at most every `view_s`.
    """

    def __init__(self, load: Callable[[bytes | None], Any], merge: Callable[[list], Any],
                 flush_s: float = 1.0, view_s: float = 1.0, dump: Callable[[Any], bytes] | None = None,
                 wall: Callable[[], float] = time.monotonic):
        self.load, self.merge, self.dump = load, merge, dump
        self.flush_s, self.view_s, self._wall = flush_s, view_s, wall
        self._built_wall = float("-inf")
        self.live: dict[int, Any] = {}
        self._flushed_at: dict[int, float] = {}
        self._touched: set[int] = set()  # live shares a batch took since they were last written
        self._settled: dict[int, dict[str, int]] = {}  # partition -> its share's positions in an acknowledged write
        self._view: Any = None
        self._view_at = float("-inf")
        self.building = False  # a rebuild is running elsewhere (streams.worker.runtime.view_without_blocking)

    def partial(self, partition: int, stored: Callable[[], bytes | None], loaded: Callable[[Any], Any] | None = None):
        """This worker's live share of `partition`; `stored()` (its last flushed bytes) is read
        only the first time, not on every batch, and `loaded(share)` called on it then."""
        if partition not in self.live:
            share = self.live[partition] = self.load(stored())
            self._flushed_at[partition] = float("-inf")
            if loaded is not None:
                loaded(share)
        self._touched.add(partition)
        return self.live[partition]

    def flush_due(self, partition: int, now: float) -> bool:
        """Whether to write `partition`'s share now: flush_s since the last write, either way (see `stale`).

        >>> from streams.core.popularity import load_partial
        >>> s = Shares(load_partial, lambda parts: len(parts), flush_s=1.0)
        >>> [s.flush_due(0, t) for t in (2e9, 2e9 + 0.5, 1.7e9, 1.7e9 + 0.5, 1.7e9 + 1)]
        [True, False, True, False, True]
        """
        if flush_due(self._flushed_at, partition, now, self.flush_s):
            self._touched.discard(partition)
            return True
        return False

    def unwritten(self) -> list[int]:
        """The live shares a batch took since they were last written (`written`): all of them must
        be written before the input offsets of those batches are committed, and before a revoked
        partition's share is forgotten, or their counts since the last write are lost.

        >>> from streams.core.popularity import load_partial
        >>> s = Shares(load_partial, lambda parts: len(parts), flush_s=1.0)
        >>> _ = s.partial(0, lambda: None), s.partial(1, lambda: None)
        >>> s.flush_due(0, 2e9), s.unwritten()
        (True, [1])
        >>> s.written(1); s.unwritten()
        []
        """
        return sorted(self._touched)

    def written(self, partition: int) -> None:
        self._touched.discard(partition)

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions moved to another worker: its copy is the live one now."""
        for p in partitions:
            self.live.pop(p, None)
            self._flushed_at.pop(p, None)
            self._touched.discard(p)
            self._settled.pop(p, None)

    def positions(self) -> dict[int, dict[str, int]]:
        """Each live share's decided input positions (its `counted`), copied as they are now: call it
        once they are all written, and `settle` them once those writes are acknowledged."""
        return {p: floor_of(share.counted) for p, share in self.live.items()}

    def settle(self, positions: dict[int, dict[str, int]]) -> None:
        """`positions` (from `positions`) are in acknowledged writes: no crash brings a share back behind them.

        >>> from streams.core.popularity import load_partial
        >>> s = Shares(load_partial, lambda parts: len(parts))
        >>> s.partial(0, lambda: None).counted["events:0"] = 7
        >>> written = s.positions(); s.live[0].counted["events:0"] = 9  # counted on after the write
        >>> s.floor(0), s.settle(written), s.floor(0)
        ({}, None, {'events:0': 7})
        >>> s.forget([0]); s.floor(0)
        {}
        """
        for p, counted in positions.items():
            if p in self.live:
                self._settled[p] = counted

    def floor(self, partition: int) -> dict[str, int]:
        """The floor of the repeats a keyed value of `partition` keeps (streams.core.positions.note_repeat)."""
        return self._settled.get(partition, {})

    def view(self, stored: Iterable[tuple[str, bytes]], now: float):
        """The merged view, rebuilt here when stale (see `snapshot`/`build` to rebuild elsewhere)."""
        if self.stale(now):
            self.install(self.build(self.snapshot(stored)), now)
        return self._view

    @property
    def current(self):
        return self._view

    def stale(self, now: float) -> bool:
        """Older than view_s, or built at a later time than now: the event clock reads the wall
        clock until the first event, so a view built before it (a catalog refresh, an HTTP read)
        is dated after a replayed history and would otherwise never go stale.

        >>> wall = [0.0]
        >>> from streams.core.popularity import load_partial
        >>> s = Shares(load_partial, lambda parts: len(parts), view_s=1.0, wall=lambda: wall[0])
        >>> s.install("built at the wall clock", 2e9)
        >>> s.stale(2e9 + 0.5), s.stale(2e9 + 1), s.stale(1.7e9)
        (False, True, True)

        Or view_s old on the wall clock: the event clock stands still once its input ends, and the
        view built as the last batch began (without that batch's counts) stayed for good, so every
        list of a backtest replayed in one read lacked its trending works.

        >>> s.install("built as the last batch began", 1.7e9); wall[0] += 1.0
        >>> s.stale(1.7e9)
        True
        """
        return (self._view is None or abs(now - self._view_at) >= self.view_s
                or self._wall() - self._built_wall >= self.view_s)

    def snapshot(self, stored: Iterable[tuple[str, bytes]]) -> dict[str, Any]:
        """Everything a view is built from, detached from live state: stored bytes for other
        workers' partitions, ours as they are (or, given `dump`, as bytes, for a view built in
        another thread while ours keep changing)."""
        parts: dict[str, Any] = dict(stored)
        parts.update({f"p{p}": self.dump(part) if self.dump else part for p, part in self.live.items()})
        return parts

    def build(self, snapshot: dict[str, Any]):
        """Pure; with `dump` set, safe to run in another thread."""
        return self.merge([self.load(v) if isinstance(v, bytes) else v for v in snapshot.values()])

    def install(self, view, built_at: float) -> None:
        self._view, self._view_at, self._built_wall = view, built_at, self._wall()
