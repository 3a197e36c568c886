"""The end of `recstream dev`: new visitors act on their first lists by variant (a planted effect),
then the experiment readout is printed."""

from __future__ import annotations

import asyncio
import json
import time

from streams.core.demo import dumps
from streams.core.settings import Settings

# the demo's planted effect: new visitors save a work from their first list, B's twice as often
DEMO_SAVE_RATE = {"A": 0.25, "B": 0.5}


DEMO_VISITORS = 400


async def experiment_readout(settings: Settings, produce, worker, artists: list[str]) -> None:
    """`produce(topic, records)`: an async producer; `worker`: a running WorkerProcess.
    New visitors follow an artist, get a first list and save a work from it at a rate that
    depends on their variant (DEMO_SAVE_RATE); then the readout of GET /experiments is printed,
    so a newcomer sees the A/B machinery find the planted winner."""
    import random

    from streams.core.ledger import table

    rng, visitors = random.Random(7), [f"visitor{i}" for i in range(DEMO_VISITORS)]
    follows = [(v.encode(), _track(v, "followedArtist", {"owner_id": rng.choice(artists)})) for v in visitors]
    await produce(settings.topic("events.segment"), follows)
    lists: dict[str, dict] = {}
    deadline = time.monotonic() + 30
    while len(lists) < len(visitors) and time.monotonic() < deadline:
        for v in visitors:
            if v not in lists:
                status, body = worker.get(f"/recommendations/{v}")
                if status == 200 and json.loads(body)["trigger"] != "cold-start":
                    lists[v] = json.loads(body)
        await asyncio.sleep(0.2)
    saves = [(v.encode(), _track(v, "artworkSave", {"artwork_id": rng.choice(recs["items"])["artwork_id"]}))
             for v, recs in lists.items() if recs["items"] and rng.random() < DEMO_SAVE_RATE.get(recs["variant"], 0)]
    target = _converted(worker) + len(saves)  # each saving visitor converts once
    await produce(settings.topic("events.segment"), saves)
    print(f"[dev] {len(lists)} new visitors followed an artist; {len(saves)} saved a work from their first list"
          " (planted: B's visitors twice as often as A's; the demo users' own saves of listed works count too)")
    deadline = time.monotonic() + 20
    while _converted(worker) < target and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    status, body = worker.get("/experiments")
    readout = json.loads(body) if status == 200 else None
    if readout:
        print("[dev] experiment readout (GET /experiments, `recstream experiments report`):")
        print(table({"experiments": [e for e in readout["experiments"] if e["kind"] == "recs"]}))


def _track(user: str, event: str, properties: dict) -> bytes:
    from datetime import datetime, timezone

    return dumps({"type": "track", "event": event, "userId": user, "messageId": f"dev-{event}-{user}",
                  "timestamp": datetime.now(timezone.utc).isoformat(), "properties": properties})


def _converted(worker) -> int:
    """Converted users in the recommendations experiment, per GET /experiments."""
    status, body = worker.get("/experiments")
    if status != 200:
        return 0
    return sum(v["converted"] for e in json.loads(body)["experiments"] if e["kind"] == "recs" for v in e["variants"])
