"""Where a topic partition really ends (plain aiokafka, no faust)."""

from __future__ import annotations


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
        await consumer.stop()
    return fixed
