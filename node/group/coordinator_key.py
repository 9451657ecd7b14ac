"""Which partition of ``__consumer_offsets`` coordinates a group (DESIGN.md §8).

Kafka's rule, kept exactly so placements agree with a Kafka cluster's:
``partitionFor(groupId) = Utils.abs(groupId.hashCode()) % offsets.topic.num.partitions``.

- ``groupId.hashCode()`` is Java's ``String.hashCode``: ``s[0]*31^(n-1) + … + s[n-1]`` over the
  string's UTF-16 *code units* (a character outside the Basic Multilingual Plane counts as its two
  surrogates), in 32-bit two's-complement arithmetic. Never Python's ``hash()``, which is salted
  per process.
- ``Utils.abs`` is Kafka's, not ``Math.abs``: ``Integer.MIN_VALUE`` maps to 0 (``Math.abs`` would
  return MIN_VALUE itself, a negative number, and a negative partition).
"""

from __future__ import annotations

__all__ = ["coordinator_partition", "java_string_hash", "kafka_utils_abs"]

_INT_MIN = -(2**31)


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode()`` of ``text``: a signed 32-bit int."""
    # surrogatepass: a lone surrogate is a legal Java char and must hash as that code unit.
    units = text.encode("utf-16-be", "surrogatepass")
    h = 0
    for i in range(0, len(units), 2):
        h = (31 * h + (units[i] << 8 | units[i + 1])) & 0xFFFFFFFF
    return h - 0x100000000 if h & 0x80000000 else h


def kafka_utils_abs(number: int) -> int:
    """Kafka's ``Utils.abs`` of a 32-bit int: ``abs``, except ``Integer.MIN_VALUE`` → 0."""
    assert _INT_MIN <= number < 2**31, "a Java int"
    return 0 if number == _INT_MIN else abs(number)


def coordinator_partition(group_id: str, num_partitions: int) -> int:
    """The ``__consumer_offsets`` partition whose leader coordinates ``group_id``."""
    assert num_partitions > 0, "offsets.topic.num.partitions is at least 1"
    return kafka_utils_abs(java_string_hash(group_id)) % num_partitions
