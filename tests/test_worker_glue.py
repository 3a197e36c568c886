"""The faust workarounds, on the exact state seen when commits froze after a SIGKILL."""

from collections import defaultdict
from dataclasses import replace

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

TP0 = TP("events", 0)
ORIGINAL_NEW_OFFSET = Consumer._new_offset  # captured before any test installs the sanitizer


def frozen_state():
    """After the rebalance: committed 3423; acks include 3422 (before the rebalance) and
    re-delivered offsets acked twice."""
    fake = type("FakeConsumer", (), {})()
    acked = [3422] + list(range(3423, 3430)) + [3425, 3426] + list(range(3430, 3440))
    fake._acked = defaultdict(list, {TP0: acked})
    fake._acked_index = defaultdict(set, {TP0: set(acked)})
    fake._committed_offset = defaultdict(lambda: None, {TP0: 3423})
    fake._gap = defaultdict(IntervalTree)
    return fake


def test_faust_alone_stops_at_every_duplicate_ack():
    assert not getattr(ORIGINAL_NEW_OFFSET, "_recstream_fixed", False)
    fake = frozen_state()
    # 3422..3425 is the first consecutive run; the duplicate 3425 ends it
    assert ORIGINAL_NEW_OFFSET(fake, TP0) == 3426


def test_sanitized_acks_commit_to_the_end():
    from streams.worker.patches import install_ack_sanitizer
    install_ack_sanitizer()
    fake = frozen_state()
    assert Consumer._new_offset(fake, TP0) == 3440
    assert fake._acked[TP0] == []


def test_a_stale_popularity_view_is_rebuilt_in_a_thread_while_the_old_one_serves():
    import asyncio
    import threading

    from streams.core.partitioned import Shares
    from streams.core.popularity import Partial, dump_partial, load_partial
    from streams.worker.runtime import view_without_blocking

    builders, release = [], threading.Event()

    def merge(parts):
        builders.append(threading.current_thread() is threading.main_thread())
        if len(builders) > 1:
            release.wait(5)  # a slow rebuild
        return sum(p.pairs.get("a|b", 0) for p in parts)

    async def scenario():
        shares = Shares(load_partial, merge, view_s=1.0, dump=dump_partial)
        mine = shares.partial(0, lambda: None)
        mine.pairs["a|b"] = 1
        stored = lambda: [("p1", dump_partial(Partial(pairs={"a|b": 10})))]  # noqa: E731
        assert view_without_blocking(shares, stored, 0.0) == 11  # first view: inline
        mine.pairs["a|b"] = 2
        assert view_without_blocking(shares, stored, 0.5) == 11  # fresh enough
        assert view_without_blocking(shares, stored, 2.0) == 11  # stale: old view while rebuilding
        mine.pairs["a|b"] = 3  # changes after the snapshot do not leak into the build
        assert view_without_blocking(shares, stored, 2.1) == 11 and len(builders) == 2  # one build at a time
        release.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not shares.building:
                break
        assert view_without_blocking(shares, stored, 2.2) == 12
        assert builders == [True, False]  # the rebuild ran off the event loop's thread

    asyncio.run(scenario())


def test_the_root_logger_keeps_the_worker_level_so_debug_calls_stay_cheap():
    import logging

    from faust.worker import Worker

    from streams.worker.patches import install_quiet_root_logger

    logger = logging.getLogger("recstream-test-root")
    logger.addHandler(logging.NullHandler())
    worker = Worker.__new__(Worker)
    worker.spinner = object()  # what faust's worker has on a terminal
    logger.setLevel(logging.WARNING)
    Worker.on_setup_root_logger(worker, logger, logging.WARNING)
    unpatched = logger.level
    install_quiet_root_logger()
    worker.spinner = object()
    logger.setLevel(logging.WARNING)
    Worker.on_setup_root_logger(worker, logger, logging.WARNING)
    assert unpatched == logging.DEBUG  # the trap: faust's spinner set it
    assert logger.level == logging.WARNING and not logger.isEnabledFor(logging.DEBUG)


