"""Operations run the way operators run them, on the embedded broker (found by an outside audit of the
documented workflows): before any worker, beside live traffic, interrupted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from streams.cli.devtools import segment_key
from streams.core.demo import DemoGenerator, dumps
from streams.kafka.admin import ensure_topics, existing_topics, topic_partitions
from tests.conftest import Cluster, metric, wait_caught_up, wait_until

pytestmark = pytest.mark.integration


def cli(cluster: Cluster, *args, env=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **cluster.env, "RECSTREAM_BROKER_URL": cluster.broker.url,
                                                **(env or {})})


def client(cluster: Cluster) -> dict:
    return {"bootstrap_servers": cluster.broker.bootstrap}


def test_replay_before_any_worker_creates_the_inputs_with_its_partitions_and_rejects_what_the_worker_would(
        broker, tmp_path):
    """The broker auto-created replay's topics with its own default count (4 here, 1 on a stock Apache
    Kafka), so input keyed by user no longer sat in its user's state partition; and a line stamped
    before RECSTREAM_MIN_EVENT_YEAR was counted sent, then dead-lettered by the worker."""
    cluster = Cluster(broker, tmp_path, env={"RECSTREAM_PARTITIONS": "3"})
    now = datetime.now(timezone.utc)
    good = {"type": "track", "event": "followedArtist", "userId": "u1", "messageId": "m1",
            "timestamp": now.isoformat(), "properties": {"owner_id": "a1"}}
    lines = [good, {**good, "messageId": "m2", "timestamp": "1990-01-01T00:00:00Z"},
             {**good, "messageId": "m3", "timestamp": (now + timedelta(days=3)).isoformat()},
             {"kind": "follow", "user_id": "u2", "artist_id": "a1", "timestamp": now.isoformat()}]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(dumps(line) for line in lines) + b"\n")
    result = cli(cluster, "replay", str(path), "--rejects", str(tmp_path / "rejects.jsonl"))
    assert result.returncode == 0, result.stderr
    assert "sent 2, rejected 2" in result.stdout and "rejected invalid_timestamp: 2" in result.stdout, result.stdout
    rejected = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejected] == ["invalid_timestamp"] * 2
    inputs = [cluster.topic(t) for t in ("events.segment", "signals.follow", "images.impressions")]
    assert asyncio.run(topic_partitions(client(cluster), inputs)) == {t: 3 for t in inputs}


def test_emit_all_under_an_app_id_no_worker_ran_says_so_and_creates_nothing(broker, tmp_path):
    """Its changelog read had the broker create the changelog with its default count; a worker started
    later under that app id crashed at its first list for a partition the changelog lacked, at every start."""
    cluster = Cluster(broker, tmp_path, env={"RECSTREAM_PARTITIONS": "2"})
    result = cli(cluster, "emit-all")
    changelog = f"{cluster.kafka_app_id}-recommendations-changelog"
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"no topic {changelog}: no worker has run under this app id" in result.stderr
    assert changelog not in asyncio.run(existing_topics(client(cluster)))


def test_a_worker_refuses_a_changelog_with_another_partition_count(broker, tmp_path):
    """Any client that had the broker create a changelog (the broker's default count) made every start of
    the app id's workers crash at its first write to a partition the changelog lacked; now it does not start,
    with the reason."""
    from streams.cli.devtools import WorkerProcess

    cluster = Cluster(broker, tmp_path)  # 4 partitions
    changelog = f"{cluster.kafka_app_id}-recommendations-changelog"
    asyncio.run(ensure_topics(client(cluster), {changelog: (1, {})}))
    worker = WorkerProcess(broker.url, str(tmp_path / "state"), env=cluster.env, log_path=tmp_path / "w.log").start()
    try:
        assert worker.proc.wait(90) == 2
    finally:
        worker.kill()
    log = (tmp_path / "w.log").read_text()
    assert f"RECSTREAM_PARTITIONS is 4, but the changelog {changelog} has 1 partitions" in log, log[-2000:]
    assert "Traceback" not in log
    # and it created nothing: a refused worker made the topics it lacked, which a rebuild then refused in turn
    assert cluster.topic("events.segment") not in asyncio.run(existing_topics(client(cluster)))


def test_emit_all_beside_live_traffic_ends_and_leaves_every_users_newest_list_last(cluster):
    """It read the changelog until 2 s passed without a write, so under steady traffic it never ended; and a list
    the worker published after emit-all read that user's older one was followed on the topic by the older copy
    (an outside audit; a first fix comparing the changelog still left 1 user in 1,000 so: a worker's transaction
    can reach the topic a request before its changelog)."""
    cluster.env["RECSTREAM_LIST_WINDOW_MS"] = "0"  # every event a new list: the most lists written during emit-all
    worker = cluster.start_worker("w")
    cluster.produce("catalog.artworks", [(f"w{i}".encode(), dumps({"id": f"w{i}", "artist_id": f"a{i % 600}"}))
                                         for i in range(3000)])
    wait_until(lambda: metric(worker, "recstream_catalog_records_total") >= 3000, 60, what="the catalog")
    users, count, rnd = [f"u{i}" for i in range(1000)], iter(range(10**6)), __import__("random").Random(4)

    def follows(chosen):
        now = datetime.now(timezone.utc).isoformat()
        return [(u.encode(), dumps({"type": "track", "event": "followedArtist", "userId": u, "timestamp": now,
                                    "messageId": f"e{next(count)}", "properties": {"owner_id": f"a{rnd.randrange(600)}"}}))
                for u in chosen]

    cluster.produce("events.segment", follows(users))
    wait_caught_up(worker, 120)
    stop = threading.Event()

    def traffic():  # 500 events a second in bursts of 50, until stopped
        while not stop.is_set():
            cluster.produce("events.segment", follows(rnd.choices(users, k=50)))
            time.sleep(0.1)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        time.sleep(2)
        result = cli(cluster, "emit-all", timeout=60)  # under the old code it read on while the traffic lasted
    finally:
        stop.set()
        sender.join(30)
    assert result.returncode == 0 and "recommendation lists" in result.stdout, result.stderr
    wait_caught_up(worker, 120)
    time.sleep(2)  # the last lists' records
    last_on_topic = {r.key: r.value for r in cluster.consume_all("recommendations")}
    for user in users:
        served = worker.get(f"/recommendations/{user}")[1]
        assert last_on_topic[user.encode()] == served, user


@pytest.mark.parametrize("stop", ["ctrl-c", "kill-9-parent"])
def test_a_bulk_rebuild_stopped_midway_prints_no_traceback_and_leaves_no_shard_running(cluster, tmp_path, stop):
    """Ctrl-C reached the shard processes too (each printed a KeyboardInterrupt traceback), and a parent
    killed -9 left its shards running until they wrote to the broken pipe (a traceback each)."""
    demo = DemoGenerator(users=2000, artists=100, artworks=1000, seed=9, end_time=datetime.now(timezone.utc))
    cluster.produce("catalog.artworks", [(a["id"].encode(), dumps(a)) for a in demo.artworks()])
    cluster.produce("events.segment", [(segment_key(e), dumps(e)) for e in demo.events(150_000)], linger_ms=50)
    log = tmp_path / "rebuild.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "rebuild", "--app-id", f"{cluster.env['RECSTREAM_APP_ID']}-v2",
             "--bulk", "--no-worker", "--shards", "2"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=ctrl_c_default, env={**os.environ, **cluster.env, "RECSTREAM_BROKER_URL": cluster.broker.url})
        shards = wait_until(lambda: _shards(proc.pid) if len(_shards(proc.pid)) >= 2 else None, 60,
                            what="the shard processes")
        time.sleep(1.0)  # the shards start, then read the 150,000 events for a second or two
        for pid in shards:  # held midway: a quick machine read them all within the sleep (CI: status 0, not 130)
            os.kill(pid, signal.SIGSTOP)
        assert proc.poll() is None, "the rebuild ended before it could be stopped midway"
        if stop == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
            _resume(shards)  # the shards get the Ctrl-C too, as they would have running
            assert proc.wait(30) == 130
        else:
            proc.kill()
            proc.wait(10)
            _resume(shards)
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in shards), 20, what="the shards gone")
    text = log.read_text()
    assert "Traceback" not in text and "never retrieved" not in text, text[-3000:]
    if stop == "ctrl-c":
        assert "recstream rebuild: interrupted" in text


def ctrl_c_default() -> None:
    """In the child: Ctrl-C as a terminal's, whatever the test runner's. A runner started in the background by a
    shell without job control ignores SIGINT, and its children keep that: the command ran on to its end, status 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _resume(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:  # killed by its parent already
            pass


def _shards(pid: int) -> list[int]:
    """The rebuild's shard processes (multiprocessing's spawned children, not its resource tracker)."""
    try:
        children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    except OSError:
        return []


def test_replay_stopped_with_ctrl_c_says_how_far_it_got_without_a_traceback(broker, tmp_path):
    cluster = Cluster(broker, tmp_path)
    demo = DemoGenerator(users=50, artists=10, artworks=100, seed=2, end_time=datetime.now(timezone.utc))
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(dumps(e) for e in demo.events(2000)) + b"\n")
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "replay", str(path), "--rate", "200"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=ctrl_c_default, env={**os.environ, **cluster.env, "RECSTREAM_BROKER_URL": broker.url})
    time.sleep(4)  # started, and sending at 200 lines a second
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "replay: interrupted after" in err and "recstream replay: interrupted" in err, err
    sent = int(err.split("replay: interrupted after ")[1].split(" lines")[0].replace(",", ""))
    assert 0 < sent < 2000


