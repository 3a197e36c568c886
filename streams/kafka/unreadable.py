"""Record batches a consumer cannot read: skipped and reported, never raised.

A record batch whose CRC does not match, whose compressed payload does not decompress, or whose header
lies (a record count it does not hold, the control flag on data) raised out of aiokafka's `getmany` every
time it was fetched: the embedded broker stores batches as they were produced (Apache Kafka checks them on
produce), so one such batch from a buggy producer crash-looped the worker for good (an outside fuzz).

`skip_unreadable(topics)` patches aiokafka's per-partition record reader (`PartitionRecords`) for those
topics: each batch is read whole before its records are handed out, and one that cannot be read becomes a
single marker record at the batch's last offset (key and value None, header MARKER: the batch's offsets and
what went wrong), which the reader dead-letters (`unreadable`); the records after it are read as usual, and
committing past the marker commits past the batch. Other topics (the changelogs) keep aiokafka's behaviour.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

MARKER = "recstream-unreadable-batch"
_WATCHED: set[str] = set()


def unreadable(record) -> str | None:
    """What was wrong with the batch a marker record stands for; None for any record a producer sent.

    >>> from dataclasses import replace
    >>> from aiokafka.structs import ConsumerRecord
    >>> marker = ConsumerRecord("t", 0, 9, 0, 0, None, None, None, -1, -1, ((MARKER, b"offsets 7-9: bad CRC"),))
    >>> unreadable(marker), unreadable(replace(marker, value=b"{}"))
    ('offsets 7-9: bad CRC', None)
    """
    if record.value is None and record.headers:
        for name, value in record.headers:
            if name == MARKER and record.key is None:
                return value.decode("utf-8", "replace")
    return None


def skip_unreadable(topics: Iterable[str]) -> None:
    """Read the batches of `topics` whole and replace an unreadable one by its marker (any consumer of this
    process; the patch is installed once)."""
    from aiokafka.consumer.fetcher import PartitionRecords

    _WATCHED.update(topics)
    if getattr(PartitionRecords, "_recstream_skips_unreadable", False):
        return
    original = PartitionRecords.__init__

    def __init__(self, tp, records, *args, **kwargs):
        original(self, tp, _Checked(records) if tp.topic in _WATCHED else records, *args, **kwargs)

    PartitionRecords.__init__ = __init__
    PartitionRecords._recstream_skips_unreadable = True


class _Checked:
    """aiokafka's MemoryRecords, each batch read whole (or replaced by its marker) when it is taken."""

    def __init__(self, records):
        self._records = records

    def has_next(self) -> bool:
        return self._records.has_next()

    def next_batch(self):
        batch = self._records.next_batch()
        if batch is None:
            return None
        try:
            if not batch.validate_crc():
                raise ValueError("its CRC does not match its bytes")
            records = list(batch)  # decompressed and parsed here, where a failure can be caught
            if batch.is_control_batch:
                from aiokafka.record.control_record import ControlRecord

                for record in records:
                    ControlRecord.parse(record.key)
        except Exception as exc:  # whatever the bytes are, the stream goes on past them
            return _Marker(batch, f"{type(exc).__name__}: {exc}"[:500])
        return _Read(batch, records)


class _Read:
    """A batch whose records were read: what PartitionRecords asks of a batch."""

    __slots__ = ("base_offset", "is_control_batch", "is_transactional", "next_offset", "producer_id", "_records")

    def __init__(self, batch, records: list):
        self.base_offset, self.next_offset, self.producer_id = batch.base_offset, batch.next_offset, batch.producer_id
        self.is_control_batch, self.is_transactional = batch.is_control_batch, batch.is_transactional
        self._records = iter(records)

    def validate_crc(self) -> bool:
        return True  # checked when it was read

    def __iter__(self):
        return self._records

    def __next__(self):
        return next(self._records)


class _Marker:
    """An unreadable batch as one record at its last offset (a data batch of no producer: nothing skips it)."""

    is_control_batch = is_transactional = False
    producer_id = None

    def __init__(self, batch, problem: str):
        self.base_offset = batch.base_offset
        self.next_offset = max(batch.next_offset, self.base_offset + 1)  # a lying header still moves on
        last = self.next_offset - 1
        self._record = _MarkerRecord(last, _timestamp(batch),
                                     f"offsets {self.base_offset}-{last} could not be read ({problem})")

    def validate_crc(self) -> bool:
        return True

    def __iter__(self):
        return iter((self._record,))


class _MarkerRecord:
    __slots__ = ("headers", "offset", "timestamp")
    key = value = checksum = None
    timestamp_type = 0

    def __init__(self, offset: int, timestamp: int, detail: str):
        self.offset, self.timestamp, self.headers = offset, timestamp, [(MARKER, detail.encode())]


def _timestamp(batch) -> int:
    try:
        stamp = batch.max_timestamp
    except Exception:  # a header past reading
        stamp = -1
    return stamp if isinstance(stamp, int) and stamp > 0 else int(time.time() * 1000)