def test_every_rocksdb_store_shares_one_bounded_cache(tmp_path):
    from faust.stores.rocksdb import RocksDBOptions

    from streams.worker.patches import install_rocksdb_budget

    cache = install_rocksdb_budget(1)  # 1 MB for everything
    assert install_rocksdb_budget(1) is cache  # installed once
    stores = [RocksDBOptions(write_buffer_size=256 * 1024).open(tmp_path / f"store{i}") for i in range(2)]
    value = bytes(range(256)) * 4
    for db in stores:
        for i in range(20000):  # ~20 MB per store, far above the budget
            db[f"user-{i}".encode()] = value
        db.flush()
    for db in stores:
        for i in range(0, 20000, 7):
            assert db[f"user-{i}".encode()] == value
    # memtables, index/filter blocks and data blocks of both stores are charged to the one cache
    assert 0 < cache.get_usage() <= 1.1 * 1024 * 1024
    for db in stores:
        db.close()


def test_send_all_declares_each_topic_before_its_first_send_and_waits_for_every_ack():
    import asyncio

    from streams.worker import commit

    log = []

    class Topic:
        def __init__(self, name):
            self.name = name

        def get_topic_name(self):
            return self.name

        async def maybe_declare(self):
            log.append(("declare", self.name))

    class Producer:
        async def send(self, topic, key, value, partition, timestamp, headers):
            log.append(("send", topic, key))
            future = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.01, future.set_result, None)
            return future

    app = type("App", (), {"producer": Producer()})()
    commit._declared.discard("out-a")
    commit._declared.discard("out-b")
    a, b = Topic("out-a"), Topic("out-b")

    async def scenario():
        sent = await commit.send_all(app, [(a, b"1", b"x"), (b, b"2", b"y"), (a, b"3", b"z")])
        await commit.send_all(app, [(a, b"4", b"w", 2)])
        return sent

    assert asyncio.run(scenario()) == 3
    assert log == [("declare", "out-a"), ("send", "out-a", b"1"), ("declare", "out-b"), ("send", "out-b", b"2"),
                   ("send", "out-a", b"3"), ("send", "out-a", b"4")]


def test_the_pre_commit_flush_waits_until_every_changelog_record_left_the_buffer():
    import asyncio

    from faust.transport.producer import ProducerBuffer

    from streams.worker.patches import install_changelog_buffer, install_full_flush

    sent = []

    async def scenario():
        class RunningBuffer(ProducerBuffer):
            state = "running"

        buffer = RunningBuffer.__new__(RunningBuffer)
        buffer.pending, buffer.message_sent = asyncio.Queue(), asyncio.Event()
        buffer.app = type("App", (), {"conf": type("Conf", (), {"producer_threaded": False})()})()
        for i in range(3):
            buffer.pending.put_nowait(i)

        async def slow_sender():  # 0.3 s per record: longer than faust's 0.1 s patience
            while not buffer.pending.empty():
                await asyncio.sleep(0.3)
                sent.append(buffer.pending.get_nowait())
                buffer.message_sent.set()

        task = asyncio.create_task(slow_sender())
        await buffer.flush()
        early = list(sent)
        await task
        return early

    original, limit = ProducerBuffer.flush, ProducerBuffer.max_messages
    try:
        assert asyncio.run(scenario()) == []  # faust's own flush gave up with all 3 records unsent
        install_full_flush()
        install_changelog_buffer(5000)
        sent.clear()
        assert asyncio.run(scenario()) == [0, 1, 2]
        assert ProducerBuffer.max_messages == 5000  # delivery pauses only past this many queued
    finally:
        ProducerBuffer.flush, ProducerBuffer.max_messages = original, limit


