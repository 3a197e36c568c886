"""Offsets (plain aiokafka, no faust): where a topic partition really ends, and a consumer group's
committed offsets read and written without joining the group."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager


def fetched_position(consumer, tp) -> tuple[int | None, int | None]:
    """(highwater from the last fetch response, the next offset the consumer hands out) of `tp`,
    from an aiokafka consumer's own state (it has no synchronous position()); each None while
    unknown: not fetched since its assignment, no valid position, or no assignment at this instant
    (a rebalance).

    >>> class Consumer: _subscription = None
    >>> fetched_position(Consumer(), ("t", 0))
    (None, None)
    """
    try:
        state = consumer._subscription.subscription.assignment.state_value(tp)
    except Exception:  # noqa: BLE001 - no assignment at this instant
        return None, None
    if state is None:
        return None, None
    return state.highwater, state.position if state.has_valid_position else None


async def stop_consumer(consumer) -> None:
    """`consumer.stop()`; aiokafka can raise CancelledError from its own cancelled tasks: the group
    coordinator's when a consumer stops right after starting (no topics yet: a traceback from
    `rebuild --bulk` on a fresh prefix), the fetcher's when a fetch was waiting out its retry
    backoff (a broker gone: the worker's stop ended there and the process never exited). Our own
    cancellation still propagates."""
    await settled(consumer.stop())


async def settled(awaitable) -> None:
    """`await awaitable`, a CancelledError out of it taken as done unless the running task itself was
    asked to cancel (aiokafka re-raises its own cancelled tasks' CancelledError as it stops)."""
    try:
        await awaitable
    except asyncio.CancelledError:
        if being_cancelled():
            raise


def being_cancelled() -> bool:
    """Whether the running task itself was asked to cancel (not a CancelledError from a task it awaited)."""
    return bool(getattr(asyncio.current_task(), "cancelling", lambda: 1)())


async def true_end_offsets(ends: dict, client_kwargs: dict, timeout: float = 10.0) -> dict:
    """Correct ListOffsets ends by reading the last batch of each partition.

    Tansu answers ListOffsets(latest) with the start of the last batch + 1 when that batch holds
    several records. A fetch from that offset returns the whole last batch, and the fetch
    response's high watermark is the true end. On Apache Kafka both agree, so this only costs
    one small fetch per partition."""
    import time

    from aiokafka import AIOKafkaConsumer, TopicPartition

    probe = {TopicPartition(tp.topic, tp.partition): end for tp, end in ends.items() if end > 0}
    if not probe:
        return dict(ends)
    consumer = AIOKafkaConsumer(**client_kwargs, enable_auto_commit=False, group_id=None, fetch_max_wait_ms=50)
    await consumer.start()
    fixed = dict(ends)
    try:
        consumer.assign(list(probe))
        for tp, end in probe.items():
            consumer.seek(tp, end - 1)
        pending = set(probe)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            await consumer.getmany(*pending, timeout_ms=200)
            for tp in list(pending):
                high = consumer.highwater(tp)
                if high is not None:
                    for orig in ends:
                        if orig.topic == tp.topic and orig.partition == tp.partition:
                            fixed[orig] = max(ends[orig], high)
                    pending.discard(tp)
    finally:
        await stop_consumer(consumer)
    return fixed


async def end_offsets(client: dict, topics: list[str]) -> dict:
    """Topic partition -> end offset now, for every partition of `topics` (true ends: see true_end_offsets)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**client, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
        if not tps:
            return {}
        return await true_end_offsets(await consumer.end_offsets(tps), client)  # Tansu under-reports ends
    finally:
        await stop_consumer(consumer)


async def adopt_committed(client_kwargs: dict, source_group: str, group: str, partitions: dict[str, int]) -> dict:
    """Commit into `group` what `source_group` committed for the partitions (topic -> count)
    that `group` has no commit for; returns what was adopted. A one-time hand-over when a
    reader of a topic changes groups (direct ingest took signals.keyed and images.keyed over
    from faust's agents): without it the new group would start from the earliest offset and
    replay records whose dedup is a bounded window (merges, retried signals). Neither group
    is joined: reads and commits go to the coordinator as a non-member."""
    from aiokafka import TopicPartition

    tps = [TopicPartition(t, p) for t, n in sorted(partitions.items()) for p in range(n)]
    if not tps:
        return {}

    async def committed(group_id: str) -> dict:
        async with group_client(client_kwargs, group_id) as consumer:
            return {tp: await consumer.committed(tp) for tp in tps}

    ours, theirs = await committed(group), await committed(source_group)
    adopt = {tp: offset for tp, offset in theirs.items() if offset is not None and ours[tp] is None}
    if adopt:
        await commit_offsets(client_kwargs, group, adopt)
    return {(tp.topic, tp.partition): offset for tp, offset in adopt.items()}


async def commit_offsets(client_kwargs: dict, group: str, offsets: dict) -> None:
    """Commit {TopicPartition: offset} into `group` without joining it (no member: the
    coordinator takes the commit as a simple consumer's). Nothing to commit: nothing done."""
    if not offsets:  # a rebuild of topics with no records yet
        return
    async with group_client(client_kwargs, group) as consumer:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)


@asynccontextmanager
async def group_client(client_kwargs: dict, group: str):
    """A started consumer for `group` that never joins it: for reading and committing the
    group's offsets as a non-member."""
    from aiokafka import AIOKafkaConsumer

    from streams.kafka.admin import start_quietly

    consumer = AIOKafkaConsumer(**client_kwargs, group_id=group, enable_auto_commit=False)
    try:  # inside: a broker that cannot be reached leaves a client to close too; the command says it in one line
        await start_quietly(consumer)
        yield consumer
    finally:
        await stop_consumer(consumer)
