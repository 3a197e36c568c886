"""The dead-letter send shared by the agents that reject a record they consumed."""

from streams.core.events import Rejected
from streams.core.ingest import decode_or_reject, stamp_unpositioned
from streams.core.letters import dead_letter, letter_key
from streams.core.records import MAX_TABLE_VALUE_BYTES
from streams.kafka.unreadable import unreadable_batch
from streams.worker import topics
from streams.worker.app import app
from streams.worker.commit import send_all
from streams.worker.logs import dead_lettered
from streams.worker.runtime import by_partition


async def send_dead_letter(event, reason: str, detail: str) -> None:
    """Count it and send the record, with its source position and bytes, to the dead-letter topic."""
    await send_all(app, [letter(Rejected(reason, detail), event.message, event.value)])


def letter(rejected: Rejected, msg, value: bytes | None) -> tuple:
    """Count and log it (a few lines a reason every 10 s); the (topic, key, value) of the record's dead letter
    (`msg`: .topic, .partition, .offset, .key). A refused catalog record was counted, never logged."""
    dead_lettered(rejected.reason, msg.topic, msg.partition, msg.offset, rejected.detail)
    return topics.deadletter, letter_key(msg.key), dead_letter(rejected, msg.topic, msg.partition, msg.offset,
                                                               msg.key, value)


async def decoded(event, decode, reason: str, keyed: bool = False):
    """`decode(event.value)`, or None once the record went to the dead-letter topic with `reason`.
    `keyed`: a signals.keyed / images.keyed record, given its position if it has no input one."""
    # internal: records we wrote (or a batch no one could read: faust's path hands over its marker)
    record = unreadable_batch(event.message) or decode_or_reject(decode, event.value, reason, MAX_TABLE_VALUE_BYTES)
    if isinstance(record, Rejected):
        await send_dead_letter(event, record.reason, record.detail)
        return None
    msg = event.message
    return stamp_unpositioned(record, msg.topic, msg.partition, msg.offset) if keyed else record


async def decoded_all(events, decode, reason: str, keyed: bool = False) -> list:
    """The records of `events` that decode, in order; the others dead-lettered."""
    return [r for r in [await decoded(e, decode, reason, keyed) for e in events] if r is not None]


async def decoded_by_partition(events, decode, reason: str, keyed: bool = False) -> list[tuple[int, object, list]]:
    """(partition, its last event, its decoded records) per partition of a batch. Decoding may
    await (a dead letter), so all of it happens before the caller reads any state."""
    return [(partition, group[-1], await decoded_all(group, decode, reason, keyed))
            for partition, group in by_partition(events)]


def lettered_if_unreadable(rec, batch) -> bool:
    """Whether `rec` is the marker of a record batch no one can read (streams.kafka.unreadable); its dead letter then
    goes through `batch`, the state transaction it was read for."""
    refused = unreadable_batch(rec) if rec.value is None else None
    if refused is not None:
        batch.send(*letter(refused, rec, None))
    return refused is not None


def decoded_into(batch, records, decode, reason: str, keyed: bool = False) -> list:
    """The records (aiokafka ConsumerRecords) that decode, in order; the others dead-lettered
    through `batch`, the state transaction they were read for. `keyed`: as for `decoded`."""
    return decoded_until(batch, records, decode, reason, keyed)[0]


def decoded_until(batch, records, decode, reason: str, keyed: bool = False, stop=None) -> tuple[list, int | None]:
    """As `decoded_into`, up to the first decoded record `stop(record)` is true for: (the records before it,
    its offset, where to read again from; None when it went through them all)."""
    out = []
    for rec in records:
        record = decode_or_reject(decode, rec.value, reason, MAX_TABLE_VALUE_BYTES)
        if isinstance(record, Rejected):
            batch.send(*letter(record, rec, rec.value))
        elif stop is not None and stop(record):
            return out, rec.offset
        else:
            out.append(stamp_unpositioned(record, rec.topic, rec.partition, rec.offset) if keyed else record)
    return out, None
