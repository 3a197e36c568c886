"""Nothing a producer sends stops the stream (issue 13), against a real worker on the embedded
broker. Each bad message below crash-looped the worker before: here the worker stays up (same
process, no agent crash in its log), the bad message comes out as a dead letter with its own
reason and source position, and a valid event sent right behind it, in the same partition, is
applied."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time

import msgspec
import pytest

from streams.core.demo import dumps
from tests.conftest import get_json, metric, wait_until

pytestmark = pytest.mark.integration

TS = "2026-01-01T00:00:00Z"
_users = itertools.count()


def follow(user: str) -> bytes:
    return dumps({"type": "track", "event": "followedArtist", "userId": user, "messageId": f"ok-{user}",
                  "timestamp": TS, "properties": {"owner_id": "artist-1"}})


def send(cluster, topic: str, records: list[tuple[bytes | None, bytes | None]], partition: int = 0,
         compression: str | None = None) -> list[int]:
    """Produce to one partition, in order; returns each record's offset."""
    from aiokafka import AIOKafkaProducer

    async def go():
        producer = AIOKafkaProducer(bootstrap_servers=cluster.broker.bootstrap, compression_type=compression,
                                    linger_ms=20, max_request_size=4 << 20)
        await producer.start()
        try:
            futures = [await producer.send(cluster.topic(topic), value=v, key=k, partition=partition)
                       for k, v in records]
            return [(await f).offset for f in futures]
        finally:
            await producer.stop()
    return asyncio.run(go())


@pytest.fixture(scope="module")
def worker(module_cluster):
    w = module_cluster.start_worker("hostile")
    send(module_cluster, "catalog.artworks", [(b"w1", dumps({"id": "w1", "artist_id": "artist-1"}))])
    wait_until(lambda: metric(w, "recstream_catalog_records_total") >= 1, 60, what="catalog")
    return w


def dead_letters(cluster, topic: str) -> dict[int, dict]:
    """Dead letters from one source topic, by source offset."""
    letters = [json.loads(r.value) for r in cluster.consume_all("deadletter", idle_ms=500)]
    return {d["offset"]: d for d in letters if d["topic"] == cluster.topic(topic)}


def applied(worker, user: str) -> bool:
    status, body = get_json(worker, f"/users/{user}/affinity")
    return status == 200 and body["artists"][0]["artist_id"] == "artist-1"


def assert_survived(cluster, worker, topic: str, bad_offset: int, reason: str, raw: bytes | None) -> None:
    letter = wait_until(lambda: dead_letters(cluster, topic).get(bad_offset), 60, what=f"dead letter {reason}")
    assert letter["reason"] == reason, letter
    assert base64.b64decode(letter["value"]) == (raw or b"") and not letter["truncated"]  # the original bytes
    assert worker.proc.poll() is None, "the worker died"
    log = (cluster.root / "hostile.log").read_text()
    assert "Traceback" not in log and "crashed" not in log.lower(), log[-3000:]


DEEP = b'{"type":"track","event":"x","userId":"u","properties":{"a":' + b"[" * 1000 + b"]" * 1000 + b"}}"
SEGMENT_CASES = {
    "keyless_bad_json": (None, b"{oops", "invalid_json"),
    "invalid_utf8": (b"u-x", b'{"type":"track","event":"caf\xe9"}', "invalid_utf8"),
    "utf8_encoded_lone_surrogate": (b"u-x", b'{"type":"track","event":"x","userId":"\xed\xa0\x80"}', "invalid_utf8"),
    "nested_1000_deep": (b"u-x", DEEP, "too_deep"),
    "huge_price": (b"u-x", b'{"type":"track","event":"Order Completed","userId":"u-x","timestamp":"' + TS.encode()
                   + b'","properties":{"artwork_id":"w1","price":1' + b"0" * 400 + b"}}", "invalid_property"),
    "far_future": (b"u-x", b'{"type":"track","event":"followedArtist","userId":"u-x","timestamp":'
                   b'"9999-12-31T00:00:00Z","properties":{"owner_id":"artist-1"}}', "invalid_timestamp"),
    "int_owner_id": (b"u-x", b'{"type":"track","event":"followedArtist","userId":"u-x","timestamp":"' + TS.encode()
                     + b'","properties":{"owner_id":5}}', "invalid_id"),
    "tombstone": (b"u-x", None, "empty_value"),
    # ids: only whitespace is no id; "|" joins artist ids in the co-engagement keys
    "blank_user": (b"u-x", b'{"type":"track","event":"followedArtist","userId":" ","timestamp":"' + TS.encode()
                   + b'","properties":{"owner_id":"artist-1"}}', "missing_user"),
    "pipe_in_artist": (b"u-x", b'{"type":"track","event":"followedArtist","userId":"u-x","timestamp":"'
                       + TS.encode() + b'","properties":{"owner_id":"artist|1"}}', "invalid_id"),
}


