"""Co-engagement pairs follow the profiles exactly: through identifies and merges, and after a
kill -9 that lost the share's last writes (streams.core.coengagement)."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.affinity import AffinityModel, load
from streams.core.catalog import CatalogIndex
from streams.core.coengagement import MARK, counted, read_mark, recount, settle
from streams.core.experiments import Variant
from streams.core.guarded import run_guarded
from streams.core.pipeline import PartitionBatch, PipelineConfig
from streams.core.popularity import Partial, PopularityView, dump_partial, load_partial
from streams.core.records import Identity, Signal, Target, decode_fans, decode_keyed, fans_key

NOW = 1_790_000_000.0
CFG = PipelineConfig(model=AffinityModel(), variants={"A": Variant("A", share=1.0)}, coengagement_top_m=3)
ARTISTS = [f"a{i}" for i in range(7)]


class Partition:
    """One partition's state in dicts; records a batch sends to signals.keyed come back in the next."""

    def __init__(self):
        self.profiles, self.recs, self.fans, self.share = {}, {}, {}, Partial()
        self.keyed: list = []

    def batch(self) -> PartitionBatch:
        return PartitionBatch(CFG, 0, self.profiles, self.recs, self.fans, self.share, CatalogIndex(),
                              PopularityView([]), NOW)

    def run(self, records: list) -> None:
        records, self.keyed = self.keyed + records, []
        self.keyed = [decode_keyed(o.value) for o in self.batch().run(records) if o.topic == "signals.keyed"]

    def drain(self) -> None:
        while self.keyed:
            self.run([])

    def recounted(self) -> dict[str, int]:
        return recount(self.profiles.items(), CFG.model, CFG.top_needed, CFG.coengagement_top_m)

    def fans_index(self) -> dict[str, set[str]]:
        return {key: set(users) for key, raw in self.fans.items() if (users := decode_fans(raw))}

    def fans_from_scratch(self) -> dict[str, set[str]]:
        """Each counted profile a fan of its top fan_top_m artists (the index's rule, as the bulk rebuild counts it)."""
        out: dict[str, set[str]] = {}
        for user, raw in self.profiles.items():
            if user != MARK and counted(profile := load(raw)):
                for artist, _ in CFG.model.top(profile, CFG.top_needed)[: CFG.fan_top_m]:
                    out.setdefault(fans_key(artist, 0), set()).add(user)
        return out


def history(rng: random.Random, n: int) -> list:
    """Follows, unfollows, views and identifies of a few visitors and users; each signal has an input position."""
    out = []
    for i in range(n):
        user = rng.choice(["anon-1", "anon-2", "anon-3", "u1", "u2", "u3"])
        if rng.random() < 0.1:
            out.append(Identity(rng.choice(["u1", "u2", "u3", "anon-1"]), user, f"id{i}", NOW - n + i))
        else:
            kind = rng.choice(["follow", "follow", "view", "save", "unfollow"])
            out.append(Signal(kind, user, f"m{i}", NOW - n + i, (Target(rng.choice(ARTISTS)),),
                              source="events.segment:0", offset=i))
    return out


def test_an_identified_visitors_pairs_move_to_the_merged_profile_and_count_once():
    part = Partition()
    part.run([Signal("follow", "anon", "f1", NOW - 9, (Target("a"),)), Signal("follow", "anon", "f2", NOW - 8, (Target("b"),))])
    assert part.share.pairs == {"a|b": 1}
    part.run([Identity("user", "anon", "id1", NOW - 7)])  # anon is a pointer now; its Merge is on its way
    assert part.share.pairs == {} and part.fans_index() == {}  # nor a fan: a catalog change has no list to build
    part.run([Signal("follow", "user", "f3", NOW - 6, (Target("c"),))])  # the Merge comes first
    assert part.share.pairs == {"a|b": 1, "a|c": 1, "b|c": 1} == part.recounted()
    assert part.fans_index() == {fans_key(artist, 0): {"user"} for artist in "abc"}


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(1, 12))
def test_the_pairs_a_batch_leaves_are_those_of_its_profiles_counted_from_scratch(rng, size):
    part = Partition()
    records = history(rng, 100)
    for start in range(0, len(records), size):
        part.run(records[start:start + size])
        assert part.share.pairs == part.recounted()
        assert part.fans_index() == part.fans_from_scratch()  # the fans index follows the same rule
    assert part.share.seq == read_mark(part.profiles.get(MARK))


