"""Sticky assignments through a restart: each worker keeps the partitions it had (a faust patch).

faust's assignor keeps a member's partitions of a copartitioned group of topics, read from the
member's last assignment as the first of the group's topics with any (`_colocated_partitions`).
Every member holds every partition of a global table's changelog as active (faust 0.15's global
tables), and those changelogs fall in the same group as the keyed ones when their partition
counts match. When the set's (hash-seeded) order put a global changelog first, a member seemed to
hold every partition, kept an arbitrary half, and the restarted peer got the rest: two workers
swapped their partitions after a kill -9 and a restart, and each restored the other's from the
changelog (190,000 records, 93 s) while every read answered 503 (an outside soak; a two-worker
test swapped in 2 of 3 runs). A partition is colocated on a member when every topic of the group
it holds any of has it: the keyed topics' partitions, the global ones' all.

A worker stopped gracefully (SIGTERM) no longer leaves the group either, as Kafka Streams' members
do not: leaving handed its partitions to the others at once, each restored them from the
changelog, and when the worker came back (a deploy, a restart) they kept an arbitrary half of
everything they then held, so it got partitions it had no store for (a two-worker test: swapped
on every restart). Staying, the group rebalances when it comes back under a new member id (its
old one expires unanswered), or, if it does not, once its session times out
(RECSTREAM_SESSION_TIMEOUT): until then its keys answer 503 + Retry-After, as after a crash.

>>> colocated([{0, 1, 2, 3}, {0, 1}, set(), {0, 1}])
{0, 1}
>>> colocated([set(), set()])
set()
"""

from __future__ import annotations

from collections.abc import Iterable


def colocated(partition_sets: Iterable[set[int]]) -> set[int]:
    """The partitions in every non-empty set (a topic a member holds nothing of says nothing)."""
    out: set[int] | None = None
    for partitions in partition_sets:
        if partitions:
            out = set(partitions) if out is None else out & partitions
    return out or set()


def install() -> None:
    install_sticky_colocation()
    install_stay_in_group_on_close()


def install_sticky_colocation() -> None:
    """Upstream: faust-streaming's ClientAssignment._colocated_partitions (0.15.3); can go once it
    leaves global tables' changelogs out of a member's previous assignment."""
    from faust.assignor.client_assignment import ClientAssignment

    def _colocated_partitions(self, topics, active: bool) -> set[int]:
        assignment = self.actives if active else self.standbys
        return colocated(set(assignment.get(topic, ())) for topic in topics)

    ClientAssignment._colocated_partitions = _colocated_partitions


def install_stay_in_group_on_close() -> None:
    """Upstream: aiokafka's GroupCoordinator.close (0.14) sends LeaveGroup; Kafka's Java consumer has
    `internal.leave.group.on.close` for what Kafka Streams does here. A consumer idle past its
    max poll interval still leaves (that call comes before any close)."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    leave = GroupCoordinator._maybe_leave_group

    async def _maybe_leave_group(self) -> None:
        if self._closing.done():  # close(): stay a member until the session times out or the worker is back
            self.reset_generation()
            return
        await leave(self)

    GroupCoordinator._maybe_leave_group = _maybe_leave_group