@pytest.mark.parametrize("case", sorted(SEGMENT_CASES))
def test_a_bad_segment_event_is_dead_lettered_and_the_next_one_applied(module_cluster, worker, case):
    key, raw, reason = SEGMENT_CASES[case]
    user = f"after-{case}-{next(_users)}"
    bad, _ = send(module_cluster, "events.segment", [(key, raw), (user.encode(), follow(user))])
    wait_until(lambda: applied(worker, user), 60, what="the valid event behind the bad one")
    assert_survived(module_cluster, worker, "events.segment", bad, reason, raw)


def test_deep_nesting_on_typed_topics_and_image_requests(module_cluster, worker):
    user = f"typed-{next(_users)}"
    view = dumps({"user_id": user, "timestamp": TS, "artist_id": "artist-1"})
    deep_typed = b'{"user_id":"u","timestamp":"' + TS.encode() + b'","x":' + b"[" * 1000 + b"]" * 1000 + b"}"
    bad, _ = send(module_cluster, "signals.view", [(b"k", deep_typed), (user.encode(), view)])
    wait_until(lambda: applied(worker, user), 60, what="the typed view behind the bad one")
    assert_survived(module_cluster, worker, "signals.view", bad, "too_deep", deep_typed)

    request = dumps({"request_id": "r-after-deep", "consumer_id": "c1", "merchant_ids": ["m1"]})
    bad, _ = send(module_cluster, "images.requests", [(b"c1", deep_typed), (b"c1", request)])
    wait_until(lambda: any(json.loads(r.value)["request_id"] == "r-after-deep"
                           for r in module_cluster.consume_all("images.replies", idle_ms=500)), 60, what="the reply")
    assert_survived(module_cluster, worker, "images.requests", bad, "too_deep", deep_typed)


def test_a_bad_catalog_record_loses_none_of_the_valid_ones_behind_it(module_cluster, worker):
    before = metric(worker, "recstream_catalog_records_total")
    deep = b'{"id":"w-deep","artist_id":"a","x":' + b"[" * 1000 + b"]" * 1000 + b"}"
    good = [(f"w-good-{i}".encode(), dumps({"id": f"w-good-{i}", "artist_id": "artist-2"})) for i in range(5)]
    huge = b'{"id":"w-huge","artist_id":"a","pad":"' + b"x" * 900_000  # its dead letter once outgrew 1 MB
    offsets = send(module_cluster, "catalog.artworks", [good[0], (b"w-deep", deep), (b"\xff", None), (b"w-huge", huge),
                                                         *good[1:]])
    wait_until(lambda: metric(worker, "recstream_catalog_records_total") >= before + 5, 60, what="the valid works")
    assert_survived(module_cluster, worker, "catalog.artworks", offsets[1], "invalid_artwork", deep)
    assert_survived(module_cluster, worker, "catalog.artworks", offsets[2], "invalid_key", None)
    letter = dead_letters(module_cluster, "catalog.artworks")[offsets[3]]
    assert (letter["reason"], letter["size"], letter["truncated"]) == ("invalid_artwork", len(huge), True)  # a tombstone whose key is no UTF-8 id
    # logged too, with its position and what is wrong (an outside check: catalog letters were only counted)
    log = (module_cluster.root / "hostile.log").read_text()
    assert f"dead letter: reason=invalid_key topic={module_cluster.env['RECSTREAM_TOPIC_PREFIX']}catalog.artworks" in log
    assert f"offset={offsets[1]} (JSON nested too deep)" in log


