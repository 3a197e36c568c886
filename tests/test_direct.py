"""Direct ingest: which input partitions a worker reads, and the batch consumer's commit
discipline against the embedded broker (flush before commit, commit on revoke, nothing read
twice or skipped)."""

import asyncio
import itertools

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.kafka.direct import DirectIngest, direct_group, owned_input_partitions


def test_each_input_partition_is_read_by_the_owner_of_its_table_partition():
    counts = {"events": 4, "wide": 8, "narrow": 2}
    assert owned_input_partitions({1, 3}, counts, 4) == {
        ("events", 1), ("events", 3), ("wide", 1), ("wide", 3), ("wide", 5), ("wide", 7), ("narrow", 1)}
    # any split of the table partitions over workers reads every input partition exactly once
    for split in itertools.product(range(3), repeat=4):  # table partition -> one of 3 workers
        reads = [owned_input_partitions({p for p in range(4) if split[p] == w}, counts, 4) for w in range(3)]
        assert sum(len(r) for r in reads) == sum(counts.values())
        assert set().union(*reads) == {(t, i) for t, n in counts.items() for i in range(n)}


def test_the_app_ids_direct_group_is_its_own():
    assert direct_group("recstream") == "recstream-direct"


async def _setup(bootstrap: str, topic: str, per_partition: int) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for p in range(4):
            for i in range(per_partition):
                await producer.send(topic, f"{p}:{i}".encode(), partition=p)
        await producer.flush()
    finally:
        await producer.stop()
    return {p: per_partition for p in range(4)}


async def _until(predicate, timeout: float = 10.0) -> None:
    """Wait for `predicate`, then a moment more so that anything extra would show."""
    for _ in range(int(timeout / 0.05)):
        if predicate():
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)


async def _committed(ingest: DirectIngest, topic: str) -> dict[int, int | None]:
    return {p: await ingest.consumer.committed(TopicPartition(topic, p)) for p in range(4)}


async def _committed_after_waiting(ingest: DirectIngest, topic: str, want: dict[int, int | None]) -> dict:
    """The committed offsets once they equal `want`, or after 5 s (a commit runs in the background)."""
    for _ in range(100):
        if await _committed(ingest, topic) == want:
            break
        await asyncio.sleep(0.05)
    return await _committed(ingest, topic)


async def _shut_down(ingest: DirectIngest, runner, revoke: bool = False) -> None:
    """End a test's ingest: its run loop first (it would read on), then, if asked, a revoke (its
    final commit), then the consumer."""
    ingest._stopping = True
    await runner
    if revoke:
        await ingest.revoke()
    await ingest.stop()


async def _read_partition_0(broker, topic: str, group: str, handle, batch_max: int, until, timeout: float = 10.0):
    """A reader of `topic`'s partition 0 handing batches to `handle` (no flush, no periodic commit), until `until()`."""
    async def nothing():
        pass

    ingest = DirectIngest([topic], 4, group, {"bootstrap_servers": broker.bootstrap}, handle, nothing,
                          ready=lambda: True, batch_max=batch_max, fetch_max_wait_ms=10, commit_every_s=3600)
    await ingest.start()
    await ingest.assign({0})
    runner = asyncio.create_task(ingest.run())
    try:
        await _until(until, timeout=timeout)
    finally:
        await _shut_down(ingest, runner)


def test_lag_counts_what_is_fetched_but_not_handed_over_and_leaves_out_the_unfetched(broker):
    """Right after an assignment nothing is known about a partition (left out, not 0: a lag of 0
    reads as caught up); once fetched, its lag is the records not yet handed to the batches."""
    topic, group = "direct-lag", "direct-lag-app-direct"

    async def scenario():
        await _setup(broker.bootstrap, topic, 50)

        async def nothing(*_):
            return None

        ingest = DirectIngest([topic], 4, group, {"bootstrap_servers": broker.bootstrap}, nothing, nothing,
                              ready=lambda: True, batch_max=20, fetch_max_wait_ms=10)
        await ingest.start()
        try:
            assert ingest.lag() == {}
            await ingest.assign({0, 2})
            assert ingest.lag() == {}  # assigned, never fetched: unknown
            handed = 0
            for _ in range(100):
                batch = await ingest.consumer.getmany(timeout_ms=200, max_records=20)
                handed += sum(len(part) for part in batch.values())
                fetched = [ingest.consumer.highwater(TopicPartition(topic, p)) for p in (0, 2)]
                if handed and None not in fetched:
                    break
            assert ingest.lag() == {topic: 100 - handed} and 0 < handed < 100
        finally:
            await ingest.stop()

    asyncio.run(scenario())