def test_batch_commits_store_locally_then_queue_in_the_order_they_wrote(tmp_path):
    """Batch A writes k=v1 and waits on its first output topic's declaration; batch B then
    writes k=v2. The changelog must carry v1 before v2 (recovery keeps the last record), and
    each store remembers the changelog offset it holds."""
    import asyncio
    from types import SimpleNamespace

    from rocksdict import Options, Rdict

    from streams.worker import commit

    sent, persisted = [], {}
    db = Rdict(str(tmp_path / "affinity-0.db"), Options(raw_mode=True))

    class Builder:
        def __init__(self):
            self.rows = []

        def append(self, key, value, timestamp):
            self.rows.append((key, value))
            return object()

        def record_count(self):
            return len(self.rows)

        def close(self):
            pass

    class Producer:
        offsets: dict = {}

        def create_batch(self):
            return Builder()

        async def send_batch(self, batch, topic, partition):
            base = self.offsets.get((topic, partition), 0)
            self.offsets[(topic, partition)] = base + len(batch.rows)
            sent.append((topic, partition, batch.rows))
            future = asyncio.get_running_loop().create_future()
            future.set_result(SimpleNamespace(offset=base))
            return future

        async def partitions_for(self, topic):
            self.known.add(topic)  # the producer fetched the topic's metadata
            return {0}

    producer = Producer()
    producer.known = set()
    producer._metadata = SimpleNamespace(partitions_for_topic=lambda t: {0} if t in producer.known else None)
    app = SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer))
    table = SimpleNamespace(
        name="affinity", changelog_topic=SimpleNamespace(get_topic_name=lambda: "app-affinity-changelog"),
        data=SimpleNamespace(_db_for_partition=lambda p: db, persisted_offset=lambda tp: persisted.get(tp),
                             set_persisted_offset=lambda tp, offset: persisted.__setitem__(tp, offset)))
    released = None

    class SlowTopic:
        def get_topic_name(self):
            return "slow-out"

        async def maybe_declare(self):
            await released.wait()

    async def scenario():
        nonlocal released
        released = asyncio.Event()
        commit._declared.discard("slow-out")
        commit._partitioners.pop("slow-out", None)
        a, b = commit.BatchCommit(app), commit.BatchCommit(app)
        a.table(table, 0)["k"] = b"v1"
        a.send(SlowTopic(), b"u", b"out")
        first = asyncio.ensure_future(a.commit())
        await asyncio.sleep(0)  # A stored k=v1 and waits on the declaration
        assert db[b"k"] == b"v1" and sent == []
        assert b.table(table, 0).get("k") == b"v1"  # B reads what A stored
        b.table(table, 0)["k"] = b"v2"
        second = asyncio.ensure_future(b.commit())
        await asyncio.sleep(0.01)
        assert sent == []  # B queues behind A
        released.set()
        await asyncio.gather(first, second)

    asyncio.run(scenario())
    changelog = [rows for topic, _, rows in sent if topic == "app-affinity-changelog"]
    assert changelog == [[(b"k", b"v1")], [(b"k", b"v2")]]
    assert db[b"k"] == b"v2" and ("slow-out", 0, [(b"u", b"out")]) in sent
    assert list(persisted.values()) == [1] and [tp.topic for tp in persisted] == ["app-affinity-changelog"]

    # the persisted offset never moves backwards: another writer of the same table partition (the
    # image pipeline writes attribution too) may have recorded a later offset whose acks came first
    (tp,) = persisted
    persisted[tp] = 100

    async def late_ack():
        c = commit.BatchCommit(app)
        c.table(table, 0)["k"] = b"v3"
        await c.commit()

    asyncio.run(late_ack())
    assert persisted[tp] == 100 and db[b"k"] == b"v3"
    db.close()


def test_faust_consumer_polls_a_bounded_number_of_records_with_the_configured_fetch_wait():
    """faust's consumer decodes whole fetches per poll by default: table recovery then held tens of
    thousands of records at once and left pymalloc arenas pinned (docs/traps.md). The consumer a
    worker builds polls at most RECSTREAM_MAX_POLL_RECORDS and waits RECSTREAM_FETCH_MAX_WAIT_MS."""
    import asyncio

    from streams.worker.app import app, settings
    from streams.worker.patches import faust_fetch_max_wait_ms, install_fetch_max_wait

    install_fetch_max_wait(faust_fetch_max_wait_ms(settings))

    async def build():
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return consumer._max_poll_records, consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()  # never started: closes its client

    assert asyncio.run(build()) == (settings.max_poll_records, settings.fetch_max_wait_ms)
    assert settings.max_poll_records == 500
    # with direct ingest faust's thread reads no input: the long wait; without, the inputs' short one
    assert (settings.direct_ingest, settings.fetch_max_wait_ms) == (True, 500)
    assert faust_fetch_max_wait_ms(replace(settings, direct_ingest=False)) == settings.ingest_fetch_max_wait_ms == 20


