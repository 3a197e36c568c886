"""`recstream replay` and `load` count what the broker acknowledged (found by an outside test): a failed
delivery was counted as sent (exit 0, "Future exception was never retrieved"), a record too large for a
produce request stopped the whole replay, and a file that could not be read to its end left no summary."""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
from datetime import datetime, timezone

import pytest

from streams.core.demo import DemoGenerator, dumps
from tests.conftest import Cluster
from tests.test_integration_load import run

pytestmark = pytest.mark.integration


def events_file(path, n: int, seed: int = 3):
    demo = DemoGenerator(users=40, artists=10, artworks=100, seed=seed, end_time=datetime.now(timezone.utc))
    lines = b"\n".join(dumps(e) for e in demo.events(n)) + b"\n"
    path.write_bytes(gzip.compress(lines) if path.suffix == ".gz" else lines)
    return path


@pytest.mark.parametrize("command", ["replay", "load"])
def test_a_failed_delivery_is_counted_as_such_and_exits_3(cluster, tmp_path, monkeypatch, capsys, caplog, command):
    import aiokafka
    from aiokafka.errors import UnknownError

    class Flaky(aiokafka.AIOKafkaProducer):  # the broker answers every third record with an error
        sends = 0

        async def send(self, topic, value=None, key=None, **kwargs):
            Flaky.sends += 1
            if Flaky.sends % 3:
                return await super().send(topic, value=value, key=key, **kwargs)
            failed = asyncio.get_running_loop().create_future()
            failed.set_exception(UnknownError("lost"))
            return failed

    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", Flaky)
    for name, value in {**cluster.env, "RECSTREAM_BROKER_URL": cluster.broker.url}.items():
        monkeypatch.setenv(name, value)
    if command == "replay":
        from streams.cli.ops import cmd_replay

        status = cmd_replay([str(events_file(tmp_path / "events.jsonl", 300)), "--rejects", str(tmp_path / "r.jsonl")])
    else:
        from streams.cli.load import cmd_load

        path = tmp_path / "artworks.jsonl"
        path.write_bytes(b"\n".join(dumps(a) for a in DemoGenerator(artworks=300).artworks()) + b"\n")
        status = cmd_load(["artworks", str(path), "--rejects", str(tmp_path / "r.jsonl")])
    gc.collect()
    out, err = capsys.readouterr()
    assert status == 3, out + err
    assert out.startswith("sent 200, rejected 100"), out
    assert "  rejected not_delivered: 100\n    100 x [Error -1] UnknownError: lost\n" in out, out
    assert "100 records were not delivered" in err
    assert "never retrieved" not in caplog.text, caplog.text
    kept = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [k["line_number"] for k in kept] == list(range(3, 301, 3)) and kept[0]["reason"] == "not_delivered"


def test_replay_rejects_a_line_too_large_for_a_produce_request_and_goes_on(broker, tmp_path):
    """RECSTREAM_MAX_EVENT_BYTES above the producer's request size (a valid setting): the line passed replay's
    check, then the producer refused it and replay stopped as 'the broker did not answer', the rest unsent."""
    cluster = Cluster(broker, tmp_path, env={"RECSTREAM_MAX_EVENT_BYTES": "2000000"})
    event = {"type": "track", "event": "followedArtist", "userId": "u1", "timestamp": datetime.now(timezone.utc).isoformat(),
             "properties": {"owner_id": "a1", "owner_type": "artist"}}
    big = {**event, "messageId": "m2", "properties": {**event["properties"], "note": "x" * 1_200_000}}
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"\n".join(dumps(e) for e in ({**event, "messageId": "m1"}, big, {**event, "messageId": "m3"})))
    result = run(cluster, "replay", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sent 2, rejected 1\n  rejected oversized: 1\n"), result.stdout
    assert "Traceback" not in result.stderr
    assert sorted(json.loads(r.value)["messageId"] for r in cluster.consume_all("events.segment")) == ["m1", "m3"]


def _spoiled(data: bytes, spoil: str) -> bytes:
    if spoil == "cut":  # a copy still under way
        return data[: len(data) // 2]
    if spoil == "crc":  # every line inflates whole; only the trailer's check, at the end, fails
        return data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:]
    middle = len(data) // 2  # a few bytes flipped mid-stream: garbage from there on
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 3]) + data[middle + 3:]


@pytest.mark.parametrize("spoil", ["cut", "crc", "flipped"])
@pytest.mark.parametrize("command", ["replay", "load"])
def test_a_gzip_file_cut_short_or_corrupt_is_refused_before_anything_is_sent(cluster, tmp_path, command, spoil):
    """gzip checks a member's CRC only at its end: the lines before it were sent (a corrupt archive's garbage too,
    whatever of it parsed), then the command stopped part-way. Every gzip input is now read to its end first."""
    whole = tmp_path / "whole.jsonl.gz"
    if command == "replay":
        events_file(whole, 6000)
    else:
        whole.write_bytes(gzip.compress(b"\n".join(dumps(a) for a in DemoGenerator(artworks=6000).artworks())))
    good, bad = tmp_path / "good.jsonl", tmp_path / f"{spoil}.jsonl.gz"
    good.write_bytes(dumps({"id": "w-good", "artist_id": "a-good"}) if command == "load" else gzip.decompress(
        whole.read_bytes()).split(b"\n")[0])
    bad.write_bytes(_spoiled(whole.read_bytes(), spoil))
    args = ["replay", str(good), str(bad)] if command == "replay" else ["load", "artworks", str(good), str(bad)]
    result = run(cluster, *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout.splitlines()[0].startswith("sent 0, rejected 0"), result.stdout
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"recstream {command}: {bad}: not a whole gzip file ("), last
    assert last.endswith("found before anything was sent; 0 records acknowledged before it stopped"), last
    assert cluster.consume_all("events.segment" if command == "replay" else "catalog.artworks") == []