def test_batches_are_read_once_and_committed_only_after_a_flush(broker):
    topic, group = "direct-t1", "direct-t1-app-direct"

    async def scenario():
        await _setup(broker.bootstrap, topic, 50)
        handled, log = [], []
        failing = {"flush": 1}

        async def handle(records):
            handled.extend(r.value for r in records)

        async def flush():
            log.append(("flush", await _committed(ingest, topic)))
            if failing["flush"]:
                failing["flush"] -= 1
                raise RuntimeError("producer down")

        async def before_commit():  # what the commit's flush acknowledges (the shares' positions in the worker)
            return len(handled)

        settled = []  # after_commit's: what each commit's flush acknowledged, once committed
        ingest = DirectIngest([topic], 4, group, {"bootstrap_servers": broker.bootstrap}, handle, flush,
                              ready=lambda: True, batch_max=20, fetch_max_wait_ms=10, commit_every_s=3600,
                              before_commit=before_commit, after_commit=settled.append)
        # an upstream producer's aborted transactions are skipped on Kafka (an outside check: applied before);
        # the embedded broker keeps no transactions, so this shows only that such a reader reads it whole
        assert ingest.consumer._isolation_level == "read_committed"
        await ingest.start()
        await ingest.assign({0, 2})  # this worker owns table partitions 0 and 2
        runner = asyncio.create_task(ingest.run())
        try:
            await _until(lambda: len(handled) >= 100)
            assert sorted(handled) == sorted(f"{p}:{i}".encode() for p in (0, 2) for i in range(50))
            assert ingest.lag() == {topic: 0}  # both owned partitions read to their end
            # the flush fails: nothing is committed, the offsets are kept for the next try
            try:
                await ingest.revoke()
            except RuntimeError:
                pass
            assert log[-1][1] == {0: None, 1: None, 2: None, 3: None}
            assert await _committed(ingest, topic) == {0: None, 1: None, 2: None, 3: None} and settled == []
            # assigned again (as after a crash): reading restarts at the last commit, so what was
            # read but never flushed is read again: at-least-once
            await ingest.assign({0, 2})
            await _until(lambda: len(handled) >= 200)
            assert sorted(handled[100:]) == sorted(handled[:100])
            await ingest.revoke()  # flushed (nothing committed yet at that moment), then committed
            assert log[-1][1] == {0: None, 1: None, 2: None, 3: None}
            assert await _committed(ingest, topic) == {0: 50, 1: None, 2: 50, 3: None}
            assert settled == [200]
            assert not ingest.consumer.assignment()
            # the next owner of all four partitions starts where the commit left off
            await ingest.assign({0, 1, 2, 3})
            await _until(lambda: len(handled) >= 300)
            assert len(handled) == 300 and len(set(handled)) == 200
        finally:
            await _shut_down(ingest, runner)

    asyncio.run(scenario())


def test_a_periodic_commit_runs_beside_the_batches_one_at_a_time(broker):
    """An offset commit (flush, then a broker round trip) must not hold up the events read
    meanwhile: with the flush stuck, every batch is still applied, no second commit starts, and
    once it returns a later commit covers everything applied."""
    topic, group = "direct-t2", "direct-t2-app-direct"

    async def scenario():
        await _setup(broker.bootstrap, topic, 50)
        handled, flushes, release = [], [], asyncio.Event()

        async def handle(records):
            handled.extend(r.value for r in records)

        async def flush():
            flushes.append(len(handled))
            await release.wait()

        ingest = DirectIngest([topic], 4, group, {"bootstrap_servers": broker.bootstrap}, handle, flush,
                              ready=lambda: True, batch_max=20, fetch_max_wait_ms=10, commit_every_s=0)
        await ingest.start()
        await ingest.assign({0, 2})
        runner = asyncio.create_task(ingest.run())
        try:
            await _until(lambda: len(handled) >= 100)
            assert len(handled) == 100 and len(flushes) == 1  # batches went on; one commit in flight
            assert await _committed(ingest, topic) == {0: None, 1: None, 2: None, 3: None}
            release.set()
            await _until(lambda: len(flushes) >= 2)
            assert await _committed_after_waiting(ingest, topic, {0: 50, 1: None, 2: 50, 3: None}) == {0: 50, 1: None, 2: 50, 3: None}
        finally:
            release.set()
            await _shut_down(ingest, runner)

    asyncio.run(scenario())


