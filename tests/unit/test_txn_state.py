"""The transaction coordinator's state machine (node/txn/state.py) and its records in
`__transaction_state` (node/txn/state_log.py): transitions, epoch fencing, timeouts, the
answers to retried and out-of-order requests, and loading the latest state after a failover."""

from __future__ import annotations

import pytest

from strom.node.internal_topics import TRANSACTION_STATE_TOPIC, is_internal
from strom.node.txn.state import (
    EPOCH_MAX,
    TxnError,
    TxnMetadata,
    TxnState,
    new_transactional_id,
    recovery_action,
)
from strom.node.txn.state_log import encode_states, load_states, state_partition
from strom.storage.record_batch import Record, encode_batch
from strom.v1 import common_pb2

NOW = 1_000_000
P1 = frozenset({("orders", 0)})
P2 = frozenset({("payments", 1)})


def fresh() -> TxnMetadata:
    return new_transactional_id("app-1", producer_id=40, timeout_ms=60_000, now_ms=NOW)


def test_a_committed_transaction_goes_through_every_state() -> None:
    meta = fresh()
    assert (meta.state, meta.producer_epoch) == (TxnState.EMPTY, 0)
    meta = meta.add_partitions(40, 0, P1, NOW + 1)
    assert meta.state == TxnState.ONGOING and meta.start_ms == NOW + 1
    meta = meta.add_partitions(40, 0, P2, NOW + 2)
    assert meta.partitions == P1 | P2 and meta.start_ms == NOW + 1
    meta = meta.end(40, 0, commit=True, now_ms=NOW + 3)
    assert meta.state == TxnState.PREPARE_COMMIT and recovery_action(meta) == "markers"
    assert meta.end(40, 0, commit=True, now_ms=NOW + 4) is meta  # a retried EndTxn
    with pytest.raises(TxnError) as exc:
        meta.add_partitions(40, 0, P1, NOW + 4)
    assert exc.value.code == common_pb2.CONCURRENT_TRANSACTIONS
    meta = meta.complete(NOW + 5)
    assert meta.state == TxnState.COMPLETE_COMMIT and meta.partitions == frozenset()
    assert meta.end(40, 0, commit=True, now_ms=NOW + 6) is meta  # retry after completion
    with pytest.raises(TxnError) as exc:
        meta.end(40, 0, commit=False, now_ms=NOW + 6)  # the opposite outcome
    assert exc.value.code == common_pb2.INVALID_TXN_STATE
    # the next transaction starts from a Complete state
    assert meta.add_partitions(40, 0, P2, NOW + 7).state == TxnState.ONGOING


def test_a_new_instance_fences_the_old_one() -> None:
    meta = fresh().add_partitions(40, 0, P1, NOW)
    with pytest.raises(TxnError) as exc:
        meta.init_producer(60_000, NOW, new_producer_id=41)
    assert exc.value.code == common_pb2.CONCURRENT_TRANSACTIONS  # abort the open one first
    aborting = meta.abort_for_fencing(NOW + 1)
    assert aborting.state == TxnState.PREPARE_ABORT and aborting.producer_epoch == 1
    meta = aborting.complete(NOW + 2).init_producer(60_000, NOW + 3, new_producer_id=41)
    assert (meta.producer_id, meta.producer_epoch, meta.state) == (40, 2, TxnState.EMPTY)
    for call in (
        lambda: meta.add_partitions(40, 0, P1, NOW + 4),
        lambda: meta.end(40, 1, commit=True, now_ms=NOW + 4),
    ):
        with pytest.raises(TxnError) as exc:
            call()
        assert exc.value.code == common_pb2.INVALID_PRODUCER_EPOCH
    with pytest.raises(TxnError) as exc:
        meta.add_partitions(99, 2, P1, NOW + 4)
    assert exc.value.code == common_pb2.INVALID_PRODUCER_ID_MAPPING


def test_the_epoch_wraps_to_a_new_producer_id() -> None:
    meta = TxnMetadata("a", 40, EPOCH_MAX - 1, 1000, TxnState.COMPLETE_COMMIT)
    bumped = meta.init_producer(1000, NOW, new_producer_id=77)
    assert (bumped.producer_id, bumped.producer_epoch) == (77, 0)


def test_timeouts_and_bad_requests() -> None:
    meta = fresh().add_partitions(40, 0, P1, NOW)
    assert not meta.expired(NOW + 60_000) and meta.expired(NOW + 60_001)
    assert not fresh().expired(NOW + 10**9)  # nothing ongoing: nothing to abort
    with pytest.raises(TxnError) as exc:
        fresh().end(40, 0, commit=True, now_ms=NOW)  # commit with no transaction
    assert exc.value.code == common_pb2.INVALID_TXN_STATE
    with pytest.raises(TxnError) as exc:
        new_transactional_id("x", 1, timeout_ms=0, now_ms=NOW)
    assert exc.value.code == common_pb2.INVALID_TRANSACTION_TIMEOUT
    with pytest.raises(TxnError) as exc:
        new_transactional_id("", 1, timeout_ms=10, now_ms=NOW)
    assert exc.value.code == common_pb2.INVALID_REQUEST
    with pytest.raises(TxnError):
        fresh().complete(NOW)
    with pytest.raises(TxnError):
        fresh().abort_for_fencing(NOW)


def test_the_state_topic_keeps_the_latest_state_per_id() -> None:
    assert is_internal(TRANSACTION_STATE_TOPIC)
    assert state_partition("app-1", 50) == state_partition("app-1", 50) < 50
    first = fresh().add_partitions(40, 0, P1 | P2, NOW)
    second = first.end(40, 0, commit=False, now_ms=NOW + 1)
    other = new_transactional_id("app-2", 41, 1000, NOW)
    data = encode_states([("app-1", first), ("app-2", other)], NOW)
    data += encode_states([("app-1", second), ("app-2", None)], NOW + 1)
    garbage = encode_batch([Record(b"\x00\x00\xff\xff", b"\xff", (), NOW)])
    skipped: list[tuple[int, str]] = []
    states: dict[str, TxnMetadata] = {}
    load_states(data + garbage, states, lambda offset, why: skipped.append((offset, why)))
    assert states == {"app-1": second}
    assert len(skipped) == 1
    assert recovery_action(states["app-1"]) == "markers"