def test_a_catalog_record_keyed_by_another_id_is_dead_lettered(module_cluster, worker):
    """Compaction keeps the last record per key, and a tombstone removes the id its key names: a
    record keyed "w-decoy" carrying "w-keyed" used to replace w-keyed's table entry, which the
    topic, once compacted, and a rebuild from it no longer held."""
    works = metric(worker, "recstream_catalog_records_total")
    images = metric(worker, "recstream_image_catalog_records_total")
    work = dumps({"id": "w-keyed", "artist_id": "artist-3"})
    decoy = dumps({"id": "w-keyed", "artist_id": "artist-4"})
    offsets = send(module_cluster, "catalog.artworks", [(b"w-keyed", work), (b"w-decoy", decoy)])
    pool = dumps({"merchant_id": "m-keyed", "images": [{"image_id": "i1", "url": "u", "kind": "item"}]})
    stray = send(module_cluster, "catalog.images", [(b"m-other", pool), (b"m-keyed", pool)])
    assert_survived(module_cluster, worker, "catalog.artworks", offsets[1], "invalid_artwork", decoy)
    assert_survived(module_cluster, worker, "catalog.images", stray[0], "invalid_image_catalog", pool)
    wait_until(lambda: metric(worker, "recstream_image_catalog_records_total") >= images + 1, 60, what="the pool")
    assert metric(worker, "recstream_catalog_records_total") == works + 1
    assert metric(worker, "recstream_image_catalog_records_total") == images + 1


def test_a_curated_list_under_another_key_or_none_is_dead_lettered(module_cluster, worker):
    """Fuzzing: a list keyed "weekly" (or keyless) was taken as the curated list; compaction keeps it
    beside the "curated" one, and after a restart or a rebuild it was back in effect over the last
    list sent under "curated"."""
    applied = metric(worker, "recstream_curated_updates_total")
    real, other = dumps({"artwork_ids": ["w1"]}), dumps({"artwork_ids": ["w-other"]})
    offsets = send(module_cluster, "catalog.curated", [(b"curated", real), (b"weekly", other), (None, other)])
    assert_survived(module_cluster, worker, "catalog.curated", offsets[1], "invalid_curated", other)
    assert_survived(module_cluster, worker, "catalog.curated", offsets[2], "invalid_curated", other)
    detail = dead_letters(module_cluster, "catalog.curated")
    assert "key must be 'curated', got 'weekly'" in detail[offsets[1]]["detail"]
    assert "got no key" in detail[offsets[2]]["detail"]
    assert metric(worker, "recstream_curated_updates_total") == applied + 1


def test_a_catalog_record_too_large_to_store_is_dead_lettered_and_the_worker_goes_on(module_cluster, worker):
    """A 1.5 MB image catalog record was stored as one table value: its changelog write failed, the
    worker stopped, and after the restart the record was past and lost (found by fuzzing)."""
    images = [{"image_id": f"big-{i}", "url": "u", "kind": "item", "sales_rank": i} for i in range(20_000)]
    big = dumps({"merchant_id": "m-big", "images": images})
    small = dumps({"merchant_id": "m-small", "images": images[:3]})
    assert len(big) > 1_000_000
    before = metric(worker, "recstream_image_catalog_records_total")
    offsets = send(module_cluster, "catalog.images", [(b"m-big", big), (b"m-small", small)])
    wait_until(lambda: metric(worker, "recstream_image_catalog_records_total") >= before + 1, 60, what="the small one")
    letter = wait_until(lambda: dead_letters(module_cluster, "catalog.images").get(offsets[0]), 60, what="dead letter")
    assert (letter["reason"], letter["size"], letter["truncated"]) == ("oversized", len(big), True)
    time.sleep(2)  # a failed changelog write would stop the worker now
    assert worker.proc.poll() is None and "crashed" not in (module_cluster.root / "hostile.log").read_text().lower()


def test_a_catalog_record_just_under_1_mb_is_dead_lettered_its_changelog_record_would_not_fit(module_cluster, worker):
    """An outside fuzzer: a 999,990-byte curated list passed the 1,000,000-byte check on its value, but its
    changelog record (key and ~70 bytes more) did not fit faust's producer: the worker stopped."""
    applied = metric(worker, "recstream_curated_updates_total")
    near = dumps({"artwork_ids": [f"cw{i}" for i in range(1000)]})
    near = near[:-1] + b" " * (999_990 - len(near)) + b"}"
    offsets = send(module_cluster, "catalog.curated", [(b"curated", near), (b"curated", dumps({"artwork_ids": ["w1"]}))])
    letter = wait_until(lambda: dead_letters(module_cluster, "catalog.curated").get(offsets[0]), 60, what="dead letter")
    assert letter["reason"] == "oversized" and "must stay under 983,616" in letter["detail"], letter
    wait_until(lambda: metric(worker, "recstream_curated_updates_total") >= applied + 1, 60, what="the list behind it")
    time.sleep(2)  # a failed changelog write would stop the worker now
    assert worker.proc.poll() is None and "crashed" not in (module_cluster.root / "hostile.log").read_text().lower()


