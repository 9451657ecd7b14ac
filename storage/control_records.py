"""Transaction markers: the control batches that end a producer's transaction in a partition
(KIP-98), in Kafka's wire format so Kafka clients read them unchanged.

A marker is a RecordBatch v2 with the transactional and control attribute bits set, the
producer's id and epoch, no sequence, and exactly one record:

    key    version int16 (0), type int16 (0 = ABORT, 1 = COMMIT)
    value  version int16 (0), coordinator_epoch int32

Consumers never see control records; the producer state reads them to close the producer's
open transaction, and an abort marker adds an entry to the segment's aborted-transaction index
(`txn_index`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import CorruptRecordError
from .record_batch import NO_SEQUENCE, Record, encode_batch
from .record_decode import decode_batch

CONTROL_KEY_VERSION = 0
MARKER_VALUE_VERSION = 0
ABORT = 0
COMMIT = 1

_KEY = struct.Struct(">hh")  # version, type
_VALUE = struct.Struct(">hi")  # version, coordinator epoch


@dataclass(frozen=True, slots=True)
class TxnMarker:
    producer_id: int
    producer_epoch: int
    commit: bool
    coordinator_epoch: int


def encode_marker(marker: TxnMarker, timestamp_ms: int) -> bytes:
    """The control batch for `marker`, base offset 0 and leader epoch -1 (the leader assigns
    both on append, as for any batch)."""
    key = _KEY.pack(CONTROL_KEY_VERSION, COMMIT if marker.commit else ABORT)
    value = _VALUE.pack(MARKER_VALUE_VERSION, marker.coordinator_epoch)
    return encode_batch(
        [Record(key, value, (), timestamp_ms)],
        producer_id=marker.producer_id,
        producer_epoch=marker.producer_epoch,
        base_sequence=NO_SEQUENCE,
        is_transactional=True,
        is_control=True,
    )


def control_type(key: bytes | None) -> int:
    """ABORT or COMMIT from a control record's key; CorruptRecordError for anything else
    (Kafka's other control types, e.g. leader change, are not transaction markers)."""
    if key is None or len(key) < _KEY.size:
        raise CorruptRecordError(f"control record key of {len(key or b'')} bytes is too short")
    version, kind = _KEY.unpack_from(key)
    kind = int(kind)
    if version != CONTROL_KEY_VERSION or kind not in (ABORT, COMMIT):
        raise CorruptRecordError(f"control record key version {version} type {kind} is unknown")
    return kind


def decode_marker(data: bytes | bytearray | memoryview, position: int = 0) -> TxnMarker:
    """The marker of the control batch at `position`; CorruptRecordError if it is not one."""
    header, records = decode_batch(data, position)
    if not (header.is_control and header.is_transactional) or len(records) != 1:
        raise CorruptRecordError(f"batch at byte {position} is not a transaction marker")
    kind = control_type(records[0].key)
    value = records[0].value
    if value is None or len(value) < _VALUE.size:
        raise CorruptRecordError(f"marker value at byte {position} is too short")
    _version, coordinator_epoch = _VALUE.unpack_from(value)
    return TxnMarker(header.producer_id, header.producer_epoch, kind == COMMIT, coordinator_epoch)