def test_a_worker_is_recovered_only_for_the_generation_whose_restore_finished():
    """faust's `completed` stays set from the first recovery on and `rebalancing` ends before a new
    assignment's restore does: reads, direct ingest and /health must wait for the current
    generation's restore (patches.install_recovery_generation records it)."""
    import asyncio
    from types import SimpleNamespace

    from streams.worker.runtime import recovered

    completed = asyncio.Event()
    recovery = SimpleNamespace(completed=completed)
    app = SimpleNamespace(rebalancing=False, consumer_generation_id=1, tables=SimpleNamespace(recovery=recovery))
    assert not recovered(app)  # the first restore is under way
    completed.set()  # by a restore that finished for an older assignment (see the next test)
    assert not recovered(app)  # no restore recorded for this one yet
    recovery.ready_generation = 1
    assert recovered(app)
    app.consumer_generation_id = 2  # a new assignment: faust's flag is still set, its restore is not done
    assert completed.is_set() and not recovered(app)
    recovery.ready_generation = 2
    assert recovered(app)
    app.rebalancing = True
    assert not recovered(app)


def test_a_restore_that_ends_after_the_next_assignment_began_readies_nothing():
    """A fresh worker's first restore ended (its seek waited for the rebalance) after the next
    assignment began; the embedded broker repeats a member's generation number across joins, and
    `recovered` took the old finish for the new assignment: direct ingest applied batches to
    partitions still restoring (a fuzzing helper: 43-109 users off). Assignments are counted
    locally, and a finish counts only for the assignment still current when it returns."""
    import asyncio
    from types import SimpleNamespace

    from faust.transport.drivers.aiokafka import ConsumerRebalanceListener

    from streams.worker.patches import install_recovery_generation, remember_recovery

    install_recovery_generation()
    app = SimpleNamespace(consumer_generation_id=0)
    seen = []

    async def on_partitions_assigned(assigned, generation):
        seen.append(generation)

    listener = ConsumerRebalanceListener(SimpleNamespace(app=app, on_partitions_assigned=on_partitions_assigned))
    for _ in range(3):  # whatever generation the broker names (Tansu: the same one again)
        asyncio.run(listener.on_partitions_assigned([]))
    assert seen == [1, 2, 3] and app.consumer_generation_id == 3

    async def finish(self, generation_id: int = 0) -> None:  # faust's restore finish, while...
        if self.next_assignment:
            self.app.consumer_generation_id += 1  # ...the next assignment comes in
        self.completed.set()

    recovery = SimpleNamespace(app=app, completed=asyncio.Event(), next_assignment=True)
    asyncio.run(remember_recovery(finish)(recovery, 3))
    assert recovery.completed.is_set() and not hasattr(recovery, "ready_generation")
    recovery.next_assignment = False
    asyncio.run(remember_recovery(finish)(recovery, 4))
    assert recovery.ready_generation == 4


def test_a_loaded_share_behind_its_profiles_mark_is_recounted_and_a_failed_recount_keeps_the_stream_going(
        tmp_path, monkeypatch, caplog):
    """streams.worker.user_batches._settle_pairs over a real RocksDB partition store: faust's own
    bookkeeping keys are no profiles; a share whose number is the mark's is taken as written; a
    recount that raises is logged and the share kept (a stopped stream would be worse than a lag)."""
    from types import SimpleNamespace

    from rocksdict import Options, Rdict

    from streams.core.affinity import Profile, dump
    from streams.core.coengagement import MARK, mark_value
    from streams.core.metrics import metrics
    from streams.core.popularity import Partial
    from streams.worker import user_batches

    db = Rdict(str(tmp_path / "affinity-0.db"), Options(raw_mode=True))
    db[b"__faust\x00offset__"] = b"41"
    db[b"u1"] = dump(Profile(events=2, scores={"a": 2.0, "b": 1.0}))
    db[b"u2"] = dump(Profile(events=2, scores={"a": 1.0, "c": 1.0}))
    db[MARK.encode()] = mark_value(7)
    store = SimpleNamespace(data=SimpleNamespace(_db_for_partition=lambda partition: db))
    monkeypatch.setattr(user_batches, "tables", SimpleNamespace(affinity=store))
    before = metrics.value("recstream_coengagement_recounts_total")

    agreeing = Partial(pairs={"a|b": 9}, seq=7)
    user_batches._settle_pairs(0, agreeing)
    assert agreeing.pairs == {"a|b": 9} and metrics.value("recstream_coengagement_recounts_total") == before

    behind = Partial(pairs={"a|b": 9}, seq=3)
    user_batches._settle_pairs(0, behind)
    assert behind.pairs == {"a|b": 1, "a|c": 1} and behind.seq == 7
    assert metrics.value("recstream_coengagement_recounts_total") == before + 1

    db[b"u3"] = b"\xc1 not a profile"
    broken = Partial(pairs={"a|b": 9}, seq=3)
    user_batches._settle_pairs(0, broken)  # logged, not raised
    assert broken.pairs == {"a|b": 9} and "co-engagement recount failed" in caplog.text
    db.close()


