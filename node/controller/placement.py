"""Replica placement and leader choice: pure functions of the metadata image.

Placement spreads replicas round-robin across the active brokers (sorted by id), starting each
topic where the cluster's partition count leaves off, so leaders of successive topics do not all
land on the lowest broker id. Leader = first replica (the preferred leader), as in Kafka.

Leader election only ever picks an ISR member (DESIGN.md §6), unless the topic enables unclean
election, in which case an active replica outside the ISR may be chosen when no ISR member is
alive, trading acknowledged data for availability, as the operator asked. A replica its broker
reported offline (`PartitionInfo.offline_replicas`: its log failed) is never chosen.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from strom.node.metadata.image import NO_LEADER, MetadataImage, PartitionInfo
from strom.v1 import common_pb2

from .errors import ControllerError


def place_replicas(
    active_brokers: Sequence[int],
    num_partitions: int,
    replication_factor: int,
    start: int,
    first_partition: int = 0,
) -> list[tuple[int, ...]]:
    """Replica lists for partitions first_partition .. first_partition+num_partitions-1."""
    if replication_factor > len(active_brokers):
        raise ControllerError(
            common_pb2.INVALID_REPLICATION_FACTOR,
            f"replication factor {replication_factor} is larger than the "
            f"{len(active_brokers)} available brokers",
        )
    brokers = sorted(active_brokers)
    count = len(brokers)
    placements = []
    for p in range(first_partition, first_partition + num_partitions):
        first = (start + p) % count
        placements.append(tuple(brokers[(first + j) % count] for j in range(replication_factor)))
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
