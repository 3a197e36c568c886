"""Record batches no consumer can read (streams.kafka.unreadable), on aiokafka's own record reader: one
such batch raised out of every fetch of its partition and crash-looped the worker (an outside fuzz)."""

from __future__ import annotations

import struct

import pytest
from aiokafka.consumer import fetcher
from aiokafka.consumer.fetcher import READ_COMMITTED
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition

from streams.kafka.unreadable import skip_unreadable, unreadable

ATTRIBUTES, CRC, LAST_OFFSET_DELTA, COUNT = 21, 17, 23, 57  # byte offsets in a v2 record batch's header


def batch(base: int, values: list[bytes], spoil: str = "", codec: int = 0) -> bytes:
    """A v2 batch at offset `base`, compressed with `codec`, spoiled as a buggy producer would."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=0, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i, value in enumerate(values):
        builder.append(i, timestamp=1_767_225_600_000 + i, key=b"k", value=value, headers=[])
    buf = bytearray(builder.build())
    struct.pack_into(">q", buf, 0, base)
    attributes = struct.unpack_from(">h", buf, ATTRIBUTES)[0]
    if spoil == "lz4_flag_on_plain_bytes":
        struct.pack_into(">h", buf, ATTRIBUTES, (attributes & ~0x07) | 3)
    elif spoil == "control_flag_on_data":
        struct.pack_into(">h", buf, ATTRIBUTES, attributes | 0x20)
    elif spoil.startswith("record_count_lies"):
        struct.pack_into(">i", buf, COUNT, len(values) + 4)
        if spoil.endswith("and_its_last_offset"):
            struct.pack_into(">i", buf, LAST_OFFSET_DELTA, 1_000_000)
    elif spoil == "truncated_gzip":
        buf = buf[:-8]
        struct.pack_into(">i", buf, 8, len(buf) - 12)  # the batch length field: the batch ends where it was cut
    if spoil != "bad_crc":
        struct.pack_into(">I", buf, CRC, calc_crc32c(bytes(buf[ATTRIBUTES:])))
    else:
        buf[-3] ^= 0xFF  # a value byte changed after the CRC was computed
    return bytes(buf)


def read(topic: str, data: bytes, position: int = 0) -> list:
    """The records of one partition's fetched bytes, as aiokafka's fetcher reads them (the name it calls)."""
    records = fetcher.PartitionRecords(TopicPartition(topic, 0), fetcher.MemoryRecords(data), [], position, None,
                                       None, True, READ_COMMITTED)
    return list(records)


SPOILED = {"bad_crc": 0, "lz4_flag_on_plain_bytes": 0, "control_flag_on_data": 0, "record_count_lies": 0,
           "record_count_lies_and_its_last_offset": 0, "truncated_gzip": 1}  # (spoiled as, codec)


@pytest.mark.parametrize("spoil", sorted(SPOILED))
def test_an_unreadable_batch_is_one_marker_at_its_last_offset_and_the_batches_around_it_are_read(spoil):
    data = batch(0, [b"a", b"b"]) + batch(2, [b"c", b"d", b"e"], spoil, codec=SPOILED[spoil]) + batch(5, [b"f"])
    with pytest.raises(Exception):  # noqa: B017 (aiokafka raises whatever the bytes make it: struct.error, ...)
        read("not-watched", data)
    skip_unreadable(["watched"])
    records = read("watched", data)
    assert [(r.offset, r.value) for r in records] == [(0, b"a"), (1, b"b"), (4, None), (5, b"f")]
    detail = unreadable(records[2])
    assert detail is not None and detail.startswith("offsets 2-4 could not be read ("), detail
    assert records[2].key is None and records[2].timestamp > 0
    assert [unreadable(r) for r in records if r is not records[2]] == [None, None, None]


def test_a_marker_past_the_position_the_fetch_started_at_is_still_handed_out():
    skip_unreadable(["watched"])
    data = batch(10, [b"a", b"b", b"c"], "bad_crc") + batch(13, [b"d"])
    assert [(r.offset, r.value) for r in read("watched", data, position=11)] == [(12, None), (13, b"d")]


def test_a_tombstone_a_producer_sent_is_no_marker():
    skip_unreadable(["watched"])
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    builder.append(0, timestamp=1, key=None, value=None, headers=[("recstream-unreadable-batch", b"forged")])
    builder.append(1, timestamp=1, key=b"k", value=None, headers=[])
    records = read("watched", bytes(builder.build()))
    assert [r.offset for r in records] == [0, 1] and unreadable(records[1]) is None
    assert unreadable(records[0]) == "forged"  # keyless and valueless: dead-lettered either way, by its own reason


def legacy(offset: int, value: bytes, codec: int = 0, spoil: bool = False) -> bytes:
    """A v1 message set of one message (an old producer's), at `offset`."""
    from aiokafka.record.legacy_records import LegacyRecordBatchBuilder

    builder = LegacyRecordBatchBuilder(magic=1, compression_type=codec, batch_size=1 << 20)
    builder.append(0, timestamp=1_767_225_600_000, key=b"k", value=value)
    buf = bytearray(builder.build())
    struct.pack_into(">q", buf, 0, offset)
    if spoil:
        buf[-2] ^= 0xFF  # its CRC no longer matches
    return bytes(buf)


def test_an_old_producers_message_sets_are_read_and_a_spoiled_one_is_a_marker():
    skip_unreadable(["watched"])
    records = read("watched", legacy(0, b"a") + legacy(1, b"b", spoil=True) + legacy(2, b"c", codec=1))
    assert [(r.offset, r.value) for r in records] == [(0, b"a"), (1, None), (2, b"c")]
    assert unreadable(records[1]).startswith("offsets 1-1 could not be read (")
