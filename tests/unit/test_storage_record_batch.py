"""RecordBatch v2 codec against an independent parser (kafka-python's DefaultRecordBatch and
DefaultRecordBatchBuilder), plus the leader's validation of bad input (DESIGN.md §4)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from strom.storage.batch_validation import split_batches, validate_batch, validate_batches
from strom.storage.errors import CorruptRecordError
from strom.storage.record_batch import (
    HEADER_SIZE,
    BatchBuilder,
    Compression,
    Record,
    assign_offset_and_epoch,
    encode_batch,
    parse_header,
)
from strom.storage.record_decode import decode_batch, decode_batches

TS = 1_700_000_000_000

header_st = st.tuples(st.text(min_size=0, max_size=8), st.one_of(st.none(), st.binary(max_size=16)))
record_st = st.builds(
    Record,
    key=st.one_of(st.none(), st.binary(max_size=40)),
    value=st.one_of(st.none(), st.binary(max_size=300)),
    headers=st.lists(header_st, max_size=3).map(tuple),
    timestamp_ms=st.integers(min_value=0, max_value=2**41),
)
records_st = st.lists(record_st, min_size=1, max_size=40)


def _kafka_records(data: bytes) -> list[tuple[object, ...]]:
    batch = DefaultRecordBatch(data)
    assert batch.validate_crc()
    return [(r.offset, r.timestamp, r.key, r.value, tuple(r.headers)) for r in batch]


def _expected(records: list[Record], base_offset: int = 0) -> list[tuple[object, ...]]:
    return [
        (base_offset + i, r.timestamp_ms, r.key, r.value, tuple(r.headers))
        for i, r in enumerate(records)
    ]


@settings(max_examples=60, deadline=None)
@given(records=records_st, compression=st.sampled_from([Compression.NONE, Compression.GZIP]))
def test_kafka_python_parses_what_strom_writes(records: list[Record], compression: int) -> None:
    data = encode_batch(
        records, compression=compression, producer_id=7, producer_epoch=1, base_sequence=5
    )
    batch = DefaultRecordBatch(data)
    assert batch.compression_type == compression
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (7, 1, 5)
    assert batch.max_timestamp == max(r.timestamp_ms for r in records)
    assert _kafka_records(data) == _expected(records)
    # and strom's own decoder and validator agree
    header, decoded = decode_batch(data)
    assert [(r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in decoded] == _expected(
        records
    )
    assert validate_batch(data) == header


@settings(max_examples=60, deadline=None)
@given(records=records_st, compression=st.sampled_from([Compression.NONE, Compression.GZIP]))
def test_builder_appending_one_record_at_a_time_equals_encode_batch(
    records: list[Record], compression: int
) -> None:
    builder = BatchBuilder()
    sizes = [builder.append(r.timestamp_ms, r.key, r.value, r.headers) for r in records]
    assert builder.count == len(records)
    assert builder.size_in_bytes == HEADER_SIZE + sum(sizes)
    built = builder.build(compression=compression, producer_id=7, producer_epoch=1, base_sequence=5)
    assert built == encode_batch(
        records, compression=compression, producer_id=7, producer_epoch=1, base_sequence=5
    )
    assert _kafka_records(built) == _expected(records)


def test_an_empty_builder_refuses_to_build() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        BatchBuilder().build()


@settings(max_examples=60, deadline=None)
@given(records=records_st, compression=st.sampled_from([0, 1]))
def test_strom_reads_what_kafka_python_builds(records: list[Record], compression: int) -> None:
    builder = DefaultRecordBatchBuilder(2, compression, False, -1, -1, -1, 2**30)
    for i, r in enumerate(records):
        builder.append(i, r.timestamp_ms, r.key, r.value, list(r.headers))
    data = bytes(builder.build())
    header = validate_batch(data)
    assert header.record_count == len(records)
    decoded = decode_batches(data)
    assert [(r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in decoded] == _expected(
        records
    )


@settings(max_examples=40, deadline=None)
@given(records=records_st, base=st.integers(0, 2**50), epoch=st.integers(0, 2**31 - 1))
def test_assigning_offset_and_epoch_keeps_the_batch_valid(
    records: list[Record], base: int, epoch: int
) -> None:
    buf = bytearray(encode_batch(records))
    assign_offset_and_epoch(buf, 0, base, epoch)
    kafka = DefaultRecordBatch(bytes(buf))
    assert kafka.validate_crc()
    assert (kafka.base_offset, kafka.leader_epoch) == (base, epoch)
    assert _kafka_records(bytes(buf)) == _expected(records, base)
    header = parse_header(buf)
    assert (header.base_offset, header.last_offset) == (base, base + len(records) - 1)


def test_header_view_fields() -> None:
    records = [Record(b"k", b"v", (), TS + 5), Record(None, b"w", (), TS)]
    data = encode_batch(
        records,
        compression=Compression.GZIP,
        producer_id=3,
        producer_epoch=2,
        base_sequence=9,
        is_transactional=True,
    )
    h = parse_header(data)
    assert h.magic == 2 and h.size_in_bytes == len(data) and h.record_count == 2
    assert (h.base_timestamp, h.max_timestamp, h.last_offset_delta) == (TS + 5, TS + 5, 1)
    assert h.compression == Compression.GZIP and h.is_transactional and not h.is_control
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (3, 2, 9)
    assert h.partition_leader_epoch == -1 and h.base_offset == 0


def test_large_values_and_deltas_use_multi_byte_varints() -> None:
    records = [
        Record(b"k" * 20000, b"v" * 70000, (("h" * 300, b"x" * 9000),), TS + i * 10**7)
        for i in range(3)
    ] + [Record(None, None, (), TS - 10**9)]
    records += [Record(None, b"", (), TS)] * 9000  # offset deltas beyond the varint table
    data = encode_batch(records)
    assert _kafka_records(data) == _expected(records)
    validate_batch(data)


def test_encode_refuses_empty_and_unsupported() -> None:
    with pytest.raises(ValueError):
        encode_batch([])
    with pytest.raises(ValueError):
        encode_batch([Record(None, b"v", (), TS)], compression=7)


# ---- bad input: refused with Kafka's error names --------------------------------------------


def _good() -> bytearray:
    return bytearray(encode_batch([Record(b"k%d" % i, b"value", (), TS + i) for i in range(5)]))


def _recrc(buf: bytearray) -> bytearray:
    import crc32c

    struct.pack_into(">I", buf, 17, crc32c.crc32c(bytes(buf[21:])))
    return buf


def _error(data: bytes | bytearray) -> CorruptRecordError:
    with pytest.raises(CorruptRecordError) as info:
        validate_batches(bytes(data))
    return info.value


def test_wrong_magic_is_corrupt_message() -> None:
    buf = _good()
    buf[16] = 1
    err = _error(buf)
    assert err.error_name == "CORRUPT_MESSAGE" and "magic" in str(err)


@pytest.mark.parametrize("delta", [-1, 1, 1000])
def test_wrong_batch_length_is_corrupt_message(delta: int) -> None:
    buf = _good()
    struct.pack_into(">i", buf, 8, struct.unpack_from(">i", buf, 8)[0] + delta)
    assert _error(buf).error_name == "CORRUPT_MESSAGE"


def test_truncated_bytes_are_corrupt_message() -> None:
    buf = _good()
    assert _error(buf[:-1]).error_name == "CORRUPT_MESSAGE"
    assert _error(buf[:30]).error_name == "CORRUPT_MESSAGE"
    assert _error(b"").error_name == "CORRUPT_MESSAGE"


def test_bad_crc_is_corrupt_message() -> None:
    buf = _good()
    buf[-1] ^= 0x01
    err = _error(buf)
    assert err.error_name == "CORRUPT_MESSAGE" and "CRC" in str(err) and err.retriable


def test_zero_records_is_refused() -> None:
    buf = _good()
    struct.pack_into(">i", buf, 57, 0)
    assert _error(_recrc(buf)).error_name == "INVALID_RECORD"


def test_last_offset_delta_disagreeing_with_count_is_refused() -> None:
    buf = _good()
    struct.pack_into(">i", buf, 23, 7)
    err = _error(_recrc(buf))
    assert err.error_name == "INVALID_RECORD" and "lastOffsetDelta" in str(err)
    assert not err.retriable


def test_record_count_larger_than_records_present_overruns() -> None:
    buf = _good()
    struct.pack_into(">i", buf, 57, 6)
    struct.pack_into(">i", buf, 23, 5)
    assert _error(_recrc(buf)).error_name == "CORRUPT_MESSAGE"


def test_record_length_overrunning_the_batch_is_refused() -> None:
    buf = _good()
    buf[HEADER_SIZE] = 0x7E  # first record claims 63 bytes, more than it has
    err = _error(_recrc(buf))
    assert err.error_name == "CORRUPT_MESSAGE" and "record 0" in str(err)


def test_wrong_inner_offset_delta_is_invalid_record() -> None:
    buf = _good()
    # record 0: length varint (1 byte), attributes, timestamp delta 0, then offset delta
    assert buf[HEADER_SIZE + 3] == 0
    buf[HEADER_SIZE + 3] = 2
    assert _error(_recrc(buf)).error_name == "INVALID_RECORD"


def test_max_timestamp_that_lies_is_invalid_timestamp() -> None:
    buf = _good()
    struct.pack_into(">q", buf, 35, TS + 100)
    assert _error(_recrc(buf)).error_name == "INVALID_TIMESTAMP"


def test_control_batches_from_clients_are_refused() -> None:
    buf = _good()
    buf[22] |= 0x20
    assert _error(_recrc(buf)).error_name == "INVALID_RECORD"


def test_out_of_range_producer_ids_are_refused() -> None:
    """Issue #15: accepted before; producer ids are -1 (none) or allocated from 0 up. (A
    transactional batch from a producer no coordinator registered is refused by the log:
    tests/unit/test_replica_transactions.py.)"""
    negative = encode_batch(
        [Record(None, b"v", (), TS)], producer_id=-5, producer_epoch=0, base_sequence=0
    )
    err = _error(negative)
    assert err.error_name == "INVALID_RECORD" and "producer id -5" in str(err)
    idempotent = encode_batch(
        [Record(None, b"v", (), TS)], producer_id=7, producer_epoch=0, base_sequence=0
    )
    validate_batches(idempotent)


def test_unsupported_compression_is_named() -> None:
    buf = _good()
    buf[22] |= 0x07  # no codec has this id
    assert _error(_recrc(buf)).error_name == "UNSUPPORTED_COMPRESSION_TYPE"


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_every_kafka_codec_round_trips(codec: int) -> None:
    records = [Record(b"k%d" % i, b"value %d " % i * 20, (("h", b"x"),), TS + i) for i in range(50)]
    data = encode_batch(records, compression=codec)
    assert len(data) < len(encode_batch(records))
    _, decoded = decode_batch(data, 0)
    assert [(r.key, r.value) for r in decoded] == [(r.key, r.value) for r in records]


def test_xerial_framed_snappy_as_java_clients_write_it_is_read() -> None:
    import cramjam

    plain = encode_batch([Record(None, b"v%d" % i, (), TS) for i in range(20)])
    body = plain[HEADER_SIZE:]
    half = len(body) // 2
    blocks = [bytes(cramjam.snappy.compress_raw(part)) for part in (body[:half], body[half:])]
    framed = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    framed += b"".join(struct.pack(">i", len(b)) + b for b in blocks)
    buf = bytearray(plain[:HEADER_SIZE] + framed)
    buf[22] |= 0x02
    struct.pack_into(">i", buf, 8, len(buf) - 12)
    _, decoded = decode_batch(bytes(_recrc(buf)), 0)
    assert [r.value for r in decoded] == [b"v%d" % i for i in range(20)]


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_a_bomb_is_message_too_large_and_the_bound_itself_is_fine(codec: int) -> None:
    from strom.storage.compression import DecompressionError, compress, decompress

    with pytest.raises(DecompressionError) as too_large:
        decompress(codec, compress(codec, bytes(4 << 20)), 1 << 16)
    assert too_large.value.too_large
    assert decompress(codec, compress(codec, bytes(1 << 16)), 1 << 16) == bytes(1 << 16)


def test_garbage_gzip_is_corrupt_message() -> None:
    buf = bytearray(encode_batch([Record(None, b"v" * 100, (), TS)], compression=1))
    buf[HEADER_SIZE + 12] ^= 0xFF
    assert _error(_recrc(buf)).error_name == "CORRUPT_MESSAGE"


def test_too_large_and_timestamp_window() -> None:
    data = bytes(_good())
    with pytest.raises(CorruptRecordError) as info:
        validate_batches(data, max_message_bytes=len(data) - 1)
    assert info.value.error_name == "MESSAGE_TOO_LARGE"
    validate_batches(data, max_message_bytes=len(data))
    with pytest.raises(CorruptRecordError) as info:
        validate_batches(data, now_ms=TS - 3_600_001, timestamp_after_max_ms=3_600_000)
    assert info.value.error_name == "INVALID_TIMESTAMP"
    with pytest.raises(CorruptRecordError) as info:
        validate_batches(data, now_ms=TS + 1000, timestamp_before_max_ms=999)
    assert info.value.error_name == "INVALID_TIMESTAMP"
    validate_batches(data, now_ms=TS, timestamp_before_max_ms=10, timestamp_after_max_ms=10)


def test_concatenated_batches_are_split_and_each_validated() -> None:
    a, b = bytes(_good()), encode_batch([Record(None, b"x", (), TS)], compression=1)
    assert [h.record_count for _, h in validate_batches(a + b)] == [5, 1]
    assert split_batches(a + b) == [(0, len(a)), (len(a), len(b))]
    bad = bytearray(b)
    bad[-1] ^= 1
    err = _error(a + bytes(bad))
    assert f"batch at byte {len(a)}" in str(err)