def test_a_tombstone_keyed_by_no_id_is_dead_lettered_and_the_record_behind_it_applied(module_cluster, worker):
    """A 2 MB key (Tansu takes it; Apache Kafka's default limit would refuse it): the artwork tombstone
    deleted through a 2 MB changelog key and the dead letter of the image tombstone carried it,
    neither producible, so both catalog agents crashed and the record behind lost (fuzzing)."""
    works = metric(worker, "recstream_catalog_records_total")
    images = metric(worker, "recstream_image_catalog_records_total")
    pool = dumps({"merchant_id": "m-after-big-key", "images": [{"image_id": "i1", "url": "u", "kind": "item"}]})
    art = send(module_cluster, "catalog.artworks", [(b"K" * 2_000_000, None), (b"", None), (b"w-after-big-key", dumps(
        {"id": "w-after-big-key", "artist_id": "artist-5"}))])
    img = send(module_cluster, "catalog.images", [(b"M" * 2_000_000, None), (b"m-after-big-key", pool)])
    wait_until(lambda: metric(worker, "recstream_catalog_records_total") >= works + 1
               and metric(worker, "recstream_image_catalog_records_total") >= images + 1, 60, what="the records behind")
    for topic, offset in (("catalog.artworks", art[0]), ("catalog.artworks", art[1]), ("catalog.images", img[0])):
        letter = wait_until(lambda t=topic, o=offset: dead_letters(module_cluster, t).get(o), 60, what="dead letter")
        assert letter["reason"] in ("invalid_key", "invalid_image_catalog") and len(letter["key"]) <= 1024
    assert "crashed" not in (module_cluster.root / "hostile.log").read_text().lower()


def test_an_image_catalog_tombstone_deletes_the_merchants_images(module_cluster, worker):
    """As on catalog.artworks, a null value deletes what its key names: it was dead-lettered `invalid_image_catalog`,
    and the merchant's pool was served for good (an outside check)."""
    pool = dumps({"merchant_id": "m-closing", "images": [{"image_id": "i1", "url": "u", "kind": "header"}]})
    send(module_cluster, "catalog.images", [(b"m-closing", pool)])
    choice = lambda: get_json(worker, "/images/c-1?merchants=m-closing")[1]["choices"][0]  # noqa: E731
    wait_until(lambda: choice()["image_id"] == "i1", 60, what="the pool")
    gone = send(module_cluster, "catalog.images", [(b"m-closing", None)])
    wait_until(lambda: choice()["image_id"] is None, 60, what="the pool deleted")
    assert "m-closing" not in get_json(worker, "/images/stats")[1]["pools"]
    send(module_cluster, "catalog.images", [(b"m-after", pool.replace(b"m-closing", b"m-after"))])  # behind it
    wait_until(lambda: "m-after" in get_json(worker, "/images/stats")[1]["pools"], 60, what="the next record")
    assert gone[0] not in dead_letters(module_cluster, "catalog.images")


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_are_read(module_cluster, worker, codec):
    users = [f"{codec}-{next(_users)}" for _ in range(20)]
    send(module_cluster, "events.segment", [(u.encode(), follow(u)) for u in users], compression=codec)
    wait_until(lambda: all(applied(worker, u) for u in users), 60, what=f"{codec} events applied")
    assert worker.proc.poll() is None


