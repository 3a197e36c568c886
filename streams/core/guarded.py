"""A batch that must not stop the stream (pure): run it, and if it raises, undo its buffered writes
and run its records one by one, so a failure costs one record."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streams.core.pipeline import Output, PartitionBatch


@dataclass
class Guarded:
    """What `run_guarded` did: the outputs, the records that failed (with the exception's
    name), and the counts."""

    outputs: list[Output]  # or an ImageBatch's (topic, key, value) tuples
    failed: list[tuple[object, str]]
    applied: int = 0
    duplicates: int = 0


def run_guarded(make: Callable[[], Any], records: list, buffers: list,
                apply: Callable[[Any, list], list] = PartitionBatch.run) -> Guarded:
    """Run a partition's batch (`make()`: a PartitionBatch, or an image pipeline's ImageBatch;
    `apply(batch, records)`: its records, or, for the list window, the owed (user, trigger) pairs);
    if it raises (a bug meeting an input nothing foresaw), undo its buffered table writes
    (`buffers`: objects with a `writes` dict, streams.kafka.batching) and run each record alone,
    so a failure costs that one record instead of stopping the stream. A batch takes its share's
    counts only at its end, so one that raised left the share as it was.

    >>> from streams.kafka.batching import BufferedTable
    >>> from streams.core.affinity import load
    >>> from streams.core.catalog import CatalogIndex
    >>> from streams.core.pipeline import PipelineConfig
    >>> from streams.core.popularity import Partial, PopularityView
    >>> from streams.core.records import Signal, Target
    >>> good = Signal("view", "u", "m1", 0.0, (Target("a"),))
    >>> bad = Signal("view", "u", "m2", 0.0, None)  # no targets: learn_one raises
    >>> profiles = BufferedTable(lambda key: None)
    >>> make = lambda: PartitionBatch(PipelineConfig(), 0, profiles, {}, {}, Partial(), CatalogIndex(),
    ...                               PopularityView([]), 0.0)
    >>> done = run_guarded(make, [good, bad], [profiles])
    >>> [m for _, m in done.failed], done.applied, load(profiles.writes["u"]).events
    (['TypeError'], 1, 1)
    """
    saved = [dict(b.writes) for b in buffers]
    run = make()
    try:
        return Guarded(apply(run, records), [], run.applied, run.duplicates)
    except Exception:
        _restore(buffers, saved)
    done = Guarded([], [])
    for record in records:
        saved = [dict(b.writes) for b in buffers]
        run = make()
        try:
            done.outputs += apply(run, [record])
        except Exception as exc:
            _restore(buffers, saved)
            done.failed.append((record, type(exc).__name__))
            continue  # nothing of it was applied
        done.applied, done.duplicates = done.applied + run.applied, done.duplicates + run.duplicates
    return done


def _restore(buffers: list, saved: list[dict]) -> None:
    for buffer, writes in zip(buffers, saved, strict=True):
        buffer.writes = writes
