"""Assignors: the seed document's tables, Kafka's documented examples, and properties."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strom.node.group.assignors import (
    ASSIGNORS,
    DEFAULT_ASSIGNOR,
    GroupAssignment,
    MemberSubscription,
    UnsupportedAssignorError,
    assign,
    get_assignor,
    range_assign,
    roundrobin_assign,
    uniform_assign,
)
from strom.v1 import common_pb2

TOPIC = "user-events"


def _consumer(name: str, member_id: str, topics: Sequence[str] = (TOPIC,)) -> MemberSubscription:
    return MemberSubscription(member_id=member_id, client_id=name, topics=frozenset(topics))


# Member ids are server-made UUIDs that sort in no useful order; C2's sorts before C1's here, so
# the tables only come out right if the client id orders members.
C1 = _consumer("C1", "f3a1-member")
C2 = _consumer("C2", "0b7c-member")
C3 = _consumer("C3", "7d20-member")
C4 = _consumer("C4", "0000-member")


def _by_client(
    result: GroupAssignment, members: Sequence[MemberSubscription]
) -> dict[str, list[int]]:
    return {m.client_id: list(result[m.member_id].get(TOPIC, ())) for m in members}


def test_seed_table_two_consumers_three_partitions() -> None:
    result = assign(DEFAULT_ASSIGNOR, [C2, C1], {TOPIC: 3})
    assert _by_client(result, [C1, C2]) == {"C1": [0, 1], "C2": [2]}


def test_seed_table_third_consumer_gets_one_each() -> None:
    result = assign(DEFAULT_ASSIGNOR, [C3, C1, C2], {TOPIC: 3})
    assert _by_client(result, [C1, C2, C3]) == {"C1": [0], "C2": [1], "C3": [2]}


def test_seed_table_c2_leaves_and_c1_takes_all() -> None:
    result = assign(DEFAULT_ASSIGNOR, [C1], {TOPIC: 3})
    assert _by_client(result, [C1]) == {"C1": [0, 1, 2]}


def test_seed_table_more_consumers_than_partitions_leaves_one_idle() -> None:
    result = assign(DEFAULT_ASSIGNOR, [C4, C3, C2, C1], {TOPIC: 3})
    assert _by_client(result, [C1, C2, C3, C4]) == {"C1": [0], "C2": [1], "C3": [2], "C4": []}
    assert result[C4.member_id] == {}


def test_range_kafka_javadoc_example_two_topics() -> None:
    c0 = _consumer("C0", "m0", ["t0", "t1"])
    c1 = _consumer("C1", "m1", ["t0", "t1"])
    result = range_assign([c1, c0], {"t0": 3, "t1": 3})
    assert result == {"m0": {"t0": (0, 1), "t1": (0, 1)}, "m1": {"t0": (2,), "t1": (2,)}}


def test_static_members_order_first_by_group_instance_id() -> None:
    dynamic = MemberSubscription("a-dyn", frozenset({TOPIC}), client_id="A")
    static_z = MemberSubscription("b", frozenset({TOPIC}), client_id="Z", group_instance_id="i-1")
    static_y = MemberSubscription("c", frozenset({TOPIC}), client_id="Y", group_instance_id="i-2")
    result = range_assign([dynamic, static_y, static_z], {TOPIC: 3})
    assert result == {"b": {TOPIC: (0,)}, "c": {TOPIC: (1,)}, "a-dyn": {TOPIC: (2,)}}


def test_same_client_id_falls_back_to_member_id() -> None:
    a = MemberSubscription("m-2", frozenset({TOPIC}), client_id="app")
    b = MemberSubscription("m-1", frozenset({TOPIC}), client_id="app")
    assert range_assign([a, b], {TOPIC: 3}) == {"m-1": {TOPIC: (0, 1)}, "m-2": {TOPIC: (2,)}}


def test_roundrobin_kafka_javadoc_examples() -> None:
    c0 = _consumer("C0", "m0", ["t0", "t1"])
    c1 = _consumer("C1", "m1", ["t0", "t1"])
    result = roundrobin_assign([c0, c1], {"t0": 3, "t1": 3})
    assert result == {"m0": {"t0": (0, 2), "t1": (1,)}, "m1": {"t0": (1,), "t1": (0, 2)}}
    # Differing subscriptions: members not subscribed to a topic are skipped.
    d0 = _consumer("C0", "m0", ["t0"])
    d1 = _consumer("C1", "m1", ["t0", "t1"])
    d2 = _consumer("C2", "m2", ["t0", "t1", "t2"])
    result = roundrobin_assign([d2, d1, d0], {"t0": 1, "t1": 2, "t2": 3})
    assert result == {
        "m0": {"t0": (0,)},
        "m1": {"t1": (0,)},
        "m2": {"t1": (1,), "t2": (0, 1, 2)},
    }


def test_topics_not_existing_or_empty_are_skipped() -> None:
    member = _consumer("C1", "m1", ["exists", "missing", "empty"])
    for assignor in ASSIGNORS.values():
        result = assignor([member], {"exists": 2, "empty": 0, "unsubscribed": 4})
        assert result == {"m1": {"exists": (0, 1)}}
    assert range_assign([], {TOPIC: 3}) == {}


def test_duplicate_member_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        range_assign([C1, C1], {TOPIC: 3})


def test_registry_and_unsupported_assignor() -> None:
    assert DEFAULT_ASSIGNOR == "range"
    assert get_assignor("range") is range_assign
    assert get_assignor("roundrobin") is roundrobin_assign
    assert get_assignor("uniform") is get_assignor("sticky") is uniform_assign
    with pytest.raises(UnsupportedAssignorError, match=r"UNSUPPORTED_ASSIGNOR.*'fancy'") as info:
        get_assignor("fancy")
    assert info.value.error_code == common_pb2.UNSUPPORTED_ASSIGNOR
    assert common_pb2.ErrorCode.Name(info.value.error_code) == info.value.error_name


def test_uniform_keeps_owned_partitions_and_only_fills_the_newcomer() -> None:
    a = MemberSubscription("a", frozenset({TOPIC}), owned={TOPIC: [0, 1, 2]})
    b = MemberSubscription("b", frozenset({TOPIC}), owned={TOPIC: [3, 4, 5]})
    c = MemberSubscription("c", frozenset({TOPIC}))
    result = uniform_assign([a, b, c], {TOPIC: 6})
    assert set(result["a"][TOPIC]) < {0, 1, 2}
    assert set(result["b"][TOPIC]) < {3, 4, 5}
    assert len(result["c"][TOPIC]) == 2
    # Range would move more: it recomputes ranges from scratch (a:{0,1} b:{2,3} c:{4,5}).
    assert _moves([a, b, c], range_assign([a, b, c], {TOPIC: 6})) == 3
    assert _moves([a, b, c], result) == 2


def test_uniform_resolves_conflicting_and_invalid_ownership() -> None:
    a = MemberSubscription("a", frozenset({TOPIC}), owned={TOPIC: [0, 1, 9], "other": [0]})
    b = MemberSubscription("b", frozenset({TOPIC}), owned={TOPIC: [1, 2]})
    result = uniform_assign([b, a], {TOPIC: 4, "other": 1})
    # The first member in order keeps a doubly owned partition; partitions that no longer exist
    # and topics no longer subscribed are dropped.
    assert result == {"a": {TOPIC: (0, 1)}, "b": {TOPIC: (2, 3)}}


# ---------------------------------------------------------------------------------------------
# Properties


TOPIC_POOL = ["alpha", "beta", "gamma", "delta"]


@st.composite
def groups(
    draw: st.DrawFn, identical: bool = False, clean_owned: bool = False
) -> tuple[list[MemberSubscription], dict[str, int]]:
    """Members with random subscriptions and previous ownership, and topic partition counts.

    ``clean_owned``: previous ownership is a valid, conflict-free partial assignment (what a
    coordinator's previous target is); otherwise it may be stale, invalid and conflicting.
    """
    topics = draw(st.lists(st.sampled_from(TOPIC_POOL), min_size=1, max_size=4, unique=True))
    counts = {topic: draw(st.integers(0, 24)) for topic in topics}
    if not identical and draw(st.booleans()):
        del counts[topics[0]]  # subscribed to but not (yet) existing
    member_count = draw(st.integers(1, 8))
    shared = frozenset(draw(st.lists(st.sampled_from(topics), min_size=1, unique=True)))
    members = []
    rng = random.Random(draw(st.integers(0, 2**32)))
    all_partitions = [(t, p) for t, n in counts.items() for p in range(n)]
    unclaimed = list(all_partitions)
    rng.shuffle(unclaimed)
    for index in range(member_count):
        subscribed = (
            shared
            if identical
            else frozenset(draw(st.lists(st.sampled_from(topics), min_size=0, unique=True)))
        )
        owned: dict[str, list[int]] = {}
        if clean_owned:
            for _ in range(rng.randrange(0, len(all_partitions) + 1)):
                if unclaimed and unclaimed[-1][0] in subscribed:
                    topic, partition = unclaimed.pop()
                    owned.setdefault(topic, []).append(partition)
        else:
            for topic in rng.sample(topics, rng.randrange(0, len(topics) + 1)):
                owned[topic] = [rng.randrange(0, 30) for _ in range(rng.randrange(0, 6))]
        members.append(
            MemberSubscription(
                member_id=f"member-{draw(st.integers(0, 10**6))}-{index}",
                topics=subscribed,
                client_id=draw(st.sampled_from(["", "app", "other"])),
                group_instance_id=draw(st.one_of(st.none(), st.sampled_from(["i-1", "i-2"])))
                if index < 2
                else None,
                owned=owned,
            )
        )
    return members, counts


ASSIGNOR_NAMES = ["range", "roundrobin", "uniform"]  # "sticky" is an alias of "uniform"


def _check_valid(
    members: Sequence[MemberSubscription], counts: Mapping[str, int], result: GroupAssignment
) -> None:
    assert set(result) == {m.member_id for m in members}
    by_id = {m.member_id: m for m in members}
    owners: Counter[tuple[str, int]] = Counter()
    for member_id, topics in result.items():
        for topic, partitions in topics.items():
            assert topic in by_id[member_id].topics, "assigned a topic the member did not want"
            assert partitions, "empty topics are left out"
            assert list(partitions) == sorted(set(partitions))
            owners.update((topic, p) for p in partitions)
    wanted = {t for m in members for t in m.topics}
    expected = {(t, p) for t in wanted for p in range(counts.get(t, 0))}
    assert set(owners) == expected
    assert all(n == 1 for n in owners.values()), "a partition has two owners"


def _loads(result: GroupAssignment) -> list[int]:
    return [sum(len(p) for p in topics.values()) for topics in result.values()]


def _moves(members: Sequence[MemberSubscription], result: GroupAssignment) -> int:
    """Previously owned partitions that now belong to someone else (owned must be clean)."""
    return sum(
        1
        for m in members
        for topic, partitions in m.owned.items()
        for p in partitions
        if p not in result[m.member_id].get(topic, ())
    )


@pytest.mark.parametrize("name", ASSIGNOR_NAMES)
@settings(max_examples=80, deadline=None)
@given(group=groups())
def test_every_partition_has_exactly_one_subscribed_owner(
    name: str, group: tuple[list[MemberSubscription], dict[str, int]]
) -> None:
    members, counts = group
    _check_valid(members, counts, get_assignor(name)(members, counts))


@pytest.mark.parametrize("name", ASSIGNOR_NAMES)
@settings(max_examples=60, deadline=None)
@given(group=groups(), seed=st.integers(0, 1000))
def test_result_does_not_depend_on_input_order(
    name: str, group: tuple[list[MemberSubscription], dict[str, int]], seed: int
) -> None:
    members, counts = group
    shuffled = list(members)
    random.Random(seed).shuffle(shuffled)
    reversed_counts = dict(reversed(list(counts.items())))
    assignor = get_assignor(name)
    assert assignor(members, counts) == assignor(shuffled, reversed_counts)


@pytest.mark.parametrize("name", ["roundrobin", "uniform"])
@settings(max_examples=100, deadline=None)
@given(group=groups(identical=True))
def test_identical_subscriptions_balance_within_one(
    name: str, group: tuple[list[MemberSubscription], dict[str, int]]
) -> None:
    members, counts = group
    loads = _loads(get_assignor(name)(members, counts))
    assert max(loads) - min(loads) <= 1


@settings(max_examples=100, deadline=None)
@given(group=groups())
def test_range_balances_each_topic_within_one_among_its_subscribers(
    group: tuple[list[MemberSubscription], dict[str, int]],
) -> None:
    members, counts = group
    result = range_assign(members, counts)
    for topic in {t for m in members for t in m.topics}:
        loads = [len(result[m.member_id].get(topic, ())) for m in members if topic in m.topics]
        assert max(loads) - min(loads) <= 1


@settings(max_examples=100, deadline=None)
@given(group=groups())
def test_uniform_leaves_no_move_that_would_improve_balance(
    group: tuple[list[MemberSubscription], dict[str, int]],
) -> None:
    """Differing subscriptions: no partition could go to an eligible member with ≥ 2 fewer."""
    members, counts = group
    result = uniform_assign(members, counts)
    load = {m.member_id: sum(len(p) for p in result[m.member_id].values()) for m in members}
    for holder in members:
        for topic in result[holder.member_id]:
            for other in members:
                if topic in other.topics:
                    assert load[other.member_id] >= load[holder.member_id] - 1


def _fewest_moves_for_balance(members: Sequence[MemberSubscription], total: int) -> int:
    """Identical subscriptions: the least movement any within-one-balanced assignment needs.

    Loads must end at base or base+1 with exactly ``total % n`` members at base+1; keeping the
    most means giving those extra slots to the members that owned the most.
    """
    base, extra = divmod(total, len(members))
    owned = sorted((sum(len(p) for p in m.owned.values()) for m in members), reverse=True)
    keep = sum(min(o, base + (1 if i < extra else 0)) for i, o in enumerate(owned))
    return sum(owned) - keep


@settings(max_examples=200, deadline=None)
@given(group=groups(identical=True, clean_owned=True))
def test_uniform_moves_the_fewest_partitions_possible(
    group: tuple[list[MemberSubscription], dict[str, int]],
) -> None:
    members, counts = group
    result = uniform_assign(members, counts)
    total = sum(counts.get(t, 0) for t in members[0].topics)
    assert _moves(members, result) == _fewest_moves_for_balance(members, total)
    # With one topic, range yields a balanced assignment too, so it can only move as many or more.
    if len(members[0].topics) == 1:
        assert _moves(members, result) <= _moves(members, range_assign(members, counts))


@settings(max_examples=100, deadline=None)
@given(
    member_count=st.integers(1, 12),
    partition_count=st.integers(1, 200),
    topic_count=st.integers(1, 3),
)
def test_uniform_adding_a_member_moves_about_p_over_n_plus_one(
    member_count: int, partition_count: int, topic_count: int
) -> None:
    topics = frozenset(f"t{i}" for i in range(topic_count))
    counts = dict.fromkeys(topics, partition_count)
    total = partition_count * topic_count
    members = [MemberSubscription(f"m{i:02}", topics) for i in range(member_count)]
    before = uniform_assign(members, counts)
    owning = [
        MemberSubscription(m.member_id, topics, owned=before[m.member_id]) for m in members
    ] + [MemberSubscription("newcomer", topics)]
    after = uniform_assign(owning, counts)
    _check_valid(owning, counts, after)
    moves = _moves(owning, after)
    # The newcomer needs floor(P/(N+1)) partitions at least, and nothing else should move.
    newcomer_load = sum(len(p) for p in after["newcomer"].values())
    assert moves == newcomer_load
    assert total // (member_count + 1) <= moves <= math.ceil(total / (member_count + 1))
