"""A compressed batch cannot inflate without bound (issue #15).

Four concurrent 237 KB gzip batches inflating to 250 MB each took a leader from 129 to 574 MiB:
the only bound was 256 MiB per batch. Now the leader bounds the uncompressed records by the
topic's max.message.bytes and the consumer by its `max_batch_decompressed_bytes`, inflating
incrementally and stopping one byte past the bound; memory is measured with tracemalloc (zlib's
output buffers are Python bytes, so they are traced).
"""

from __future__ import annotations

import asyncio
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import crc32c
import pytest

from strom.client import ConsumerRecord, TopicPartition
from strom.client.consumer import AsyncConsumer
from strom.storage.batch_validation import validate_batch
from strom.storage.errors import CorruptRecordError
from strom.storage.partition_log import PartitionLog
from strom.storage.record_batch import (
    ATTRIBUTES_OFFSET,
    HEADER_SIZE,
    Compression,
    Record,
    encode_batch,
    zigzag_varint,
)
from strom.storage.record_decode import decode_batch_as

NOW_MS = int(time.time() * 1000)
BOMB_VALUE_BYTES = 64 << 20
CHUNK = bytes(1 << 20)


def gzip_bomb(value_bytes: int = BOMB_VALUE_BYTES) -> bytes:
    """One well-formed gzip batch of one record whose value is `value_bytes` zeros, built
    without ever holding the value (about 64 KB for 64 MiB)."""
    body = b"\0" + zigzag_varint(0) + zigzag_varint(0) + zigzag_varint(-1)
    body += zigzag_varint(value_bytes)
    length = len(body) + value_bytes + 1  # + the header count below
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    payload = packer.compress(zigzag_varint(length) + body)
    for _ in range(value_bytes // len(CHUNK)):
        payload += packer.compress(CHUNK)
    payload += packer.compress(bytes(value_bytes % len(CHUNK)) + zigzag_varint(0))
    payload += packer.flush()
    template = bytearray(
        encode_batch([Record(None, b"x", (), NOW_MS)], compression=Compression.GZIP)[:HEADER_SIZE]
    )
    struct.pack_into(">i", template, 8, HEADER_SIZE - 12 + len(payload))
    batch = template + payload
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[ATTRIBUTES_OFFSET:])))
    return bytes(batch)


def peak_bytes(work: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        work()
    except CorruptRecordError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def test_the_bomb_is_a_valid_batch_when_nothing_bounds_it() -> None:
    """The oracle: the crafted batch is well formed, so only the bound refuses it."""
    small = gzip_bomb(value_bytes=1000)
    validate_batch(small, max_message_bytes=None, now_ms=NOW_MS)
    _, records = decode_batch_as(small, 0, ConsumerRecord, "t", 0)
    assert records[0].value == bytes(1000)


def test_a_leader_refuses_a_batch_inflating_past_max_message_bytes(tmp_path: Path) -> None:
    bomb = gzip_bomb()
    assert len(bomb) < 256 << 10
    log = PartitionLog.open(str(tmp_path / "t-0"), now_ms=NOW_MS)
    refused: list[CorruptRecordError] = []

    def append() -> None:
        try:
            log.append(bomb, 0, now_ms=NOW_MS)
        except CorruptRecordError as exc:
            refused.append(exc)
            raise

    peak = peak_bytes(append)
    assert refused and refused[0].error_name == "MESSAGE_TOO_LARGE", refused
    assert "max.message.bytes" in str(refused[0])
    assert log.log_end_offset == 0
    # Bounded by max.message.bytes (about 1 MiB by default), not by the 64 MiB it inflates to.
    assert peak < 4 << 20, peak
    log.close()


def test_a_batch_that_inflates_to_exactly_the_bound_is_accepted() -> None:
    batch = encode_batch([Record(None, bytes(5000), (), NOW_MS)], compression=Compression.GZIP)
    inflated = len(zlib.decompress(batch[HEADER_SIZE:], 47))
    validate_batch(batch, max_message_bytes=max(inflated, len(batch)), now_ms=NOW_MS)
    with pytest.raises(CorruptRecordError, match="MESSAGE_TOO_LARGE"):
        validate_batch(batch, max_message_bytes=inflated - 1, now_ms=NOW_MS)


def test_a_consumer_refuses_a_batch_inflating_past_its_bound() -> None:
    bomb = gzip_bomb()

    def decode() -> None:
        decode_batch_as(bomb, 0, ConsumerRecord, "t", 0, decompressed_bytes_max=8 << 20)

    with pytest.raises(CorruptRecordError, match="MESSAGE_TOO_LARGE"):
        decode()
    assert peak_bytes(decode) < 24 << 20  # the output buffer grows by doubling


def test_the_consumer_applies_its_bound_to_fetched_batches() -> None:
    async def scenario() -> None:
        consumer = AsyncConsumer("localhost:1", max_batch_decompressed_bytes=8 << 20)
        tp = TopicPartition("t", 0)
        consumer._positions[tp] = 0
        try:
            with pytest.raises(CorruptRecordError, match="MESSAGE_TOO_LARGE"):
                consumer._take(tp, gzip_bomb())
            consumer._take(tp, gzip_bomb(value_bytes=1000))  # a normal batch still reads
            assert consumer._positions[tp] == 1
        finally:
            await consumer.close()

    asyncio.run(scenario())
