"""The list window (streams.core.throttle) with the pure pipeline: whatever the timing, holding
lists and building them when due or drained ends with the lists built without a window, in
fewer records."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.pipeline import PartitionBatch
from streams.core.popularity import Partial, PopularityView
from streams.core.records import Signal, Target
from streams.core.throttle import ListThrottle, PartitionThrottles
from tests.test_pipeline import CFG, NOW, WORKS, World

USERS, ARTISTS = ("u1", "u2", "u3"), ("a", "b", "x")
VIEW = PopularityView([Partial()])


def batch(world: World, hold=None) -> PartitionBatch:
    """A batch over `world` with a fixed popularity view: a list built later would otherwise see
    the co-engagement of the batches in between, as the worker's view, rebuilt each second, does."""
    return PartitionBatch(CFG, 0, world.profiles, world.recs, world.fans, world.partial, world.catalog,
                          VIEW, NOW, hold=hold)


def last_lists(outputs) -> dict[str, list]:
    """Each user's last list as the pipeline compares lists (variant, works and sources: a list whose
    scores alone moved is not sent again, streams.core.pipeline), not its trigger or time."""
    return {recs["user_id"]: listing(recs) for o in outputs if o.topic == "recommendations"
            for recs in [json.loads(o.value)]}


def listing(recs: dict) -> tuple:
    return recs["variant"], [(i["artwork_id"], i["source"]) for i in recs["items"]]


# a run: batches of (wall-clock step, signals), each signal (user, kind, artist)
signals = st.tuples(st.sampled_from(USERS), st.sampled_from(["follow", "unfollow", "view"]), st.sampled_from(ARTISTS))
runs = st.lists(st.tuples(st.floats(0, 0.8), st.lists(signals, max_size=4)), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(runs, st.booleans())
def test_held_lists_end_as_the_unheld_ones_in_fewer_records(run, drain_each_step):
    plain, held = World(*WORKS), World(*WORKS)
    lists = PartitionThrottles(0.5)
    plain_out, held_out, wall, n = [], [], 0.0, 0
    for step, sigs in run:
        wall += step
        records = []
        for user, kind, artist in sigs:
            n += 1
            records.append(Signal(kind, user, f"m{n}", NOW - 3600 + n, (Target(artist),)))
        plain_out += batch(plain).run(records)
        held_out += batch(held, lists.hold_for(0, wall)).run(records)
        owed = lists.drain() if drain_each_step else lists.due(wall)  # a commit / the window's end
        for triggers in owed.values():
            held_out += batch(held, lists.hold_for(0, wall)).owed(triggers)
    for triggers in lists.drain().values():  # before the last commit
        held_out += batch(held, lists.hold_for(0, wall)).owed(triggers)
    assert held.profiles == plain.profiles
    assert last_lists(held_out) == last_lists(plain_out)
    assert {u: listing(json.loads(r)) for u, r in held.recs.items()} == \
        {u: listing(json.loads(r)) for u, r in plain.recs.items()}
    count = lambda out: sum(o.topic == "recommendations" for o in out)  # noqa: E731
    assert count(held_out) <= count(plain_out)


def test_a_burst_across_batches_sends_the_first_list_and_one_for_the_rest():
    world, lists = World(*WORKS), PartitionThrottles(0.5)
    first = batch(world, lists.hold_for(0, 0.0)).run([Signal("follow", "u", "m1", NOW - 60, (Target("a"),))])
    held = batch(world, lists.hold_for(0, 0.1)).run([Signal("follow", "u", "m2", NOW - 50, (Target("b"),))])
    assert [o.topic for o in first] == ["affinity.updates", "recommendations"]
    assert [o.topic for o in held] == ["affinity.updates"]  # the affinity leaves at once; the list is owed
    assert lists.due(0.4) == {} and lists.due(0.5) == {0: {"u": "m2"}}
    sent = batch(world, lists.hold_for(0, 0.5)).owed({"u": "m2"})
    recs = json.loads(sent[0].value)
    assert recs["trigger"] == "m2" and {i["artwork_id"] for i in recs["items"] if i["source"] == "affinity"} == \
        {"a1-new", "a1-old", "b1"}
    assert json.loads(world.recs["u"])["trigger"] == "m2"


def test_a_redelivered_event_sends_its_list_even_inside_the_window():
    """After a crash, a held list exists only as input not committed: its redelivery must send it."""
    world, lists = World(*WORKS), PartitionThrottles(60)
    sig = Signal("follow", "u", "m1", NOW - 60, (Target("a"),), source="events.segment:0", offset=7)
    batch(world, lists.hold_for(0, 0.0)).run([sig])
    again = batch(world, lists.hold_for(0, 1.0)).run([sig])
    assert "recommendations" in [o.topic for o in again]


def test_the_throttle_forgets_users_whose_window_ended():
    t = ListThrottle(1.0)
    for i in range(1000):
        t.hold(f"u{i}", "m", now=i / 1000)
    assert t.due(now=1.5) == {} and len(t._built) == 499  # built after 0.5 s are still in their window


def test_a_held_list_that_fails_to_build_costs_that_list_only():
    """The owed lists of a partition are built as a guarded batch (streams.core.guarded): one user's
    broken state skips that user's list and undoes nothing of the others'."""
    from streams.core.guarded import run_guarded
    from streams.kafka.batching import BufferedTable

    world = World(*WORKS)
    batch(world).run([Signal("follow", "u1", "m1", NOW - 60, (Target("a"),)),
                      Signal("follow", "u2", "m2", NOW - 60, (Target("b"),))])
    stored = {"u3": world.profiles["u1"], "u2": b"\xc1 not a profile"}  # u3: a profile whose list is owed
    profiles = BufferedTable(lambda key: stored.get(key.decode(), world.profiles.get(key.decode())))
    recs = BufferedTable(lambda key: world.recs.get(key.decode()))

    def make():
        return PartitionBatch(CFG, 0, profiles, recs, world.fans, world.partial, world.catalog, VIEW, NOW)

    done = run_guarded(make, [("u2", "m8"), ("u3", "m9")], [profiles, recs],
                       apply=lambda pipeline, pairs: pipeline.owed(dict(pairs)))
    assert [pair for pair, _ in done.failed] == [("u2", "m8")]
    assert [(o.topic, o.key) for o in done.outputs] == [("recommendations", b"u3")]
    assert json.loads(recs.writes["u3"])["trigger"] == "m9" and "u2" not in recs.writes
