"""Choosing a partition for a produced record: pure decisions, no I/O.

Rules, each the same as Kafka's Java client so that a key lands on the same partition whichever
client (strom's, Kafka's Java client, kafka-python) produced it:

- A record with a key goes to ``to_positive(murmur2(key)) % num_partitions`` over *all*
  partitions of the topic (available or not: a key's partition must not depend on which leaders
  happen to be up). ``murmur2`` is Kafka's ``Utils.murmur2`` (MurmurHash2, seed 0x9747b28c) with
  Java's signed 32-bit result; ``to_positive`` is ``Utils.toPositive`` (``n & 0x7fffffff``, *not*
  ``abs``, so ``Integer.MIN_VALUE`` maps to 0).
- A record without a key goes round-robin per topic: a counter per topic starting at 0, so
  M1→P0, M2→P1, M3→P2, M4→P0 … (the seed document's table). When the caller passes the list of
  available partitions (those with a leader), the counter indexes that list instead, as Kafka's
  ``RoundRobinPartitioner`` does.
- The sticky partitioner (KIP-480) sends keyless records to one partition per topic until the
  producer tells it, through ``on_new_batch``, that the batch for that partition is full or was
  sent; it then picks another partition (at random among the available ones, never the one it just
  left when there is a choice), so keyless records form fewer, fuller batches.

The partitioners keep per-topic counters or sticky choices and are not thread-safe: the producer
calls them from its one event loop.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence
from typing import Protocol

__all__ = [
    "PARTITIONER_NAMES",
    "DefaultPartitioner",
    "Partitioner",
    "RoundRobinPartitioner",
    "StickyPartitioner",
    "UnknownPartitionerError",
    "make_partitioner",
    "murmur2",
    "murmur2_reference",
    "partition_for_key",
    "to_positive",
]

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
# Decoders of n little-endian u32 words, built once per key length: struct decodes all words of a
# key in one C call, which is what makes this faster than indexing bytes in Python.
_WORDS_CACHED_MAX = 256
_word_unpackers: dict[int, Callable[[bytes], tuple[int, ...]]] = {}


def _unpacker(word_count: int) -> Callable[[bytes], tuple[int, ...]]:
    unpack = _word_unpackers.get(word_count)
    if unpack is None:
        unpack = struct.Struct(f"<{word_count}I").unpack_from
        if word_count <= _WORDS_CACHED_MAX:
            _word_unpackers[word_count] = unpack
    return unpack


def murmur2_reference(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` of ``data``: a signed 32-bit int, exactly as Java returns it.
    Pure Python: the reference the C version (``murmurhash2``) is tested against, and the one in
    use where that is not installed."""
    length = len(data)
    h = _SEED ^ length
    word_count = length >> 2
    if word_count:
        m = _M
        mask = _MASK
        for k in _unpacker(word_count)(data):
            k = (k * m) & mask
            # h*m ^ k keeps the low 32 bits of (h*m & mask) ^ k because k < 2**32: one mask less.
            h = ((h * m) ^ (((k ^ (k >> 24)) * m) & mask)) & mask
    tail = length & 3
    if tail:
        i = length - tail
        if tail == 3:
            h ^= data[i + 2] << 16
        if tail >= 2:
            h ^= data[i + 1] << 8
        h = ((h ^ data[i]) * _M) & _MASK
    h = ((h ^ (h >> 13)) * _M) & _MASK
    h ^= h >> 15
    return h - 0x100000000 if h & 0x80000000 else h


def _murmur2_c(data: bytes) -> int:
    """``murmur2_reference`` in C (the ``murmurhash2`` package, unsigned): about 10x faster."""
    # The C function takes bytes only; keys may be any bytes-like object (bytearray).
    h = _murmurhash2(data if type(data) is bytes else bytes(data), _SEED)
    return h - 0x100000000 if h & 0x80000000 else h


try:
    from murmurhash2 import murmurhash2 as _murmurhash2
except ImportError:  # pragma: no cover - a platform without the C extension
    murmur2 = murmur2_reference
else:
    murmur2 = _murmur2_c


def to_positive(number: int) -> int:
    """Kafka's ``Utils.toPositive``: clear the sign bit of a 32-bit int (MIN_VALUE → 0)."""
    return number & 0x7FFFFFFF


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """The partition Kafka's Java client picks for ``key`` among ``num_partitions``."""
    assert num_partitions > 0, "a topic has at least one partition"
    # murmur2's signed result & 0x7fffffff equals the unsigned result & 0x7fffffff.
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions


class UnknownPartitionerError(ValueError):
    """A producer was configured with a partitioner name strom does not know (fatal)."""


