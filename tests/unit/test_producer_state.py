"""Idempotent producer state: duplicates answered with their offsets, gaps and zombies refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from strom.node.replica.producer_state import ProducerState, ProducerStateError
from strom.storage.partition_log import PartitionLog
from strom.storage.record_batch import Record, encode_batch, parse_header
from strom.v1 import common_pb2


def batch(pid: int, epoch: int, seq: int, count: int = 2, base_offset: int = 0) -> bytes:
    records = [Record(None, f"v{seq + i}".encode(), (), 1000) for i in range(count)]
    return encode_batch(
        records, producer_id=pid, producer_epoch=epoch, base_sequence=seq, base_offset=base_offset
    )


def appended(state: ProducerState, data: bytes, offset: int) -> None:
    state.update(parse_header(data)._replace(base_offset=offset))


def test_in_order_batches_and_duplicates() -> None:
    state = ProducerState()
    first = batch(7, 0, 0)
    assert state.check(parse_header(first)) is None
    appended(state, first, 10)
    second = batch(7, 0, 2)
    assert state.check(parse_header(second)) is None
    appended(state, second, 12)
    # A retry of either batch is a duplicate, answered with where it was written.
    duplicate = state.check(parse_header(first))
    assert duplicate is not None and (duplicate.first_offset, duplicate.last_offset) == (10, 11)
    assert state.check(parse_header(second)) is not None


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (batch(7, 0, 5), common_pb2.OUT_OF_ORDER_SEQUENCE_NUMBER),  # a gap after seq 1
        (batch(7, 1, 3), common_pb2.OUT_OF_ORDER_SEQUENCE_NUMBER),  # a new epoch not at 0
    ],
)
def test_gaps_are_refused(data: bytes, code: int) -> None:
    state = ProducerState()
    appended(state, batch(7, 0, 0), 0)
    with pytest.raises(ProducerStateError) as err:
        state.check(parse_header(data))
    assert err.value.code == code


def test_zombie_epoch_is_fenced() -> None:
    state = ProducerState()
    appended(state, batch(7, 2, 0), 0)
    with pytest.raises(ProducerStateError) as err:
        state.check(parse_header(batch(7, 1, 2)))
    assert err.value.code == common_pb2.INVALID_PRODUCER_EPOCH


def test_unknown_producer_and_plain_batches_pass() -> None:
    state = ProducerState()
    assert state.check(parse_header(batch(9, 0, 40))) is None
    assert state.check(parse_header(encode_batch([Record(None, b"x", (), 1)]))) is None


def test_rebuilt_from_the_log_as_a_new_leader_would(tmp_path: Path) -> None:
    log = PartitionLog.open(str(tmp_path / "t-0"), now_ms=0)
    for seq in (0, 2, 4):
        log.append(batch(7, 0, seq), leader_epoch=0, now_ms=1000)
    rebuilt = ProducerState.rebuild(log)
    duplicate = rebuilt.check(parse_header(batch(7, 0, 2)))
    assert duplicate is not None and duplicate.first_offset == 2
    assert rebuilt.check(parse_header(batch(7, 0, 6))) is None
    log.close()
