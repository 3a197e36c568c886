"""Alias pointers (pure): where a record for an aliased id goes next, and where a ring of ids that
alias one another breaks.

An identify or alias message links two ids on the previous id's partition, before the other id's
merge can have landed there, so two messages linking the same ids both ways (or a longer ring)
left every id of the ring pointing at the next one, and every record for them circled the ring
for ever (each new event added another). A forwarded record now carries the ids it came through
(`via`): one that reaches an id whose pointer leads back into them is in a ring, and the ring
breaks at its smallest id, the same one whichever record finds it: that id drops its pointer and
the record is applied there; the merges still under way land there too (a merge that reaches the
id it left goes on to the ring's profile with that id's data, and is dropped only when that id is
the ring's profile, which still holds everything it carried).

Exact: links made one at a time (each merge lands before the next link), both ways included; and
rings whose links cross in flight when no id of the ring had absorbed another first (a ring of two
always). Not exact: links crossing in flight over ids that had absorbed others (a random search of
interleavings of 3 ids, a third of the operations identify calls, found 4 in 3,000 of 8 operations
and 59 in 3,000 of 24 with an event counted twice or lost; nothing circled in any).

>>> next_hop("a", "b", ())  # a plain pointer: on to b
('b', ('a',))
>>> next_hop("b", "a", ("a",))  # back to a: the ring a, b breaks at a
('a', ('a', 'b'))
>>> next_hop("a", "b", ("a", "b")) is None  # a is the ring's smallest id: applied here
True
"""

from __future__ import annotations

from collections.abc import MutableMapping

import msgspec

from streams.core.records import AffinityUpdate, Identity, Recommendations, decode_recs, encode

# ids a record may pass through. Links made in a burst forward each merge along the rest of the
# chain, one record a hop: a 33 KB collector batch chaining 300 ids made 44,850 internal records,
# 550 ids 150,975 (an outside fuzzer); with this bound a chain of n costs at most 32·n, and no
# person's ids chain 32 deep (anonymous -> signed-up -> renamed is 3)
MAX_VIA = 32


class AliasChainTooLong(ValueError):
    """A record passed through MAX_VIA aliased ids (it is dead-lettered)."""


def next_hop(user: str, alias_of: str, via: tuple[str, ...]) -> tuple[str, tuple[str, ...]] | None:
    """A record for `user`, whose profile points to `alias_of`, having come through `via`: (the id
    to send it to, its new `via`), or None when `user` is where its ring breaks (apply it here)."""
    via = (*via, user)
    if alias_of in via:
        root = min(via[via.index(alias_of):])
        return None if root == user else (root, via)
    if len(via) >= MAX_VIA:
        raise AliasChainTooLong(f"{len(via)} aliased ids from {via[0]!r}")
    return alias_of, via


def forwarded(record, alias_of: str, **changes):
    """`record` (a Signal or Merge with `user_id` and `via`) on its way from its aliased id to the
    next, with `changes`; None when its id is where its ring breaks (see `next_hop`)."""
    hop = next_hop(record.user_id, alias_of, record.via)
    return None if hop is None else msgspec.structs.replace(record, user_id=hop[0], via=hop[1], **changes)


def pointers(raw: bytes | None, link: Identity, now: float) -> tuple[bytes, bytes]:
    """What the previous id of `link` says once merged into its user id: (its recommendations value, a pointer
    list; its affinity.updates record, no artists and `alias_of`: a subscriber keeping the last record of each
    key counted a merged visitor's artists twice, under both ids). Its `as_of` is null, as over HTTP: it has no
    scores (it was 0.0, 1970, for an id linked before any event: an outside check)."""
    update = AffinityUpdate(link.previous_id, None, [], link.message_id, alias_of=link.user_id)
    return pointer_list(raw, link.previous_id, link.user_id, now, link.message_id), encode(update)


def unpointed(recs: MutableMapping[str, bytes], user: str) -> bytes | None:
    """The list of `user` where a ring of aliases broke (it dropped its pointer), its own again: written back to
    `recs` without `alias_of` and returned, or None when it was no pointer. A list is written when its items
    change, so a ring of ids linked in one burst left every id's value pointing at the next: reads went round it
    until they gave up on a stale list, or for 10 s across workers, and so did subscribers (an outside fuzz).

    >>> recs = {"a": pointer_list(None, "a", "b", 5.0)}
    >>> unpointed(recs, "a") == recs["a"], decode_recs(recs["a"]).alias_of, unpointed(recs, "a")
    (True, '', None)
    """
    old = decode_recs(recs.get(user))
    if old is None or not old.alias_of:
        return None
    recs[user] = value = encode(msgspec.structs.replace(old, alias_of=""))
    return value


def pointer_list(raw: bytes | None, user: str, alias_of: str, now: float, trigger: str = "alias") -> bytes:
    """The recommendations value of `user` once merged into `alias_of`: its last list (an empty one
    if it had none), marked with `alias_of`, so a read of the old id serves the merged id's list
    (a newcomer's check: the old id kept serving its list from before the merge, for good). It is
    generated `now`, triggered by the link's messageId (`trigger`): a copy of the last record's time
    and trigger was dropped as a repeat by clients ordering or de-duplicating by them (an outside check).

    >>> pointer_list(None, "anon-1", "u1", 5.0)
    b'{"user_id":"anon-1","variant":"","generated_at":5.0,"model_version":"","trigger":"alias","items":[],"alias_of":"u1"}'
    """
    old = decode_recs(raw) or Recommendations(user, "", now, "", trigger, [])
    return encode(msgspec.structs.replace(old, alias_of=alias_of, generated_at=now, trigger=trigger))
