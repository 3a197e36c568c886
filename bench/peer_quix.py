"""Peer: the affinity half of recstream written the obvious way in Quix Streams, against
recstream's full pipeline, on one embedded (Tansu) broker, in alternating rounds.

The Quix app (its own process, so it shares no GIL with the measuring code or recstream):
JSON-decode each Segment event (Quix's "json" deserializer, orjson), map its event name to a
signal kind (streams/core/events.py DEFAULT_EVENT_MAP; screen/page views of an artwork are views),
weight it like recstream's defaults (streams/core/settings.py DEFAULT_WEIGHTS; unfollow/unsave take
back the follow/save weight), resolve the artist from an in-memory catalog dict when the event
names artworks, keep decayed per-user artist scores (30-day half-life in event time, like
recstream) in Quix's RocksDB state with its changelog (Quix's default, at-least-once), and
produce the user's top 20 artists to an output topic, one record per event.

What it measures, for both sides alike (bench/throughput.py's definition, through its `measure`):
the process is started and ready (Quix: partitions assigned; recstream: worker ready, catalog
loaded), then the same 30,000 demo events (bench/common.py demo_events) are produced as fast as
the producer goes, and events/s is the rate from the first processed event to the N-th, polled
from outside. Quix counts an event processed once its state is updated (in Quix's transaction,
which goes to RocksDB and the changelog at each checkpoint, every 5 s by default: the last value
per user) and its output record is handed to the producer; recstream once its signal is applied
(signals applied + duplicates).
Each round uses fresh topics (4 partitions, recstream's default), groups, state and processes.

Install: `.venv/bin/pip install -e '.[bench]'` (quixstreams, which brings confluent-kafka).
Run: `.venv/bin/python bench/peer_quix.py`; smoke run: `BENCH_EVENTS=5000 BENCH_ROUNDS=1 ...`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import demo_events, pipeline_with_catalog, preload, processed, wait_for  # noqa: E402
from bench.throughput import measure  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402

N = int(os.environ.get("BENCH_EVENTS", "30000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PARTITIONS, TOP_N, HALF_LIFE_S = 4, 20, 30 * 86400.0  # recstream's defaults
KAFKA_DEFAULT_RETENTION_MS = "604800000"  # what Apache Kafka reports when a topic sets none (7 days)
QUIX, PIPELINE = "Quix Streams peer (parse → affinity → top 20)", "recstream full pipeline (parse → affinity → recommendations)"


def shim_topic_config() -> None:
    """Quix's TopicManager.derive_topic_config (the changelog topics' config, derived from the
    input topic's) reads extra_config["retention.ms"] unguarded, and the embedded Tansu broker
    describes topics with no configs: a KeyError at startup. Give a topic that reports none what
    Apache Kafka would report (7 days) before Quix derives from it. Bench-only; nothing else changes."""
    from quixstreams.models.topics.manager import TopicManager

    derive = TopicManager.derive_topic_config.__func__

    def derive_topic_config(cls, topics):
        topics = list(topics)
        for topic in topics:
            topic.broker_config.extra_config.setdefault("retention.ms", KAFKA_DEFAULT_RETENTION_MS)
        return derive(cls, topics)

    TopicManager.derive_topic_config = classmethod(derive_topic_config)


def quix_app(bootstrap: str, topic_in: str, topic_out: str, group: str, state_dir: str,
             catalog: dict[str, str], count, ready) -> None:
    """The Quix Streams peer; runs until SIGTERM. `count` and `ready` are shared-memory values
    the parent polls."""
    import heapq
    import warnings
    from datetime import datetime
    from operator import itemgetter

    with warnings.catch_warnings(record=True):  # authlib (via confluent-kafka) warns about httpx on import
        from quixstreams import Application
        from quixstreams.models import TopicConfig

    from streams.core.events import DEFAULT_EVENT_MAP
    from streams.core.settings import DEFAULT_WEIGHTS
    from streams.kafka.broker import _die_with_parent

    _die_with_parent()  # dies with the bench even if the bench is SIGKILLed
    shim_topic_config()
    weights = {**DEFAULT_WEIGHTS, "unfollow": -DEFAULT_WEIGHTS["follow"], "unsave": -DEFAULT_WEIGHTS["save"]}

    def to_signal(ev: dict):
        """(user, time, weight, artists), or None when the event carries no signal."""
        p = ev.get("properties") or {}
        if ev.get("type") == "track":
            kind = DEFAULT_EVENT_MAP.get(ev.get("event"))
        elif ev.get("type") in ("screen", "page") and p.get("context_screen_owner_type") in ("artwork", "artist"):
            kind = "view"
            p = {f"{p['context_screen_owner_type']}_id": p.get("context_screen_owner_id")}
        else:
            kind = None
        if kind not in weights:
            return None
        artist = p.get("artist_id") or (p.get("owner_id") if p.get("owner_type", "artist") == "artist" else None)
        if artist:
            artists = [artist]
        else:
            works = p.get("artwork_ids") or [w for w in (p.get("artwork_id") or p.get("product_id"),) if w]
            works = works or [q.get("artwork_id") for q in p.get("products") or () if isinstance(q, dict)]
            artists = [catalog[w] for w in works if w in catalog]
        if not artists:
            return None
        when = datetime.fromisoformat(ev.get("timestamp") or ev["originalTimestamp"]).timestamp()
        return ev.get("userId") or ev.get("anonymousId"), when, weights[kind], artists

    def keep(signal) -> bool:
        if signal is None:
            count.value += 1  # nothing to do for it: processed
        return signal is not None

    def learn(signal, state) -> dict:
        user, when, weight, artists = signal
        profile = state.get("profile") or {"ref": when, "scores": {}}
        ref, scores = profile["ref"], profile["scores"]
        if when > ref:  # a newer event moves the reference time: decay every score to it
            factor = 2.0 ** (-(when - ref) / HALF_LIFE_S)
            scores = {a: s * factor for a, s in scores.items()}
            ref = when
        add = weight * 2.0 ** (-(ref - when) / HALF_LIFE_S)
        for artist in artists:
            scores[artist] = scores.get(artist, 0.0) + add
        state.set("profile", {"ref": ref, "scores": scores})
        top = heapq.nlargest(TOP_N, scores.items(), key=itemgetter(1))
        return {"user_id": user, "artists": [{"artist_id": a, "score": s} for a, s in top]}

    def counted(_value) -> None:
        count.value += 1

    # Ready once the consumer holds its partitions: wrap Quix's assignment callback (bench-only).
    assign = Application._on_assign

    def on_assign(self, consumer, partitions):
        assign(self, consumer, partitions)
        if partitions:
            ready.value = 1

    Application._on_assign = on_assign
    app = Application(broker_address=bootstrap, consumer_group=group, auto_offset_reset="earliest",
                      state_dir=state_dir, loglevel="WARNING")
    config = TopicConfig(num_partitions=PARTITIONS, replication_factor=1)
    source = app.topic(topic_in, value_deserializer="json", config=config)
    sink = app.topic(topic_out, value_serializer="json", config=config)
    sdf = app.dataframe(source)
    sdf = sdf.apply(to_signal).filter(keep).apply(learn, stateful=True)
    sdf.to_topic(sink)
    sdf.update(counted)
    app.run()


def quix_round(broker: EmbeddedBroker, records, catalog: dict[str, str], r: int) -> float:
    ctx = mp.get_context("spawn")  # a fresh interpreter: nothing inherited from the bench
    count, ready = ctx.RawValue("q", 0), ctx.RawValue("b", 0)
    state_dir = tempfile.mkdtemp(prefix="recstream-quix-")
    topic_in = f"quix{r}.events.segment"
    proc = ctx.Process(target=quix_app, daemon=True, args=(
        broker.bootstrap, topic_in, f"quix{r}.top-artists", f"quix-peer-{r}", state_dir, catalog, count, ready))
    proc.start()
    try:
        wait_for(lambda: ready.value or not proc.is_alive(), 120, 0.1)
        if not ready.value:
            raise RuntimeError(f"the Quix app exited with code {proc.exitcode} before it was ready")
        preload(broker.bootstrap, topic_in, records)

        def done() -> int:
            if not proc.is_alive():
                raise RuntimeError(f"the Quix app exited with code {proc.exitcode} after {count.value} events")
            return count.value
        return measure(done, len(records), timeout=300)
    finally:
        proc.terminate()  # SIGTERM: Quix stops gracefully
        proc.join(15)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        shutil.rmtree(state_dir, ignore_errors=True)


def pipeline_round(broker: EmbeddedBroker, demo, records, r: int) -> float:
    """recstream's full pipeline, as bench/throughput.py measures it."""
    worker = pipeline_with_catalog(broker, f"peer{r}.", f"peer-pipeline-{r}", demo)
    try:
        preload(broker.bootstrap, f"peer{r}.events.segment", records)
        return measure(lambda: processed(worker), len(records), timeout=300)
    finally:
        worker.stop()


