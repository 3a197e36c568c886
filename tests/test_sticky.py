"""streams.worker.sticky: a member keeps its partitions whatever the order of its group's topics."""

from itertools import permutations

import pytest
from faust.assignor.client_assignment import ClientAssignment
from faust.assignor.copartitioned_assignor import CopartitionedAssignor

from streams.worker.sticky import install_sticky_colocation

KEYED = ["app-affinity-changelog", "app-recommendations-changelog"]
GLOBAL = "app-popularity-changelog"  # a global table's changelog: every member holds all of it as active


@pytest.fixture
def patched(monkeypatch):
    monkeypatch.setattr(ClientAssignment, "_colocated_partitions", ClientAssignment._colocated_partitions)
    install_sticky_colocation()  # undone by monkeypatch after the test


def _assign(members: dict[str, ClientAssignment], topics: list[str]) -> dict[str, list[int]]:
    group = {name: m.copartitioned_assignment(topics) for name, m in members.items()}
    assigned = CopartitionedAssignor(topics=topics, cluster_asgn=group, num_partitions=4, replicas=0).get_assignment()
    return {name: sorted(a.actives) for name, a in assigned.items()}


def _survivor_and_restarted() -> dict[str, ClientAssignment]:
    survivor = ClientAssignment(actives={**{t: [0, 1] for t in KEYED}, GLOBAL: [0, 1, 2, 3]}, standbys={})
    return {"survivor": survivor, "restarted": ClientAssignment(actives={}, standbys={})}


def test_a_survivor_keeps_its_partitions_when_its_peer_restarts_whatever_the_topics_order(patched):
    for topics in permutations([*KEYED, GLOBAL]):
        assert _assign(_survivor_and_restarted(), list(topics)) == {"survivor": [0, 1], "restarted": [2, 3]}, topics


def test_faust_alone_swaps_them_when_the_global_changelog_comes_first():
    """What the patch mends (faust 0.15.3): the survivor seemed to hold all four, kept two at random."""
    assert _assign(_survivor_and_restarted(), [GLOBAL, *KEYED]) != {"survivor": [0, 1], "restarted": [2, 3]}

