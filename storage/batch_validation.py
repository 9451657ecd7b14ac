"""Validation of record batches arriving at a leader, in one linear pass (DESIGN.md §4).

`validate_batches` is what a leader runs on a produce request before anything touches disk, in
the spirit of Kafka's LogValidator:

1. Bounds: the bytes are a sequence of whole batches; each `batchLength` fits; the last batch
   ends exactly at the end of the bytes received; each batch is at most `max.message.bytes`.
2. Header invariants: magic 2, recordCount ≥ 1, lastOffsetDelta = recordCount − 1, a producer id
   is −1 or ≥ 0 and comes with a sequence, no control batches from clients, no transactional
   batches (there is no transaction coordinator), sane timestamps.
3. CRC-32C over attributes..end.
4. Record framing: one pass over the records (decompressed first when compressed) reading only
   lengths, offset deltas and timestamp deltas: every record's length covers exactly its fields,
   offset deltas run 0..n-1, record timestamps are ≤ maxTimestamp and maxTimestamp is reached,
   and no bytes are left over. No record objects are built. This pass runs in C when
   storage/_codec.c is built (`check_record_framing`); `check_record_framing_py` is its
   reference and fallback.

Any failure raises `CorruptRecordError` with Kafka's error name: CORRUPT_MESSAGE for bytes that
cannot be parsed or fail the CRC, INVALID_RECORD for well-formed but inconsistent batches,
MESSAGE_TOO_LARGE, INVALID_TIMESTAMP and UNSUPPORTED_COMPRESSION_TYPE where Kafka uses them.
"""

from __future__ import annotations

import crc32c

from .compiled_codec import codec
from .compression import DecompressionError, decompress
from .errors import CorruptRecordError
from .record_batch import (
    ATTRIBUTES_OFFSET,
    CONTROL_MASK,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    MAGIC_OFFSET,
    NO_PRODUCER_ID,
    NO_TIMESTAMP,
    PREFIX,
    TIMESTAMP_TYPE_MASK,
    BatchHeader,
    Compression,
    parse_header,
)

# A decompressed batch larger than this is refused: a gzip bomb must not exhaust memory. Readers
# of data already accepted (the cleaner, the offsets loader) use this; a leader validating a
# produce uses the topic's max.message.bytes, and a consumer its own bound.
DECOMPRESSED_BYTES_MAX = 256 * 1024 * 1024
INT64_MAX = 2**63 - 1

Buffer = bytes | bytearray | memoryview


def decompress_records(
    header: BatchHeader, payload: Buffer, decompressed_bytes_max: int = DECOMPRESSED_BYTES_MAX
) -> bytes:
    """The uncompressed records section of a batch whose records section is `payload`.

    Inflates incrementally and stops at `decompressed_bytes_max` (MESSAGE_TOO_LARGE): a gzip
    bomb costs at most that much memory, however far it would inflate."""
    codec = header.compression
    if codec not in Compression.SUPPORTED:
        raise CorruptRecordError(
            f"compression {Compression.NAMES.get(codec, codec)!r} is not supported",
            "UNSUPPORTED_COMPRESSION_TYPE",
        )
    try:
        return decompress(codec, payload, decompressed_bytes_max)
    except DecompressionError as err:
        raise CorruptRecordError(
            str(err), "MESSAGE_TOO_LARGE" if err.too_large else "CORRUPT_MESSAGE"
        ) from err


