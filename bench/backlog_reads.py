"""Reads while a worker works through a backlog: how long GET /recommendations/{user} waits while the worker
applies a backlog of events with catalog refreshes in it (new works of artists with thousands of fans: each
rebuilds its fans' lists), the case where an outside soak saw reads p99 1-3.5 s (a batch holds the worker's
event loop while it is applied).

Setup: a demo catalog of 60 artists (so each has hundreds of fans a partition) and 40,000 events of 20,000
users, applied. Then, produced at once: NEW_WORKS new works (copies of random works under new ids, published
now) and 40,000 more events. From that moment `wrk` (a C client) reads random users' lists for SECONDS,
paced (each of 4 connections waits 10 ms between requests, so the figures are waits, not a load test), while
the main thread polls how fast the backlog is applied, and when every topic is read (the refreshes too). Each
round uses fresh topics and a fresh worker.

Needs `wrk` (apt-get install -y wrk). Run: `.venv/bin/python bench/backlog_reads.py`; the same bench on another
checkout, from inside it (docs/traps.md, `python -m`): `cd <checkout> && PYTHONPATH=<checkout>
/path/to/.venv/bin/python bench/backlog_reads.py`.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import machine, metric, pipeline_with_catalog, preload, processed, wait_for  # noqa: E402
from bench.serving import LUA, need_wrk  # noqa: E402
from streams.cli.devtools import segment_key  # noqa: E402
from streams.core.demo import DemoGenerator, dumps  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402

SECONDS = int(os.environ.get("BENCH_BACKLOG_SECONDS", "30"))
ROUNDS = int(os.environ.get("BENCH_BACKLOG_ROUNDS", "2"))
NEW_WORKS = int(os.environ.get("BENCH_BACKLOG_NEW_WORKS", "30"))
EVENTS = 40_000
PACED = LUA.replace("function done(", "function delay()\n  return 10\nend\nfunction done(")


def one_round(wrk: str, i: int) -> dict:
    demo = DemoGenerator(users=20_000, artists=60, artworks=3_000, seed=3 + i, end_time=datetime.now(timezone.utc))
    events = [(segment_key(e), dumps(e)) for e in demo.events(2 * EVENTS)]
    with EmbeddedBroker() as broker:
        prefix = f"bl{i}."
        worker = pipeline_with_catalog(broker, prefix, f"bench-backlog-{i}", demo)
        try:
            preload(broker.bootstrap, f"{prefix}events.segment", events[:EVENTS])
            wait_for(lambda: processed(worker) >= EVENTS, 600, 0.5)
            users = sorted({k.decode() for k, _ in events[:EVENTS] if k})[:2000]
            script = _script(users)
            now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
            rng = random.Random(i)
            works = [{**rng.choice(demo.artworks()), "id": f"new-{n}", "published_at": now} for n in range(NEW_WORKS)]
            preload(broker.bootstrap, f"{prefix}catalog.artworks", [(w["id"].encode(), dumps(w)) for w in works])
            reads: dict = {}
            reader = threading.Thread(target=lambda: reads.update(_wrk(wrk, worker.base_url, script)))
            started = time.monotonic()
            reader.start()
            preload(broker.bootstrap, f"{prefix}events.segment", events[EVENTS:])
            caught_up = wait_for(lambda: processed(worker) >= 2 * EVENTS and time.monotonic(), 600, 0.2)
            # and every refresh applied: nothing left to read on any topic (signals.keyed carries the refreshes)
            drained = wait_for(lambda: metric(worker, "recstream_consumer_lag", 1) == 0 and time.monotonic(), 600, 0.2)
            reader.join()
            os.unlink(script)
            return {**reads, "catch_up_s": caught_up - started, "events_per_s": EVENTS / (caught_up - started),
                    "drained_s": drained - started,
                    "slow_batches": metric(worker, "recstream_slow_batches_total")}
        finally:
            worker.stop()


def _script(users: list[str]) -> str:
    import tempfile
    fd, path = tempfile.mkstemp(prefix="recstream-wrk-", suffix=".lua")
    with os.fdopen(fd, "w") as f:
        f.write(PACED.replace("{users}", "{" + ", ".join(json.dumps(u) for u in users) + "}"))
    return path


def _wrk(wrk: str, base: str, script: str) -> dict:
    cmd = [wrk, "-t1", "-c4", f"-d{SECONDS}s", "--timeout", "10s", "--latency", "-s", script, f"{base}/recommendations/"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + 60, check=True).stdout
    s = json.loads(next(x for x in out.splitlines() if x.startswith("WRKJSON "))[len("WRKJSON "):])
    errors = sum(s[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {"requests": s["requests"], "errors": errors, "p50_ms": s["p50_us"] / 1000, "p99_ms": s["p99_us"] / 1000,
            "max_ms": s["max_us"] / 1000}


def main() -> list[dict]:
    wrk = need_wrk()
    rounds = []
    for i in range(ROUNDS):
        rounds.append(one_round(wrk, i))
        r = rounds[-1]
        print(f"[backlog] round {i + 1}/{ROUNDS}: reads p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max "
              f"{r['max_ms']:.0f} ms ({r['requests']} reads, {r['errors']} errors); backlog applied in "
              f"{r['catch_up_s']:.1f} s ({r['events_per_s']:,.0f} events/s), every topic read in {r['drained_s']:.1f} s",
              file=sys.stderr, flush=True)
    return rounds


def report(rounds: list[dict]) -> str:
    med = {k: statistics.median(r[k] for r in rounds) for k in ("p50_ms", "p99_ms", "max_ms", "events_per_s")}
    return (f"Reads during a backlog with {NEW_WORKS} new works ({machine()}), median of {len(rounds)} rounds: "
            f"p50 {med['p50_ms']:.1f} ms, p99 {med['p99_ms']:.1f} ms, max {med['max_ms']:.0f} ms; backlog applied at "
            f"{med['events_per_s']:,.0f} events/s")


if __name__ == "__main__":
    print(report(main()))
