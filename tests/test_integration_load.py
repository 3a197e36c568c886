"""`recstream load` and `replay` on the embedded broker: catalog files with bad lines land on
their topics keyed as the catalog agents expect, and a worker started afterwards applies them."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.core.demo import DemoGenerator, dumps
from tests.conftest import get_json, metric, wait_until

pytestmark = pytest.mark.integration

RECSTREAM = str(Path(sys.executable).with_name("recstream"))


def run(cluster, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    return subprocess.run(
        [RECSTREAM, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env, **cluster.env, "RECSTREAM_BROKER_URL": cluster.broker.url},
    )


def partitions(cluster, topic: str) -> int:
    async def count() -> int:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(bootstrap_servers=cluster.broker.bootstrap)
        await consumer.start()
        try:
            await consumer.topics()
            return len(consumer.partitions_for_topic(cluster.topic(topic)) or ())
        finally:
            await consumer.stop()

    return asyncio.run(count())


BAD = {  # line number in the file -> (bad line, what the worker's decoder says)
    3: (b'{"id": 5, "artist_id": "a1"}', "invalid_artwork: Expected `str`, got `int` - at `$.id`"),
    41: (b"{broken", "invalid_artwork: JSON is malformed"),
    77: (
        b'{"id": "w-x", "artist_id": "a1", "price": -5}',
        "invalid_artwork: price must be a finite number",
    ),
    100: (
        b'{"id": "", "artist_id": "a1"}',
        "invalid_artwork: artwork id and artist_id must be 1 to 256 characters, not blank",
    ),
}


def artworks_file(path: Path, artworks: list[dict]) -> Path:
    """The artworks as JSONL (gzip), with the BAD lines at their numbers and a blank line 10."""
    good = iter(artworks)
    lines = [
        BAD[n][0] if n in BAD else b"   " if n == 10 else dumps(next(good))
        for n in range(1, len(artworks) + len(BAD) + 2)
    ]
    assert next(good, None) is None
    with gzip.open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    return path


def test_load_catalogs_with_bad_lines_before_the_first_worker(cluster, tmp_path):
    artworks = DemoGenerator(users=50, artists=20, artworks=120, seed=4).artworks()
    path = artworks_file(tmp_path / "artworks.jsonl.gz", artworks)
    result = run(cluster, "load", "artworks", str(path))
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.splitlines()[0]
        == f"sent 120, rejected 4 ({cluster.topic('catalog.artworks')})"
    )
    assert "  rejected invalid_artwork: 4" in result.stdout
    reported = [line for line in result.stderr.splitlines() if line.startswith(f"{path}:")]
    assert len(reported) == 4 and "Traceback" not in result.stderr
    for line, number in zip(reported, sorted(BAD), strict=True):
        assert line.startswith(f"{path}:{number}: {BAD[number][1]}"), line
    assert "load artworks: 120" in result.stderr  # progress

    curated = tmp_path / "curated.jsonl"
    demo_curated = subprocess.run(
        [RECSTREAM, "demo-events", "--curated", "--artworks", "120"],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    curated.write_bytes(demo_curated)
    result = run(cluster, "load", "curated", str(curated))
    assert result.returncode == 0 and result.stdout.startswith("sent 1, rejected 0"), result.stderr
    images = tmp_path / "images.jsonl"
    images.write_bytes(
        subprocess.run(
            [RECSTREAM, "demo-events", "--images", "--merchants", "5"],
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
    )
    result = run(cluster, "load", "images", str(images))
    assert result.returncode == 0 and result.stdout.startswith("sent 5, rejected 0"), result.stderr

    # the records are on the topics, keyed as the catalog agents expect, the bytes as in the file
    on_topic = cluster.consume_all("catalog.artworks")
    assert sorted((r.key, r.value) for r in on_topic) == sorted(
        (a["id"].encode(), dumps(a)) for a in artworks
    )
    # as many partitions as the tables' changelogs (the curated agent writes the editorial table)
    assert [
        partitions(cluster, t) for t in ("catalog.artworks", "catalog.curated", "catalog.images")
    ] == [4, 4, 4]
    (record,) = cluster.consume_all("catalog.curated")
    assert record.key == b"curated" and record.value == demo_curated.strip()
    assert sorted(r.key for r in cluster.consume_all("catalog.images")) == [
        f"m{i}".encode() for i in range(5)
    ]

    # a worker started afterwards applies every record and dead-letters none
    worker = cluster.start_worker()
    wait_until(
        lambda: metric(worker, "recstream_catalog_records_total") >= 120,
        60,
        what="artworks applied",
    )
    wait_until(
        lambda: metric(worker, "recstream_curated_updates_total") >= 1, 30, what="curated applied"
    )
    wait_until(
        lambda: metric(worker, "recstream_image_catalog_records_total") >= 5,
        30,
        what="images applied",
    )
    assert metric(worker, "recstream_dead_letters_total") == 0
    status, recs = get_json(worker, "/recommendations/newcomer")
    picks = [i["artwork_id"] for i in recs["items"] if i["source"] == "curated"]
    assert status == 200 and picks and set(picks) <= set(json.loads(demo_curated)["artwork_ids"])
    status, stats = get_json(worker, "/images/stats")
    assert status == 200 and sorted(stats["pools"]) == [f"m{i}" for i in range(5)]
    assert all(len(pool) > 1 for pool in stats["pools"].values())


def test_load_of_nothing_valid_shows_ten_bad_lines_counts_the_rest_and_exits_1(cluster, tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        b"\n".join(dumps(e) for e in DemoGenerator(users=10, seed=2).events(25)) + b"\n"
    )
    rejects = tmp_path / "rejects.jsonl"
    result = run(cluster, "load", "artworks", str(events), "--rejects", str(rejects))
    assert result.returncode == 1, result.stderr
    reported = [line for line in result.stderr.splitlines() if line.startswith(f"{events}:")]
    assert [line.split(":")[1] for line in reported] == [str(n) for n in range(1, 11)]
    assert reported[-1].endswith("further bad lines are only counted")
    assert "nothing valid was sent" in result.stderr and "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("sent 0, rejected 25") and "  rejected invalid_artwork: 25" in lines
    assert (
        "hint: 25 rejected lines look like events: send them with `recstream replay FILE...`"
        in lines
    )
    kept = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [k["line_number"] for k in kept] == list(range(1, 26)) and kept[0][
        "reason"
    ] == "invalid_artwork"
    assert cluster.consume_all("catalog.artworks", idle_ms=700) == []


def test_replay_of_a_catalog_file_exits_1_and_points_to_load(cluster, tmp_path):
    path = tmp_path / "artworks.jsonl"
    path.write_bytes(b"\n".join(dumps(a) for a in DemoGenerator(artworks=40).artworks()) + b"\n")
    result = run(cluster, "replay", str(path))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["sent 0, rejected 40", "  rejected unknown_record: 40"]
    assert lines[2] == ("hint: 40 lines look like artworks catalog records: load them with "
                        "`recstream load artworks FILE...`")
    assert "nothing was sent" in result.stderr and "Traceback" not in result.stderr