def test_consumer_lag_is_counted_from_aiokafkas_position_not_a_read_offset_faust_never_set():
    """Fuzzing (session 23): after kill -9s during restarts, a catalog partition read to its end showed
    a lag of its whole length (381) for good: faust's `_read_offset` was None for it. The position is
    aiokafka's own; without one (nothing fetched yet) faust's read offset, then the partition's start."""
    from types import SimpleNamespace

    from faust.types import TP

    from streams.worker.monitoring import partition_lag

    tp = TP("catalog.artworks", 0)

    def consumer(state, read=None, high=381):
        assignment = SimpleNamespace(state_value=lambda p: state if p == tp else None)
        aiokafka = SimpleNamespace(_subscription=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment)))
        return SimpleNamespace(highwater=lambda p: high, _read_offset={tp: read} if read is not None else {},
                               _thread=SimpleNamespace(_ensure_consumer=lambda: aiokafka))

    state = lambda **kw: SimpleNamespace(highwater=381, **kw)  # noqa: E731 (aiokafka's TopicPartitionState)
    assert partition_lag(consumer(state(has_valid_position=True, position=381)), tp) == 0
    assert partition_lag(consumer(state(has_valid_position=True, position=300), read=350), tp) == 81
    assert partition_lag(consumer(state(has_valid_position=False, position=None), read=99), tp) == 281
    assert partition_lag(consumer(None), tp) == 381  # nothing known: the whole partition
    assert partition_lag(consumer(None, high=None), tp) is None  # not fetched yet: no figure


def test_a_catalog_record_that_fails_to_apply_is_dead_lettered_and_the_rest_applied(monkeypatch):
    """agents.catalog: a record that raises past its decoding (a bug meeting an input nothing
    foresaw) must cost that record alone, not stop the reader that would meet it at every restart."""
    from types import SimpleNamespace

    import msgspec

    from agents import catalog
    from streams.worker import topics

    applied = []

    def apply(msg, anchor):
        if msg.value == b"boom":
            raise ZeroDivisionError
        applied.append(msg.value)
        return [("artist-1", msg.value)]

    name = topics.artworks.get_topic_name()
    monkeypatch.setitem(catalog.APPLY, name, apply)
    sent = []
    batch = SimpleNamespace(send=lambda *message: sent.append(message))
    records = [SimpleNamespace(topic=name, partition=0, offset=i, key=b"w%d" % i, value=v)
               for i, v in enumerate([b"ok-1", b"boom", b"ok-2"])]
    catalog.catalog_records(records, batch)
    assert applied == [b"ok-1", b"ok-2"]
    letters = [msgspec.json.decode(value) for topic, _, value, *_ in sent if topic is topics.deadletter]
    assert [(letter["reason"], letter["offset"]) for letter in letters] == [("internal_error", 1)]
    refreshes = [m for m in sent if m[0] is topics.signals]
    assert {m[3] for m in refreshes} == set(range(catalog.settings.partitions))  # the artist's fans, every partition


