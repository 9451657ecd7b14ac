"""Decoding records out of RecordBatch v2 bytes, for clients and tests.

The broker never calls this on its hot path (it validates framing in `batch_validation` and
serves bytes). Consumers do: `decode_batches` turns the bytes of a fetch into records with their
absolute offsets and timestamps. Format: see `record_batch`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import crc32c

from .batch_validation import (
    DECOMPRESSED_BYTES_MAX,
    _uvarint_slow,
    decompress_records,
    split_batches,
)
from .compiled_codec import codec
from .errors import CorruptRecordError
from .record_batch import (
    ATTRIBUTES_OFFSET,
    HEADER_SIZE,
    TIMESTAMP_TYPE_MASK,
    BatchHeader,
    parse_header,
)

_T = TypeVar("_T", bound=tuple)  # type: ignore[type-arg]


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    raw, pos = (b, pos + 1) if b < 0x80 else _uvarint_slow(data, pos)
    return (raw >> 1) ^ -(raw & 1), pos


def _nullable(data: bytes, pos: int) -> tuple[bytes | None, int]:
    size, pos = _varint(data, pos)
    if size < 0:
        return None, pos
    if pos + size > len(data):
        raise CorruptRecordError("a key, value or header runs past the end of its batch")
    return data[pos : pos + size], pos + size


def _decode_one(
    data: bytes, pos: int, header: BatchHeader, log_append_time: bool
) -> tuple[DecodedRecord, int]:
    length, pos = _varint(data, pos)
    end = pos + length
    pos += 1  # attributes
    ts_delta, pos = _varint(data, pos)
    offset_delta, pos = _varint(data, pos)
    key, pos = _nullable(data, pos)
    value, pos = _nullable(data, pos)
    count, pos = _varint(data, pos)
    if count < 0:
        raise CorruptRecordError(f"a record has {count} headers")
    headers = []
    for _ in range(count):
        raw_key, pos = _nullable(data, pos)
        if raw_key is None:
            raise CorruptRecordError("a header key is null")
        h_value, pos = _nullable(data, pos)
        headers.append((raw_key.decode("utf-8"), h_value))
    if pos != end:
        raise CorruptRecordError(f"a record's length says {length} but its fields differ")
    timestamp = header.max_timestamp if log_append_time else header.base_timestamp + ts_delta
    record = DecodedRecord(header.base_offset + offset_delta, timestamp, key, value, tuple(headers))
    return record, pos


def decode_batch(
    data: bytes | bytearray | memoryview, position: int = 0
) -> tuple[BatchHeader, list[DecodedRecord]]:
    """The header and records of the whole batch at `position`. Does not check the CRC
    (use `validate_batch` for that)."""
    header = parse_header(data, position)
    end = position + header.size_in_bytes
    if end > len(data):
        raise CorruptRecordError(f"batch at byte {position} runs past the end of the buffer")
    records_bytes = decompress_records(header, memoryview(data)[position + HEADER_SIZE : end])
    log_append_time = bool(header.attributes & TIMESTAMP_TYPE_MASK)
    records = []
    pos = 0
    try:
        for _ in range(header.record_count):
            record, pos = _decode_one(records_bytes, pos, header, log_append_time)
            records.append(record)
    except IndexError:
        raise CorruptRecordError(f"batch at byte {position}: records are truncated") from None
    if pos != len(records_bytes):
        raise CorruptRecordError(f"batch at byte {position}: bytes left over after the records")
    return header, records


def decode_batches(data: bytes | bytearray | memoryview) -> list[DecodedRecord]:
    """Every record of a buffer of concatenated whole batches, in offset order."""
    records: list[DecodedRecord] = []
    for pos, _ in split_batches(data):
        records.extend(decode_batch(data, pos)[1])
    return records


def decode_batch_as(
    data: bytes,
    position: int,
    record_type: type[_T],
    topic: str,
    partition: int,
    min_offset: int = 0,
    check_crc: bool = True,
    decompressed_bytes_max: int = DECOMPRESSED_BYTES_MAX,
) -> tuple[BatchHeader, list[_T]]:
    """The records of the batch at `position` from offset `min_offset` on, as `record_type`
    tuples of (topic, partition, offset, timestamp_ms, key, value, headers): the consumer's hot
    path.

    Same format and checks as `decode_batch` (plus the CRC, as Kafka's consumer's check.crcs).
    The per-record loop (`decode_records`) is compiled when storage/_codec.c is built; its
    pure-Python reference is written as one loop with one- and two-byte varints inline,
    building each record with one `tuple.__new__` (no NamedTuple constructor, no intermediate
    object), because it runs once per record an application consumes. A compressed batch that
    would inflate past `decompressed_bytes_max` is refused (MESSAGE_TOO_LARGE) as it inflates.
    """
    header = parse_header(data, position)
    end = position + header.size_in_bytes
    if end > len(data):
        raise CorruptRecordError(f"batch at byte {position} runs past the end of the buffer")
    if (
        check_crc
        and crc32c.crc32c(memoryview(data)[position + ATTRIBUTES_OFFSET : end]) != header.crc
    ):
        raise CorruptRecordError(f"batch at offset {header.base_offset}: CRC mismatch")
    if header.compression == 0:
        buf: bytes = data
        pos = position + HEADER_SIZE
        stop = end
    else:
        buf = decompress_records(
            header, memoryview(data)[position + HEADER_SIZE : end], decompressed_bytes_max
        )
        pos = 0
        stop = len(buf)
    return header, decode_records(buf, pos, stop, header, record_type, topic, partition, min_offset)


def _decode_records_py(
    buf: bytes,
    pos: int,
    stop: int,
    header: BatchHeader,
    record_type: type[_T],
    topic: str,
    partition: int,
    min_offset: int,
) -> list[_T]:
    """The records of buf[pos:stop], the uncompressed records of the batch `header` describes,
    from offset `min_offset` on. The reference for the compiled loop (`decode_records`), and
    what runs without it."""
    base_offset = header.base_offset
    base_ts = header.base_timestamp
    log_append_time = bool(header.attributes & TIMESTAMP_TYPE_MASK)
    slow = _uvarint_slow
    out: list[_T] = []
    append = out.append
    new = tuple.__new__
    try:
        for _ in range(header.record_count):
            b = buf[pos]
            if b < 0x80:
                raw = b
                pos += 1
            elif buf[pos + 1] < 0x80:
                raw = (b & 0x7F) | (buf[pos + 1] << 7)
                pos += 2
            else:
                raw, pos = slow(buf, pos)
            record_end = pos + ((raw >> 1) ^ -(raw & 1))
            b = buf[pos + 1]  # after the attributes byte: the timestamp delta
            if b < 0x80:
                ts_delta = (b >> 1) ^ -(b & 1)
                pos += 2
            else:
                raw, pos = slow(buf, pos + 1)
                ts_delta = (raw >> 1) ^ -(raw & 1)
            b = buf[pos]
            if b < 0x80:
                offset = base_offset + ((b >> 1) ^ -(b & 1))
                pos += 1
            else:
                raw, pos = slow(buf, pos)
                offset = base_offset + ((raw >> 1) ^ -(raw & 1))
            # key, then value: zigzag length, -1 (raw 1) is null
            b = buf[pos]
            if b < 0x80:
                pos += 1
                size = (b >> 1) ^ -(b & 1)
            elif buf[pos + 1] < 0x80:
                raw = (b & 0x7F) | (buf[pos + 1] << 7)
                pos += 2
                size = (raw >> 1) ^ -(raw & 1)
            else:
                raw, pos = slow(buf, pos)
                size = (raw >> 1) ^ -(raw & 1)
            if size < 0:
                key = None
            else:
                key = buf[pos : pos + size]
                pos += size
            b = buf[pos]
            if b < 0x80:
                pos += 1
                size = (b >> 1) ^ -(b & 1)
            elif buf[pos + 1] < 0x80:
                raw = (b & 0x7F) | (buf[pos + 1] << 7)
                pos += 2
                size = (raw >> 1) ^ -(raw & 1)
            else:
                raw, pos = slow(buf, pos)
                size = (raw >> 1) ^ -(raw & 1)
            if size < 0:
                value = None
            else:
                value = buf[pos : pos + size]
                pos += size
            if buf[pos] == 0:
                headers: tuple[tuple[str, bytes | None], ...] = ()
                pos += 1
            else:
                headers, pos = _headers(buf, pos)
            if pos != record_end or pos > stop:
                raise CorruptRecordError(
                    f"batch at offset {base_offset}: a record's length disagrees with its fields"
                )
            if offset >= min_offset:
                timestamp = header.max_timestamp if log_append_time else base_ts + ts_delta
                append(new(record_type, (topic, partition, offset, timestamp, key, value, headers)))
    except IndexError:
        raise CorruptRecordError(f"batch at offset {base_offset}: records are truncated") from None
    if pos != stop:
        raise CorruptRecordError(f"batch at offset {base_offset}: bytes left over after records")
    return out


def _decode_records_compiled(
    buf: bytes,
    pos: int,
    stop: int,
    header: BatchHeader,
    record_type: type[_T],
    topic: str,
    partition: int,
    min_offset: int,
) -> list[_T]:
    assert codec is not None
    records: list[_T] | None = codec.decode_records(
        buf, pos, stop, header, record_type, topic, partition, min_offset
    )
    if records is None:  # the kernel declined: the reference decodes, or raises
        records = _decode_records_py(
            buf, pos, stop, header, record_type, topic, partition, min_offset
        )
    return records


decode_records = _decode_records_py if codec is None else _decode_records_compiled


def _headers(buf: bytes, pos: int) -> tuple[tuple[tuple[str, bytes | None], ...], int]:
    count, pos = _varint(buf, pos)
    if count < 0:
        raise CorruptRecordError(f"a record has {count} headers")
    headers = []
    for _ in range(count):
        raw_key, pos = _nullable(buf, pos)
        if raw_key is None:
            raise CorruptRecordError("a header key is null")
        h_value, pos = _nullable(buf, pos)
        headers.append((raw_key.decode("utf-8"), h_value))
    return tuple(headers), pos
