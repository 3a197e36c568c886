"""Write fencing: a worker frozen past its session timeout writes no table state when it resumes.

A worker frozen (SIGSTOP, a paused VM, a stall) for longer than the session timeout is out of its
group, and another worker restores its partitions and writes to their changelogs. Resumed, the
frozen worker learns it only at its next heartbeat, and meanwhile finishes the batch it was in:
changelog records built from its stale store land after the new owner's, and the offsets it records
from their acks lie past the new owner's writes, so its own next restore skips those (an outside
check: 20-68 merged ids served wrongly for good; a check of membership before a batch could not
cover a batch frozen between its local write and its acks). Without transactions (none here) the
broker fences nothing, so the worker fences itself, at the last step before a write leaves it:

- the group's answers are recorded (`Membership`): a heartbeat it answered, with the time of its
  sending (so a late answer proves nothing about the time after), and each assignment;
- a produce request carrying changelog records goes out only while the group answered within half
  the session timeout (heartbeats go every tenth of it). Otherwise it is held until the group
  answers again: under the same member id (a stall within the session, or a rebalance's join) it
  goes out; if the group no longer knows the member (a new member id, or a heartbeat answered
  "unknown member"), it never does, and the worker exits at once with EXIT_CODE;
- the local stores holding writes never acknowledged (`Unsent`: counted from each batch's RocksDB
  write to its acks) are noted as it exits, and removed at the next start, so they are recovered
  from their changelogs (streams.worker.local_state.drop_unsent). Resumed, the worker had applied
  new batches on its stale store before it knew; a restore from the store's offset kept those
  writes wherever the new owner found a key unchanged and wrote nothing (an outside check: 2 lists
  served wrongly for good in 1 of 4 runs).

Outputs without changelog records (lists, signals.keyed) are not held: a resumed worker's copy of
one is a duplicate the at-least-once contract already allows. Not covered: a freeze in the
microseconds between the check and the socket write, and a clock that stops while the broker's runs
(a VM whose monotonic clock is paused with it)."""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger(__name__)

EXIT_CODE = 75  # EX_TEMPFAIL: restart me (docker-compose's restart policy does)
CHANGELOG_SUFFIX = "-changelog"


class Unsent:
    """The table partitions whose local store holds writes their changelog has not acknowledged:
    batches count in after their RocksDB write, out after their acks (a failed send stays in).

    >>> unsent = Unsent()
    >>> rows = {("app-affinity-changelog", 1): [(b"u1", b"p")], ("app-fans-changelog", 1): [(b"a1", b"f")]}
    >>> unsent.stored(rows); unsent.stored({("app-affinity-changelog", 1): []}); unsent.acked(rows)
    >>> unsent.partitions()
    [('app-affinity-changelog', 1)]
    """

    def __init__(self):
        self._batches: dict[tuple[str, int], int] = {}

    def stored(self, rows) -> None:
        for key in rows:
            self._batches[key] = self._batches.get(key, 0) + 1

    def acked(self, rows) -> None:
        for key in rows:
            left = self._batches.get(key, 0) - 1
            if left > 0:
                self._batches[key] = left
            else:
                self._batches.pop(key, None)

    def partitions(self) -> list[tuple[str, int]]:
        return sorted(self._batches)


class Membership:
    """What this worker last heard from its group: when (monotonic) the group last answered for
    it and under which member id. Never answered: nothing is owned yet, so nothing is fenced.

    >>> m = Membership(window_s=3.0)
    >>> m.may_write(now=100.0)
    True
    >>> m.confirm("m-1", at=100.0); m.may_write(now=102.9), m.may_write(now=103.1)
    (True, False)
    >>> m.verdict("m-1", now=104.0), m.verdict("m-1", now=102.0)
    (None, True)
    >>> m.lost(); m.may_write(now=100.5), m.verdict("m-1", now=100.5)
    (False, False)
    >>> m.confirm("m-2", at=110.0); m.verdict("m-1", now=110.0), m.verdict("m-2", now=110.0)
    (False, True)
    """

    def __init__(self, window_s: float):
        self.window_s = window_s
        self.confirmed_at: float | None = None
        self.member_id: str | None = None

    def confirm(self, member_id: str, at: float) -> None:
        """The group answered for `member_id` as of `at` (a heartbeat's sending, an assignment);
        an answer older than the last one recorded changes nothing (it may name a member since lost).

        >>> m = Membership(window_s=3.0); m.confirm("m-2", at=110.0); m.confirm("m-1", at=109.0)
        >>> m.member_id, m.confirmed_at
        ('m-2', 110.0)
        """
        if self.confirmed_at is None or at >= self.confirmed_at:
            self.confirmed_at, self.member_id = at, member_id

    def lost(self) -> None:
        """The group no longer knows this member (it answered a heartbeat "unknown member")."""
        self.member_id = None

    def may_write(self, now: float) -> bool:
        """Whether state may be written: the group answered lately for a member it still knows (or
        never answered: nothing is owned yet)."""
        return self.confirmed_at is None or (self.member_id is not None and now - self.confirmed_at <= self.window_s)

    def verdict(self, held_by: str | None, now: float) -> bool | None:
        """For a write held since member `held_by`: True (the group answered lately for it: send),
        False (it no longer knows it: never send), None (no answer lately: keep holding)."""
        if self.member_id is None or self.member_id != held_by:
            return False
        return True if self.may_write(now) else None


