"""Kafka RecordBatch v2 (magic 2): constants, a cheap header view, the encoder, and in-place
assignment of the fields the broker owns.

Wire format, byte for byte Kafka's (big-endian; DESIGN.md §4)::

    offset  field                 type     covered by CRC
    0       baseOffset            i64      no   (assigned by the leader)
    8       batchLength           i32      no   (bytes after this field)
    12      partitionLeaderEpoch  i32      no   (assigned by the leader)
    16      magic                 i8       no   (always 2)
    17      crc                   u32      -    (CRC-32C of bytes 21..end)
    21      attributes            i16      yes  (bits 0-2 compression, 3 timestamp type,
                                                 4 transactional, 5 control)
    23      lastOffsetDelta       i32      yes
    27      baseTimestamp         i64      yes
    35      maxTimestamp          i64      yes
    43      producerId            i64      yes
    51      producerEpoch         i16      yes
    53      baseSequence          i32      yes
    57      recordCount           i32      yes
    61      records               ...      yes  (compressed as one block when bits 0-2 != 0)

Each record is ``length varint`` followed by ``attributes i8, timestampDelta varlong,
offsetDelta varint, keyLength varint, key, valueLength varint, value, headerCount varint,
[headerKeyLength varint, headerKey utf-8, headerValueLength varint, headerValue]``. Varints are
zigzag-encoded base-128 (protobuf's sint); length -1 means null.

The encoder is on the producer's hot path: `BatchBuilder` appends each record straight into one
bytearray, in C when storage/_codec.c is built (`PyBatchBuilder` is its pure-Python reference,
which takes varints from a precomputed table for the common small values and calls no helper
per field).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import crc32c

from .compiled_codec import codec
from .compression import compress

MAGIC = 2
HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
# Bytes before batchLength's coverage starts: baseOffset + batchLength (Kafka's LOG_OVERHEAD).
LOG_OVERHEAD = 12
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21
LEADER_EPOCH_OFFSET = 12
MAGIC_OFFSET = 16
# The prefix needed to walk concatenated batches: baseOffset, batchLength, leader epoch, magic.
PREFIX = struct.Struct(">qiib")

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08
TRANSACTIONAL_MASK = 0x10
CONTROL_MASK = 0x20

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_PARTITION_LEADER_EPOCH = -1
NO_TIMESTAMP = -1


class Compression:
    """Compression codec ids of attributes bits 0-2 (Kafka's CompressionType)."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4
    SUPPORTED = frozenset({NONE, GZIP, SNAPPY, LZ4, ZSTD})
    NAMES: ClassVar[dict[int, str]] = {
        NONE: "none",
        GZIP: "gzip",
        SNAPPY: "snappy",
        LZ4: "lz4",
        ZSTD: "zstd",
    }


class Record(NamedTuple):
    """One record to encode. A NamedTuple rather than a dataclass: the encoder unpacks it as a
    plain tuple, which is the cheapest field access Python has."""

    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]
    timestamp_ms: int


