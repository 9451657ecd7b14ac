"""Decoding records out of RecordBatch v2 bytes, for clients and tests.

The broker never calls this on its hot path (it validates framing in `batch_validation` and
serves bytes). Consumers do: `decode_batches` turns the bytes of a fetch into records with their
absolute offsets and timestamps. Format: see `record_batch`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .batch_validation import _uvarint_slow, decompress_records, split_batches
from .errors import CorruptRecordError
from .record_batch import HEADER_SIZE, TIMESTAMP_TYPE_MASK, BatchHeader, parse_header


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