def test_a_failure_letter_of_a_record_without_its_input_position_names_this_apps_internal_topic(caplog):
    """An outside fuzzer: the letter of a keyed record whose source was no position named the logical
    "signals.keyed", not the topic it was read from. Another: such a letter had no key and no log line
    (ingest's dead letters have both)."""
    from types import SimpleNamespace

    import msgspec

    from streams.core.ingest import IMAGES
    from streams.core.records import ImageEvent, Signal
    from streams.worker import topics
    from streams.worker.user_batches import send_failures

    sent = []
    batch = SimpleNamespace(send=lambda *message: sent.append(message))
    send_failures(batch, [(Signal("view", "u", "m", 1.0, source="no-colon"), "ValueError")], 3)
    send_failures(batch, [(ImageEvent("impression", "c", "m", "i", "e", 1.0), "KeyError")], 2, IMAGES)
    letters = [msgspec.json.decode(value) for topic, _, value, *_ in sent if topic is topics.deadletter]
    assert [(letter["topic"], letter["partition"], letter["reason"]) for letter in letters] == [
        (topics.signals.get_topic_name(), 3, "internal_error"), (topics.images_keyed.get_topic_name(), 2, "internal_error")]
    assert [letter["key"] for letter in letters] == ["u", "c"]
    assert [key for topic, key, *_ in sent if topic is topics.deadletter] == [b"u", b"c"]
    lines = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and "internal_error" in r.getMessage()]
    assert len(lines) == 2 and "ValueError while applying" in lines[0] and "KeyError while applying" in lines[1]
    assert f"topic={topics.signals.get_topic_name()} partition=3 offset=-1" in lines[0]


def test_without_cors_options_no_response_runs_the_cors_hook_and_with_them_it_stays():
    """faust's aiohttp_cors hook ran on every response (~4 µs of a ~80 µs GET /recommendations) to
    find no CORS route; recstream sets no CORS options, so the worker's web app is set up without it."""
    from types import SimpleNamespace

    from aiohttp import web

    from streams.worker import web as worker_web

    def hooks_after_setup(cors_options):
        web_app = web.Application()

        class Web:  # faust's web driver as the function uses it: the cors property appends the hook
            def __init__(self):
                self.web_app, self.cors_options, self._cors = web_app, cors_options, None

            @property
            def cors(self):
                if self._cors is None:
                    import aiohttp_cors
                    self._cors = aiohttp_cors.setup(self.web_app, defaults=self.cors_options)
                return self._cors

        fake = SimpleNamespace(web=Web())
        original, worker_web.app = worker_web.app, fake
        try:
            worker_web._without_unused_cors_hook()
            assert fake.web.cors is fake.web._cors  # set up, so faust's start adds no second hook
            return list(web_app.on_response_prepare)
        finally:
            worker_web.app = original

    assert hooks_after_setup({}) == []
    assert len(hooks_after_setup({"*": {"allow_credentials": True}})) == 1


def test_served_lists_leave_as_exposures_in_chunks_and_reads_during_the_flush_wait_for_the_next(monkeypatch):
    """1,000 exposures sent at once reached the worker's own ingest as reads of 500 whose apply held
    every HTTP read behind it (wrk p99 17.9 ms with a flush every 5 s, 4.4 ms without): they leave
    CHUNK at a time, with a pause between chunks; lists served meanwhile wait for the next flush."""
    import asyncio

    from streams.worker import exposures

    sent, paused = [], []

    async def send(chunk):
        sent.append([user for user, _ in chunk])
        exposures.note(f"late-{len(sent)}", b"list")  # a read served while the flush runs

    real_sleep = asyncio.sleep

    async def sleep(seconds):
        paused.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(exposures, "_send", send)
    monkeypatch.setattr(exposures.asyncio, "sleep", sleep)
    monkeypatch.setattr(exposures, "served", {f"u{i}": b"list" for i in range(150)})
    asyncio.run(exposures.flush())
    chunks = -(-150 // exposures.CHUNK)
    assert 1 < chunks < 150 and [len(chunk) for chunk in sent] == [exposures.CHUNK] * (chunks - 1) + [
        150 - exposures.CHUNK * (chunks - 1)]
    assert sum(sent, []) == [f"u{i}" for i in range(150)]
    assert paused == [exposures.PAUSE_S] * (chunks - 1)
    assert list(exposures.served) == [f"late-{i + 1}" for i in range(chunks)]
    sent.clear()
    asyncio.run(exposures.flush(pause_s=0))  # a full map's flush: no pauses
    assert sum(sent, []) == [f"late-{i + 1}" for i in range(chunks)] and len(paused) == chunks - 1


def test_a_read_forwarded_while_the_worker_stops_is_a_503_not_a_500(monkeypatch):
    """faust closes its HTTP client before its web server on a graceful stop: forwarded reads raised
    RuntimeError("Session is closed"), a 500 and a traceback each (an outside check, 29 in 0.1 s)."""
    import asyncio
    from types import SimpleNamespace

    from yarl import URL

    from streams.worker import reads

    async def closed(*args, **kwargs):
        raise RuntimeError("Session is closed")

    async def known(*args):
        return None

    fake_app = SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: None),
                               router=SimpleNamespace(key_store=lambda table, key: URL("http://other:6066")))
    monkeypatch.setattr(reads, "app", fake_app)
    monkeypatch.setattr(reads, "partitioner", known)
    monkeypatch.setattr(reads, "_proxy", closed)
    table = SimpleNamespace(name="recommendations", changelog_topic=SimpleNamespace(get_topic_name=lambda: "c"))
    response = asyncio.run(reads.forward(table, "u1", request=None))
    assert response.status == 503 and response.headers["Retry-After"] == "1"


