"""A bounded window of recently applied messageIds, packed (pure): 8 bytes of hash per id, oldest
first, in one bytearray.

Three table values keep one (a user's profile, their experiment log, a consumer's image views)
for producer retries: the same event sent twice lands at two offsets. A heavy user's window is
2,048 to 4,096 ids, and as a list of ints it was the costliest part of reading and writing the
value: msgpack made 2,048 Python ints on every decode (42 µs) where one bytes field is a copy
(0.6 µs). A membership test is `bytearray.find` over the window (C, no set to build).

A table value with a window subclasses `Remembers`. Values written before the packing hold a list
of ints (the same 64-bit digests): the field is typed `bytearray | list[int]`, packed on decode.

>>> window = bytearray()
>>> [remember(window, m, size=2) for m in ("m1", "m2", "m1", "m3", "m1")]
[True, True, False, True, True]
>>> len(window), contains(window, digest("m3")), contains(window, digest("m2"))
(16, True, False)
>>> packed([message_digest("m1")]) == digest("m1")
True

A user's profile keeps a longer window too (`Horizon`): ids of messages it took within `horizon_s`
(by the worker's clock) are kept past the count. Two copies of one message can reach a profile far
apart in the user's messages but close in time: keyed and unkeyed copies take two paths, and a copy that
waited for its artwork comes back after its backoff, while a worker catching up a backlog applies
thousands of the user's messages from one path before the other's copy arrives.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec

SIZE = 8  # bytes per id


class Remembers(msgspec.Struct, omit_defaults=True):
    """A table value's window of recent messageIds (its first field when encoded)."""

    seen: bytearray | list[int] = b""

    def __post_init__(self):
        self.seen = packed(self.seen)


