"""Co-engagement bookkeeping (pure): which of a profile's artists a partition's share counts, the
mark a batch stores with the profiles, and the recount that makes the share exact after a crash.

A partition's share (streams.core.popularity.Partial) counts, for each pair of artists, the
users whose top artists hold both; a batch moves it by the difference between a user's top before
and after. The share is written apart from the profiles (it is too large for every batch's
transaction), so after a kill -9 it can be behind them, and a redelivery the profile already
applied has no difference left to count. So a batch that moves the pairs numbers itself
(`Partial.seq`) and stores that number under `MARK` in the same write as the profiles (one RocksDB
write batch, one changelog record batch); a share loaded with another number than the profiles'
mark is recounted from the profiles (`settle`).

>>> from streams.core.affinity import AffinityModel, Profile, dump
>>> from streams.core.popularity import Partial
>>> rows = [("u1", dump(Profile(scores={"a": 2.0, "b": 1.0}))), ("u2", dump(Profile(scores={"a": 1.0, "c": 1.0}))),
...         ("u3", dump(Profile(scores={"a": 1.0, "b": 1.0}, alias_of="u1"))), (MARK, mark_value(7))]
>>> share = Partial(pairs={"a|b": 5}, seq=3)  # written four batches before a kill -9
>>> settle(share, read_mark(rows[-1][1]), rows, AffinityModel(), top_needed=20, m=5), share.pairs, share.seq
(True, {'a|b': 1, 'a|c': 1}, 7)
>>> settle(share, 7, rows, AffinityModel(), top_needed=20, m=5)  # agrees: nothing to do
False
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping, MutableMapping

from streams.core.affinity import AffinityModel, Profile, load
from streams.core.popularity import Partial, count_pairs

# the profiles' key of the mark: a blank id, never a user's (streams.core.properties.blank)
MARK = "\x00"


def counted(profile: Profile) -> bool:
    """Whether the share counts this profile's top artists: not an alias (its events moved to the
    merged profile, which counts them), and not empty."""
    return not profile.alias_of and bool(profile.events or profile.scores)


def top_artists(top: list[tuple[str, float]], m: int) -> list[str]:
    return [artist for artist, _ in top[:m]]


class PairCounts:
    """One batch's co-engagement bookkeeping over a partition's share: the artists the share counts
    for each user the batch loads (`loaded`), moved to what each profile it writes holds now
    (`written`: its events or a merge moved its top, or it became an alias or stopped being one),
    then, if any moved, the batch's number stored with the profiles (`mark`) and, once nothing in the
    batch can raise any more, the moves and the number taken by the share (`commit`). It remembers each
    user's `keep` strongest counted artists (at least m), for the fans index, which follows the same rule.

    >>> from streams.core.affinity import Profile
    >>> share, profiles = Partial(), {}
    >>> batch = PairCounts(share, m=5)
    >>> batch.loaded("anon", Profile(), [])
    >>> batch.written("anon", Profile(scores={"a": 1.0, "b": 1.0}), [("a", 1.0), ("b", 1.0)], rank=None)
    (None, ['a', 'b'])
    >>> batch.mark(profiles); batch.commit(); share.pairs, share.seq, profiles[MARK]
    ({'a|b': 1}, 1, b'1')
    >>> batch = PairCounts(share, m=5)  # the next batch: an identify leaves a pointer
    >>> batch.loaded("anon", Profile(scores={"a": 1.0, "b": 1.0}), [("a", 1.0), ("b", 1.0)])
    >>> batch.written("anon", Profile(scores={"a": 1.0, "b": 1.0}, alias_of="u1"), None, rank=None)
    (['a', 'b'], None)
    >>> batch.mark(profiles); batch.commit(); share.pairs, share.seq, profiles[MARK]
    ({}, 2, b'2')
    """

    def __init__(self, share: Partial, m: int, keep: int = 0):
        self.share, self.m, self.keep = share, m, max(m, keep)
        self._moves: list[tuple[list[str], list[str]]] = []  # (counted tops before, now): the share's pairs to move
        self._counted: dict[str, list[str] | None] = {}  # user -> its counted top artists (None: not counted)

    def loaded(self, user: str, profile: Profile, top: list[tuple[str, float]]) -> None:
        self._counted[user] = top_artists(top, self.keep) if counted(profile) else None

    def written(self, user: str, profile: Profile, top: list[tuple[str, float]] | None,
                rank: Callable[[str], list[tuple[str, float]]]) -> tuple[list[str] | None, list[str] | None] | None:
        """`top`: the profile's ranking if the batch made it (None: `rank(user)` makes it when needed).
        The counted top artists before and now when they changed (None: not counted), else None."""
        old = self._counted[user]
        if top is None and counted(profile) == (old is not None):
            return None  # written without a new score (a repeat, a redelivery): its top is where it was
        new = top_artists(rank(user) if top is None else top, self.keep) if counted(profile) else None
        if old == new:
            return None
        if set((old or ())[: self.m]) != set((new or ())[: self.m]):
            self._moves.append(((old or ())[: self.m], (new or ())[: self.m]))
        self._counted[user] = new
        return old, new

    def finish(self, written: Iterable[str], profiles: Mapping[str, Profile], tops: Mapping[str, list],
               rank: Callable[[str], list[tuple[str, float]]], store: MutableMapping[str, bytes],
               changed: Callable[[str, list[str] | None, list[str] | None], None], again: Container[str] = ()) -> None:
        """Every profile the batch wrote (`profiles`: as it holds them, `tops`: the rankings it made), each
        whose counted top changed told to `changed(user, before, now)` (the fans index), then the mark.
        `again`: users whose records came again after a crash; their counted top is told again as new, since
        the crash may have lost its fans writes from the changelog while the local store kept them."""
        for user in written:
            moved = self.written(user, profiles[user], tops.get(user), rank)
            if moved is not None:
                changed(user, *moved)
            elif user in again and self._counted.get(user):
                changed(user, None, self._counted[user])
        self.mark(store)

    def mark(self, profiles: MutableMapping[str, bytes]) -> None:
        """The batch's number stored with the profiles, if it moves pairs (the share takes it at `commit`)."""
        if self._moves:
            profiles[MARK] = mark_value(self.share.seq + 1)

    def commit(self) -> None:
        """The pairs moved in the share, which takes the batch's number: the batch's last step, so one
        that raises before it (streams.core.guarded) leaves the share as it was."""
        if self._moves:
            for old, new in self._moves:
                self.share.update_pairs(old, new)
            self.share.seq += 1
            self._moves.clear()


