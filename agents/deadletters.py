"""The dead-letter send shared by the agents that reject a record they consumed."""

from streams import topics
from streams.events import Rejected
from streams.ingest import dead_letter
from streams.metrics import metrics


async def send_dead_letter(event, reason: str, detail: str) -> None:
    """Count it and send the record, with its source position and bytes, to the dead-letter topic."""
    msg = event.message
    metrics.inc("recstream_dead_letters_total", reason=reason)
    await topics.deadletter.send(key=msg.key, value=dead_letter(
        Rejected(reason, detail), msg.topic, msg.partition, msg.offset, msg.key, event.value))
