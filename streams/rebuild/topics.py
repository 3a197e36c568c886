"""The new app's topics: checked to be fresh (no other app already uses the id) and created like the
live worker declares them."""

from __future__ import annotations

from streams.core import topology
from streams.core.ingest import (
    DEADLETTER,
    IMAGES,
    PENDING,
    SIGNALS,
)
from streams.core.settings import Settings
from streams.core.topology import CATALOG_TOPICS, INPUT_KINDS, USER_TABLES, changelog
from streams.kafka.direct import direct_group
from streams.kafka.offsets import group_client

TABLES, GLOBAL_TABLES = USER_TABLES, topology.GLOBAL_TABLES


def input_topics(settings: Settings) -> dict[str, str | None]:
    """topic name -> the typed kind ingest_one expects (None for Segment), as the worker reads them."""
    return {settings.topic(name): kind for name, kind in INPUT_KINDS.items()}


class RebuildRefused(RuntimeError):
    """A bulk rebuild that would write a state no worker could take over: said in one line, before any write."""


class AppIdInUse(RebuildRefused):
    """The target app id's consumer group already committed input offsets."""


async def check_fresh(settings: Settings, client: dict) -> None:
    """A bulk rebuild writes a new app id's whole state: refuse an app id whose workers already
    consumed input (its state would be overwritten under them)."""
    from aiokafka import TopicPartition

    for group in (settings.kafka_app_id, direct_group(settings.kafka_app_id)):
        async with group_client(client, group) as consumer:
            for topic in input_topics(settings):
                for p in consumer.partitions_for_topic(topic) or ():
                    if await consumer.committed(TopicPartition(topic, p)):
                        raise AppIdInUse(f"app id {settings.app_id!r} already has committed offsets on {topic} "
                                         f"(group {group}: its workers ran): rebuild into a new app id")


async def check_partitions(settings: Settings, client: dict) -> None:
    """The catalog topics and any of the new app's changelogs that exist have RECSTREAM_PARTITIONS partitions, as
    the new app's workers require at their start (streams.cli.worker.prepare_topics): a rebuild under another count
    wrote its state and committed its offsets, and then no worker could start under that app id."""
    from streams.kafka.admin import wrong_partition_counts

    names = {settings.topic(name) for name in CATALOG_TOPICS}
    names |= {changelog(settings.kafka_app_id, t) for t in TABLES + GLOBAL_TABLES}
    wrong = await wrong_partition_counts(client, names, settings.partitions)
    if wrong:
        raise RebuildRefused(f"RECSTREAM_PARTITIONS is {settings.partitions}, but " + ", ".join(
            f"{name} has {count}" for name, count in sorted(wrong.items())) + " partitions: the new app's workers "
            "would refuse to start on its state. Set RECSTREAM_PARTITIONS to the topics' count.")


async def create_topics(settings: Settings, client: dict) -> None:
    """The new app's changelogs and internal topics, as faust would declare them."""
    from streams.kafka.admin import COMPACT, ensure_topics

    wanted = {changelog(settings.kafka_app_id, t): (settings.partitions, COMPACT) for t in TABLES + GLOBAL_TABLES}
    wanted |= {settings.internal_topic(name): (settings.partitions, {}) for name in (SIGNALS, IMAGES, PENDING)}
    wanted[settings.topic(DEADLETTER)] = (settings.partitions, {})
    await ensure_topics(client, wanted)
