"""At most one recommendations list per user per short window (pure): Kafka Streams' record cache,
for the one output that costs most to build.

A busy user's events arrive a few hundred milliseconds apart, and each used to rebuild and send
their list, while a client only ever sees the newest. A user whose list was built less than
`window_s` ago is *owed* a list instead (with the newest event as its trigger). Owed lists are
built once their window ends (`due`), and all of them before the input offsets covering their
events are committed (`drain`), so a crash loses none: input not committed is read again, and the
pipeline sends a redelivered event's outputs again. A user's first list is never held.

Times are the worker's wall clock (monotonic seconds), passed in: replayed event times can be
years apart within a second.

>>> t = ListThrottle(0.5)
>>> t.hold("u1", "m1", now=10.0)          # no list built in the window: build it now
False
>>> t.hold("u1", "m2", now=10.2), t.hold("u1", "m3", now=10.3)  # owed, the newest trigger kept
(True, True)
>>> t.due(now=10.4), t.due(now=10.5)
({}, {'u1': 'm3'})
>>> t.hold("u1", "m3", now=10.5)          # the caller builds what was due: a new window
False
>>> t.hold("u1", "m4", now=10.6), t.drain(), len(t)
(True, {'u1': 'm4'}, 0)
"""

from __future__ import annotations

from collections.abc import Callable

from streams.core.pipeline import REFRESH_CHUNK
from streams.core.records import Refresh


class ListThrottle:
    def __init__(self, window_s: float):
        self.window_s = window_s
        self._built: dict[str, float] = {}  # user -> when their list was last built, oldest first
        self._owed: dict[str, str] = {}  # user -> trigger of the newest change not built yet

    def __len__(self) -> int:
        """Lists owed."""
        return len(self._owed)

    def hold(self, user: str, trigger: str, now: float) -> bool:
        """True: `user`'s list was built less than a window ago, and is now owed. False: build it
        now (its window starts)."""
        built = self._built.get(user)
        if built is not None and now - built < self.window_s:
            self._owed[user] = trigger
            return True
        self._built.pop(user, None)  # re-inserted last: the dict stays in build order
        self._built[user] = now
        self._owed.pop(user, None)  # this build covers what was owed
        return False

    def due(self, now: float) -> dict[str, str]:
        """The owed lists whose window has ended (user -> trigger), to build now. Users whose
        window ended are forgotten: the memory is one window's users."""
        out = {}
        while self._built:
            user, built = next(iter(self._built.items()))
            if now - built < self.window_s:
                break
            del self._built[user]
            if user in self._owed:
                out[user] = self._owed.pop(user)
        return out

    def drain(self) -> dict[str, str]:
        """Every owed list, to build now (before an offset commit, a revoke, a stop)."""
        out, self._owed = self._owed, {}
        for user in out:
            self._built.pop(user, None)
        return out


class PartitionThrottles:
    """A ListThrottle per state partition (a batch, a due check and a drain go by partition);
    `window_s` 0 holds nothing.

    >>> lists = PartitionThrottles(0.5)
    >>> hold = lists.hold_for(3, now=1.0)
    >>> hold("u1", "m1"), lists.hold_for(3, now=1.1)("u1", "m2"), lists.due(now=1.2), len(lists), lists.drain()
    (False, True, {}, 1, {3: {'u1': 'm2'}})
    >>> PartitionThrottles(0).hold_for(3, now=1.0) is None
    True
    """

    def __init__(self, window_s: float):
        self.window_s = window_s
        self._throttles: dict[int, ListThrottle] = {}

    def __len__(self) -> int:
        """Lists owed, over all partitions."""
        return sum(len(t) for t in self._throttles.values())

    def hold_for(self, partition: int, now: float):
        """The pipeline's `hold(user, trigger)` for a batch of `partition` at `now` (None: no window)."""
        if self.window_s <= 0:
            return None
        throttle = self._throttles.get(partition)
        if throttle is None:
            throttle = self._throttles[partition] = ListThrottle(self.window_s)
        return lambda user, trigger: throttle.hold(user, trigger, now)

    def due(self, now: float) -> dict[int, dict[str, str]]:
        """Per partition, the owed lists whose window ended (user -> trigger)."""
        return {p: owed for p, t in self._throttles.items() if (owed := t.due(now))}

    def drain(self) -> dict[int, dict[str, str]]:
        """Per partition, every owed list."""
        return {p: owed for p, t in self._throttles.items() if (owed := t.drain())}


class RefreshQuota:
    """Catalog refreshes (streams.core.records.Refresh) in one read of a partition, up to `budget` fans' lists
    rebuilt: `exceeded(record)` is true for the first refresh past it that costs anything (`fans(artist)`: the
    artist's fans in the partition), and the reader reads the partition again from there. A read is applied with
    the worker's event loop held, and a backlog of new works put 40 refreshes (1.7 s) in one read while HTTP reads
    waited. A refresh of an artist without fans here costs nothing and never waits (counted by records, a catalog
    load's thousands of them held every read and doubled first-signal latency).

    >>> from streams.core.records import Refresh
    >>> quota = RefreshQuota({"a1": 300, "a2": 40, "a3": 0}.get, budget=100)
    >>> [quota.exceeded(r) for r in ("a signal", Refresh("a1"), Refresh("a3"), Refresh("a2"))]
    [False, False, False, True]
    >>> quota.spent  # a1's first 100 fans (REFRESH_CHUNK): the rest in a refresh record of their own
    100
    """

    def __init__(self, fans: Callable[[str], int], budget: int = REFRESH_CHUNK):
        self.fans, self.budget, self.spent = fans, budget, 0

    def exceeded(self, record) -> bool:
        if not isinstance(record, Refresh):
            return False
        cost = max(0, min(self.fans(record.artist_id) - record.start, REFRESH_CHUNK))
        if cost and self.spent >= self.budget:
            return True
        self.spent += cost
        return False
