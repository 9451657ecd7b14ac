"""Records of the internal topic `__transaction_state` (see node/internal_topics.py): one per
transition of a transactional id, keyed by the id so compaction keeps the latest; no value (a
tombstone) when the id expires. A key starts with a 2-byte schema version, as in
`__consumer_offsets` (node/group/offsets_log.py). Placement: the partition is Kafka's
`abs(transactionalId.hashCode) % transaction.state.log.num.partitions`, the group rule
(node/group/coordinator_key.py).

Loading after a failover (`load_states`) replays a partition's records in order and keeps the
last state of each id; what the new coordinator must then finish is `state.recovery_action`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from google.protobuf.message import DecodeError

from strom.node.group.coordinator_key import coordinator_partition
from strom.storage.batch_validation import split_batches
from strom.storage.record_batch import Record, encode_batch, parse_header
from strom.storage.record_decode import decode_batch
from strom.v1 import txn_pb2

from .state import TxnMetadata, TxnState

TXN_STATE_KEY_VERSION = 0
_VERSION = struct.Struct(">h")


def state_partition(transactional_id: str, num_partitions: int) -> int:
    """The `__transaction_state` partition whose leader coordinates `transactional_id`."""
    return coordinator_partition(transactional_id, num_partitions)


def state_key(transactional_id: str) -> bytes:
    body = txn_pb2.TxnStateKey(transactional_id=transactional_id).SerializeToString()
    return _VERSION.pack(TXN_STATE_KEY_VERSION) + body


def state_value(metadata: TxnMetadata) -> bytes:
    value = txn_pb2.TxnStateValue(
        producer_id=metadata.producer_id,
        producer_epoch=metadata.producer_epoch,
        timeout_ms=metadata.timeout_ms,
        state=int(metadata.state),
        start_ms=metadata.start_ms,
        last_update_ms=metadata.last_update_ms,
    )
    for topic, partition in sorted(metadata.partitions):
        value.partitions.add(topic=topic, partition=partition)
    return value.SerializeToString()


def encode_states(items: Iterable[tuple[str, TxnMetadata | None]], now_ms: int) -> bytes:
    """One batch of (transactional id, its new state or None for a tombstone)."""
    records = [
        Record(state_key(tid), None if m is None else state_value(m), (), now_ms)
        for tid, m in items
    ]
    return encode_batch(records)


def decode_value(transactional_id: str, data: bytes) -> TxnMetadata:
    value = txn_pb2.TxnStateValue.FromString(data)
    return TxnMetadata(
        transactional_id,
        value.producer_id,
        value.producer_epoch,
        value.timeout_ms,
        TxnState(value.state),
        frozenset((p.topic, p.partition) for p in value.partitions),
        value.start_ms,
        value.last_update_ms,
    )


def load_states(
    data: bytes, states: dict[str, TxnMetadata], skipped: Callable[[int, str], None]
) -> None:
    """Apply the records of `data` (whole batches, in log order) to `states`: the latest state
    of each id wins, a tombstone removes it. A record that cannot be decoded is reported to
    `skipped` (offset, why) and passed over; records of another key version are ignored."""
    for position, _ in split_batches(data):
        try:
            _, records = decode_batch(data, position)
        except Exception as exc:  # a damaged batch must not stop the whole partition loading
            skipped(parse_header(data, position).base_offset, f"batch: {exc}")
            continue
        for record in records:
            if record.key is None or len(record.key) < 2:
                skipped(record.offset, "key is not a transaction state key")
                continue
            (version,) = _VERSION.unpack_from(record.key)
            if version != TXN_STATE_KEY_VERSION:
                continue
            try:
                tid = txn_pb2.TxnStateKey.FromString(record.key[2:]).transactional_id
                if not tid:
                    raise DecodeError("empty transactional id")
                if record.value is None:
                    states.pop(tid, None)
                else:
                    states[tid] = decode_value(tid, record.value)
            except (DecodeError, ValueError) as exc:
                skipped(record.offset, f"not a transaction state: {exc}")