class Partitioner(Protocol):
    """Picks the partition of each record; the producer reports full or sent batches back."""

    def partition(
        self,
        topic: str,
        key: bytes | None,
        num_partitions: int,
        available: Sequence[int] | None = None,
    ) -> int:
        """The partition for a record of ``topic`` (``available``: partitions with a leader)."""
        ...

    def on_new_batch(self, topic: str, prev_partition: int, num_partitions: int) -> None:
        """The batch of ``prev_partition`` is full or was sent; the next one starts now."""
        ...


class _RoundRobin:
    """Per-topic counters starting at 0: the keyless half of the default partitioner."""

    __slots__ = ("_counters",)

    def __init__(self) -> None:
        self._counters: dict[str, int] = {}

    def next(self, topic: str, num_partitions: int, available: Sequence[int] | None) -> int:
        count = self._counters.get(topic, 0)
        # Wrap at 2**31 as Java's int counter would, without ever going negative.
        self._counters[topic] = (count + 1) & 0x7FFFFFFF
        if available:
            return available[count % len(available)]
        return count % num_partitions


class DefaultPartitioner:
    """Keyed records by murmur2 (Kafka's rule); keyless records round-robin per topic."""

    __slots__ = ("_round_robin",)

    def __init__(self) -> None:
        self._round_robin = _RoundRobin()

    def partition(
        self,
        topic: str,
        key: bytes | None,
        num_partitions: int,
        available: Sequence[int] | None = None,
    ) -> int:
        if key is not None:
            return partition_for_key(key, num_partitions)
        return self._round_robin.next(topic, num_partitions, available)

    def on_new_batch(self, topic: str, prev_partition: int, num_partitions: int) -> None:
        """Round-robin already spreads records; a new batch changes nothing."""


class RoundRobinPartitioner:
    """Kafka's ``RoundRobinPartitioner``: every record round-robin per topic, *keys ignored*.

    Records with the same key do not stay together; choose this only when no consumer relies on
    per-key order.
    """

    __slots__ = ("_round_robin",)

    def __init__(self) -> None:
        self._round_robin = _RoundRobin()

    def partition(
        self,
        topic: str,
        key: bytes | None,
        num_partitions: int,
        available: Sequence[int] | None = None,
    ) -> int:
        return self._round_robin.next(topic, num_partitions, available)

    def on_new_batch(self, topic: str, prev_partition: int, num_partitions: int) -> None:
        """Round-robin already spreads records; a new batch changes nothing."""


class StickyPartitioner:
    """KIP-480: keyed records by murmur2; keyless records stick to one partition per topic.

    The sticky choice changes only in ``on_new_batch`` for the partition currently stuck to (a
    late report about an older partition is ignored), so one batch fills before the next starts.
    ``rng`` is injectable so tests and simulations are reproducible.
    """

    __slots__ = ("_rng", "_sticky")

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._sticky: dict[str, int] = {}

    def partition(
        self,
        topic: str,
        key: bytes | None,
        num_partitions: int,
        available: Sequence[int] | None = None,
    ) -> int:
        if key is not None:
            return partition_for_key(key, num_partitions)
        current = self._sticky.get(topic)
        if current is None or current >= num_partitions or (available and current not in available):
            current = self._choose(num_partitions, available, avoid=current)
            self._sticky[topic] = current
        return current

    def on_new_batch(self, topic: str, prev_partition: int, num_partitions: int) -> None:
        if self._sticky.get(topic) == prev_partition:
            self._sticky[topic] = self._choose(num_partitions, None, avoid=prev_partition)

    def sticky_partition(self, topic: str) -> int | None:
        """The partition keyless records of ``topic`` go to now (None before the first)."""
        return self._sticky.get(topic)

    def _choose(
        self, num_partitions: int, available: Sequence[int] | None, avoid: int | None
    ) -> int:
        candidates: Sequence[int] = available if available else range(num_partitions)
        if len(candidates) == 1:
            return candidates[0]
        choice = candidates[self._rng.randrange(len(candidates))]
        while choice == avoid:
            choice = candidates[self._rng.randrange(len(candidates))]
        return choice


_FACTORIES: dict[str, Callable[[], Partitioner]] = {
    "default": DefaultPartitioner,
    "murmur2": DefaultPartitioner,
    "round_robin": RoundRobinPartitioner,
    "sticky": StickyPartitioner,
}
PARTITIONER_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def make_partitioner(name: str = "default") -> Partitioner:
    """A new partitioner by its configured name (``PARTITIONER_NAMES``)."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise UnknownPartitionerError(
            f"unknown partitioner {name!r}: choose one of {', '.join(PARTITIONER_NAMES)}"
        )
    return factory()
