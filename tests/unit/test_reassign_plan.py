"""Plans of partition moves (node/reassign_plan.py): decommission and rebalance."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strom.node.controller.placement import place_replicas
from strom.node.reassign_plan import PlanError, decommission, load_table, rebalance


def assignment(brokers: list[int], partitions: int, factor: int, racks: dict[int, str]) -> dict:
    return {
        ("t", p): r
        for p, r in enumerate(place_replicas(brokers, partitions, factor, 0, racks=racks))
    }


def test_decommission_moves_every_replica_off_keeping_racks_and_spreading_load() -> None:
    racks = {1: "a", 2: "a", 3: "b", 4: "b", 5: "c", 6: "c"}
    current = assignment([1, 2, 3, 4, 5, 6], 12, 3, racks)
    plan = decommission(current, 4, [1, 2, 3, 5, 6], racks)
    assert set(plan) == {tp for tp, r in current.items() if 4 in r}
    for tp, replicas in plan.items():
        assert 4 not in replicas and len(set(replicas)) == 3
        assert [r for r in replicas if r in current[tp]] == [r for r in current[tp] if r != 4]
        assert {racks[r] for r in replicas} == {"a", "b", "c"}  # 4's place went to rack b: 3
    assert all(3 in plan[tp] for tp in plan)


def test_decommission_needs_enough_brokers() -> None:
    current = {("t", 0): (1, 2, 3)}
    with pytest.raises(PlanError, match="add a broker first"):
        decommission(current, 3, [1, 2], {})


def test_rebalance_gives_a_new_broker_its_share() -> None:
    current = assignment([1, 2, 3], 6, 3, {})
    plan = rebalance(current, [1, 2, 3, 4], {})
    after = {**current, **plan}
    table = load_table(after, [1, 2, 3, 4])
    replicas = [r for r, _ in table.values()]
    leaders = [lead for _, lead in table.values()]
    assert max(replicas) - min(replicas) <= 1 and table[4][0] >= 4
    assert max(leaders) - min(leaders) <= 1
    assert rebalance(after, [1, 2, 3, 4], {}) == {}  # balanced: nothing more to do


@settings(max_examples=150, deadline=None)
@given(
    st.integers(2, 8),
    st.integers(1, 3),
    st.integers(1, 30),
    st.lists(st.sampled_from("abc"), min_size=11, max_size=11),
    st.integers(1, 3),
)
def test_rebalance_evens_out_and_never_narrows_rack_spread(
    existing: int, added: int, partitions: int, rack_names: list[str], factor: int
) -> None:
    factor = min(factor, existing)
    brokers = list(range(1, existing + added + 1))
    racks = dict(zip(brokers, rack_names, strict=False))
    current = assignment(brokers[:existing], partitions, factor, racks)
    plan = rebalance(current, brokers, racks)
    after = {**current, **plan}
    for tp, replicas in after.items():
        assert len(replicas) == factor and len(set(replicas)) == factor
        assert len({racks[r] for r in replicas}) >= len({racks[r] for r in current[tp]})
    counts = Counter(r for rs in after.values() for r in rs)
    if len({racks[b] for b in brokers}) == 1:  # no rack constraint: replicas even out
        spread = [counts.get(b, 0) for b in brokers]
        assert max(spread) - min(spread) <= 1
