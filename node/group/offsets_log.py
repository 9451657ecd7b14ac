"""Records of the internal topic `__consumer_offsets` (DESIGN.md §8).

Each committed offset is one record: the key names (group, topic, partition), the value carries
the offset; a record without a value (a tombstone) deletes it. Keys start with a 2-byte schema
version so other record types can join later, and so the log cleaner (compaction) keeps exactly
the latest record per (group, topic, partition). Records travel in ordinary RecordBatch v2 bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from google.protobuf.message import DecodeError

from strom.node.internal_topics import OFFSETS_TOPIC as OFFSETS_TOPIC  # re-exported
from strom.storage.batch_validation import split_batches
from strom.storage.control_records import decode_marker
from strom.storage.errors import StorageError
from strom.storage.record_batch import Record, encode_batch, parse_header
from strom.storage.record_decode import decode_batch
from strom.v1 import group_pb2

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


@dataclass(frozen=True, slots=True)
class TxnProducer:
    """Who writes a transaction's offset commits (TxnOffsetCommit): the batch carries the
    producer's id and epoch and the next sequence of that producer in the offsets partition,
    with the transactional bit, so the marker of its transaction decides them."""

    producer_id: int
    producer_epoch: int
    base_sequence: int


def encode_records(
    items: list[tuple[str, str, int, OffsetEntry | None, int]],
    now_ms: int,
    txn: TxnProducer | None = None,
) -> bytes:
    """One batch of (group, topic, partition, entry or None for a tombstone, member epoch);
    with `txn`, a transactional batch of that producer."""
    records = [
        Record(
            offset_key(group, topic, partition),
            None if entry is None else offset_value(entry, epoch),
            (),
            now_ms,
        )
        for group, topic, partition, entry, epoch in items
    ]
    if txn is None:
        return encode_batch(records)
    return encode_batch(
        records, producer_id=txn.producer_id, producer_epoch=txn.producer_epoch,
        base_sequence=txn.base_sequence, is_transactional=True,
    )  # fmt: skip


class OffsetRecord(NamedTuple):
    """An offset commit in the log; `producer_id` >= 0 when a transaction wrote it (pending
    until that producer's next marker in the partition)."""

    offset: int
    group: str
    topic: str
    partition: int
    entry: OffsetEntry | None
    producer_id: int


class MarkerRecord(NamedTuple):
    """A transaction marker: the producer's pending commits become visible, or are dropped."""

    offset: int
    producer_id: int
    commit: bool


def decode_log(
    data: bytes, skipped: Callable[[int, str], None]
) -> Iterator[OffsetRecord | MarkerRecord]:
    """The offset records and transaction markers of `data` (whole batches), in log order."""
    for position, _ in split_batches(data):
        header = parse_header(data, position)
        if header.is_control:
            try:
                marker = decode_marker(data, position)
            except StorageError as exc:
                skipped(header.base_offset, f"control batch: {exc}")
                continue
            yield MarkerRecord(header.base_offset, marker.producer_id, marker.commit)
            continue
        producer_id = header.producer_id if header.is_transactional else -1
        for offset, group, topic, partition, entry in _decode_batch(data, position, skipped):
            yield OffsetRecord(offset, group, topic, partition, entry, producer_id)


def decode_records(
    data: bytes, skipped: Callable[[int, str], None]
) -> Iterator[tuple[int, str, str, int, OffsetEntry | None]]:
    """(offset in the log, group, topic, partition, entry or None) for every offset record in
    `data` (whole batches), transactional or not; markers are passed over. Records of unknown
    key versions (a newer record type) are passed over. A record, or a whole batch, that cannot
    be decoded is reported to `skipped` (its offset and why) and passed over: one bad record
    must not keep every group of the partition from loading (issue #15, defect 2)."""
    for position, _ in split_batches(data):
        if parse_header(data, position).is_control:
            continue
        yield from _decode_batch(data, position, skipped)


def _decode_batch(
    data: bytes, position: int, skipped: Callable[[int, str], None]
) -> Iterator[tuple[int, str, str, int, OffsetEntry | None]]:
    try:
        _, records = decode_batch(data, position)
    except Exception as exc:  # damaged or unsupported: the batch, not the partition
        skipped(parse_header(data, position).base_offset, f"batch: {exc}")
        return
    for record in records:
        if record.key is None or len(record.key) < 2:
            skipped(record.offset, "key is not an offsets key")
            continue
        (version,) = _VERSION.unpack_from(record.key)
        if version != OFFSET_COMMIT_KEY_VERSION:
            continue
        try:
            key = group_pb2.OffsetCommitKey.FromString(record.key[2:])
            entry = None
            if record.value is not None:
                value = group_pb2.OffsetCommitValue.FromString(record.value)
                entry = OffsetEntry(value.offset, value.metadata, value.commit_timestamp_ms)
        except DecodeError as exc:
            skipped(record.offset, f"not an offset commit: {exc}")
            continue
        if not key.group:  # the coordinator never writes one: not a commit of ours
            skipped(record.offset, "offset key without a group id")
            continue
        yield record.offset, key.group, key.topic, key.partition, entry


def last_offset_of(data: bytes) -> int:
    """The last offset the last whole batch in `data` covers (its lastOffsetDelta counts, even
    when compaction removed its last records)."""
    last = -1
    for position, _ in split_batches(data):
        header = parse_header(data, position)
        last = header.base_offset + header.last_offset_delta
    return last