def test_what_the_batches_owe_is_produced_before_the_offsets_covering_them_are_taken(broker):
    """The list window's contract (streams.core.throttle): `before_commit` runs under the lock,
    after the batches whose offsets a commit takes and before any later one, and again on revoke;
    `handle` also runs after a poll without records (a window can end while no record comes)."""
    topic, group = "direct-t6", "direct-t6-app-direct"

    async def scenario():
        await _setup(broker.bootstrap, topic, 30)
        log: list = []

        async def handle(records):
            log.append(("batch", len(records)))

        async def before_commit():
            log.append(("owed", sum(n for kind, n in log if kind == "batch")))

        async def flush():
            log.append(("flush", None))

        ingest = DirectIngest([topic], 4, group, {"bootstrap_servers": broker.bootstrap}, handle, flush,
                              ready=lambda: True, batch_max=20, fetch_max_wait_ms=10, commit_every_s=0,
                              before_commit=before_commit)
        await ingest.start()
        commit = ingest.consumer.commit

        async def logged_commit(offsets):
            log.append(("commit", sum(offsets.values())))  # records covered (the topic starts at 0)
            await commit(offsets)

        ingest.consumer.commit = logged_commit
        await ingest.assign({0, 2})
        runner = asyncio.create_task(ingest.run())
        try:
            await _until(lambda: sum(n for kind, n in log if kind == "batch") >= 60 and ("batch", 0) in log)
            assert await _committed_after_waiting(ingest, topic, {0: 30, 1: None, 2: 30, 3: None}) == {0: 30, 1: None, 2: 30, 3: None}
            # each commit covers exactly the records handled when the owed lists were produced
            owed = None
            for kind, n in log:
                if kind == "owed":
                    owed = n
                elif kind == "commit":
                    assert n == owed, log  # not one record handled after the owed lists were produced
            assert owed == 60 and ("commit", 60) in log, log
        finally:
            await _shut_down(ingest, runner, revoke=True)

    asyncio.run(scenario())


def test_a_group_takes_over_another_groups_commits_only_where_it_has_none(broker):
    """When direct ingest took the keyed topics over from faust's agents, its group starts where
    faust's group left them instead of at the earliest offset; a commit of its own always wins."""
    from aiokafka import AIOKafkaConsumer

    from streams.kafka.offsets import adopt_committed

    topic, client = "direct-adopt", {"bootstrap_servers": broker.bootstrap}

    async def commit(group: str, offsets: dict[int, int]) -> None:
        consumer = AIOKafkaConsumer(**client, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, p) for p in offsets])
            await consumer.commit({TopicPartition(topic, p): o for p, o in offsets.items()})
        finally:
            await consumer.stop()

    async def committed(group: str) -> dict[int, int | None]:
        consumer = AIOKafkaConsumer(**client, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(4)}
        finally:
            await consumer.stop()

    async def scenario():
        await _setup(broker.bootstrap, topic, 5)
        await commit("faust-app", {0: 2, 1: 4, 2: 5})  # partition 3: never committed
        await commit("faust-app-direct", {1: 1})
        adopted = await adopt_committed(client, "faust-app", "faust-app-direct", {topic: 4})
        assert adopted == {(topic, 0): 2, (topic, 2): 5}
        assert await committed("faust-app-direct") == {0: 2, 1: 1, 2: 5, 3: None}
        assert await adopt_committed(client, "faust-app", "faust-app-direct", {topic: 4}) == {}  # once only

    asyncio.run(scenario())