def test_a_global_tables_recovery_starts_after_the_records_it_applied_not_after_its_own_acks(tmp_path, monkeypatch):
    """Every worker reads a global table's changelog live, its own writes too: the share p1 written as 661
    then 885, the reader applying the 661 record over the stored 885, then 885's ack. faust moved the
    recovery offset to that ack, and a kill -9 before the reader came to 885 left 661 for good (a chaos run:
    224 of 3,000 impressions lost). Replaying from where the reader's records end brings 885 back."""
    from types import SimpleNamespace

    import faust
    from faust.tables.globaltable import GlobalTable

    from streams.worker import patches

    monkeypatch.setattr(GlobalTable, "_on_changelog_sent", GlobalTable._on_changelog_sent)  # put back after
    patches.install_global_table_offsets()
    app = faust.App("glue-global", broker="kafka://127.0.0.1:1", store="rocksdb://", datadir=str(tmp_path))
    table = app.GlobalTable("image_stats", key_type=str, value_type=bytes, partitions=4)
    tp, store = TP(table.changelog_topic.get_topic_name(), 1), table.data
    changelog = {1: b"661", 2: b"885"}  # offset -> p1's value

    def acked(offset):
        table._on_changelog_sent(SimpleNamespace(result=lambda: SimpleNamespace(topic_partition=tp, offset=offset)))

    def read_back(*offsets):  # faust's reader applying changelog records to the store
        store.apply_changelog_batch([SimpleNamespace(message=SimpleNamespace(
            tp=tp, offset=o, partition=1, key=b"p1", value=changelog[o])) for o in offsets], None, None)

    db = store._db_for_partition(1)
    db.put(b"p1", b"661")
    acked(1)
    db.put(b"p1", b"885")
    read_back(1)  # the older record over the newer value
    acked(2)
    assert db.get(b"p1") == b"661"  # killed here; at the restart, recovery replays what comes after:
    read_back(*[o for o in changelog if o > store.persisted_offset(tp)])
    assert db.get(b"p1") == b"885" and store.persisted_offset(tp) == 2


def test_a_per_event_rebuild_sends_to_the_clients_topics_once_it_has_caught_up(monkeypatch):
    """An outside check: a per-event rebuild republished every user's history, partial states included, to the
    topics the live workers' clients read. It holds them back until it has caught up, as the bulk phase sends none."""
    from streams.worker import monitoring, topics

    monkeypatch.setattr(topics, "held_outputs", set(topics.CLIENT_OUTPUTS))
    monkeypatch.setattr(monitoring, "_input_read", False)
    assert monitoring.rebuild_progress(120, 5000) == "rebuild: 5000 signals applied, 120 records behind"
    assert topics.held_outputs == {"recommendations", "affinity.updates", "images.chosen", "images.replies"}
    # read to its end: one more line first, so the lists the list window owes the history's last users are held too
    assert monitoring.rebuild_progress(0, 5120) == "rebuild: 5120 signals applied, 0 records behind"
    assert topics.held_outputs == set(topics.CLIENT_OUTPUTS)
    assert monitoring.rebuild_progress(0, 5120).endswith("0 records behind - caught up, serving live")
    assert not topics.held_outputs


