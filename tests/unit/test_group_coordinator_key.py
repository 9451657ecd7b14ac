"""The coordinator of a group: Kafka's Utils.abs(groupId.hashCode()) % offsets partitions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strom.node.group.coordinator_key import (
    coordinator_partition,
    java_string_hash,
    kafka_utils_abs,
)


def _utf16_units(text: str) -> list[int]:
    """UTF-16 code units derived by the surrogate formula (not via Python's codec)."""
    units = []
    for ch in text:
        code = ord(ch)
        if code > 0xFFFF:
            offset = code - 0x10000
            units += [0xD800 + (offset >> 10), 0xDC00 + (offset & 0x3FF)]
        else:
            units.append(code)
    return units


def _hash_by_polynomial(text: str) -> int:
    """String.hashCode's documented formula s[0]*31^(n-1) + ... + s[n-1], reduced to a Java int."""
    units = _utf16_units(text)
    total = sum(unit * 31 ** (len(units) - 1 - i) for i, unit in enumerate(units)) % 2**32
    return total - 2**32 if total >= 2**31 else total


# Values derived by hand from the formula (shown), plus two classics of Java folklore.
VECTORS = {
    "": 0,
    "a": 97,
    "ab": 97 * 31 + 98,  # 3105
    "hello": 99162322,  # the textbook "hello".hashCode()
    "é": 0xE9,  # one BMP unit
    "€": 0x20AC,
    "日本": 0x65E5 * 31 + 0x672C,  # 835047
    "😀": 0xD83D * 31 + 0xDE00,  # U+1F600 is two units: 1772899
    "a😀": (97 * 31 + 0xD83D) * 31 + 0xDE00,
    "polygenelubricants": -(2**31),  # hashes to Integer.MIN_VALUE
}


@pytest.mark.parametrize(("text", "expected"), sorted(VECTORS.items()))
def test_java_string_hash_vectors(text: str, expected: int) -> None:
    assert java_string_hash(text) == expected
    assert _hash_by_polynomial(text) == expected


@given(st.text(max_size=80))
def test_java_string_hash_matches_the_polynomial(text: str) -> None:
    value = java_string_hash(text)
    assert value == _hash_by_polynomial(text)
    assert -(2**31) <= value < 2**31


def test_lone_surrogates_hash_as_their_code_unit() -> None:
    # Java strings may hold an unpaired surrogate; it is one char with its own value.
    assert java_string_hash("\ud800") == 0xD800
    assert java_string_hash("x\udfff") == ord("x") * 31 + 0xDFFF


def test_utils_abs_maps_min_value_to_zero() -> None:
    assert kafka_utils_abs(-(2**31)) == 0  # Math.abs would return MIN_VALUE (negative)
    assert kafka_utils_abs(-5) == 5
    assert kafka_utils_abs(2**31 - 1) == 2**31 - 1


def test_coordinator_partition() -> None:
    # "polygenelubricants" → MIN_VALUE → Utils.abs → 0 → partition 0 whatever the count.
    assert coordinator_partition("polygenelubricants", 50) == 0
    assert coordinator_partition("polygenelubricants", 7) == 0
    assert coordinator_partition("hello", 50) == 99162322 % 50 == 22
    assert coordinator_partition("😀", 50) == 1772899 % 50 == 49
    # A negative hash: abs first, then modulo (not Python's floor-mod of a negative number).
    assert java_string_hash("my-group") == -1906497762 == _hash_by_polynomial("my-group")
    assert coordinator_partition("my-group", 50) == 1906497762 % 50 == 12
    assert -1906497762 % 50 == 38  # what floor-mod without abs would wrongly give
    assert coordinator_partition("anything", 1) == 0


@given(st.text(max_size=40), st.integers(1, 1000))
def test_coordinator_partition_is_in_range(group_id: str, num_partitions: int) -> None:
    partition = coordinator_partition(group_id, num_partitions)
    assert 0 <= partition < num_partitions
    assert partition == kafka_utils_abs(_hash_by_polynomial(group_id)) % num_partitions
