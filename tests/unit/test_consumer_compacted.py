"""Readers move past compacted batches whose last records were removed (offsets keep gaps)."""

from __future__ import annotations

from strom.client.consumer import AsyncConsumer
from strom.client.records import TopicPartition
from strom.node.group.offsets_log import last_offset_of
from strom.storage.record_batch import (
    HEADER_SIZE,
    Record,
    encode_batch,
    encode_retained,
    parse_header,
)


def compacted_batch() -> bytes:
    """Offsets 10..13, of which only the first record (offset 10) survived compaction."""
    full = encode_batch([Record(b"k", f"v{i}".encode(), (), 1) for i in range(4)], base_offset=10)
    header = parse_header(full)
    body = full[HEADER_SIZE:]
    first_length = body[0] >> 1  # zigzag varint: a small positive length fits one byte
    return encode_retained(header, [body[: 1 + first_length]])


def test_consumer_position_moves_past_the_whole_batch() -> None:
    consumer = AsyncConsumer("localhost:1")
    tp = TopicPartition("t", 0)
    consumer._positions[tp] = 10
    consumer._take(tp, compacted_batch())
    assert [r.offset for r in consumer._buffer.take(100, {})] == [10]
    assert consumer._positions[tp] == 14  # not 11: offsets 11..13 are gone for good


def test_offsets_loader_continues_after_the_whole_batch() -> None:
    assert last_offset_of(compacted_batch()) == 13
