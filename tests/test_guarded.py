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


def test_an_image_event_the_pipeline_fails_on_costs_that_event_alone_and_leaves_the_share_be():
    """The image pipeline is guarded as the user one (streams.worker.image_batches): before, one
    event it raised on stopped direct ingest for good, at every restart."""
    import msgspec

    from streams.core.image_counts import GlobalCounts
    from streams.core.image_pipeline import ImageBatch, ImageConfig, Pools
    from streams.core.images import PoolRules
    from streams.core.records import ImageEvent

    class FailingPools(Pools):  # a bug meeting one merchant's input
        def get(self, merchant):
            if merchant == "boom":
                raise KeyError(merchant)
            return super().get(merchant)

    raw = {m: msgspec.json.encode({"merchant_id": m, "images": [{"image_id": "h"}, {"image_id": "k"}]})
           for m in ("m1", "m2", "boom")}
    pools, cfg = FailingPools(raw, PoolRules()), ImageConfig(half_life_s=0.0)
    events = [ImageEvent("impression", f"c{i % 4}", "boom" if i == 5 else f"m{1 + i % 2}", "hk"[i % 2], f"i{i}",
                         100.0 + i, source="images:0", offset=i) for i in range(12)]

    def run(records, guarded):
        store, share = {}, GlobalCounts()
        views = [BufferedTable(lambda key: store.get(key.decode()))]
        make = lambda: ImageBatch(cfg, views[0], share, pools, dict)  # noqa: E731
        done = run_guarded(make, records, views, apply=ImageBatch.run) if guarded else None
        outputs = done.outputs if guarded else make().run(records)
        return done, views[0].writes, share, outputs

    done, consumers, share, outputs = run(events, guarded=True)
    _, plain_consumers, plain_share, plain_outputs = run(events[:5] + events[6:], guarded=False)
    assert [(r.message_id, why) for r, why in done.failed] == [("i5", "KeyError")] and done.applied == 11
    assert consumers == plain_consumers and outputs == plain_outputs
    assert share.counts == plain_share.counts and share.counted == {"images:0": 11}
