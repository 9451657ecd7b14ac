"""Replica placement and leader choice: pure functions of the metadata image.

Placement spreads replicas round-robin across the active brokers (sorted by id), starting each
topic where the cluster's partition count leaves off, so leaders of successive topics do not all
land on the lowest broker id. Leader = first replica (the preferred leader), as in Kafka.

When brokers declare `broker.rack`, placement is Kafka's rack-aware assignment
(`AdminUtils.assignReplicasToBrokersRackAware`): brokers are listed alternating between racks,
each partition's first replica walks that list, and each further replica is the next broker (at
a shift that changes every full round, so followers spread too) on a rack that holds no replica
of the partition yet, until every rack holds one. So a partition spans min(replication factor,
racks) racks, and losing a rack loses at most the replicas on it. A broker with no rack counts
as one more rack, named "" (Kafka refuses such mixed layouts unless told to ignore racks; a
running cluster would rather place than refuse).

Leader election only ever picks an ISR member (DESIGN.md §6), unless the topic enables unclean
election, in which case an active replica outside the ISR may be chosen when no ISR member is
alive, trading acknowledged data for availability, as the operator asked. A replica its broker
reported offline (`PartitionInfo.offline_replicas`: its log failed) is never chosen.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from strom.node.metadata.image import NO_LEADER, MetadataImage, PartitionInfo
from strom.v1 import common_pb2

from .errors import ControllerError


def place_replicas(
    active_brokers: Sequence[int],
    num_partitions: int,
    replication_factor: int,
    start: int,
    first_partition: int = 0,
    racks: Mapping[int, str] | None = None,
) -> list[tuple[int, ...]]:
    """Replica lists for partitions first_partition .. first_partition+num_partitions-1;
    rack-aware when any of the brokers has a rack in `racks`."""
    if replication_factor > len(active_brokers):
        raise ControllerError(
            common_pb2.INVALID_REPLICATION_FACTOR,
            f"replication factor {replication_factor} is larger than the "
            f"{len(active_brokers)} available brokers",
        )
    if racks and any(racks.get(b) for b in active_brokers):
        return _place_rack_aware(
            active_brokers, racks, num_partitions, replication_factor, start, first_partition
        )
    brokers = sorted(active_brokers)
    count = len(brokers)
    placements = []
    for p in range(first_partition, first_partition + num_partitions):
        first = (start + p) % count
        placements.append(tuple(brokers[(first + j) % count] for j in range(replication_factor)))
    return placements


def rack_alternating(brokers: Sequence[int], racks: Mapping[int, str]) -> list[int]:
    """Brokers in the order rack-aware placement walks them: one from each rack (racks by name,
    brokers by id within a rack), then the next from each, and so on."""
    by_rack: dict[str, list[int]] = {}
    for broker in sorted(brokers):
        by_rack.setdefault(racks.get(broker, ""), []).append(broker)
    columns = [by_rack[rack] for rack in sorted(by_rack)]
    return [
        column[row]
        for row in range(max(len(c) for c in columns))
        for column in columns
        if row < len(column)
    ]


def _place_rack_aware(
    active_brokers: Sequence[int],
    racks: Mapping[int, str],
    num_partitions: int,
    replication_factor: int,
    start: int,
    first_partition: int,
) -> list[tuple[int, ...]]:
    arranged = rack_alternating(active_brokers, racks)
    count = len(arranged)
    rack_of = {b: racks.get(b, "") for b in arranged}
    rack_count = len(set(rack_of.values()))
    placements = []
    for p in range(first_partition, first_partition + num_partitions):
        first_index = (start + p) % count
        shift = (start + p // count) * rack_count
        first = arranged[first_index]
        replicas = [first]
        used_racks = {rack_of[first]}
        k = 0
        while len(replicas) < replication_factor:
            # Kafka's replicaIndex: never the first replica's own position.
            candidate = arranged[(first_index + 1 + (shift + k) % (count - 1)) % count]
            k += 1
            if candidate in replicas:
                continue
            if rack_of[candidate] in used_racks and len(used_racks) < rack_count:
                continue
            replicas.append(candidate)
            used_racks.add(rack_of[candidate])
        placements.append(tuple(replicas))
    return placements


def placement_start(image: MetadataImage) -> int:
    """Where the next topic's first partition is placed: after every partition that exists."""
    return sum(len(topic.partitions) for topic in image.topics.values())


def choose_leader(
    partition: PartitionInfo,
    active: Collection[int],
    unclean: bool,
    isr: Sequence[int] | None = None,
    avoid: int = NO_LEADER,
) -> int:
    """The leader a partition should have: its current leader if still eligible, else the first
    replica (in preference order) that is an active ISR member, else (unclean only) any active
    replica, else NO_LEADER. Offline replicas are never eligible."""
    members = partition.isr if isr is None else isr
    offline = partition.offline_replicas

    def eligible(replica: int) -> bool:
        return replica in active and replica != avoid and replica not in offline

    if eligible(partition.leader) and partition.leader in members:
        return partition.leader
    for replica in partition.replicas:
        if eligible(replica) and replica in members:
            return replica
    if unclean:
        for replica in partition.replicas:
            if eligible(replica):
                return replica
    return NO_LEADER
