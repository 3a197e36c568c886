"""``recstream rebuild --bulk``: the input topics -> a new app id's state, without faust's
per-event path, then a hand-over to the live agents.

1. Read the catalog (artworks, curated) to its end.
2. Read every input topic from the beginning to the end offsets taken at the start, in large
   raw batches, in several processes (shards, see streams.rebuild.shard: each reads a share
   of the input partitions and owns a share of the state partitions). Each message goes
   through the live ingest (`ingest_one` + `route`): signals are aggregated per partition by
   `streams.core.bulk`; identity links, image events, retries for unknown artworks and dead
   letters go to the same topics the live ingest would send them to, for the new app's agents
   to finish.
3. Each shard writes the affinity, fans, recommendations and popularity tables, and the catalog's artworks
   and editorial tables (the parent), straight to the new app's changelog topics, in the partition each
   key's live writes use.
4. Commit the new consumer group's offsets at those end offsets (catalog topics included):
   workers started under the new app id recover the tables from the changelogs and carry on
   from there, live, without replaying the catalog (which would refresh every fan again).

Nothing is sent to the recommendations topic (run ``recstream emit-all`` under the new app id
if clients need every list again).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace

from streams.core.ingest import (
    ParserConfig,
)
from streams.core.pipeline import PipelineConfig
from streams.core.settings import Settings
from streams.kafka.direct import direct_group
from streams.kafka.memory import growing_heap
from streams.kafka.offsets import commit_offsets, end_offsets
from streams.rebuild.catalog import read_catalog, write_catalog
from streams.rebuild.processes import LocalShard, ShardProcess
from streams.rebuild.shard import Shard
from streams.rebuild.topics import check_fresh, check_partitions, create_topics, input_topics


@dataclass
class RebuildReport:
    events: int = 0
    outcomes: Counter = field(default_factory=Counter)
    users: int = 0
    written: Counter = field(default_factory=Counter)  # table -> records
    forwarded: Counter = field(default_factory=Counter)  # topic -> records
    seconds: dict[str, float] = field(default_factory=dict)
    shard_seconds: list[dict[str, float]] = field(default_factory=list)  # per shard: step -> wall time

    @property
    def rate(self) -> float:
        total = sum(self.seconds.values())
        return self.events / total if total else 0.0

    def lines(self) -> list[str]:
        out = [f"rebuilt {self.events:,} events into {self.users:,} users in {sum(self.seconds.values()):.1f} s "
               f"({self.rate:,.0f} events/s)"]
        out.append("  phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()))
        out += [f"  shard {k}: " + ", ".join(f"{step} {v:.1f} s" for step, v in steps.items())
                for k, steps in enumerate(self.shard_seconds)]
        out += [f"  {k}: {v:,}" for k, v in sorted(self.outcomes.items())]
        out += [f"  wrote {t}: {n:,}" for t, n in sorted(self.written.items())]
        out += [f"  forwarded to {t}: {n:,}" for t, n in sorted(self.forwarded.items())]
        return out


def plan(ends: dict, shards: int, partitions: int, min_split: int = 10_000) -> list[tuple[list[int], dict]]:
    """Each shard's state partitions and input offset ranges (topic partition -> (start, end)),
    balanced by record counts.

    An input topic with as many partitions as the state is taken to be keyed by user, as the
    live single hop expects: its partition p holds state partition p's users, so it counts
    towards p's load and is read by p's owner (no spill between shards). State partitions go to
    shards the heaviest first, each to the shard with the fewest records so far; other topics'
    partitions then fill up the lightest shards the same way. Last, while a shard reads more
    than its share (one partition can hold a very heavy user), the tail of its largest range
    (at least `min_split` records) moves to the lightest shard, which reads it and spills the
    signals to the owner; the owner adds them after its own, so the offsets stay in order.

    >>> from aiokafka import TopicPartition as TP
    >>> owned, reads = zip(*plan({TP("in", 0): 500, TP("in", 1): 900, TP("in", 2): 100}, 2, 3, min_split=10))
    >>> owned
    ([1], [0, 2])
    >>> [sorted((tp.partition, r) for tp, r in share.items()) for share in reads]
    [[(1, (0, 750))], [(0, (0, 500)), (1, (750, 900)), (2, (0, 100))]]
    """
    count = max(1, shards)
    per_topic = Counter(tp.topic for tp in ends)
    keyed = {tp: end for tp, end in ends.items() if per_topic[tp.topic] == partitions}
    state_load = Counter({p: 0 for p in range(partitions)})
    for tp, end in keyed.items():
        state_load[tp.partition] += end
    owned: list[list[int]] = [[] for _ in range(count)]
    reads: list[dict] = [{} for _ in range(count)]
    load = [0] * count

    def lightest() -> int:
        return min(range(count), key=lambda k: (load[k], len(owned[k]), k))

    for p, n in sorted(state_load.items(), key=lambda item: (-item[1], item[0])):
        k = lightest()
        owned[k].append(p)
        load[k] += n
    owner = {p: k for k, ps in enumerate(owned) for p in ps}
    for tp, end in keyed.items():
        reads[owner[tp.partition]][tp] = (0, end)
    for tp, end in sorted(ends.items(), key=lambda item: -item[1]):
        if tp not in keyed:
            k = lightest()
            reads[k][tp] = (0, end)
            load[k] += end
    share = -(-sum(load) // count)  # ceil
    while True:
        heavy, light = max(range(count), key=lambda k: load[k]), lightest()
        excess = min(load[heavy] - share, share - load[light])
        if excess < min_split:
            break
        movable = [(tp, r) for tp, r in reads[heavy].items() if tp not in reads[light]]  # one range per shard
        if not movable:
            break
        tp, (start, end) = max(movable, key=lambda item: item[1][1] - item[1][0])
        moved = min(excess, end - start)
        reads[heavy][tp] = (start, end - moved)
        reads[light][tp] = (end - moved, end)
        load[heavy] -= moved
        load[light] += moved
    return [(sorted(ps), r) for ps, r in zip(owned, reads, strict=True)]


def shard_count(settings: Settings, asked: int | None = None) -> int:
    """`asked`, else RECSTREAM_REBUILD_SHARDS, else (0) one per CPU; at least one, at most one
    per partition."""
    wanted = asked if asked is not None else (settings.rebuild_shards or os.cpu_count() or 1)
    return max(1, min(wanted, settings.partitions))


async def bulk_rebuild(settings: Settings, model_cfg: PipelineConfig, parser: ParserConfig, progress=None,
                       idle_timeout_s: float = 60.0, shards: int | None = None,
                       min_split: int = 10_000) -> RebuildReport:
    """Rebuild `settings.app_id`'s state from the input topics (see the module docstring), in
    `shard_count(settings, shards)` processes; `min_split`: see `plan`."""
    client = settings.aiokafka_kwargs()
    count = shard_count(settings, shards)
    # shards start first: a child's imports overlap the checks and the catalog read
    with growing_heap(), _shard_pool(settings, client, model_cfg, parser, count) as pool:
        return await _bulk_rebuild(settings, client, pool, progress, idle_timeout_s, min_split)


@contextmanager
def _shard_pool(settings, client, model_cfg, parser, count: int):
    if count == 1:
        yield [LocalShard(Shard(0, 1, settings, client, model_cfg, parser, None, SimpleNamespace(value=0)))]
        return
    ctx = multiprocessing.get_context("spawn")
    # the system temp dir (TMPDIR), not /dev/shm: containers often give that 64 MB, and input
    # not keyed by user spills most of its signals (~100 bytes each)
    with tempfile.TemporaryDirectory(prefix="recstream-rebuild-") as spill_dir:
        pool = []
        try:
            for k in range(count):
                pool.append(ShardProcess(ctx, k, count, settings, model_cfg, parser, spill_dir))
            yield pool
        except BaseException:  # interrupted (Ctrl-C) or failed: no shard's step is worth waiting for
            for handle in pool:
                handle.kill()
            raise
        finally:
            for handle in pool:
                handle.close()


async def _bulk_rebuild(settings: Settings, client: dict, pool: list, progress, idle_timeout_s: float,
                        min_split: int) -> RebuildReport:
    report = RebuildReport()
    started = time.monotonic()
    await check_fresh(settings, client)
    await check_partitions(settings, client)
    await create_topics(settings, client)
    snapshot = await read_catalog(settings, client, idle_timeout_s)
    report.seconds["catalog"] = time.monotonic() - started

    t0 = time.monotonic()
    typed = input_topics(settings)
    ends = await end_offsets(client, list(typed))
    shares, catalog = plan(ends, len(pool), settings.partitions, min_split), snapshot.portable()
    *reads, _ = await _with_progress(progress, pool, asyncio.gather(
        *(shard.call("ingest", catalog, owned, share, typed, idle_timeout_s)
          for shard, (owned, share) in zip(pool, shares, strict=True)),
        write_catalog(settings, client, snapshot, report)))  # the parent's share of the writing meanwhile
    for read in reads:
        report.outcomes.update(read["outcomes"])
        report.forwarded.update(read["forwarded"])
    partials = dict(pair for pairs in await asyncio.gather(*(s.call("aggregate") for s in pool)) for pair in pairs)
    report.seconds["read+aggregate"] = time.monotonic() - t0

    t0 = time.monotonic()
    ordered = [partials[p] for p in range(settings.partitions)]
    now = time.time()
    for built in await asyncio.gather(*(s.call("build", ordered, now) for s in pool)):
        report.users += built["users"]
        report.written.update(built["written"])
    report.seconds["build+write"] = time.monotonic() - t0
    report.shard_seconds = [shard.seconds for shard in pool]
    report.events = sum(report.outcomes.values())

    # the hand-over covers the catalog topics too: the new workers recover those tables instead
    # of replaying the catalog (which would also refresh every fan of every artist again)
    # the inputs and the catalog are read by direct ingest (its own group) or, with it off, by faust: both start here
    every_end = {tp: end for tp, end in {**ends, **snapshot.ends}.items() if end > 0}
    for group in (settings.kafka_app_id, direct_group(settings.kafka_app_id)):
        await commit_offsets(client, group, every_end)
    return report


async def _with_progress(progress, pool: list, work):
    """Await `work`, showing the records the shards have read so far."""
    work = asyncio.ensure_future(work)
    try:
        while progress is not None and not work.done():
            await asyncio.wait({work}, timeout=0.5)
            progress.update(sum(shard.counter.value for shard in pool))
    except asyncio.CancelledError:  # Ctrl-C: the shards are stopped (_shard_pool); their calls end with them
        work.cancel()
        work.add_done_callback(lambda f: f.cancelled() or f.exception())  # no "exception never retrieved"
        raise
    result = await work
    if progress is not None:
        progress.close(sum(shard.counter.value for shard in pool))
    return result


