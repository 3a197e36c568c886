"""Recent values of a table held in memory, so the hot read (GET /recommendations) of a user
written or read lately is a dict get instead of a RocksDB get.

Why: under wrk the RocksDB get was the largest cost the handler adds to aiohttp's own (~8 µs of
~90 µs a request in a loaded worker, py-spy: memtable skip-list seeks among a key's many versions).
Why it stays exact: every write of such a table goes through the state transaction, which puts the
values here in the same synchronous step as its RocksDB write (streams.worker.commit), and reads
fill it only from a partition this worker owns and has recovered; an assignment change (after
which faust's recovery may rewrite a store) empties it (streams.worker.reads).
"""

from __future__ import annotations

# per entry besides its key and value: the dict slot and two bytes objects' headers (CPython 3.11,
# tracemalloc over 10,000 entries of 550-byte lists: 95.5 bytes)
ENTRY_OVERHEAD = 100


class HotValues:
    """Key -> value within `budget` bytes (keys, values and ENTRY_OVERHEAD each), the first put
    first to leave (a read that finds a key does not move it: a dict get is the whole read). A value
    too large for the budget alone is not kept.

    >>> hot = HotValues(budget=2 * ENTRY_OVERHEAD + 20)
    >>> hot.put(b"a", b"12345678"); hot.put(b"b", b"1")
    >>> hot.get(b"a"), hot.size - 2 * ENTRY_OVERHEAD
    (b'12345678', 11)
    >>> hot.put(b"c", b"123456789")  # over budget: the oldest put leaves first
    >>> hot.get(b"a"), hot.get(b"b"), hot.get(b"c"), len(hot)
    (None, b'1', b'123456789', 2)
    >>> hot.put(b"b", b"x" * 500)  # alone over budget: not kept, and the older value goes too
    >>> hot.get(b"b"), len(hot)
    (None, 1)
    """

    __slots__ = ("budget", "size", "_values")

    def __init__(self, budget: int):
        self.budget = budget
        self.size = 0
        self._values: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self._values.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        values = self._values
        old = values.pop(key, None)
        if old is not None:
            self.size -= len(key) + len(old) + ENTRY_OVERHEAD
        cost = len(key) + len(value) + ENTRY_OVERHEAD
        if cost > self.budget:
            return
        values[key] = value
        self.size += cost
        while self.size > self.budget:
            oldest = next(iter(values))
            self.size -= len(oldest) + len(values.pop(oldest)) + ENTRY_OVERHEAD

    def clear(self) -> None:
        self._values.clear()
        self.size = 0

    def __len__(self) -> int:
        return len(self._values)


# changelog topic name -> its table's hot values (only tables registered by `keep_hot`)
hot_tables: dict[str, HotValues] = {}


def keep_hot(changelog: str, budget: int) -> None:
    """Hold recent values of the table behind `changelog` (budget 0: none)."""
    hot_tables.pop(changelog, None)
    if budget > 0:
        hot_tables[changelog] = HotValues(budget)


def written(rows) -> None:
    """A state transaction's stored rows ((changelog, partition) -> [(key, value)]) into the hot values."""
    for (changelog, _), pairs in rows.items():
        hot = hot_tables.get(changelog)
        if hot is not None:
            for key, value in pairs:
                hot.put(key, value)


def forget_all() -> None:
    """An assignment changed: a store may be rewritten by recovery, so nothing held stays."""
    for hot in hot_tables.values():
        hot.clear()