def main() -> dict:
    """Both paths ROUNDS times, alternating, each round on fresh topics and processes."""
    demo, records = demo_events(N)
    catalog = {a["id"]: a["artist_id"] for a in demo.artworks()}
    runs: dict[str, list[float]] = {QUIX: [], PIPELINE: []}
    with EmbeddedBroker() as broker:
        for r in range(ROUNDS):
            for name, run, args in ((QUIX, quix_round, (broker, records, catalog, r)),
                                    (PIPELINE, pipeline_round, (broker, demo, records, r))):
                started = time.monotonic()
                runs[name].append(run(*args))
                print(f"[peer] round {r + 1}/{ROUNDS} {name}: {runs[name][-1]:,.0f} events/s "
                      f"({time.monotonic() - started:.0f} s with setup)", file=sys.stderr, flush=True)
    return runs


def report(runs: dict) -> str:
    from importlib.metadata import version

    median = {name: statistics.median(rates) for name, rates in runs.items()}
    lines = [f"| {name} | {median[name]:,.0f} | {', '.join(f'{x:,.0f}' for x in rates)} |" for name, rates in runs.items()]
    per_round = ", ".join(f"{p / q:.2f}×" for p, q in zip(runs[PIPELINE], runs[QUIX], strict=True))
    return "\n".join([
        f"Peer: Quix Streams {version('quixstreams')} vs recstream ({N:,} demo Segment events, one process each, "
        f"{PARTITIONS} partitions; {len(runs[QUIX])} alternating rounds, median round)", "",
        "| path | events/s | every round |", "|---|---|---|", *lines, "",
        f"recstream / Quix = {median[PIPELINE] / median[QUIX]:.2f}× (target ≥ 1.5×; round by round: {per_round})"])


if __name__ == "__main__":
    print(report(main()))
