"""The consumer's one-loop decoder agrees with the reference decoder, checks CRCs and framing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strom.storage.errors import CorruptRecordError
from strom.storage.record_batch import (
    CRC_OFFSET,
    HEADER_SIZE,
    Compression,
    Record,
    assign_offset_and_epoch,
    encode_batch,
)
from strom.storage.record_decode import decode_batch, decode_batch_as

header_st = st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=16)))
record_st = st.builds(
    Record,
    key=st.one_of(st.none(), st.binary(max_size=40)),
    # up to 20000 bytes: lengths past the two-byte varint take the slow path
    value=st.one_of(st.none(), st.binary(max_size=300), st.binary(min_size=8200, max_size=20000)),
    headers=st.lists(header_st, max_size=3).map(tuple),
    timestamp_ms=st.integers(min_value=0, max_value=2**41),
)


class Row(tuple):  # type: ignore[type-arg]
    """Any tuple type will do: the consumer passes ConsumerRecord."""


# Up to 30 records with keys, values and headers can exceed hypothesis' default data budget for
# some seeds ("data too large" health check): the size is the point of the test, not a problem.
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(
    records=st.lists(record_st, min_size=1, max_size=30),
    compression=st.sampled_from([Compression.NONE, Compression.GZIP]),
    base=st.integers(0, 2**40),
    skip=st.integers(0, 35),
    prefix=st.binary(max_size=5),
)
def test_agrees_with_the_reference_decoder(
    records: list[Record], compression: int, base: int, skip: int, prefix: bytes
) -> None:
    batch = bytearray(encode_batch(records, compression=compression))
    assign_offset_and_epoch(batch, 0, base, 3)
    data = prefix + bytes(batch) + b"trailing"
    header, fast = decode_batch_as(data, len(prefix), Row, "t", 7, min_offset=base + skip)
    assert all(type(row) is Row for row in fast)
    reference_header, reference = decode_batch(data, len(prefix))
    assert header == reference_header
    assert fast == [
        ("t", 7, r.offset, r.timestamp_ms, r.key, r.value, r.headers)
        for r in reference
        if r.offset >= base + skip
    ]


def test_a_flipped_bit_fails_the_crc() -> None:
    data = bytearray(encode_batch([Record(b"k", b"value", (), 5)]))
    data[-2] ^= 0x10
    with pytest.raises(CorruptRecordError, match="CRC"):
        decode_batch_as(bytes(data), 0, Row, "t", 0)


def _with_crc_fixed(data: bytearray) -> bytes:
    import crc32c

    struct.pack_into(">I", data, CRC_OFFSET, crc32c.crc32c(bytes(data[21:])))
    return bytes(data)


def test_a_record_length_that_lies_is_corrupt_even_with_a_valid_crc() -> None:
    data = bytearray(encode_batch([Record(None, b"abc", (), 5), Record(None, b"de", (), 5)]))
    data[HEADER_SIZE] += 2  # the first record claims one more byte (zigzag: +2)
    with pytest.raises(CorruptRecordError):
        decode_batch_as(_with_crc_fixed(data), 0, Row, "t", 0)


def test_truncated_records_are_corrupt() -> None:
    data = bytearray(encode_batch([Record(None, b"abc" * 10, (), 5)]))
    del data[-5:]
    struct.pack_into(">i", data, 8, len(data) - 12)  # batchLength matches what is left
    with pytest.raises(CorruptRecordError):
        decode_batch_as(_with_crc_fixed(data), 0, Row, "t", 0)
