"""Throughput when producers do not key events by user: the second hop (signals.keyed).

Events keyed by user id sit in their user's partition and are applied by direct ingest in the
same batch (the single hop). Events keyed by anything else (here: their messageId, as a producer
that partitions by message sends them) are parsed by the worker reading their partition and
re-keyed through `<app id>.signals.keyed` to their user's partition, where they are applied: two
reads and one more produce per event. This bench runs the same demo events both ways through a
real worker on the embedded broker, alternating, and prints events/s (from the first processed
event to the N-th, bench/throughput.py's `measure`) per keying and round.

Run: `.venv/bin/python bench/keyed.py` (BENCH_EVENTS, default 30,000; BENCH_ROUNDS, default 3).
"""

from __future__ import annotations

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import demo_events, pipeline_with_catalog, preload, processed  # noqa: E402
from bench.throughput import measure  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402

N = int(os.environ.get("BENCH_EVENTS", "30000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BY_USER, BY_MESSAGE = "keyed by user id (single hop)", "keyed by messageId (through signals.keyed)"


def main() -> dict[str, list[float]]:
    demo, by_user = demo_events(N)
    by_message = [(b"%d" % i, value) for i, (_, value) in enumerate(by_user)]  # any key but the user's
    runs: dict[str, list[float]] = {BY_USER: [], BY_MESSAGE: []}
    with EmbeddedBroker() as broker:
        for r in range(ROUNDS):
            for name, records in ((BY_MESSAGE, by_message), (BY_USER, by_user)):
                prefix = f"k{r}{len(runs[name])}{'m' if name == BY_MESSAGE else 'u'}."
                worker = pipeline_with_catalog(broker, prefix, f"keyed-{prefix[:-1]}", demo)
                try:
                    preload(broker.bootstrap, f"{prefix}events.segment", records)
                    runs[name].append(measure(lambda w=worker: processed(w), N, timeout=300))
                finally:
                    worker.stop()
                print(f"[keyed] round {r + 1}/{ROUNDS} {name}: {runs[name][-1]:,.0f} events/s", file=sys.stderr, flush=True)
    return runs


def report(runs: dict[str, list[float]]) -> str:
    median = {name: statistics.median(rates) for name, rates in runs.items()}
    rows = [f"| {name} | {median[name]:,.0f} | {', '.join(f'{x:,.0f}' for x in rates)} |" for name, rates in runs.items()]
    return "\n".join([f"Keying ({N:,} demo Segment events, one worker; {ROUNDS} alternating rounds, median round)", "",
                      "| events | events/s | every round |", "|---|---|---|", *rows, "",
                      f"by messageId / by user = {median[BY_MESSAGE] / median[BY_USER]:.2f}×"])


if __name__ == "__main__":
    print(report(main()))
