"""What "now" is for recommendations (pure): the wall clock, or the event-time clock.

Recommendations depend on now (the recency window, the trending decay, list refreshes). Live,
that is the wall clock. A backtest replays old history at full speed and must be judged as of
its own time: with the event clock, now is the newest event time seen (RECSTREAM_CLOCK=event).

>>> clock = Clock("event", wall=lambda: 2e9)
>>> clock.now()  # nothing seen yet: the wall clock
2000000000.0
>>> clock.observe(1e9); clock.observe_all([object()]); clock.observe(5e8); clock.now()
1000000000.0
>>> Clock("wall", wall=lambda: 2e9).now()
2000000000.0

After a restart nothing is seen yet, and the wall clock (years after a replayed history) rebuilt
lists unlike the ones before it (an outside check: 15 of 200 after a kill -9). `seed` gives the
newest event time the state knows, asked at most once a second until something is seen:

>>> state = []
>>> clock = Clock("event", wall=lambda: 2e9, seed=lambda: max(state, default=0.0))
>>> clock.now()  # the state knows no event yet (not recovered, or empty)
2000000000.0
>>> state.append(1e9); clock.now()  # within the second: not asked again
2000000000.0
>>> clock._seed_after = 0; clock.now()
1000000000.0
"""

from __future__ import annotations

import time
from collections.abc import Callable

MODES = ("wall", "event")


class Clock:
    def __init__(self, mode: str = "wall", wall: Callable[[], float] = time.time,
                 seed: Callable[[], float] | None = None):
        if mode not in MODES:
            raise ValueError(f"clock must be one of {MODES}")
        self.mode, self._wall, self._newest = mode, wall, 0.0
        self.seed, self._seed_after = seed, 0.0

    def observe(self, event_time: float) -> None:
        """An event's time (ignored by the wall clock)."""
        if event_time > self._newest:
            self._newest = event_time

    def observe_all(self, records) -> None:
        """The times of parsed records (those that have one)."""
        if self.mode == "event":
            for record in records:
                self.observe(getattr(record, "time", 0.0))

    def now(self) -> float:
        if self.mode == "event":
            if not self._newest and self.seed is not None and self._wall() >= self._seed_after:
                self._seed_after = self._wall() + 1.0
                self.observe(self.seed())
            if self._newest:
                return self._newest
        return self._wall()
