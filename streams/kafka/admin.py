"""Topics (plain aiokafka, no faust): create the missing ones, and read every topic's partition count."""

from __future__ import annotations

import asyncio
import logging

COMPACT = {"cleanup.policy": "compact"}


async def start_quietly(client) -> None:
    """Start an aiokafka client without aiokafka's own log lines when it cannot bootstrap: the
    command says so in one line (`run_producer`); later problems are still logged."""
    log = logging.getLogger("aiokafka")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        await client.start()
    except BaseException:
        await (client.stop() if hasattr(client, "stop") else client.close())
        raise
    finally:
        log.setLevel(level)


async def existing_topics(client_kwargs: dict) -> set[str]:
    """Every topic's name, from the admin API: a consumer's metadata request for a missing topic
    has the broker create it (with the broker's default partition count)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_kwargs)
    await start_quietly(admin)
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def wrong_partition_counts(client_kwargs: dict, names, partitions: int) -> dict[str, int]:
    """The existing topics of `names` whose partition count is not `partitions`, with their count (a missing
    one is not asked for: see existing_topics)."""
    counts = await topic_partitions(client_kwargs, set(names) & await existing_topics(client_kwargs))
    return {name: count for name, count in counts.items() if count != partitions}


async def ensure_topics(client_kwargs: dict, wanted: dict[str, tuple[int, dict]]) -> None:
    """Create each missing topic of `wanted` (name -> (partitions, config)); an existing one is left as it is."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(**client_kwargs)
    await start_quietly(admin)
    try:
        missing = [name for name in wanted if name not in set(await admin.list_topics())]
        for name in missing:  # one at a time: a topic another client created meanwhile is no error
            partitions, config = wanted[name]
            try:
                await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config)])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def topic_partitions(client_kwargs: dict, topics) -> dict[str, int]:
    """Each topic's partition count as the broker has it (0: none after 10 s)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(**client_kwargs, enable_auto_commit=False)
    await start_quietly(consumer)
    try:
        return await partition_counts(consumer, topics)
    finally:
        await consumer.stop()


async def partition_counts(consumer, topics) -> dict[str, int]:
    """Each topic's partition count from a started consumer's metadata (0: none after 10 s: the
    metadata of a freshly created topic can lag a moment)."""
    counts: dict[str, int] = {}
    for _ in range(50):
        await consumer.topics()  # a metadata refresh
        counts = {name: len(consumer.partitions_for_topic(name) or ()) for name in topics}
        if all(counts.values()):
            break
        await asyncio.sleep(0.2)
    return counts
