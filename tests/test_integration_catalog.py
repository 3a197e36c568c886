"""The catalog topics on real workers through rebalances and kills: every record must reach the
catalog tables once the workers settle (agents.catalog: read by direct ingest, not faust's consumer)."""

from __future__ import annotations

import pytest

from streams.core.demo import dumps
from streams.kafka.direct import direct_group
from tests.conftest import metric, wait_until
from tests.test_integration_failover import committed_reach_end, produce_tracking_ends

pytestmark = pytest.mark.integration

CHUNK = 6000


def _works(chunk: int) -> list[tuple[bytes, bytes]]:
    return [(f"w{chunk}-{i}".encode(), dumps({"id": f"w{chunk}-{i}", "artist_id": f"artist-{i % 400}"}))
            for i in range(CHUNK)]


def test_a_catalog_loaded_through_rebalances_and_a_kill_9_keeps_every_work(cluster):
    """Works produced while a second worker joins, is killed -9 and joins again: both workers end
    up knowing every work, none dead-lettered, and the offsets covering them are the direct
    reader's. On faust's consumer, records it had fetched before a rebalance could be dropped
    when fetched again (docs/traps.md), a work missing on every worker until its next update."""
    ends: dict = {}

    def produce(chunk: int) -> None:
        for tp, end in produce_tracking_ends(cluster, "catalog.artworks", _works(chunk)).items():
            ends[tp] = max(ends.get(tp, 0), end)

    a = cluster.start_worker("a")
    produce(0)
    b = cluster.start_worker("b")
    produce(1)
    b.kill()
    produce(2)
    b = cluster.start_worker("b")
    produce(3)
    total = 4 * CHUNK
    known = lambda: [metric(w, "recstream_catalog_works") for w in (a, b)]  # noqa: E731
    try:
        wait_until(lambda: known() == [total, total], 240, what=f"both workers know all {total} works")
    except pytest.fail.Exception:
        pytest.fail(f"works known by a and b: {known()} of {total}")
    assert metric(a, "recstream_dead_letters_total") + metric(b, "recstream_dead_letters_total") == 0
    wait_until(lambda: committed_reach_end(cluster, direct_group(cluster.kafka_app_id), ends), 60,
               what="the direct reader's commits at the catalog's end")