class Dated(Remembers, omit_defaults=True):
    """A window whose ids are also dated, by chunks of CHUNK ids in arrival order: when the chunk's newest
    id came (so a chunk goes once all its ids are past the horizon)."""

    seen_times: list[float] = []

    def __post_init__(self):
        super().__post_init__()
        chunks = -(-len(self.seen) // (SIZE * CHUNK))
        if len(self.seen_times) != chunks:  # written before ids were dated: they count as old (the count keeps them)
            self.seen_times = ([0.0] * chunks + self.seen_times)[-chunks:] if chunks else []


CHUNK = 64  # ids dated together: a float per 64 ids (9 bytes encoded), not a time per id
MAX_DATED = 16384  # ids a window keeps at most within its horizon: 128 KB


@dataclass(frozen=True)
class Horizon:
    """How long a window remembers: at least the newest `size` ids, more of those that came within
    `horizon_s` of the newest, never more than `cap` ids (a value stays well under Kafka's 1 MB).

    >>> h, w = Horizon(size=2, horizon_s=60.0, cap=CHUNK * 4), Dated()
    >>> [h.remember(w, f"m{i}", at=i / 10) for i in range(200)].count(True)  # 200 messages in 20 s
    200
    >>> h.remember(w, "m0", at=19.9), len(w.seen) // SIZE, w.seen_times  # the oldest kept: within 60 s
    (False, 200, [6.3, 12.7, 19.1, 19.9])
    >>> h.remember(w, "m200", at=90.0), len(w.seen) // SIZE, w.seen_times  # past it: the newest chunk kept
    (True, 9, [90.0])
    >>> for i in range(300):
    ...     _ = h.remember(w, f"n{i}", at=90.0)
    >>> len(w.seen) // SIZE <= h.cap, h.remember(w, "n299", at=90.0), h.remember(w, "m0", at=90.0)
    (True, False, True)
    """

    size: int = 2048
    horizon_s: float = 3600.0
    cap: int = MAX_DATED

    @classmethod
    def of(cls, size: int, horizon_s: float) -> Horizon:
        """A table value's window: `size` ids, more within `horizon_s`, at most MAX_DATED (or `size`)."""
        return cls(size, horizon_s, max(size, MAX_DATED))

    def remember(self, window: Dated, message_id: str, at: float) -> bool:
        """Record a message that came at `at` (in place); False if it is there already (a duplicate)."""
        hashed = digest(message_id)
        if contains(window.seen, hashed):
            return False
        self.note(window, hashed, at)
        if len(window.seen) >= (self.size + CHUNK) * SIZE:  # else nothing to drop
            self.trim(window, at)
        return True

    @staticmethod
    def note(window: Dated, hashed: bytes, at: float) -> None:
        """Append one id (a `digest`) that came at `at`, untrimmed (`streams.core.bulk` trims at the end)."""
        if len(window.seen) % (SIZE * CHUNK):
            if at > window.seen_times[-1]:
                window.seen_times[-1] = at
        else:
            window.seen_times.append(at)
        window.seen += hashed

    def trim(self, window: Dated, now: float) -> None:
        """Drop the oldest chunks while `size` ids remain without them and they are past the horizon at `now`
        (or the window is over its cap)."""
        drop, n, ids = 0, len(window.seen_times), len(window.seen) // SIZE
        while drop < n - 1 and ids - CHUNK >= self.size and (
                window.seen_times[drop] <= now - self.horizon_s or ids > self.cap):
            drop, ids = drop + 1, ids - CHUNK
        drop_oldest(window, drop)

    def union(self, mine: Dated, theirs: bytearray, at: float) -> None:
        """`theirs` ids after those of `mine` they lack, into `mine` (a merge of two profiles at `at`): all
        dated `at`, as a merge's ids have no single time (kept a horizon longer, never past the cap)."""
        ids = union(mine.seen, theirs, self.cap)
        mine.seen, mine.seen_times = bytearray(), []
        for i in range(0, len(ids), SIZE):
            self.note(mine, bytes(ids[i:i + SIZE]), at)
        self.trim(mine, at)


def drop_oldest(window: Dated, chunks: int) -> bool:
    """Drop a window's oldest `chunks` chunks of ids (a value shrunk to fit), never its newest; False if none."""
    chunks = min(chunks, len(window.seen_times) - 1)
    if chunks > 0:
        del window.seen[:chunks * CHUNK * SIZE], window.seen_times[:chunks]
    return chunks > 0


def digest(message_id: str) -> bytes:
    """The 8-byte hash of a messageId (big-endian: `message_digest` read as bytes)."""
    return hashlib.blake2b(message_id.encode(), digest_size=SIZE).digest()


def message_digest(message_id: str) -> int:
    """The same hash as a signed 64-bit int: collisions ~2^-64."""
    return int.from_bytes(digest(message_id), "big", signed=True)


def packed(window: bytearray | bytes | list[int]) -> bytearray:
    """A window as stored now, from either form (a list of int digests: values written before)."""
    if type(window) is bytearray:
        return window
    if isinstance(window, list):
        return bytearray(b"".join(d.to_bytes(SIZE, "big", signed=True) for d in window))
    return bytearray(window)


def unpacked(window: bytearray) -> list[int]:
    """The digests of a window as ints, oldest first (tests, inspection)."""
    return [int.from_bytes(d, "big", signed=True) for d in _ids(window)]


def _ids(window: bytearray) -> list[bytes]:
    return [bytes(window[i:i + SIZE]) for i in range(0, len(window), SIZE)]


def contains(window: bytearray, hashed: bytes) -> bool:
    """Whether `hashed` (a `digest`) is one of the window's ids: a match must start at an id's
    boundary (an unaligned one spans two ids)."""
    i = window.find(hashed)
    while i > 0 and i % SIZE:
        i = window.find(hashed, i + 1)
    return i >= 0


def remember(window: bytearray, message_id: str, size: int) -> bool:
    """Record `message_id` in `window` (in place), keeping the newest `size` ids; False if it
    is there already (a duplicate)."""
    hashed = digest(message_id)
    if contains(window, hashed):
        return False
    window += hashed
    trim(window, size)
    return True


def trim(window: bytearray, size: int) -> None:
    """Keep the newest `size` ids (in place)."""
    if len(window) > size * SIZE:
        del window[: len(window) - size * SIZE]


def union(mine: bytearray, theirs: bytearray, size: int) -> bytearray:
    """`theirs` after the ids of `mine` they do not hold, newest `size` kept (a merge of two profiles).

    >>> a, b = bytearray(digest("x") + digest("y")), bytearray(digest("y") + digest("z"))
    >>> unpacked(union(a, b, 10)) == [message_digest(m) for m in ("x", "y", "z")]
    True
    """
    held = set(_ids(theirs))
    kept = bytearray(b"".join(d for d in _ids(mine) if d not in held))
    kept += theirs
    trim(kept, size)
    return kept