def writes_state(request) -> bool:
    """Whether a produce request carries records of a changelog (table state)."""
    return any(topic.endswith(CHANGELOG_SUFFIX) for topic, _ in getattr(request, "_topics", ()))


async def held_until_known(membership: Membership, poll_s: float = 0.02, exit_=None) -> None:
    """Return once a state write may leave: at once while the group answered lately, else when it
    answers again for the same member; exit the process if it no longer knows the member."""
    if membership.may_write(time.monotonic()):
        return
    held_by, since = membership.member_id, time.monotonic()
    log.warning("changelog writes held: the group last answered %.1f s ago%s (was this worker frozen?)",
                since - (membership.confirmed_at or since), "" if held_by else " and no longer knows this member")
    while (answer := membership.verdict(held_by, time.monotonic())) is None:
        await asyncio.sleep(poll_s)
    if answer is False:
        (exit_ or fenced_exit)()
    log.warning("changelog writes released after %.1f s: the group still knows this worker", time.monotonic() - since)


def fenced_exit() -> None:
    """Note the stores holding writes never sent (removed at the next start) and end the process now."""
    from streams.worker.local_state import note_unsent
    from streams.worker.stopping import exit_now

    partitions = unsent.partitions()
    log.critical("this worker was out of its group (frozen, or its broker unreachable, past the session timeout) "
                 "with changelog writes not "
                 "sent: exiting (code %d) without them; the next start recovers %d table partitions from their "
                 "changelogs", EXIT_CODE, len(partitions))
    try:
        if tabledir is not None:
            note_unsent(tabledir, partitions)
    finally:
        exit_now(EXIT_CODE)


membership = Membership(window_s=float("inf"))
unsent = Unsent()
tabledir = None  # the worker's table stores (install)


def install(group_id: str, window_s: float, tables) -> None:
    """Record `group_id`'s answers (aiokafka's group coordinator) and hold state writes (aiokafka's
    client, for produce requests) as the module docstring says; `tables`: the table stores' directory."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    global tabledir
    membership.window_s, tabledir = window_s, tables
    if getattr(AIOKafkaClient.send, "_recstream_fence", False):
        return
    GroupCoordinator._do_heartbeat = heartbeat_recorded(GroupCoordinator._do_heartbeat, group_id, membership)
    GroupCoordinator._on_join_complete = assignment_recorded(GroupCoordinator._on_join_complete, group_id, membership)
    GroupCoordinator.reset_generation = reset_recorded(GroupCoordinator.reset_generation, group_id, membership)
    AIOKafkaClient.send = fenced(AIOKafkaClient.send, membership)


def heartbeat_recorded(heartbeat, group_id: str, membership: Membership):
    """aiokafka's `GroupCoordinator._do_heartbeat`, recording each answer for the member as of its sending."""
    async def _do_heartbeat(self):
        sent, member = time.monotonic(), self.member_id  # the group knew the member at least from here
        ok = await heartbeat(self)  # True also for "rebalancing": the member's session goes on
        if ok and self.group_id == group_id:
            membership.confirm(member, sent)
        return ok
    return _do_heartbeat


def assignment_recorded(join_complete, group_id: str, membership: Membership):
    """aiokafka's `GroupCoordinator._on_join_complete` (an assignment arrived), recording it first:
    faust's assignment callbacks may wait for state writes."""
    async def _on_join_complete(self, generation, member_id, protocol, assignment_bytes):
        if self.group_id == group_id:
            if member_id != membership.member_id:
                log.info("group %s: this worker is member %s", group_id, member_id)
            membership.confirm(member_id, time.monotonic())
        return await join_complete(self, generation, member_id, protocol, assignment_bytes)
    return _on_join_complete


def reset_recorded(reset, group_id: str, membership: Membership):
    """aiokafka's `GroupCoordinator.reset_generation` (the group does not know the member, or it
    left), recording the loss for the member recorded (not another client of the group:
    streams.kafka.offsets.group_client reads its commits)."""
    def reset_generation(self):
        if self.group_id == group_id and self.member_id and self.member_id == membership.member_id:
            membership.lost()
        return reset(self)
    return reset_generation


def fenced(send, membership: Membership, exit_=None):
    """aiokafka's `AIOKafkaClient.send`, holding produce requests with changelog records (`held_until_known`)."""
    from aiokafka.protocol.produce import ProduceRequest

    async def fenced_send(self, node_id, request, **kwargs):
        if isinstance(request, ProduceRequest) and writes_state(request):
            await held_until_known(membership, exit_=exit_)
        return await send(self, node_id, request, **kwargs)

    fenced_send._recstream_fence = True
    return fenced_send
