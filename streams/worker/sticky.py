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


def install_sticky_colocation() -> None:
    """Upstream: faust-streaming's ClientAssignment._colocated_partitions (0.15.3); can go once it
    leaves global tables' changelogs out of a member's previous assignment."""
    from faust.assignor.client_assignment import ClientAssignment

    def _colocated_partitions(self, topics, active: bool) -> set[int]:
        assignment = self.actives if active else self.standbys
        return colocated(set(assignment.get(topic, ())) for topic in topics)

    ClientAssignment._colocated_partitions = _colocated_partitions
