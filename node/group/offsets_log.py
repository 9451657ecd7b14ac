"""Records of the internal topic `__consumer_offsets` (DESIGN.md §8).

Each committed offset is one record: the key names (group, topic, partition), the value carries
the offset; a record without a value (a tombstone) deletes it. Keys start with a 2-byte schema
version so other record types can join later, and so the log cleaner (compaction) keeps exactly
the latest record per (group, topic, partition). Records travel in ordinary RecordBatch v2 bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from strom.storage.batch_validation import split_batches
from strom.storage.record_batch import Record, encode_batch, parse_header
from strom.storage.record_decode import decode_batch
from strom.v1 import group_pb2

OFFSETS_TOPIC = "__consumer_offsets"
OFFSET_COMMIT_KEY_VERSION = 1
_VERSION = struct.Struct(">h")


@dataclass(frozen=True, slots=True)
class OffsetEntry:
    offset: int
    metadata: str
    commit_timestamp_ms: int


def offset_key(group: str, topic: str, partition: int) -> bytes:
    body = group_pb2.OffsetCommitKey(group=group, topic=topic, partition=partition)
    return _VERSION.pack(OFFSET_COMMIT_KEY_VERSION) + body.SerializeToString()


def offset_value(entry: OffsetEntry, member_epoch: int) -> bytes:
    return group_pb2.OffsetCommitValue(
        offset=entry.offset,
        metadata=entry.metadata,
        commit_timestamp_ms=entry.commit_timestamp_ms,
        member_epoch=member_epoch,
    ).SerializeToString()


def encode_records(
    items: list[tuple[str, str, int, OffsetEntry | None, int]], now_ms: int
) -> bytes:
    """One batch of (group, topic, partition, entry or None for a tombstone, member epoch)."""
    records = [
        Record(
            offset_key(group, topic, partition),
            None if entry is None else offset_value(entry, epoch),
            (),
            now_ms,
        )
        for group, topic, partition, entry, epoch in items
    ]
    return encode_batch(records)


def decode_records(
    data: bytes,
) -> Iterator[tuple[int, str, str, int, OffsetEntry | None]]:
    """(offset in the log, group, topic, partition, entry or None) for every offset record in
    `data` (whole batches). Records of unknown key versions are skipped."""
    for position, _ in split_batches(data):
        _, records = decode_batch(data, position)
        for record in records:
            if record.key is None or len(record.key) < 2:
                continue
            (version,) = _VERSION.unpack_from(record.key)
            if version != OFFSET_COMMIT_KEY_VERSION:
                continue
            key = group_pb2.OffsetCommitKey.FromString(record.key[2:])
            entry = None
            if record.value is not None:
                value = group_pb2.OffsetCommitValue.FromString(record.value)
                entry = OffsetEntry(value.offset, value.metadata, value.commit_timestamp_ms)
            yield record.offset, key.group, key.topic, key.partition, entry


def last_offset_of(data: bytes) -> int:
    """The last offset the last whole batch in `data` covers (its lastOffsetDelta counts, even
    when compaction removed its last records)."""
    last = -1
    for position, _ in split_batches(data):
        header = parse_header(data, position)
        last = header.base_offset + header.last_offset_delta
    return last
