"""Restore: how long a worker on an empty disk takes to restore a rebuilt state and answer, with
faust's recovery alone (RECSTREAM_BULK_RESTORE_MIN=0) and with the bulk copy (the default,
streams.worker.restore), in alternating rounds on the same changelogs; next to a bare aiokafka
consumer merely reading those changelogs (the read's physical limit), in the same run. Each
restored worker's answers for a sample of users are compared with the first one's. Then a second
worker joins each restored one (which holds every partition): how long until it answers.

BENCH_RESTORE_EVENTS (default 300,000 demo events), BENCH_RESTORE_USERS (default a tenth),
BENCH_ROUNDS (default 2)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import demo_events, machine, preload, recstream_worker, rss_mb  # noqa: E402
from bench.rebuild import bare_read, bulk  # noqa: E402
from streams.core.demo import dumps  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402

N = int(os.environ.get("BENCH_RESTORE_EVENTS", "300000"))
USERS = int(os.environ.get("BENCH_RESTORE_USERS", str(max(1000, N // 10))))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
PREFIX, APP_ID = "rs.", "bench-restore"
MODES = {"faust's recovery alone": "0", "bulk copy, then faust's": ""}  # "": the default


async def changelogs(bootstrap: str) -> dict:
    """Every changelog topic of the rebuilt app -> its records (the true ends)."""
    from streams.kafka.admin import existing_topics
    from streams.kafka.offsets import end_offsets

    names = sorted(t for t in await existing_topics({"bootstrap_servers": bootstrap})
                   if t.startswith(f"{PREFIX}{APP_ID}-") and t.endswith("-changelog"))
    ends = await end_offsets({"bootstrap_servers": bootstrap}, names)
    return {name: sum(end for tp, end in ends.items() if tp.topic == name) for name in names}


def sample_digest(worker, users: list[str]) -> str:
    """A digest of the sample users' affinity as the worker answers it."""
    digest = hashlib.sha256()
    for user in users:
        status, body = worker.get(f"/users/{user}/affinity?n=1000", timeout=10)
        digest.update(f"{user} {status} ".encode() + body)
    return digest.hexdigest()[:16]


def restore_once(broker: EmbeddedBroker, minimum: str, users: list[str]) -> dict:
    """A worker on an empty disk restores the state (seconds to ready, RSS, the sample's digest); then a second
    worker joins it, which holds every partition: seconds until that one answers too."""
    extra = {"RECSTREAM_BULK_RESTORE_MIN": minimum} if minimum else None
    worker = recstream_worker(broker, PREFIX, APP_ID, extra)
    t0 = time.monotonic()
    try:
        worker.wait_ready(timeout=1800)
        out = {"seconds": time.monotonic() - t0, "rss": rss_mb(worker.proc.pid), "digest": sample_digest(worker, users)}
        second = recstream_worker(broker, PREFIX, APP_ID, extra)
        t0 = time.monotonic()
        try:
            second.wait_ready(timeout=1800)
            return {**out, "join": time.monotonic() - t0}
        finally:
            second.stop()
    finally:
        worker.stop()


def main() -> dict:
    demo, records = demo_events(N, users=USERS)
    out: dict = {"events": N, "users": USERS, "rounds": {mode: [] for mode in MODES}}
    with EmbeddedBroker() as broker:
        preload(broker.bootstrap, f"{PREFIX}catalog.artworks", [(a["id"].encode(), dumps(a)) for a in demo.artworks()])
        preload(broker.bootstrap, f"{PREFIX}events.segment", records)
        del records
        t0 = time.monotonic()
        bulk(broker, PREFIX, APP_ID)
        print(f"[restore] state rebuilt in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        out["changelogs"] = asyncio.run(changelogs(broker.bootstrap))
        out["bare_read"] = asyncio.run(bare_read(broker.bootstrap, list(out["changelogs"])))
        users = random.Random(5).sample([f"u{i}" for i in range(USERS)], 200)
        for r in range(ROUNDS):
            for mode, minimum in (MODES.items() if r % 2 == 0 else reversed(MODES.items())):
                result = restore_once(broker, minimum, users)
                print(f"[restore] round {r + 1}, {mode}: ready in {result['seconds']:.1f} s, a second worker "
                      f"joined in {result['join']:.1f} s", file=sys.stderr, flush=True)
                out["rounds"][mode].append(result)
    return out


def report(r: dict) -> str:
    total = sum(r["changelogs"].values())
    digests = {x["digest"] for runs in r["rounds"].values() for x in runs}
    lines = [f"Restore of the state `rebuild --bulk` built from {r['events']:,} demo events ({r['users']:,} users): "
             f"{total:,} changelog records in {len(r['changelogs'])} topics; {machine()}", "",
             "| restore | ready after, each round | records/s to ready (best round) | RSS | a second worker joining: "
             "ready after |", "|---|---|---|---|---|"]
    for mode, runs in r["rounds"].items():
        best, each = min(x["seconds"] for x in runs), " / ".join(f"{x['seconds']:.1f} s" for x in runs)
        joins = " / ".join(f"{x['join']:.1f} s" for x in runs)
        lines.append(f"| {mode} | {each} | {total / best:,.0f} | {max(x['rss'] for x in runs):.0f} MB | {joins} |")
    lines += [f"| bare aiokafka consumer reading the same changelogs | | {r['bare_read']:,.0f} | | |", "",
              f"200 users' affinity, as each restored worker answered it: {'the same' if len(digests) == 1 else 'DIFFERENT'}"
              f" ({', '.join(sorted(digests))})"]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(main()))
