"""Global tables (image pools, experiment counts, trending shares, the catalog) on two real workers:
each must hold every partition's records, whichever worker wrote them.

faust hands every partition of a global table's changelog to every worker as *active* and applies
an active partition's records in batches of the table's recovery_buffer_size (1,000): after
recovery, another worker's writes sat in that buffer, so each worker saw only its own writes
until a restart (fuzzing: w0 knew the image pools m0 m2 m4 m7, w1 m1 m3 m5 m6, and each
worker's readout counted its own partitions' users)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from streams.core.demo import dumps
from tests.conftest import get_json, wait_until

pytestmark = pytest.mark.integration

MERCHANTS = [f"m{i}" for i in range(8)]


def both_assigned(a, b) -> bool:
    health = [get_json(w, "/health")[1] for w in (a, b)]
    return all(h.get("assigned_partitions", 0) > 0 and not h.get("rebalancing") for h in health)


def recs_users(w) -> int:
    body = get_json(w, "/experiments")[1]
    return sum(v["users"] for e in body["experiments"] if e["kind"] == "recs" for v in e["variants"])


def test_every_worker_holds_every_partitions_global_records(cluster):
    a, b = cluster.start_worker("a"), cluster.start_worker("b")
    wait_until(lambda: both_assigned(a, b), 90, what="both workers assigned")
    cluster.produce("catalog.images", [(m.encode(), dumps({"merchant_id": m, "images": [
        {"image_id": "h", "url": "u", "kind": "header"}]})) for m in MERCHANTS])
    for name, w in (("a", a), ("b", b)):
        wait_until(lambda w=w: sorted(get_json(w, "/images/stats")[1].get("pools", {})) == MERCHANTS, 30,
                   what=f"every image pool on worker {name}")
    # users on both workers' partitions: every worker's readout counts all of them
    users = [f"u{i}" for i in range(40)]
    cluster.produce("events.segment", [(u.encode(), dumps({
        "type": "track", "event": "followedArtist", "userId": u, "messageId": f"f-{u}",
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "properties": {"owner_id": "artist-1"}})) for u in users])
    for name, w in (("a", a), ("b", b)):
        wait_until(lambda w=w: recs_users(w) == len(users), 60, what=f"all {len(users)} users in {name}'s readout")


def test_every_worker_drops_a_deleted_work_and_takes_a_new_curated_list(cluster):
    """The catalog index of a worker that reads the catalog from the changelog: faust hands the hook
    the key as str, and `.decode()` on it raised for every delete, so the deleted work stayed listed
    (fuzzing: back in cold-start lists after a kill -9), and a new curated list never arrived."""
    a, b = cluster.start_worker("a"), cluster.start_worker("b")
    wait_until(lambda: both_assigned(a, b), 90, what="both workers assigned")
    day_ago = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat()
    cluster.produce("catalog.artworks", [(f"gw{i}".encode(), dumps({"id": f"gw{i}", "artist_id": "g-artist",
                                                                    "published_at": day_ago})) for i in range(3)])
    cluster.produce("catalog.curated", [(b"curated", dumps({"artwork_ids": ["gw0", "gw1", "gw2"]}))])
    strangers = [f"stranger-{i}" for i in range(16)]  # unknown users: cold-start lists, built by their owners

    def cold_lists(w) -> list[list[str]]:
        return [[i["artwork_id"] for i in get_json(w, f"/recommendations/{u}")[1]["items"]] for u in strangers]

    for w in (a, b):
        wait_until(lambda w=w: all(items[:3] == ["gw0", "gw1", "gw2"] for items in cold_lists(w)), 60,
                   what="the curated list on every owner")
    cluster.produce("catalog.artworks", [(b"gw0", None)])
    cluster.produce("catalog.curated", [(b"curated", dumps({"artwork_ids": ["gw2", "gw1"]}))])
    for w in (a, b):
        wait_until(lambda w=w: all(items[:2] == ["gw2", "gw1"] and "gw0" not in items for items in cold_lists(w)),
                   60, what="the new curated list, without the deleted work, on every owner")
