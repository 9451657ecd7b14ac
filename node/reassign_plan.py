"""Plans of partition moves, pure functions of an assignment: what `strom partitions reassign
--generate`, `strom brokers decommission` and `strom cluster rebalance` propose. The controller
carries the moves out (node/controller/reassignment.py); nothing here talks to the cluster.

An assignment maps (topic, partition) to its replicas, the first the preferred leader; a plan
is the partitions whose replicas change, with their new replicas. Racks are kept as placement
keeps them (node/controller/placement.py): a move never makes a partition span fewer racks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from strom.node.controller.errors import ControllerError
from strom.node.controller.placement import place_replicas

TopicPartition = tuple[str, int]
Assignment = dict[TopicPartition, tuple[int, ...]]


class PlanError(Exception):
    """No plan can do what was asked (the message says why)."""


def generate(
    current: Mapping[TopicPartition, Sequence[int]],
    brokers: Sequence[int],
    racks: Mapping[int, str],
) -> Assignment:
    """Every partition of the topics in `current` placed afresh on `brokers`, with each topic's
    replication factor, rack-aware as topic creation is, each topic starting where the previous
    one left off so leaders spread (Kafka's --generate)."""
    by_topic: dict[str, list[int]] = {}
    factor: dict[str, int] = {}
    for (topic, partition), replicas in current.items():
        by_topic.setdefault(topic, []).append(partition)
        factor[topic] = len(replicas)
    proposal: Assignment = {}
    start = 0
    for topic in sorted(by_topic):
        partitions = sorted(by_topic[topic])
        try:
            placed = place_replicas(brokers, len(partitions), factor[topic], start, racks=racks)
        except ControllerError as exc:
            raise PlanError(f"topic {topic!r}: {exc.message}") from exc
        proposal.update({(topic, p): r for p, r in zip(partitions, placed, strict=True)})
        start += len(partitions)
    return proposal


def _rack_count(replicas: Sequence[int], racks: Mapping[int, str]) -> int:
    return len({racks.get(r, "") for r in replicas})


def decommission(
    current: Mapping[TopicPartition, Sequence[int]],
    leaving: int,
    brokers: Sequence[int],
    racks: Mapping[int, str],
) -> Assignment:
    """Moves taking every replica off `leaving`: each is replaced, in its position, by the
    broker of `brokers` (the ones staying) that keeps the partition's rack spread and holds the
    fewest replicas (preferring the leaving broker's own rack)."""
    staying = [b for b in brokers if b != leaving]
    load = Counter({b: 0 for b in staying})
    for replicas in current.values():
        load.update(r for r in replicas if r in load)
    plan: Assignment = {}
    for tp in sorted(tp for tp, replicas in current.items() if leaving in replicas):
        replicas = tuple(current[tp])
        others = [r for r in replicas if r != leaving]
        used_racks = {racks.get(r, "") for r in others}
        candidates = [b for b in staying if b not in replicas]
        if not candidates:
            raise PlanError(
                f"{tp[0]}-{tp[1]} has {len(replicas)} replicas and only "
                f"{len(staying)} other brokers can hold them: add a broker first"
            )

        ranked = sorted((_preference(b, leaving, used_racks, racks, load), b) for b in candidates)
        chosen = ranked[0][1]
        plan[tp] = tuple(chosen if r == leaving else r for r in replicas)
        load[chosen] += 1
    return plan


def _preference(
    broker: int, leaving: int, used_racks: set[str], racks: Mapping[int, str], load: Counter[int]
) -> tuple[int, int, int]:
    """Lower is better: the leaving broker's rack, else a rack the partition lacks; then the
    least loaded broker; then the lowest id (a deterministic plan)."""
    rack = racks.get(broker, "")
    if rack == racks.get(leaving, ""):
        order = 0
    elif rack not in used_racks:
        order = 1
    else:
        order = 2
    return order, load[broker], broker


def rebalance(
    current: Mapping[TopicPartition, Sequence[int]],
    brokers: Sequence[int],
    racks: Mapping[int, str],
) -> Assignment:
    """Moves evening out replicas across `brokers` (each within one of the others), then
    preferred leaders (by reordering replicas, which moves no data). Replicas on brokers not in
    `brokers` are left where they are (decommission moves those)."""
    assignment: Assignment = {tp: tuple(r) for tp, r in current.items()}
    pool = sorted(set(brokers))
    if not pool:
        raise PlanError("no brokers to balance across")
    _even_out_replicas(assignment, pool, racks)
    _even_out_leaders(assignment, pool)
    return {tp: r for tp, r in assignment.items() if r != tuple(current[tp])}


def _even_out_replicas(assignment: Assignment, pool: list[int], racks: Mapping[int, str]) -> None:
    load = Counter({b: 0 for b in pool})
    for replicas in assignment.values():
        load.update(r for r in replicas if r in load)
    for _ in range(sum(load.values()) + 1):  # each move lowers the spread; this bounds them
        ranked = sorted(pool, key=lambda b: (load[b], b))
        moved = False
        for most in reversed(ranked):
            for least in ranked:
                if load[most] - load[least] <= 1:
                    break
                tp = _movable(assignment, most, least, racks)
                if tp is not None:
                    assignment[tp] = tuple(least if r == most else r for r in assignment[tp])
                    load[most] -= 1
                    load[least] += 1
                    moved = True
                    break
            if moved:
                break
        if not moved:
            return


def _movable(
    assignment: Assignment, source: int, target: int, racks: Mapping[int, str]
) -> TopicPartition | None:
    """A partition on `source` and not on `target` whose rack spread survives the swap;
    followers first (moving a preferred leader also moves leadership)."""
    best: tuple[int, TopicPartition] | None = None
    for tp in sorted(assignment):
        replicas = assignment[tp]
        if source not in replicas or target in replicas:
            continue
        swapped = tuple(target if r == source else r for r in replicas)
        if _rack_count(swapped, racks) < _rack_count(replicas, racks):
            continue
        rank = 1 if replicas[0] == source else 0
        if best is None or rank < best[0]:
            best = (rank, tp)
            if rank == 0:
                break
    return None if best is None else best[1]


def _even_out_leaders(assignment: Assignment, pool: list[int]) -> None:
    leaders = Counter({b: 0 for b in pool})
    leaders.update(r[0] for r in assignment.values() if r[0] in leaders)
    for _ in range(len(assignment) + 1):
        ranked = sorted(pool, key=lambda b: (leaders[b], b))
        moved = False
        for most in reversed(ranked):
            for least in ranked:
                if leaders[most] - leaders[least] <= 1:
                    break
                tp = next(
                    (
                        tp
                        for tp in sorted(assignment)
                        if assignment[tp][0] == most and least in assignment[tp]
                    ),
                    None,
                )
                if tp is not None:
                    replicas = assignment[tp]
                    assignment[tp] = (least, *(r for r in replicas if r != least))
                    leaders[most] -= 1
                    leaders[least] += 1
                    moved = True
                    break
            if moved:
                break
        if not moved:
            return


def load_table(
    assignment: Mapping[TopicPartition, Sequence[int]], brokers: Sequence[int]
) -> dict[int, tuple[int, int]]:
    """Per broker: (replicas, preferred leaderships)."""
    replicas = Counter(r for rs in assignment.values() for r in rs)
    leaders = Counter(rs[0] for rs in assignment.values() if rs)
    return {b: (replicas[b], leaders[b]) for b in sorted(set(brokers) | set(replicas))}