def mark_value(seq: int) -> bytes:
    return str(seq).encode()


def read_mark(raw: bytes | None) -> int:
    """The seq a mark holds; 0 without one (a new partition, or one the bulk rebuild wrote), -1 for
    anything else (no share has that number: the pairs are recounted).

    >>> read_mark(mark_value(12)), read_mark(None), read_mark(b"a profile")
    (12, 0, -1)
    """
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        return -1


def recount(rows: Iterable[tuple[str, bytes]], model: AffinityModel, top_needed: int, m: int) -> dict[str, int]:
    """A partition's pairs from its profiles (user -> stored bytes; the mark is skipped), ranked as
    the batches rank them (their `top_needed` strongest, then the first m)."""
    tops = []
    for user, raw in rows:
        if user != MARK and counted(profile := load(raw)):
            tops.append(top_artists(model.top(profile, top_needed), m))
    return count_pairs(tops)


def settle(share: Partial, mark: int, rows: Iterable[tuple[str, bytes]], model: AffinityModel,
           top_needed: int, m: int) -> bool:
    """Recount `share`'s pairs from the profiles when it was not written after the last batch that
    moved them (`mark`, the profiles' mark, differs from its seq); True when it did. Its trending
    needs nothing: it is exact by its positions (streams.core.positions)."""
    if share.seq == mark:
        return False
    share.pairs, share.seq = recount(rows, model, top_needed, m), mark
    return True