def test_a_partition_held_at_a_record_is_read_again_from_it_once_due_while_the_others_go_on(broker):
    """The pending topic's retries: a batch may leave a partition's head for later (not due yet).
    Nothing behind it in that partition is handled before the hold ends, the other partitions go
    on, the commit stops at the held record, and afterwards every record is handled exactly once."""
    import time

    topic, group = "direct-hold", "direct-hold-app-direct"

    async def scenario():
        await _setup(broker.bootstrap, topic, 10)
        release_at = time.time() + 1.5
        handled: list[tuple[int, int, float]] = []

        async def handle(records):
            holding = time.time() < release_at
            later = [r for r in records if holding and r.partition == 0 and r.offset >= 3]
            handled.extend((r.partition, r.offset, time.time()) for r in records if r not in later)
            return {(topic, 0): (later[0].offset, release_at)} if later else None

        async def flush():
            pass

        ingest = DirectIngest([topic], 4, group, {"bootstrap_servers": broker.bootstrap}, handle, flush,
                              ready=lambda: True, batch_max=5, fetch_max_wait_ms=10, commit_every_s=0.1)
        await ingest.start()
        await ingest.assign({0, 1, 2, 3})
        runner = asyncio.create_task(ingest.run())
        try:
            await _until(lambda: sum(1 for p, _, _ in handled if p) == 30)  # the other partitions to their end
            assert time.time() < release_at, "the machine was too slow for this test's timing"
            assert sorted(o for p, o, _ in handled if p == 0) == [0, 1, 2]
            assert (await _committed(ingest, topic))[0] == 3  # committed up to the held record, not past it
            await _until(lambda: len(handled) == 40, timeout=10.0)
            assert sorted((p, o) for p, o, _ in handled) == [(p, o) for p in range(4) for o in range(10)]
            assert min(t for p, o, t in handled if p == 0 and o >= 3) >= release_at
        finally:
            await _shut_down(ingest, runner)

    asyncio.run(scenario())


def test_an_idle_reader_fetches_less_often_and_the_next_record_brings_the_short_wait_back(broker):
    """With no records for a second the fetches wait `idle_fetch_max_wait_ms` (an idle worker's
    polling is CPU its HTTP reads miss); a record arriving then is still applied, and the short
    wait is back for what follows."""
    topic, group = "direct-t5", "direct-t5-app-direct"

    async def scenario():
        await _setup(broker.bootstrap, topic, 0)
        handled: list[bytes] = []
        fetches: list[float] = []

        async def handle(records):
            handled.extend(r.value for r in records)

        async def flush():
            pass

        ingest = DirectIngest([topic], 4, group, {"bootstrap_servers": broker.bootstrap}, handle, flush,
                              ready=lambda: True, batch_max=20, fetch_max_wait_ms=10, commit_every_s=3600,
                              idle_fetch_max_wait_ms=400)
        await ingest.start()
        send = ingest.consumer._client.send

        async def counting(node_id, request, *args, **kwargs):  # the fetches the reader sends, as they go
            if type(request).__name__.startswith("FetchRequest"):
                fetches.append(asyncio.get_running_loop().time())
            return await send(node_id, request, *args, **kwargs)

        ingest.consumer._client.send = counting
        await ingest.assign({0, 1, 2, 3})
        runner = asyncio.create_task(ingest.run())
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
        await producer.start()
        try:
            await asyncio.sleep(1.5)
            start = asyncio.get_running_loop().time()
            await asyncio.sleep(2.0)  # idle: long fetches
            idle = sum(1 for t in fetches if t >= start)
            await producer.send_and_wait(topic, b"after a quiet spell", partition=1)
            await _until(lambda: handled)
            assert handled == [b"after a quiet spell"]
            start = asyncio.get_running_loop().time()
            await asyncio.sleep(0.5)  # records came within the last second: short fetches again
            busy = sum(1 for t in fetches if t >= start)
            assert idle <= 2.0 / 0.4 + 2, (idle, busy)  # at most one per idle wait, plus one in flight
            assert busy > 2 * idle * 0.5 / 2.0, (idle, busy)  # per second, well above the idle rate
        finally:
            await _shut_down(ingest, runner)
            await producer.stop()

    asyncio.run(scenario())


