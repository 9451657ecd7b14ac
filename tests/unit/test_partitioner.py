"""The producer's partitioners agree with Kafka's Java client (via kafka-python as the oracle)."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from strom.client.partitioner import (
    PARTITIONER_NAMES,
    DefaultPartitioner,
    RoundRobinPartitioner,
    StickyPartitioner,
    UnknownPartitionerError,
    make_partitioner,
    murmur2,
    murmur2_reference,
    partition_for_key,
    to_positive,
)

# Kafka's UtilsTest.testMurmur2 (Java's signed int results); "" from Utils.murmur2 on empty input.
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
    b"": 275646681,
}


@pytest.mark.parametrize(("key", "expected"), sorted(JAVA_VECTORS.items()))
def test_murmur2_matches_kafka_utils_test_vectors(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


def test_to_positive_clears_the_sign_bit_like_java() -> None:
    assert to_positive(-(2**31)) == 0  # Integer.MIN_VALUE → 0, not abs() overflow
    assert to_positive(-1) == 2**31 - 1
    assert to_positive(5) == 5
    # toPositive(murmur2("foobar")) = -790332482 & 0x7fffffff = 1357151166
    assert partition_for_key(b"foobar", 50) == 1357151166 % 50 == 16


def _kafka_python_partition(key: bytes, num_partitions: int) -> int:
    # kafka-python's DefaultPartitioner.partition for a keyed record, without its cluster object.
    return (kafka_python_murmur2(key) & 0x7FFFFFFF) % num_partitions


@pytest.mark.parametrize("num_partitions", [1, 3, 7, 50, 1000])
def test_keyed_partition_agrees_with_kafka_python_for_10000_keys(num_partitions: int) -> None:
    rng = random.Random(20240607 + num_partitions)
    keys = [rng.randbytes(rng.randrange(0, 64)) for _ in range(10_000)]
    ours = [partition_for_key(key, num_partitions) for key in keys]
    theirs = [_kafka_python_partition(key, num_partitions) for key in keys]
    assert ours == theirs
    # The hash itself, as the unsigned value kafka-python returns.
    assert all(murmur2(key) & 0xFFFFFFFF == kafka_python_murmur2(key) for key in keys[:2000])


@given(key=st.binary(max_size=300), num_partitions=st.integers(1, 10_000))
def test_keyed_partition_agrees_with_kafka_python_property(key: bytes, num_partitions: int) -> None:
    assert murmur2(key) & 0xFFFFFFFF == kafka_python_murmur2(key)
    assert partition_for_key(key, num_partitions) == _kafka_python_partition(key, num_partitions)
    assert -(2**31) <= murmur2(key) < 2**31


def test_long_keys_beyond_the_unpacker_cache_agree() -> None:
    rng = random.Random(7)
    for length in (1023, 1024, 1025, 4099):
        key = rng.randbytes(length)
        assert murmur2(key) & 0xFFFFFFFF == kafka_python_murmur2(key)


def test_murmur2_throughput_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    """Measures keyed records/s (reported, never asserted: the machine is shared)."""
    keys = [b"user-%011d" % i for i in range(50_000)]  # 16-byte keys, a common shape
    start = time.perf_counter()
    for key in keys:
        partition_for_key(key, 50)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    for key in keys:
        _kafka_python_partition(key, 50)
    theirs_s = time.perf_counter() - start
    with capsys.disabled():
        print(
            f"\npartition_for_key: {len(keys) / ours_s:,.0f} records/s "
            f"(kafka-python murmur2: {len(keys) / theirs_s:,.0f}/s)"
        )


def test_keyless_records_go_round_robin_per_topic_from_p0() -> None:
    partitioner = DefaultPartitioner()
    # The seed document's table: M1→P0, M2→P1, M3→P2, M4→P0, M5→P1, M6→P2.
    assert [partitioner.partition("user-events", None, 3) for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    # A second topic has its own counter.
    assert [partitioner.partition("orders", None, 2) for _ in range(3)] == [0, 1, 0]
    assert partitioner.partition("user-events", None, 3) == 0
    # Keys still choose by murmur2 and do not advance the counter.
    assert partitioner.partition("user-events", b"foobar", 50) == 16
    assert partitioner.partition("user-events", None, 3) == 1


def test_round_robin_uses_available_partitions_when_given() -> None:
    partitioner = DefaultPartitioner()
    picks = [partitioner.partition("t", None, 4, available=[1, 3]) for _ in range(4)]
    assert picks == [1, 3, 1, 3]
    # Keyed records ignore availability: a key's partition never depends on which leaders are up.
    assert partitioner.partition("t", b"foobar", 50, available=[0]) == 16


def test_round_robin_partitioner_ignores_keys_like_kafkas() -> None:
    partitioner = RoundRobinPartitioner()
    assert [partitioner.partition("t", b"same-key", 3) for _ in range(4)] == [0, 1, 2, 0]


def test_sticky_partitioner_sticks_until_the_batch_is_done() -> None:
    partitioner = StickyPartitioner(random.Random(3))
    first = partitioner.partition("t", None, 5)
    assert all(partitioner.partition("t", None, 5) == first for _ in range(100))
    # A report about another partition (an older batch) does not move the sticky choice.
    partitioner.on_new_batch("t", (first + 1) % 5, 5)
    assert partitioner.partition("t", None, 5) == first
    # The batch of the sticky partition completed: switch, and never to the same partition.
    seen = [first]
    for _ in range(50):
        partitioner.on_new_batch("t", seen[-1], 5)
        current = partitioner.partition("t", None, 5)
        assert current != seen[-1]
        assert partitioner.sticky_partition("t") == current
        seen.append(current)
    # Over many batches every partition gets some (the choice is random, not stuck on two).
    assert set(seen) == set(range(5))
    # Keys still use murmur2.
    assert partitioner.partition("t", b"foobar", 50) == 16


def test_sticky_partitioner_keeps_topics_apart_and_respects_availability() -> None:
    partitioner = StickyPartitioner(random.Random(1))
    assert partitioner.sticky_partition("a") is None
    assert partitioner.partition("a", None, 8, available=[6]) == 6
    assert partitioner.partition("b", None, 8, available=[2]) == 2
    assert partitioner.partition("a", None, 8) == 6
    # Only one partition: the sticky choice stays (no other choice exists).
    single = StickyPartitioner(random.Random(1))
    assert single.partition("s", None, 1) == 0
    single.on_new_batch("s", 0, 1)
    assert single.partition("s", None, 1) == 0
    # The sticky partition lost its leader: move to an available one.
    b = StickyPartitioner(random.Random(2))
    stuck = b.partition("b", None, 4)
    moved = b.partition("b", None, 4, available=[p for p in range(4) if p != stuck])
    assert moved != stuck


def test_sticky_batches_are_fuller_than_round_robin() -> None:
    """KIP-480's point: with keyless records, one partition at a time fills a batch."""
    records_per_batch = 10
    partitioner = StickyPartitioner(random.Random(5))
    batches: Counter[int] = Counter()
    fill = 0
    for _ in range(1000):
        partition = partitioner.partition("t", None, 6)
        fill += 1
        if fill == records_per_batch:
            batches[partition] += 1
            partitioner.on_new_batch("t", partition, 6)
            fill = 0
    assert sum(batches.values()) == 100  # every batch filled completely before switching
    assert len(batches) == 6


def test_factory_by_name() -> None:
    assert set(PARTITIONER_NAMES) == {"default", "murmur2", "round_robin", "sticky"}
    assert isinstance(make_partitioner(), DefaultPartitioner)
    assert isinstance(make_partitioner("murmur2"), DefaultPartitioner)
    assert isinstance(make_partitioner("round_robin"), RoundRobinPartitioner)
    assert isinstance(make_partitioner("sticky"), StickyPartitioner)
    # Each call makes a fresh partitioner with its own counters.
    one, two = make_partitioner(), make_partitioner()
    assert one.partition("t", None, 3) == two.partition("t", None, 3) == 0
    with pytest.raises(UnknownPartitionerError, match="round_robin"):
        make_partitioner("random")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_the_c_murmur2_in_use_equals_the_pure_reference(key: bytes) -> None:
    assert murmur2(key) == murmur2_reference(key)
    assert murmur2(bytearray(key)) == murmur2_reference(key)  # the producer takes bytearray keys


def test_the_c_murmur2_is_in_use_when_installed() -> None:
    pytest.importorskip("murmurhash2")
    assert murmur2 is not murmur2_reference