def produce_raw(cluster, topic: str, partition: int, batch: bytes) -> None:
    """One record batch as its bytes, in a ProduceRequest of its own (no client library builds a spoiled one)."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.produce import ProduceRequest
    from aiokafka.structs import TopicPartition

    async def go():
        client = AIOKafkaClient(bootstrap_servers=cluster.broker.bootstrap)
        await client.bootstrap()
        try:
            await client._wait_on_metadata(topic)
            leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            answer = await client.send(leader, ProduceRequest(required_acks=-1, timeout=30000, transactional_id=None,
                                                              topics=[(topic, [(partition, batch)])]))
            assert answer.topics[0][1][0][1] == 0, answer  # taken: the embedded broker stores batches as sent
        finally:
            await client.close()
    asyncio.run(go())


@pytest.mark.parametrize("topic,spoil", [("events.segment", "lz4_flag_on_plain_bytes"), ("events.segment", "bad_crc"),
                                         ("events.segment", "control_flag_on_data"),
                                         ("catalog.artworks", "record_count_lies")])
def test_a_record_batch_no_one_can_read_is_dead_lettered_and_the_records_behind_it_applied(
        module_cluster, worker, topic, spoil):
    """An outside fuzz: one such batch raised out of every fetch of its partition, and the worker crash-looped on
    it for good (the embedded broker stores a batch as it was produced)."""
    from tests.test_unreadable import batch

    user, spoiled = f"after-{spoil}-{next(_users)}", f"spoiled-{next(_users)}"
    before = send(module_cluster, topic, [(b"w1", dumps({"id": "w1", "artist_id": "artist-1"}))])[0]
    produce_raw(module_cluster, module_cluster.topic(topic), 0, batch(0, [follow(spoiled)] * 3, spoil))
    send(module_cluster, "events.segment", [(user.encode(), follow(user))])
    wait_until(lambda: applied(worker, user), 60, what="the valid event behind the batch")
    letter = wait_until(lambda: dead_letters(module_cluster, topic).get(before + 3), 60, what="its dead letter")
    assert letter["reason"] == "unreadable_batch", letter
    assert letter["detail"].startswith(f"offsets {before + 1}-{before + 3} could not be read ("), letter
    assert not applied(worker, spoiled) and worker.proc.poll() is None, "the worker died"
    log = (module_cluster.root / "hostile.log").read_text()
    assert "Traceback" not in log and "crashed" not in log.lower(), log[-3000:]


def test_bad_records_on_the_internal_topics_are_dead_lettered_by_direct_ingest(module_cluster, worker):
    """signals.keyed and images.keyed are read by direct ingest (not faust's agents): a record no
    pipeline can decode goes to the dead-letter topic with its position and bytes, in the same
    state transaction as the valid records around it, and the next valid record is applied."""
    from streams.core.affinity import Profile, dump
    from streams.core.ingest import KeyPartitioner
    from streams.core.records import Identity, ImageEvent, ImageRequest, Merge, Refresh, Signal, Target, encode_keyed

    app_id = module_cluster.env["RECSTREAM_APP_ID"]
    user = f"keyed-{next(_users)}"
    home = KeyPartitioner(4)(user.encode())
    valid = encode_keyed(Signal("follow", user, f"ok-{user}", 1767225600.0, (Target("artist-1"),)))
    endless = encode_keyed(Signal("follow", user, f"inf-{user}", float("inf"), (Target("artist-2"),)))  # froze the clock
    # an outside fuzzer: stamped 9.9e10 (the schema's bound), one signal took over trending for everyone, for good
    future = encode_keyed(Signal("save", user, f"far-{user}", 9.9e10, (Target("artist-3", "far-work"),)))
    future_merge = encode_keyed(Merge(user, "other", f"fm-{user}", dump(Profile(scores={"artist-4": 1.0}, ref=9.9e10))))
    nan_identity = encode_keyed(Identity(user, "anon-x", f"nan-{user}", float("nan")))
    garbled_refresh = encode_keyed(Refresh("artist-1", b"{not json"))  # was an internal_error without its position
    bad = [(b"k", b"\xc1 not msgpack"), (None, b"\x93\x01\x02\x03"), (user.encode(), None), (user.encode(), endless),
           (user.encode(), future), (user.encode(), future_merge), (b"anon-x", nan_identity),
           (b"artist-1", garbled_refresh)]
    offsets = send(module_cluster, f"{app_id}.signals.keyed", [*bad, (user.encode(), valid)], partition=home)
    wait_until(lambda: applied(worker, user), 60, what="the valid keyed signal behind the bad ones")
    for offset, (_, raw) in zip(offsets[:-1], bad, strict=True):
        assert_survived(module_cluster, worker, f"{app_id}.signals.keyed", offset, "invalid_internal_record", raw)
    far_image = encode_keyed(ImageEvent("impression", "c1", "m1", "i1", "far-image", 9.9e10))
    # an outside fuzz: a NaN time made m1|i1's counts NaN for good (every later choice of m1, and JSON that is no
    # JSON); one request naming m1 150,000 times held every partition 6.6 s and wrote a 28 MB reply
    nan_image = encode_keyed(ImageEvent("impression", "c1", "m1", "i1", "nan-image", float("nan")))
    many = encode_keyed(ImageRequest("r-many", "c1", [f"m{i}" for i in range(65)]))
    for raw in (b"\xc1", far_image, nan_image, many):
        (offset,) = send(module_cluster, f"{app_id}.images.keyed", [(b"c1", raw)], partition=home)
        assert_survived(module_cluster, worker, f"{app_id}.images.keyed", offset, "invalid_internal_record", raw)
    assert "far-work" not in json.dumps(get_json(worker, "/recommendations/someone-new")[1])


def test_a_malformed_http_request_is_a_400_and_a_counter_not_a_traceback_in_the_log(module_cluster, worker):
    """Fuzzing: every request aiohttp cannot parse was logged at ERROR with a full traceback
    ("Error handling request"), so any client could flood the worker's log."""
    import socket

    def raw(request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", worker.web_port), timeout=10) as s:
            s.sendall(request)
            return s.recv(4096)

    before = metric(worker, "recstream_http_malformed_requests_total")
    answers = [raw(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),  # line too long
               raw(b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n"),
               raw(b"POST /v1/track HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")]
    assert all(a.split(b" ", 2)[1] == b"400" for a in answers), answers
    wait_until(lambda: metric(worker, "recstream_http_malformed_requests_total") >= before + 3, 10,
               what="the malformed requests counted")
    assert get_json(worker, "/health")[0] == 200
    log = (module_cluster.root / "hostile.log").read_text()
    assert "Error handling request" not in log and "Traceback" not in log, log[-3000:]


def test_an_upload_cut_off_midway_is_counted_not_a_traceback_in_the_log(module_cluster, worker):
    """Fuzzing: a client leaving partway through a collector body was logged at ERROR with its
    traceback ("Error handling request" ... ConnectionResetError), each time: 3,000 aborted
    uploads made 57,000 log lines in a second."""
    import socket

    def abort(request: bytes) -> None:
        with socket.create_connection(("127.0.0.1", worker.web_port), timeout=10) as s:
            s.sendall(request)
            time.sleep(0.3)  # the handler is reading the body when the client goes

    before = metric(worker, "recstream_collector_rejected_total", reason="aborted")
    abort(b"POST /v1/track HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{")
    abort(b"POST /v1/batch HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"bat\r\n")
    abort(b"POST /v1/batch HTTP/1.1\r\nHost: a\r\nContent-Encoding: gzip\r\nContent-Length: 5000\r\n\r\n\x1f\x8b\x08\x00")
    wait_until(lambda: metric(worker, "recstream_collector_rejected_total", reason="aborted") >= before + 3, 10,
               what="the aborted uploads counted")
    assert get_json(worker, "/health")[0] == 200
    log = (module_cluster.root / "hostile.log").read_text()
    assert "Error handling request" not in log and "Traceback" not in log, log[-3000:]


def test_http_errors_are_json_a_trailing_slash_redirects_and_bad_escapes_are_refused(module_cluster, worker):
    """An outside check: unknown paths and methods were answered in aiohttp's plain text beside the
    API's JSON errors, "/recommendations/u1/" was a 404, "%ZZ" in an id served a user "%ZZ" (and
    counted an exposure for it), and a 404 repeated an 8 KB id back whole."""
    import http.client

    def ask(method: str, path: str):
        conn = http.client.HTTPConnection("127.0.0.1", worker.web_port, timeout=10)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    status, headers, body = ask("GET", "/nothing/here")
    assert (status, headers["Content-Type"].split(";")[0]) == (404, "application/json")
    assert json.loads(body) == {"error": "not found", "path": "/nothing/here"}
    status, headers, body = ask("POST", "/recommendations/u1")
    assert status == 405 and set(headers["Allow"].split(",")) == {"GET", "HEAD"}
    assert json.loads(body)["error"] == "method not allowed"
    for path, target in (("/recommendations/u%201/?x=1", "/recommendations/u%201?x=1"),
                         ("/users/u1/affinity//", "/users/u1/affinity"), ("/health/", "/health")):
        status, headers, _ = ask("GET", path)
        assert (status, headers["Location"]) == (308, target), path
    for path in ("/nothing/", "//evil.example/"):  # a path that does not resolve stays a 404
        status, headers, body = ask("GET", path)
        assert status == 404 and "Location" not in headers and json.loads(body)["error"] == "not found", path
    for path in ("/recommendations/%ZZ", "/users/%C3%28/affinity", "/images/c%G1?merchants=m1"):
        status, _, body = ask("GET", path)
        assert status == 400 and "percent-escape" in json.loads(body)["error"], path
    status, headers, body = ask("GET", "/recommendations/u%201")
    assert status == 200 and json.loads(body)["user_id"] == "u 1"
    assert headers["Cache-Control"] == "no-store" and headers["Content-Type"] == "application/json; charset=utf-8"
    status, _, body = ask("GET", "/users/" + "x" * 8000 + "/affinity")
    assert status == 404 and json.loads(body)["user_id"] == "x" * 200 + "…"
    log = (module_cluster.root / "hostile.log").read_text()
    assert "Error handling request" not in log and "Traceback" not in log, log[-3000:]


def test_a_profile_of_the_longest_ids_still_fits_one_changelog_record(cluster):
    """Ids may be 256 characters, 1 KB in 4-byte UTF-8: a user who bought 300 such works and saved 600 had a
    1.25 MB profile, over Apache Kafka's default 1 MB message.max.bytes: on such a cluster its changelog
    write fails and the worker stops, again on every restart (the embedded broker takes it, so the test reads
    the changelog). Profiles are shrunk to fit (streams/core/profile_fit.py)."""
    w = cluster.start_worker("w")
    long_id = lambda kind, i: (f"{kind}{i}-" + "\U0001D11E" * 256)[:256]  # noqa: E731 - 1 KB of UTF-8
    works = [{"id": long_id("w", i), "artist_id": long_id("a", i % 250), "price": 10} for i in range(900)]
    send(cluster, "catalog.artworks", [(a["id"].encode(), dumps(a)) for a in works])
    wait_until(lambda: metric(w, "recstream_catalog_records_total") >= len(works), 60, what="catalog")
    events = [{"type": "track", "event": "Order Completed" if i < 300 else "artworkSave", "userId": "collector",
               "messageId": long_id("m", i), "timestamp": TS, "properties": {"artwork_id": works[i]["id"]}}
              for i in range(900)]
    send(cluster, "events.segment", [(b"collector", dumps(e)) for e in events])
    wait_until(lambda: metric(w, "recstream_signals_applied_total") >= len(events), 120, what="the events")
    time.sleep(3)  # a failed changelog write stops the worker
    assert w.proc.poll() is None, (cluster.root / "w.log").read_text()[-3000:]
    status, body = get_json(w, "/users/collector/affinity?n=5")
    assert status == 200 and body["events"] == len(events) and len(body["artists"]) == 5
    from tests.conftest import consume_all
    changelog = asyncio.run(consume_all(cluster.broker.bootstrap, f"{cluster.kafka_app_id}-affinity-changelog",
                                        1500, 60))
    assert changelog and max(len(r.value) for r in changelog) <= 1_000_000, sorted(len(r.value) for r in changelog)


def test_an_artists_fans_of_the_longest_ids_still_fit_one_changelog_record(cluster):
    """An artist's fans on a partition are one table value: 2,000 user ids of 1 KB made 2 MB. The newest
    fans (in the order batches apply them) are kept as far as they fit."""
    cluster.env.update(RECSTREAM_PARTITIONS="1")
    w = cluster.start_worker("w")
    users = [(f"fan{i}-" + "\U0001D11E" * 256)[:256] for i in range(1200)]
    events = [{"type": "track", "event": "followedArtist", "userId": u, "messageId": f"f{i}", "timestamp": TS,
               "properties": {"owner_id": "artist-1"}} for i, u in enumerate(users)]
    send(cluster, "events.segment", [(u.encode(), dumps(e)) for u, e in zip(users, events, strict=True)])
    wait_until(lambda: metric(w, "recstream_signals_applied_total") >= len(events), 120, what="the follows")
    from tests.conftest import consume_all

    def fans_written():
        records = asyncio.run(consume_all(cluster.broker.bootstrap, f"{cluster.kafka_app_id}-fans-changelog", 1000, 60))
        newest = max((r for r in records if r.key == b"artist-1@0"), key=lambda r: r.offset, default=None)
        return records if newest and users[-1] in msgspec.msgpack.decode(newest.value) else None

    fans = wait_until(fans_written, 60, interval=2, what="the last fan written")
    assert max(len(r.value) for r in fans) <= 1_000_000, sorted(len(r.value) for r in fans)[-3:]
    assert len(msgspec.msgpack.decode(max(fans, key=lambda r: r.offset).value)) > 600  # the newest kept
    assert w.proc.poll() is None


def test_an_experiment_log_of_the_longest_ids_still_fits_one_changelog_record(cluster):
    """A consumer's attribution log (spans of image and merchant ids, conversions, flags) is one table value:
    2,000 impressions and 300 conversions of 1 KB merchant and image ids made 2.1 MB. Its oldest parts go."""
    w = cluster.start_worker("w")
    long_id = lambda kind, i: (f"{kind}{i}-" + "\U0001D11E" * 256)[:256]  # noqa: E731
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def image_event(name: str, i: int) -> bytes:
        return dumps({"type": "track", "event": name, "userId": "diner", "messageId": f"{name}{i}", "timestamp": now,
                      "properties": {"merchant_id": long_id("m", i), "image_id": long_id("i", i)}})

    records = [image_event("Image Impression", i) for i in range(2000)]
    records += [image_event("Image Conversion", 1999 - i) for i in range(300)]
    send(cluster, "events.segment", [(b"diner", r) for r in records])
    wait_until(lambda: metric(w, "recstream_image_events_applied_total") >= len(records), 120, what="image events")
    from tests.conftest import consume_all

    def logs_written():
        logs = asyncio.run(consume_all(cluster.broker.bootstrap, f"{cluster.kafka_app_id}-attribution-changelog",
                                       1000, 60))
        return [r for r in logs if b"diner" in r.key] or None

    logs = wait_until(logs_written, 60, interval=2, what="the consumer's log")
    assert max(len(r.value) for r in logs) <= 1_000_000, sorted(len(r.value) for r in logs)[-3:]
    assert w.proc.poll() is None


def test_on_the_faust_path_a_record_batch_no_one_can_read_is_dead_lettered_too(broker, tmp_path):
    """RECSTREAM_DIRECT_INGEST=false: faust's agents read the inputs and the catalog through the same aiokafka
    fetcher, and one unreadable batch crash-looped that worker as it did the direct consumer."""
    from tests.conftest import Cluster
    from tests.test_unreadable import batch

    def spoiled_then_valid(topic: str, spoil: str) -> None:
        user, spoiled = f"faust-{spoil}-{next(_users)}", f"spoiled-{next(_users)}"
        before = send(cluster, topic, [(b"w1", dumps({"id": "w1", "artist_id": "artist-1"}))])[0]
        produce_raw(cluster, cluster.topic(topic), 0, batch(0, [follow(spoiled)] * 3, spoil))
        send(cluster, topic, [(b"w2", dumps({"id": "w2", "artist_id": "artist-1"}))])
        send(cluster, "events.segment", [(user.encode(), follow(user))])
        wait_until(lambda: applied(worker, user), 60, what="the valid event behind the batch")
        letter = wait_until(lambda: dead_letters(cluster, topic).get(before + 3), 60, what="its dead letter")
        assert letter["reason"] == "unreadable_batch", letter
        assert not applied(worker, spoiled) and worker.proc.poll() is None, "the worker died"

    cluster = Cluster(broker, tmp_path, env={"RECSTREAM_DIRECT_INGEST": "false"})
    try:
        worker = cluster.start_worker("hostile")
        spoiled_then_valid("catalog.artworks", "record_count_lies")
        spoiled_then_valid("events.segment", "lz4_flag_on_plain_bytes")
        wait_until(lambda: metric(worker, "recstream_catalog_records_total") >= 2, 60, what="the works on both sides")
        log = (cluster.root / "hostile.log").read_text()
        assert "Traceback" not in log and "crashed" not in log.lower(), log[-3000:]
    finally:
        cluster.stop()
