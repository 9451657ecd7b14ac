"""Rack-aware replica placement (node/controller/placement.py), as a property over random
broker/rack layouts, and through the controller's topic creation."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from strom.node.controller.logic import ControllerLogic, ControllerSettings
from strom.node.controller.placement import place_replicas, rack_alternating
from strom.node.metadata.image import MetadataImage, apply_records


def test_brokers_alternate_between_racks() -> None:
    racks = {1: "a", 2: "a", 3: "b", 4: "b", 5: "c", 6: "a"}
    assert rack_alternating([6, 5, 4, 3, 2, 1], racks) == [1, 3, 5, 2, 4, 6]


def test_without_racks_placement_stays_round_robin() -> None:
    assert place_replicas([3, 1, 2], 3, 2, start=0, racks={}) == [(1, 2), (2, 3), (3, 1)]


@st.composite
def layouts(draw: st.DrawFn) -> tuple[dict[int, str], int, int, int]:
    count = draw(st.integers(1, 12))
    rack_names = draw(st.lists(st.sampled_from("abcde"), min_size=count, max_size=count))
    racks = {broker: rack for broker, rack in zip(range(1, count + 1), rack_names, strict=True)}
    factor = draw(st.integers(1, count))
    partitions = draw(st.integers(1, 40))
    start = draw(st.integers(0, 100))
    return racks, factor, partitions, start


@settings(max_examples=300, deadline=None)
@given(layouts())
def test_every_partition_spans_as_many_racks_as_it_can(
    layout: tuple[dict[int, str], int, int, int],
) -> None:
    racks, factor, partitions, start = layout
    brokers = sorted(racks)
    rack_count = len(set(racks.values()))
    placements = place_replicas(brokers, partitions, factor, start, racks=racks)
    assert len(placements) == partitions
    for replicas in placements:
        assert len(replicas) == factor and len(set(replicas)) == factor
        assert set(replicas) <= set(brokers)
        assert len({racks[r] for r in replicas}) == min(factor, rack_count)
    # Leaders (first replicas) walk every broker in turn: no broker leads two more than another.
    leaders = Counter(replicas[0] for replicas in placements)
    assert max(leaders.values()) - min(leaders.get(b, 0) for b in brokers) <= 1


def test_the_controller_places_new_topics_across_racks() -> None:
    logic = ControllerLogic(
        ControllerSettings(1, 1, {}), MetadataImage(), new_topic_id=lambda: b"t" * 16
    )
    committed = MetadataImage()
    racks = {1: "a", 2: "a", 3: "b", 4: "b", 5: "c", 6: "c"}
    for broker_id, rack in racks.items():
        records, epoch = logic.register_broker(broker_id, b"i", [], rack, 0)
        committed, _ = apply_records(committed, records, committed.last_index + 1, 1)
        logic.on_commit(committed, active=True)
        records, _ = logic.broker_heartbeat(broker_id, epoch, committed.last_index, False, False, 0)
        committed, _ = apply_records(committed, records, committed.last_index + 1, 1)
        logic.on_commit(committed, active=True)
    records, topic_id, _, _ = logic.create_topic("orders", 12, 3, {})
    committed, _ = apply_records(committed, records, committed.last_index + 1, 1)
    for part in committed.topics[topic_id].partitions.values():
        assert sorted(racks[r] for r in part.replicas) == ["a", "b", "c"]
    records = logic.create_partitions("orders", 18)
    committed, _ = apply_records(committed, records, committed.last_index + 1, 1)
    for part in committed.topics[topic_id].partitions.values():
        assert sorted(racks[r] for r in part.replicas) == ["a", "b", "c"]
