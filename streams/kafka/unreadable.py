"""Record batches a consumer cannot read: skipped and reported, never raised.

A record batch whose CRC does not match, whose compressed payload does not decompress, or whose header
lies (a record count it does not hold, the control flag on data) raised out of aiokafka's `getmany` every
time it was fetched: the embedded broker stores batches as they were produced (Apache Kafka checks them on
produce), so one such batch from a buggy producer crash-looped the worker for good (an outside fuzz).

`skip_unreadable(topics)` patches aiokafka's fetcher for those topics: a fetch's bytes are framed batch by
batch (each batch's length prefix), each batch is read whole before its records are handed out (aiokafka's
`PartitionRecords` reads them lazily, where a failure escapes), and one that cannot be read becomes a
single marker record at the batch's last offset (key and value None, header MARKER: the batch's offsets and
what went wrong), which the reader dead-letters (`unreadable`); the records after it are read as usual, and
committing past the marker commits past the batch. Other topics (the changelogs) keep aiokafka's behaviour.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable

from streams.core.properties import Rejected

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


def unreadable_batch(record) -> Rejected | None:
    """The dead-letter reason of a marker record (`unreadable_batch`, the batch's offsets and error); None for
    any record a producer sent (the live worker and the rebuild dead-letter them alike)."""
    problem = unreadable(record)
    return None if problem is None else Rejected("unreadable_batch", problem)


def skip_unreadable(topics: Iterable[str]) -> None:
    """Read the batches of `topics` whole and replace an unreadable one by its marker (any consumer of this
    process; the patch is installed once)."""
    from aiokafka.consumer import fetcher

    _WATCHED.update(topics)
    if getattr(fetcher.PartitionRecords, "_recstream_skips_unreadable", False):
        return
    records_of, original = fetcher.MemoryRecords, fetcher.PartitionRecords.__init__

    def fetched(data):  # what a fetch response holds for one partition; the reader learns its topic below
        return _Fetched(data, records_of(data))

    def __init__(self, tp, records, *args, **kwargs):
        if isinstance(records, _Fetched):
            records = _Checked(records.data, records_of) if tp.topic in _WATCHED else records.records
        original(self, tp, records, *args, **kwargs)

    fetcher.MemoryRecords = fetched
    fetcher.PartitionRecords.__init__ = __init__
    fetcher.PartitionRecords._recstream_skips_unreadable = True


class _Fetched:
    """aiokafka's MemoryRecords and the bytes it reads (what the fetcher asks of it before the reader)."""

    __slots__ = ("data", "records")

    def __init__(self, data, records):
        self.data, self.records = data, records

    def has_next(self) -> bool:
        return self.records.has_next()

    def size_in_bytes(self) -> int:
        return self.records.size_in_bytes()


_FRAME = struct.Struct(">qi")  # every batch format starts with its (first or only) offset and its length
_LAST_OFFSET_DELTA = struct.Struct(">i")  # v2: at byte 23; the magic byte is byte 16


class _Checked:
    """A fetch's bytes, batch by batch as aiokafka's MemoryRecords frames them, each batch read whole when it
    is taken, or replaced by its marker. Framing by the length prefix alone, a batch that cannot be parsed
    still has known offsets and end; an incomplete batch at the end of a fetch (a fetch cuts at its byte
    limit) ends the records, as in MemoryRecords."""

    def __init__(self, data, records_of):
        self._data, self._records_of, self._pos = bytes(data), records_of, 0  # its C reader takes bytes only

    def has_next(self) -> bool:
        if len(self._data) - self._pos < _FRAME.size:
            return False
        return self._pos + _FRAME.size + _FRAME.unpack_from(self._data, self._pos)[1] <= len(self._data)

    def next_batch(self):
        if not self.has_next():
            return None
        first, length = _FRAME.unpack_from(self._data, self._pos)
        frame = self._data[self._pos:self._pos + _FRAME.size + max(length, 0)]
        self._pos += _FRAME.size + max(length, 0)
        try:
            batch = self._records_of(frame).next_batch()
            if not batch.validate_crc():
                raise ValueError("its CRC does not match its bytes")
            records = list(batch)  # decompressed and parsed here, where a failure can be caught
            if batch.is_control_batch:
                from aiokafka.record.control_record import ControlRecord

                for record in records:
                    ControlRecord.parse(record.key)
            return _Read(batch, records)
        except Exception as exc:  # whatever the bytes are, the stream goes on past them
            return _Marker(first, self._last_offset(first, frame), f"{type(exc).__name__}: {exc}"[:500])

    def _last_offset(self, first: int, frame) -> int:
        """A v2 batch's last offset from its header, never past the next batch's first (the header may lie);
        a v0/v1 message set's only offset."""
        if len(frame) < 27 or frame[16] < 2:
            return first
        last = first + max(_LAST_OFFSET_DELTA.unpack_from(frame, 23)[0], 0)
        if self.has_next():
            last = min(last, max(_FRAME.unpack_from(self._data, self._pos)[0] - 1, first))
        return last


class _Read:
    """A batch whose records were read: what PartitionRecords asks of a batch."""

    __slots__ = ("base_offset", "is_control_batch", "is_transactional", "next_offset", "producer_id", "_records")

    def __init__(self, batch, records: list):
        # a v0/v1 batch (an old producer's message set) has no base offset: only read for a producer's batches
        self.base_offset, self.next_offset = getattr(batch, "base_offset", None), batch.next_offset
        self.producer_id = batch.producer_id
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

    def __init__(self, first: int, last: int, problem: str):
        self.base_offset, self.next_offset = first, last + 1
        self._record = _MarkerRecord(last, int(time.time() * 1000),
                                     f"offsets {first}-{last} could not be read ({problem})")

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