@settings(max_examples=40, deadline=None)
@given(st.randoms(use_true_random=False))
def test_a_kill_9_before_the_shares_write_is_recounted_from_the_profiles_and_redeliveries_count_nothing(rng):
    """The share was last written after batch `saved`; the profiles (and their mark) went on to `killed`;
    then everything since `saved` is read again, and the stream goes on. Without the recount the pairs
    of those batches are lost for good: each redelivery is a repeat to its profile."""
    records, size = history(rng, 100), rng.randint(1, 10)
    batches = [records[i:i + size] for i in range(0, len(records), size)]
    saved, killed = sorted(rng.sample(range(len(batches)), 2))
    clean, crashed = Partition(), Partition()
    for i, batch in enumerate(batches):
        clean.run(batch)
        if i > killed:
            crashed.run(batch)
            continue
        crashed.run(batch)
        if i == saved:
            snapshot = dump_partial(crashed.share)
        if i == killed:  # kill -9, restart: the share as last written, the profiles as the last batch left them
            crashed.share = stale = load_partial(snapshot)
            mark = read_mark(crashed.profiles.get(MARK))
            if stale.pairs != crashed.recounted():
                assert stale.seq != mark  # the mark tells every share that lost pairs
            settle(crashed.share, mark, crashed.profiles.items(), CFG.model, CFG.top_needed, CFG.coengagement_top_m)
            assert crashed.share.pairs == crashed.recounted() and crashed.share.seq == mark
            for again in batches[saved + 1:killed + 1]:  # read again from the last commit
                crashed.run(again)
    clean.drain(), crashed.drain()
    assert crashed.share.pairs == clean.share.pairs == clean.recounted()


def test_a_kill_9_that_lost_pairs_is_healed_where_it_was_not_before():
    """One history, told out: the kill lost the share's record of u1's pairs; read again, its follows are repeats."""
    part = Partition()
    follows = [Signal("follow", "u1", f"f{i}", NOW - 9 + i, (Target(a),), source="events.segment:0", offset=i)
               for i, a in enumerate("abc")]
    part.run(follows[:1])
    snapshot = dump_partial(part.share)
    part.run(follows[1:])
    assert part.share.pairs == {"a|b": 1, "a|c": 1, "b|c": 1}
    part.share = load_partial(snapshot)  # kill -9
    part.run(follows[1:])  # the redeliveries: nothing left to count
    assert part.share.pairs == {}  # what a worker kept before the mark
    part.share = load_partial(snapshot)
    assert settle(part.share, read_mark(part.profiles[MARK]), part.profiles.items(), CFG.model, CFG.top_needed, 3)
    part.run(follows[1:])
    assert part.share.pairs == {"a|b": 1, "a|c": 1, "b|c": 1}


def test_an_internal_record_for_the_marks_key_is_dead_lettered_and_the_mark_and_others_stand():
    """Ingest never keys a record "\\x00" (a blank id is no id); one written by hand to signals.keyed fails
    alone (streams.core.guarded: a dead letter), before and after the mark exists."""
    part = Partition()
    for first in (True, False):
        batch = [Signal("follow", "u", f"f{first}1", NOW - 9, (Target("a"),)), Signal("follow", MARK, f"x{first}", NOW - 8, (Target("z"),)),
                 Signal("follow", "u", f"f{first}2", NOW - 7, (Target("b" if first else "c"),))]
        done = run_guarded(part.batch, batch, [])
        assert [(r.user_id, why) for r, why in done.failed] == [(MARK, "ValueError")] and done.applied == 2
        assert read_mark(part.profiles[MARK]) == part.share.seq and part.share.pairs == part.recounted()
    assert part.share.pairs == {"a|b": 1, "a|c": 1, "b|c": 1}
    # an identify naming it as the new id would make "u" a pointer to it: its Merge could never land
    done = run_guarded(part.batch, [Identity(MARK, "u", "id-x", NOW)], [])
    assert [why for _, why in done.failed] == ["ValueError"] and not load(part.profiles["u"]).alias_of


def test_a_fans_write_lost_from_the_changelog_in_a_kill_9_is_written_again_by_the_redelivery():
    """The local store can hold a batch its changelog lost (RocksDB is written before the acks); the
    batch's events come again and are repeats to the local profiles, whose tops did not move, so the
    fans index was never written again and a failover's catalog refreshes missed those fans."""
    from streams.kafka.batching import BufferedTable

    local, changelog, share = [{}, {}, {}], [{}, {}, {}], Partial()  # profiles, recs, fans

    def batch(records, lost=False):
        views = [BufferedTable(lambda key, d=d: d.get(key.decode())) for d in local]
        PartitionBatch(CFG, 0, *views, share, CatalogIndex(), PopularityView([]), NOW).run(records)
        for d, c, view in zip(local, changelog, views, strict=True):
            d.update(view.writes)
            if not lost:
                c.update(view.writes)

    batch([Signal("follow", "u0", "m0", NOW - 9, (Target("a"),), source="events:0", offset=0)])
    events = [Signal("follow", "u1", "m1", NOW - 8, (Target("a"),), source="events:0", offset=1),
              Signal("follow", "u1", "m2", NOW - 7, (Target("b"),), source="events:0", offset=2)]
    batch(events, lost=True)  # kill -9 after the local write, before the acks
    batch(events)  # the restart reads them again
    fans = {key: decode_fans(value) for key, value in changelog[2].items()}
    assert fans == {fans_key("a", 0): ["u0", "u1"], fans_key("b", 0): ["u1"]}
    assert changelog[0]["u1"] == local[0]["u1"]