def test_a_bulk_rebuild_under_another_partition_count_than_the_catalogs_refuses_before_writing(broker, tmp_path):
    """It wrote the new app's state and committed its offsets, and then no worker could start under that app id
    (the worker refuses catalog topics of another count), which a second rebuild could not reuse either."""
    cluster = Cluster(broker, tmp_path, env={"RECSTREAM_PARTITIONS": "3"})
    from streams.kafka.admin import COMPACT

    asyncio.run(ensure_topics(client(cluster), {cluster.topic("catalog.artworks"): (4, COMPACT)}))
    new_app = f"{cluster.env['RECSTREAM_APP_ID']}-v2"
    result = cli(cluster, "rebuild", "--app-id", new_app, "--bulk", "--no-worker")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"RECSTREAM_PARTITIONS is 3, but {cluster.topic('catalog.artworks')} has 4 partitions" in result.stderr
    assert not {t for t in asyncio.run(existing_topics(client(cluster))) if new_app in t}  # nothing written


def test_a_bulk_rebuild_dead_letters_a_record_batch_no_one_can_read_as_a_live_worker_does(broker, tmp_path):
    """An outside fuzz: such a batch (the embedded broker stores batches as produced) crash-looped a live worker,
    and the rebuild's shards read the inputs and the catalog with the same aiokafka reader."""
    from streams.kafka.admin import COMPACT
    from tests.test_integration_hostile import follow, produce_raw, send
    from tests.test_unreadable import batch

    cluster = Cluster(broker, tmp_path)
    artworks, events = cluster.topic("catalog.artworks"), cluster.topic("events.segment")
    asyncio.run(ensure_topics(client(cluster), {artworks: (4, COMPACT), events: (4, {})}))
    send(cluster, "catalog.artworks", [(b"w1", dumps({"id": "w1", "artist_id": "artist-1"}))])  # partition 0
    produce_raw(cluster, artworks, 0, batch(0, [dumps({"id": "w2", "artist_id": "artist-2"})], "bad_crc"))
    produce_raw(cluster, events, 0, batch(0, [follow("spoiled")] * 2, "lz4_flag_on_plain_bytes"))
    send(cluster, "events.segment", [(b"u1", follow("u1"))])
    result = cli(cluster, "rebuild", "--app-id", f"{cluster.env['RECSTREAM_APP_ID']}-v2", "--bulk", "--no-worker")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "wrote affinity: 1" in result.stdout and "wrote artworks: 1" in result.stdout, result.stdout
    letters = [json.loads(r.value) for r in cluster.consume_all("deadletter", idle_ms=500)]
    assert sorted((d["topic"], d["offset"], d["reason"]) for d in letters) == [
        (artworks, 1, "unreadable_batch"), (events, 1, "unreadable_batch")], letters
    assert letters[0]["detail"].startswith("offsets ") and "could not be read" in letters[0]["detail"]