def _uvarint_slow(data: Buffer, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint of up to 10 bytes and 64 bits whose first byte is ≥ 0x80."""
    value = 0
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if value >> 64:
                raise CorruptRecordError(f"varint wider than 64 bits at record byte {pos}")
            return value, pos
        shift += 7
        if shift > 63:
            raise CorruptRecordError(f"varint longer than 10 bytes at record byte {pos}")


def check_record_framing_py(
    data: Buffer, header: BatchHeader, start: int = 0, end: int | None = None
) -> int:
    """Walk the uncompressed records once: lengths, offset deltas, timestamps. No objects.

    Returns the smallest record timestamp (records may be older than the first one). The
    reference for the compiled walk (`check_record_framing`), and what runs without it. The
    loop is written out by hand (one- and two-byte varints inline) because it runs once per
    record of every produced batch.
    """
    count = header.record_count
    base_ts = header.base_timestamp
    end = len(data) if end is None else end
    pos = start
    max_seen = NO_TIMESTAMP
    min_seen = 2**63 - 1
    slow = _uvarint_slow
    try:
        for index in range(count):
            b = data[pos]
            if b < 0x80:
                length = b >> 1 if not b & 1 else -((b + 1) >> 1)
                pos += 1
            elif data[pos + 1] < 0x80:
                raw = (b & 0x7F) | (data[pos + 1] << 7)
                length = (raw >> 1) ^ -(raw & 1)
                pos += 2
            else:
                raw, pos = slow(data, pos)
                length = (raw >> 1) ^ -(raw & 1)
            record_end = pos + length
            if length < 6 or record_end > end:
                raise CorruptRecordError(
                    f"record {index} claims {length} bytes; {end - pos} remain in the batch"
                )
            # Attributes (1 byte, unused in v2), then the timestamp delta.
            b = data[pos + 1]
            if b < 0x80:
                ts = base_ts + ((b >> 1) ^ -(b & 1))
                pos += 2
            elif data[pos + 2] < 0x80:
                raw = (b & 0x7F) | (data[pos + 2] << 7)
                ts = base_ts + ((raw >> 1) ^ -(raw & 1))
                pos += 3
            else:
                raw, pos = slow(data, pos + 1)
                ts = base_ts + ((raw >> 1) ^ -(raw & 1))
            if ts > max_seen:
                max_seen = ts
            if ts < min_seen:
                min_seen = ts
            b = data[pos]
            if b < 0x80:
                raw = b
                pos += 1
            elif data[pos + 1] < 0x80:
                raw = (b & 0x7F) | (data[pos + 1] << 7)
                pos += 2
            else:
                raw, pos = slow(data, pos)
            if raw != index << 1:  # the zigzag of a non-negative index is twice the index
                raise CorruptRecordError(
                    f"record {index} has offset delta {(raw >> 1) ^ -(raw & 1)}; "
                    "deltas must run 0..n-1",
                    "INVALID_RECORD",
                )
            for _ in (0, 1):  # key, then value; length -1 is null
                b = data[pos]
                if b < 0x80:
                    pos += 1
                    if b > 1:
                        pos += b >> 1 if not b & 1 else 1 << 62
                elif data[pos + 1] < 0x80:
                    raw = (b & 0x7F) | (data[pos + 1] << 7)
                    pos += 2 + (raw >> 1 if not raw & 1 else 0 if raw == 1 else 1 << 62)
                else:
                    raw, pos = slow(data, pos)
                    size = (raw >> 1) ^ -(raw & 1)
                    pos += size if size > 0 else 0 if size == -1 else 1 << 62
            if data[pos] == 0:
                pos += 1
            else:
                pos = _skip_headers(data, pos, index)
            if pos != record_end:
                raise CorruptRecordError(
                    f"record {index}: its length says {length} bytes but its fields disagree"
                )
    except IndexError:
        raise CorruptRecordError(
            f"record framing runs past the end of the batch ({end - start} bytes)"
        ) from None
    if pos != end:
        raise CorruptRecordError(f"{end - pos} bytes left over after {count} records")
    if max_seen > INT64_MAX or min_seen < -INT64_MAX - 1:
        raise CorruptRecordError(
            f"record timestamps [{min_seen}, {max_seen}] do not fit a signed 64-bit integer",
            "INVALID_TIMESTAMP",
        )
    if not header.attributes & TIMESTAMP_TYPE_MASK and max_seen != header.max_timestamp:
        raise CorruptRecordError(
            f"maxTimestamp {header.max_timestamp} differs from the records' largest "
            f"timestamp {max_seen}",
            "INVALID_TIMESTAMP",
        )
    return min_seen


def _check_record_framing_compiled(
    data: Buffer, header: BatchHeader, start: int = 0, end: int | None = None
) -> int:
    assert codec is not None
    min_ts: int | None = codec.check_record_framing(data, header, start, end)
    if min_ts is None:  # the kernel declined: the reference decides, and raises
        min_ts = check_record_framing_py(data, header, start, end)
    return min_ts


# The framing walk the leader runs: check_record_framing(data, header, start, end) returns the
# smallest record timestamp of the uncompressed records of the batch `header` describes, in
# data[start:end], or raises CorruptRecordError. Compiled when storage/_codec.c is built.
check_record_framing = check_record_framing_py if codec is None else _check_record_framing_compiled


def _skip_headers(data: Buffer, pos: int, index: int) -> int:
    """Skip a record's header count and headers; a negative length sends `pos` out of range,
    which the caller reports as a framing error."""
    raw, pos = _uvarint_slow(data, pos) if data[pos] >= 0x80 else (data[pos], pos + 1)
    header_count = (raw >> 1) ^ -(raw & 1)
    if header_count < 0:
        raise CorruptRecordError(f"record {index} has {header_count} headers")
    for _ in range(header_count):
        for nullable in (False, True):
            raw, pos = _uvarint_slow(data, pos) if data[pos] >= 0x80 else (data[pos], pos + 1)
            size = (raw >> 1) ^ -(raw & 1)
            if size > 0:
                pos += size
            elif size < (-1 if nullable else 0):
                raise CorruptRecordError(f"record {index} has a header field of length {size}")
    return pos


def _check_header(header: BatchHeader, where: str) -> None:
    if header.record_count < 1:
        raise CorruptRecordError(
            f"{where}: recordCount is {header.record_count}; a batch holds at least one record",
            "INVALID_RECORD",
        )
    if header.last_offset_delta != header.record_count - 1:
        raise CorruptRecordError(
            f"{where}: lastOffsetDelta {header.last_offset_delta} disagrees with recordCount "
            f"{header.record_count}",
            "INVALID_RECORD",
        )
    if header.attributes & CONTROL_MASK:
        raise CorruptRecordError(
            f"{where}: clients may not write control batches", "INVALID_RECORD"
        )
    # A transactional batch is well formed; whether its producer may write one (the
    # transaction coordinator registered it) is the log's decision: INVALID_TXN_STATE there.
    if header.producer_id < NO_PRODUCER_ID:
        raise CorruptRecordError(
            f"{where}: producer id {header.producer_id} is out of range (ids are >= 0, or -1 "
            "for none)",
            "INVALID_RECORD",
        )
    if header.producer_id != NO_PRODUCER_ID and header.base_sequence < 0:
        raise CorruptRecordError(
            f"{where}: producer id {header.producer_id} with invalid sequence "
            f"{header.base_sequence}",
            "INVALID_RECORD",
        )
    base_ts, max_ts = header.base_timestamp, header.max_timestamp
    if base_ts < NO_TIMESTAMP or max_ts < base_ts:
        raise CorruptRecordError(
            f"{where}: timestamps are not sane (base {base_ts}, max {max_ts})",
            "INVALID_TIMESTAMP",
        )


def validate_batch(
    data: bytes,
    position: int = 0,
    end: int | None = None,
    *,
    max_message_bytes: int | None = None,
    now_ms: int | None = None,
    timestamp_before_max_ms: int = 2**63 - 1,
    timestamp_after_max_ms: int = 2**63 - 1,
) -> BatchHeader:
    """Validate the batch at `position` that must end exactly at `end` (default: len(data)).

    Returns its header. Raises `CorruptRecordError` (nothing is written by the caller then).
    """
    end = len(data) if end is None else end
    where = f"batch at byte {position}"
    available = end - position
    if available < HEADER_SIZE:
        raise CorruptRecordError(
            f"{where}: {available} bytes received; a batch header alone is {HEADER_SIZE}"
        )
    magic = data[position + MAGIC_OFFSET]
    if magic != MAGIC:
        raise CorruptRecordError(f"{where}: magic is {magic}; only RecordBatch v2 is accepted")
    header = parse_header(data, position)
    size = header.batch_length + LOG_OVERHEAD
    if size != available:
        raise CorruptRecordError(
            f"{where}: batchLength says {size} bytes in all but {available} were received"
        )
    if max_message_bytes is not None and size > max_message_bytes:
        raise CorruptRecordError(
            f"{where}: {size} bytes exceed max.message.bytes={max_message_bytes}",
            "MESSAGE_TOO_LARGE",
        )
    _check_header(header, where)
    with memoryview(data) as view:
        crc = crc32c.crc32c(view[position + ATTRIBUTES_OFFSET : end])
        if crc != header.crc:
            raise CorruptRecordError(
                f"{where}: CRC-32C is {crc:#010x} but the batch says {header.crc:#010x}"
            )
        if header.compression == Compression.NONE:
            records, start, stop = data, position + HEADER_SIZE, end
        else:
            # The uncompressed records are bounded by max.message.bytes too (#15): a small
            # compressed batch must not inflate the leader's memory without limit.
            bound = DECOMPRESSED_BYTES_MAX if max_message_bytes is None else max_message_bytes
            try:
                records = decompress_records(header, view[position + HEADER_SIZE : end], bound)
            except CorruptRecordError as err:
                hint = ""
                if err.error_name == "MESSAGE_TOO_LARGE" and max_message_bytes is not None:
                    hint = " (max.message.bytes bounds the uncompressed records too)"
                raise CorruptRecordError(f"{where}: {err.detail}{hint}", err.error_name) from None
            start, stop = 0, len(records)
    try:
        min_ts = check_record_framing(records, header, start, stop)
    except CorruptRecordError as err:
        raise CorruptRecordError(f"{where}: {err.detail}", err.error_name) from None
    _check_timestamps(
        header, min_ts, where, now_ms, timestamp_before_max_ms, timestamp_after_max_ms
    )
    return header


def _check_timestamps(
    header: BatchHeader,
    min_ts: int,
    where: str,
    now_ms: int | None,
    before_max_ms: int,
    after_max_ms: int,
) -> None:
    """Kafka's per-record timestamp checks, done on the batch's range [min record, max]."""
    max_ts = header.max_timestamp
    if min_ts < NO_TIMESTAMP:
        raise CorruptRecordError(f"{where}: a record has timestamp {min_ts}", "INVALID_TIMESTAMP")
    if now_ms is None or max_ts == NO_TIMESTAMP:
        return
    if now_ms - min_ts > before_max_ms or max_ts - now_ms > after_max_ms:
        raise CorruptRecordError(
            f"{where}: record timestamps [{min_ts}, {max_ts}] are outside the window allowed "
            f"around now ({now_ms}) by message.timestamp.before/after.max.ms",
            "INVALID_TIMESTAMP",
        )


def split_batches(
    data: bytes | bytearray | memoryview, batches_max: int | None = None
) -> list[tuple[int, int]]:
    """(position, size) of each batch in a buffer of concatenated whole batches, checking only
    bounds: each batch's length fits, and the last ends exactly at the end. Raises
    `CorruptRecordError` otherwise, and as soon as more than `batches_max` batches are seen
    (INVALID_RECORD: the walk stops there, so its cost is bounded too)."""
    spans: list[tuple[int, int]] = []
    pos = 0
    end = len(data)
    unpack = PREFIX.unpack_from
    while pos < end:
        if end - pos < HEADER_SIZE:
            raise CorruptRecordError(f"batch at byte {pos}: only {end - pos} bytes left")
        _, length, _, magic = unpack(data, pos)
        size = length + LOG_OVERHEAD
        if magic != MAGIC or size < HEADER_SIZE or size > end - pos:
            raise CorruptRecordError(
                f"batch at byte {pos}: magic {magic}, {size} bytes claimed, {end - pos} left"
            )
        if batches_max is not None and len(spans) == batches_max:
            raise CorruptRecordError(
                f"more than {batches_max} record batch(es) for one partition in one request; "
                "send one batch per partition per request (Kafka's rule for RecordBatch v2)",
                "INVALID_RECORD",
            )
        spans.append((pos, size))
        pos += size
    return spans


def validate_batches(
    data: bytes,
    *,
    max_message_bytes: int | None = None,
    now_ms: int | None = None,
    timestamp_before_max_ms: int = 2**63 - 1,
    timestamp_after_max_ms: int = 2**63 - 1,
    batches_max: int | None = None,
) -> list[tuple[int, BatchHeader]]:
    """Validate concatenated batches; return (position, header) of each. At least one batch,
    and at most `batches_max` (INVALID_RECORD beyond, found before any batch is checked)."""
    if not data:
        raise CorruptRecordError("no record batches received")
    result = []
    for pos, size in split_batches(data, batches_max):
        header = validate_batch(
            data,
            pos,
            pos + size,
            max_message_bytes=max_message_bytes,
            now_ms=now_ms,
            timestamp_before_max_ms=timestamp_before_max_ms,
            timestamp_after_max_ms=timestamp_after_max_ms,
        )
        result.append((pos, header))
    return result
