"""streams.core.guarded: a batch that raises is undone and run record by record; the share it
counts into (trending, positions, co-engagement pairs) must come out as if the failing record
alone had never been read."""

from __future__ import annotations

import random

from streams.core.affinity import AffinityModel
from streams.core.catalog import CatalogIndex
from streams.core.coengagement import MARK, read_mark
from streams.core.experiments import Variant
from streams.core.guarded import run_guarded
from streams.core.pipeline import PartitionBatch, PipelineConfig
from streams.core.popularity import Partial, PopularityView
from streams.core.records import Signal, Target
from streams.kafka.batching import BufferedTable

NOW = 1_790_000_000.0
CFG = PipelineConfig(model=AffinityModel(), variants={"A": Variant("A", share=1.0)}, coengagement_top_m=3)


class Stored:
    """One partition's tables as a worker's batch sees them: buffered views over dicts, stored on success."""

    def __init__(self):
        self.data: list[dict] = [{}, {}, {}, {}]  # profiles, recs, fans, attribution
        self.share = Partial()

    def run(self, records: list, guarded: bool) -> list:
        views = [BufferedTable(lambda key, d=d: d.get(key.decode())) for d in self.data]

        def make():
            return PartitionBatch(CFG, 0, *views[:3], self.share, CatalogIndex(), PopularityView([]), NOW,
                                  attribution=views[3])
        failed = run_guarded(make, records, views).failed if guarded else make().run(records) and []
        for d, view in zip(self.data, views, strict=True):
            d.update(view.writes)
        return failed


def signals(rng: random.Random, n: int) -> list[Signal]:
    out = []
    for i in range(n):
        artist = f"a{rng.randrange(6)}"
        out.append(Signal(rng.choice(["view", "save", "follow"]), f"u{rng.randrange(5)}", f"m{i}", NOW - 1000 + i,
                          (Target(artist, f"{artist}-w{rng.randrange(3)}"),), source="events:0", offset=i))
    return out


def test_a_failed_attempt_leaves_no_trace_in_the_share():
    """Old code: the failed attempt counted the records before the bad one into trending (and
    their positions), then the record-by-record run counted them again."""
    for seed in range(20):
        rng = random.Random(seed)
        good = signals(rng, 30)
        bad = Signal("view", "u1", "bad", NOW - 500, None, source="events:0", offset=1000)  # no targets: raises
        at = rng.randrange(1, len(good))
        guarded, plain = Stored(), Stored()
        failed = guarded.run(good[:at] + [bad] + good[at:], guarded=True)
        plain.run(good, guarded=False)
        assert [r.message_id for r, _ in failed] == ["bad"]
        assert guarded.share.trending.scores == plain.share.trending.scores, seed
        assert guarded.share.counted == plain.share.counted and guarded.share.pairs == plain.share.pairs, seed
        assert guarded.data[0].keys() - {MARK} == plain.data[0].keys() - {MARK}
        assert read_mark(guarded.data[0].get(MARK)) == guarded.share.seq  # the mark names the share's last batch