class BatchHeader(NamedTuple):
    """The 61-byte batch header, parsed by one `struct.unpack_from`; records are not touched.

    A NamedTuple so that building one is a single C call (`_make`); it is immutable like a frozen
    dataclass.
    """

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def size_in_bytes(self) -> int:
        """Bytes of the whole batch, header included."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_MASK)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_MASK)


_unpack_header = HEADER.unpack_from
_make_header = BatchHeader._make


def parse_header(buf: bytes | bytearray | memoryview, position: int = 0) -> BatchHeader:
    """The header of the batch at `position`. The caller ensures 61 bytes are there."""
    return _make_header(_unpack_header(buf, position))


def assign_offset_and_epoch(
    buf: bytearray, position: int, base_offset: int, leader_epoch: int
) -> None:
    """Overwrite baseOffset and partitionLeaderEpoch of the batch at `position` in place. Neither
    is covered by the CRC, so the batch stays valid."""
    struct.pack_into(">q", buf, position, base_offset)
    struct.pack_into(">i", buf, position + LEADER_EPOCH_OFFSET, leader_epoch)


# Varints of zigzag values below _TABLE_SIZE come from a table: two bytes cover every length up
# to 8 KiB and every offset delta up to 8191, which is nearly every field of a typical record.
_TABLE_SIZE = 1 << 14


def _uvarint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_VARINT = tuple(_uvarint_bytes(v) for v in range(_TABLE_SIZE))


def zigzag_varint(value: int) -> bytes:
    """The zigzag varint (varlong) encoding of a signed integer."""
    zz = (value << 1) ^ (value >> 63)
    return _VARINT[zz] if zz < _TABLE_SIZE else _uvarint_bytes(zz)


def _encode_headers(headers: Sequence[tuple[str, bytes | None]]) -> bytes:
    out = bytearray(zigzag_varint(len(headers)))
    for h_key, h_value in headers:
        raw_key = h_key.encode("utf-8")
        out += zigzag_varint(len(raw_key))
        out += raw_key
        if h_value is None:
            out += b"\x01"
        else:
            out += zigzag_varint(len(h_value))
            out += h_value
    return bytes(out)


def _encode_records(out: bytearray, records: Sequence[Record], base_ts: int) -> int:
    """Append the records to `out`; return the largest timestamp. One loop, no helper calls for
    the common case (lengths and deltas below the table size, no headers)."""
    table = _VARINT
    size = _TABLE_SIZE
    varint = zigzag_varint
    max_ts = base_ts
    for offset_delta, (key, value, headers, ts) in enumerate(records):
        if ts > max_ts:
            max_ts = ts
        delta = ts - base_ts
        zz = (delta << 1) ^ (delta >> 63)
        head = b"\x00" + (table[zz] if zz < size else varint(delta))
        zz = offset_delta << 1
        head += table[zz] if zz < size else varint(offset_delta)
        if key is None:
            head += b"\x01"
            key = b""
        else:
            zz = len(key) << 1
            head += table[zz] if zz < size else varint(len(key))
        if value is None:
            mid = b"\x01"
            value = b""
        else:
            zz = len(value) << 1
            mid = table[zz] if zz < size else varint(len(value))
        tail = _encode_headers(headers) if headers else b"\x00"
        body_size = len(head) + len(key) + len(mid) + len(value) + len(tail)
        zz = body_size << 1
        out += table[zz] if zz < size else varint(body_size)
        out += head
        out += key
        out += mid
        out += value
        out += tail
    return max_ts


TIMESTAMP_MAX = 2**63 - 1


class _BatchSealing:
    """What both builders share: the size so far and sealing the batch (once per batch, so
    Python either way). Subclasses hold `_buffer`, `count`, `base_timestamp`, `max_timestamp`."""

    __slots__ = ()
    _buffer: bytearray
    count: int
    base_timestamp: int
    max_timestamp: int

    @property
    def size_in_bytes(self) -> int:
        """Bytes of the batch so far, header included (before compression)."""
        return len(self._buffer)

    def build(
        self,
        *,
        compression: int = Compression.NONE,
        producer_id: int = NO_PRODUCER_ID,
        producer_epoch: int = NO_PRODUCER_EPOCH,
        base_sequence: int = NO_SEQUENCE,
        is_transactional: bool = False,
        gzip_level: int = 6,
    ) -> bytes:
        """The finished batch (base offset 0, leader epoch -1: the leader assigns both)."""
        if self.count == 0:
            raise ValueError("a record batch needs at least one record")
        return _seal(
            self._buffer, self.count, self.base_timestamp, self.max_timestamp,
            compression=compression, producer_id=producer_id, producer_epoch=producer_epoch,
            base_sequence=base_sequence, is_transactional=is_transactional, base_offset=0,
            partition_leader_epoch=NO_PARTITION_LEADER_EPOCH, gzip_level=gzip_level,
        )  # fmt: skip


class PyBatchBuilder(_BatchSealing):
    """Builds one RecordBatch v2 a record at a time, as Kafka's MemoryRecordsBuilder: each
    `append` encodes its record straight into the batch buffer, so a producer keeps bytes, not
    record objects, and sealing the batch only writes the header and the CRC.

    Offset deltas run 0..n-1 in append order; timestamps are deltas from the first record's and
    must lie in [0, 2**63) (Kafka's producer refuses negative ones too). `build` produces
    exactly the bytes `encode_batch` would for the same records.

    The pure-Python reference of `BatchBuilder`, whose `append` is compiled when
    storage/_codec.c is built.
    """

    __slots__ = ("_buffer", "base_timestamp", "count", "max_timestamp")

    def __init__(self) -> None:
        self._buffer = bytearray(HEADER_SIZE)
        self.count = 0
        self.base_timestamp = NO_TIMESTAMP
        self.max_timestamp = NO_TIMESTAMP

    def append(
        self,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
    ) -> int:
        """Encode one record at the next offset delta; returns the bytes it took.

        One `%` format writes the whole record: it is the cheapest way Python has to join eight
        small byte strings (about half the cost of eight `+=`), and this runs once per record
        a producer sends."""
        if type(timestamp_ms) is not int or not 0 <= timestamp_ms <= TIMESTAMP_MAX:
            _refuse_timestamp(timestamp_ms)
        table = _VARINT
        offset_delta = self.count
        if offset_delta == 0:
            self.base_timestamp = self.max_timestamp = timestamp_ms
        elif timestamp_ms > self.max_timestamp:
            self.max_timestamp = timestamp_ms
        delta = timestamp_ms - self.base_timestamp
        zz = (delta << 1) ^ (delta >> 63)
        ts_bytes = table[zz] if zz < _TABLE_SIZE else zigzag_varint(delta)
        zz = offset_delta << 1
        od_bytes = table[zz] if zz < _TABLE_SIZE else zigzag_varint(offset_delta)
        if key is None:
            key_len = b"\x01"
            key = b""
        else:
            zz = len(key) << 1
            key_len = table[zz] if zz < _TABLE_SIZE else zigzag_varint(len(key))
        if value is None:
            value_len = b"\x01"
            value = b""
        else:
            zz = len(value) << 1
            value_len = table[zz] if zz < _TABLE_SIZE else zigzag_varint(len(value))
        tail = _encode_headers(headers) if headers else b"\x00"
        body_size = (
            1 + len(ts_bytes) + len(od_bytes) + len(key_len) + len(key) + len(value_len)
            + len(value) + len(tail)
        )  # fmt: skip
        zz = body_size << 1
        prefix = table[zz] if zz < _TABLE_SIZE else zigzag_varint(body_size)
        self._buffer += b"%b\x00%b%b%b%b%b%b%b" % (
            prefix, ts_bytes, od_bytes, key_len, key, value_len, value, tail,
        )  # fmt: skip
        self.count = offset_delta + 1
        return len(prefix) + body_size


def _refuse_timestamp(timestamp_ms: object) -> None:
    if type(timestamp_ms) is not int:
        raise TypeError(f"a record timestamp must be an int, not {type(timestamp_ms).__name__}")
    raise ValueError(f"record timestamp {timestamp_ms} is outside [0, 2**63)")


if TYPE_CHECKING or codec is None:
    BatchBuilder = PyBatchBuilder
else:

    class BatchBuilder(_BatchSealing, codec.BatchBuilderCore):
        """`PyBatchBuilder` with `append` in C (storage/_codec.c): the same bytes. Inputs off
        its fast path (keys or values other than bytes/None, timestamps outside [0, 2**63),
        unusual headers) run the reference `append`, which also raises every error."""

        __slots__ = ()
        _append_reference = PyBatchBuilder.append


def encode_batch(
    records: Sequence[Record],
    *,
    compression: int = Compression.NONE,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = NO_PRODUCER_EPOCH,
    base_sequence: int = NO_SEQUENCE,
    is_transactional: bool = False,
    base_offset: int = 0,
    partition_leader_epoch: int = NO_PARTITION_LEADER_EPOCH,
    gzip_level: int = 6,
    is_control: bool = False,
) -> bytes:
    """Encode `records` (at least one) as one RecordBatch v2, offset deltas 0..n-1.

    Producers leave `base_offset` 0 and the leader epoch -1; the leader assigns both in place.
    """
    if not records:
        raise ValueError("a record batch needs at least one record")
    base_ts = records[0][3]
    out = bytearray(HEADER_SIZE)
    max_ts = _encode_records(out, records, base_ts)
    return _seal(
        out, len(records), base_ts, max_ts, compression=compression, producer_id=producer_id,
        producer_epoch=producer_epoch, base_sequence=base_sequence,
        is_transactional=is_transactional, base_offset=base_offset,
        partition_leader_epoch=partition_leader_epoch, gzip_level=gzip_level,
        is_control=is_control,
    )  # fmt: skip


def _seal(
    out: bytearray,
    count: int,
    base_ts: int,
    max_ts: int,
    *,
    compression: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    is_transactional: bool,
    base_offset: int,
    partition_leader_epoch: int,
    gzip_level: int,
    is_control: bool = False,
) -> bytes:
    """Compress the records after the header room in `out` if asked, then fill in the header and
    the CRC. `out` is modified."""
    if compression not in Compression.SUPPORTED:
        raise ValueError(f"unsupported compression {Compression.NAMES.get(compression)!r}")
    if compression != Compression.NONE:
        with memoryview(out) as view:
            compressed = compress(compression, view[HEADER_SIZE:], gzip_level)
        del out[HEADER_SIZE:]
        out += compressed
    attributes = compression | (TRANSACTIONAL_MASK if is_transactional else 0)
    if is_control:
        attributes |= CONTROL_MASK
    HEADER.pack_into(
        out,
        0,
        base_offset,
        len(out) - LOG_OVERHEAD,
        partition_leader_epoch,
        MAGIC,
        0,
        attributes,
        count - 1,
        base_ts,
        max_ts,
        producer_id,
        producer_epoch,
        base_sequence,
        count,
    )
    with memoryview(out) as view:
        crc = crc32c.crc32c(view[ATTRIBUTES_OFFSET:])
    struct.pack_into(">I", out, CRC_OFFSET, crc)
    return bytes(out)


def encode_retained(
    header: BatchHeader, kept_records: Sequence[bytes], gzip_level: int = 6
) -> bytes:
    """Re-encode a batch keeping only `kept_records` (each one record's exact bytes, length
    prefix included, in their original order), as Kafka's log cleaner does for RecordBatch v2.

    Every header field is kept (baseOffset, lastOffsetDelta, partitionLeaderEpoch, attributes,
    timestamps, producer id/epoch, baseSequence) except batchLength, recordCount and the CRC, so
    offsets are preserved: the kept records keep their offset deltas, which are then no longer
    contiguous, and recordCount may be less than lastOffsetDelta + 1. The records section is
    recompressed with the batch's codec.
    """
    if not kept_records:
        raise ValueError("a retained batch needs at least one record")
    codec = header.compression
    if codec not in Compression.SUPPORTED:
        raise ValueError(f"unsupported compression {Compression.NAMES.get(codec)!r}")
    body = b"".join(kept_records)
    body = compress(codec, body, gzip_level)
    out = bytearray(HEADER_SIZE)
    out += body
    HEADER.pack_into(
        out,
        0,
        header.base_offset,
        len(out) - LOG_OVERHEAD,
        header.partition_leader_epoch,
        MAGIC,
        0,
        header.attributes,
        header.last_offset_delta,
        header.base_timestamp,
        header.max_timestamp,
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        len(kept_records),
    )
    with memoryview(out) as view:
        crc = crc32c.crc32c(view[ATTRIBUTES_OFFSET:])
    struct.pack_into(">I", out, CRC_OFFSET, crc)
    return bytes(out)