def test_a_refresh_builds_with_a_view_of_the_shares_as_they_are_now_after_a_quiet_spell():
    """An outside check: after a quiet spell nothing had rebuilt the popularity view, and a refresh pass's first
    chunks took the one from before it (view_without_blocking rebuilds in a thread and hands back the old one):
    rebuilt lists needed a second pass to match the live ones."""
    import asyncio

    from streams.core.partitioned import Shares
    from streams.worker.runtime import fresh_view, view_without_blocking

    async def after_a_quiet_spell(take):
        wall, stored = [0.0], {"p0": b"before the quiet spell"}
        shares = Shares(lambda raw: raw, lambda parts: sorted(p for p in parts if p), wall=lambda: wall[0])
        view_without_blocking(shares, stored.items, 100.0)  # the first view, built inline
        stored["p0"], wall[0] = b"now", 3600.0  # counts came, then an hour without a read
        return await take(shares, stored.items, 3700.0)

    async def refreshes_take(shares, stored, now):
        return view_without_blocking(shares, stored, now)

    async def refreshes_wait_for(shares, stored, now):
        await fresh_view(shares, stored, now)
        return shares.current

    assert asyncio.run(after_a_quiet_spell(refreshes_take)) == [b"before the quiet spell"]  # what a pass took
    assert asyncio.run(after_a_quiet_spell(refreshes_wait_for)) == [b"now"]


def test_the_health_lag_sums_every_reader_and_faust_consumers_partitions(monkeypatch):
    """/health said "ok" of a worker 300,000 events behind (an outside soak): it carries the lag too."""
    from streams.worker import monitoring

    class Consumer:
        def assignment(self):
            return {TP("t.catalog.images", 0), TP("t.app-affinity-changelog", 1)}

    monkeypatch.setattr(monitoring, "lag_sources", [lambda: {"t.events.segment": 120, "t.app.signals.keyed": 3}])
    monkeypatch.setattr(monitoring.app, "_consumer", Consumer(), raising=False)
    monkeypatch.setattr(monitoring, "partition_lag", lambda consumer, tp: 7)  # a changelog's is not input lag
    assert monitoring.total_lag() == 130

    def not_started(consumer, tp):
        from faust.exceptions import ConsumerNotStarted
        raise ConsumerNotStarted("not started")
    monkeypatch.setattr(monitoring, "partition_lag", not_started)  # a worker starting: /health answered 500
    assert monitoring.total_lag() is None


def test_a_read_applies_a_partitions_catalog_refreshes_up_to_a_budget_and_reads_the_rest_again():
    """A backlog of new works put 40 catalog refreshes (each up to 250 fans' lists then, 1.7 s together) in one read,
    with the worker's event loop held: a partition's keyed records are taken up to the refresh past 100 fans, and
    direct ingest reads the partition again from that record's offset; an unreadable record before it is
    still dead-lettered, once; a refresh of an artist with no fans there costs nothing."""
    from types import SimpleNamespace

    from agents.deadletters import decoded_until
    from streams.core.records import Merge, Refresh, encode_keyed
    from streams.core.throttle import RefreshQuota
    from streams.worker.app import keyed_records

    values = [encode_keyed(Refresh("a1")), b"\xc1not msgpack", encode_keyed(Merge("u", "old", "m1", b"")),
              encode_keyed(Refresh("none-here")), encode_keyed(Refresh("a2")), encode_keyed(Refresh("a3"))]
    fans = {"a1": 300, "a2": 10, "a3": 10, "none-here": 0}.get
    records = [SimpleNamespace(topic="t.signals.keyed", partition=2, offset=40 + i, key=b"k", value=v, timestamp=0)
               for i, v in enumerate(values)]
    letters = []
    batch = SimpleNamespace(send=lambda *message: letters.append(message))
    taken, again = decoded_until(batch, records, keyed_records, "invalid_internal_record", keyed=True,
                                 stop=RefreshQuota(fans).exceeded)
    assert [type(r).__name__ for r in taken] == ["Refresh", "Merge", "Refresh"] and again == 44
    assert len(letters) == 1
    assert decoded_until(batch, records[4:], keyed_records, "invalid_internal_record", keyed=True,
                         stop=RefreshQuota(fans).exceeded)[1] is None  # 20 fans: within one read's budget
    assert decoded_until(batch, records, keyed_records, "invalid_internal_record", keyed=True)[1] is None
