"""Sending checked lines and counting what the broker acknowledged (`recstream load` and `replay`).

Every record's delivery is awaited: the report's `sent` counts only the acknowledged ones, and a
record the producer refuses (larger than a produce request may be) or the broker never acknowledges
is rejected with its reason, so no failed delivery is counted as sent or goes unseen ("Future
exception was never retrieved")."""

from __future__ import annotations

import asyncio

from streams.cli.common import said
from streams.core.events import Rejected

NOT_DELIVERED = "not_delivered"


class Deliveries:
    """The records in flight, settled every `window` records and by `settle`; the counts go to
    `report` (its `sent`, and `reject(path, number, Rejected, line)`: streams.cli.load.Report)."""

    def __init__(self, producer, report, window: int = 5000):
        self.producer, self.report, self.window = producer, report, window
        self.inflight: list = []

    async def send(self, topic: str, key: bytes | None, path, number: int, line: bytes) -> None:
        """Send one line. Any other KafkaError than a too large record (the broker gone: no room for the
        record within `request_timeout_ms`) is raised once the records in flight are settled, so that
        `sent` is what was acknowledged before it stopped."""
        from aiokafka.errors import KafkaError, MessageSizeTooLargeError

        try:
            future = await self.producer.send(topic, value=line, key=key)
        except MessageSizeTooLargeError:
            too_big = Rejected("oversized", f"{len(line)} bytes: larger than a produce request may be")
            self.report.reject(path, number, too_big, line)
            return
        except KafkaError:
            await self.settle()
            raise
        self.inflight.append((future, path, number, line))
        if len(self.inflight) >= self.window:
            await self.settle()

    async def settle(self) -> None:
        """Wait for the broker's answer on every record in flight. When it acknowledged none of them (the
        broker gone: each failed after `request_timeout_ms`), the last failure is raised: it stops the command."""
        from aiokafka.errors import KafkaError

        window = [f for f, *_ in self.inflight]
        if not window:
            return
        await asyncio.wait(window)
        self.count_answered()
        errors = [f.exception() for f in window if not f.cancelled()]  # None for an acknowledged record
        if len(errors) == len(window) and all(isinstance(e, KafkaError) for e in errors):
            raise errors[-1]

    def count_answered(self) -> None:
        """Count the records in flight the broker has answered for (on Ctrl-C: how far it got)."""
        waiting = []
        for future, path, number, line in self.inflight:
            if not future.done():
                waiting.append((future, path, number, line))
            elif future.cancelled() or future.exception() is not None:
                failure = "cancelled" if future.cancelled() else said(future.exception())
                self.report.reject(path, number, Rejected(NOT_DELIVERED, failure), line)
            else:
                self.report.sent += 1
        self.inflight = waiting

    @property
    def pending(self) -> int:
        return len(self.inflight)
