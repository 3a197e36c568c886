"""The dead-letter send shared by the agents that reject a record they consumed."""

from streams.core.events import Rejected
from streams.core.ingest import dead_letter, decode_or_reject
from streams.core.metrics import metrics
from streams.worker import topics
from streams.worker.app import app
from streams.worker.commit import send_all
from streams.worker.runtime import by_partition


async def send_dead_letter(event, reason: str, detail: str) -> None:
    """Count it and send the record, with its source position and bytes, to the dead-letter topic."""
    msg = event.message
    metrics.inc("recstream_dead_letters_total", reason=reason)
    value = dead_letter(Rejected(reason, detail), msg.topic, msg.partition, msg.offset, msg.key, event.value)
    await send_all(app, [(topics.deadletter, msg.key, value)])


async def decoded(event, decode, reason: str):
    """`decode(event.value)`, or None once the record went to the dead-letter topic with `reason`."""
    record = decode_or_reject(decode, event.value, reason)
    if isinstance(record, Rejected):
        await send_dead_letter(event, record.reason, record.detail)
        return None
    return record


async def decoded_all(events, decode, reason: str) -> list:
    """The records of `events` that decode, in order; the others dead-lettered."""
    return [r for r in [await decoded(e, decode, reason) for e in events] if r is not None]


async def decoded_by_partition(events, decode, reason: str) -> list[tuple[int, object, list]]:
    """(partition, its last event, its decoded records) per partition of a batch. Decoding may
    await (a dead letter), so all of it happens before the caller reads any state."""
    return [(partition, group[-1], await decoded_all(group, decode, reason))
            for partition, group in by_partition(events)]