def test_a_broker_not_reachable_yet_is_tried_again_until_it_is(tmp_path, caplog):
    """A worker whose broker went away just as direct ingest started stopped at once (a restart policy
    brought it back); the start is tried again now, and reads once the broker is there."""
    from streams.kafka.broker import EmbeddedBroker, free_port

    port = free_port()
    later = EmbeddedBroker(port=port, log_path=tmp_path / "broker.log")

    async def scenario():
        async def nothing(*_):
            return None

        ingest = DirectIngest(["late-topic"], 4, "late-app-direct", {"bootstrap_servers": f"127.0.0.1:{port}"},
                              nothing, nothing, ready=lambda: True)
        starting = asyncio.create_task(ingest.start(patience_s=60))
        await asyncio.sleep(2.0)
        assert not starting.done()  # still trying, not stopped
        await asyncio.to_thread(later.start)
        await _setup(later.bootstrap, "late-topic", 1)
        await asyncio.wait_for(starting, 45)
        try:
            assert ingest.topic_partitions == {"late-topic": 4}
        finally:
            await ingest.stop()

    try:
        asyncio.run(scenario())
    finally:
        later.stop()
    assert "direct ingest: cannot start yet" in caplog.text


def test_a_broker_that_never_comes_is_an_error_once_patience_runs_out():
    from aiokafka.errors import KafkaConnectionError

    from streams.kafka.broker import free_port

    async def scenario():
        async def nothing(*_):
            return None

        ingest = DirectIngest(["t"], 4, "g", {"bootstrap_servers": f"127.0.0.1:{free_port()}"}, nothing, nothing,
                              ready=lambda: True)
        await ingest.start(patience_s=1.0)

    try:
        asyncio.run(scenario())
    except KafkaConnectionError:
        return
    raise AssertionError("started without a broker")


def test_a_slow_batch_is_logged_with_its_records_positions_and_counted(broker, monkeypatch, caplog):
    """A record that costs seconds holds every partition and the HTTP API (an outside fuzz: 29 s for one
    64 KB message): the batch is logged with each partition's offsets, so an operator knows where to look."""
    import logging

    import streams.kafka.direct as direct
    from streams.core.metrics import metrics

    topic, group = "direct-slow", "direct-slow-app-direct"
    monkeypatch.setattr(direct, "SLOW_BATCH_S", 0.05)

    async def scenario():
        await _setup(broker.bootstrap, topic, 3)
        handled = []

        async def handle(records):
            if any(r.value == b"0:1" for r in records):
                await asyncio.sleep(0.2)  # the costly record
            handled.extend(r.value for r in records)

        await _read_partition_0(broker, topic, group, handle, 20, lambda: len(handled) >= 3)

    before = metrics.value("recstream_slow_batches_total")
    with caplog.at_level(logging.WARNING, logger="streams.kafka.direct"):
        asyncio.run(scenario())
    slow = [r.getMessage() for r in caplog.records if "took" in r.getMessage() and "holding every partition" in r.getMessage()]
    assert len(slow) == 1 and f"{topic}[0] " in slow[0] and "records took 0." in slow[0], slow
    assert metrics.value("recstream_slow_batches_total") == before + 1


def test_a_backlog_of_costly_records_is_read_in_batches_that_fit_the_target_time(broker):
    """Applying a batch holds the worker's event loop, HTTP reads included: an outside soak saw batches of
    1,213 records take 4.3 s and reads p99 1-3.5 s. After a batch slower than the target the next ones ask
    for what fits in it, and every record is still handed over once, in order."""
    import time

    from streams.kafka.pacing import BATCH_TARGET_S

    topic, group = "direct-paced", "direct-paced-app-direct"
    per_record = BATCH_TARGET_S / 25  # 25 records fill the target

    async def scenario():
        await _setup(broker.bootstrap, topic, 300)
        sizes, handled = [], []

        async def handle(records):
            if records:
                time.sleep(per_record * len(records))  # CPU, as the pipeline spends it: nothing else runs
                sizes.append(len(records))
                handled.extend(r.value for r in records)

        await _read_partition_0(broker, topic, group, handle, 200, lambda: len(handled) >= 300, timeout=60)
        return sizes, handled

    sizes, handled = asyncio.run(scenario())
    assert handled == [f"0:{i}".encode() for i in range(300)]
    big = [i for i, n in enumerate(sizes) if n > 50]
    assert big and all(n <= 25 * 2 for n in sizes[big[-1] + 1:]), sizes  # after the slow one: what fits
    assert max(sizes[big[-1] + 1:], default=0) >= 12, sizes  # not one record at a time either
