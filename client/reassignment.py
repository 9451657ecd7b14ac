"""Admin.alter_partition_reassignments / list_partition_reassignments (Kafka's KIP-455 API).

Mixed into AsyncAdmin (client/admin.py). A reassignment moves a partition to a new replica set:
the controller adds the new replicas as followers, waits until they are in sync, moves
leadership if the leader leaves, then removes the old replicas and their data. `alter` only
starts (or cancels) moves and returns; `list` shows those still in progress. Needs ALTER
(alter) or DESCRIBE (list) on the cluster when the cluster's authorizer is on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from strom.v1 import admin_pb2, common_pb2

from .cluster import ClusterClient
from .errors import error_from_code

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class PartitionReassignment:
    """A move in progress: `replicas` is the target followed by the replicas being removed."""

    replicas: tuple[int, ...]
    adding_replicas: tuple[int, ...]
    removing_replicas: tuple[int, ...]

    @property
    def target_replicas(self) -> tuple[int, ...]:
        return tuple(r for r in self.replicas if r not in self.removing_replicas)


class AsyncReassignmentAdmin:
    cluster: ClusterClient

    async def alter_partition_reassignments(
        self,
        reassignments: Mapping[TopicPartition, Sequence[int] | None],
        allow_replication_factor_change: bool = True,
    ) -> None:
        """Start a move of each partition to its target replicas (the first the preferred
        leader), replacing a move in progress; None cancels the partition's move. Every
        partition is tried; a refused one raises a typed error naming each refusal (for
        example INVALID_REPLICA_ASSIGNMENT, NO_REASSIGNMENT_IN_PROGRESS). With
        `allow_replication_factor_change=False` (KIP-860) a target of another size than the
        partition's replicas is refused with INVALID_REPLICATION_FACTOR."""
        request = admin_pb2.AlterPartitionReassignmentsRequest(
            partitions=[
                admin_pb2.ReassignablePartition(
                    topic=topic,
                    partition=partition,
                    replicas=list(target or ()),
                    cancel=target is None,
                )
                for (topic, partition), target in reassignments.items()
            ],
            timeout_ms=int(self.cluster.request_timeout_s * 1000),
            keep_replication_factor=not allow_replication_factor_change,
        )
        response = await self.cluster.call_any(
            lambda a: self.cluster.admin_stub(a).AlterPartitionReassignments, request
        )
        failed = [r for r in response.results if r.error_code != common_pb2.NONE]
        if failed:
            raise error_from_code(
                failed[0].error_code,
                "; ".join(
                    f"{r.partition.topic}-{r.partition.partition}: {r.error_message}"
                    for r in failed
                ),
            )

    async def unregister_broker(self, broker_id: int) -> None:
        """Remove a stopped broker that hosts no replica from the cluster (KIP-631); refused
        (a typed error saying why) while it runs, hosts replicas, or is a controller voter."""
        response = await self.cluster.call_any(
            lambda a: self.cluster.admin_stub(a).UnregisterBroker,
            admin_pb2.UnregisterBrokerRequest(broker_id=broker_id),
        )
        if response.error_code != common_pb2.NONE:
            raise error_from_code(response.error_code, response.error_message)

    async def list_partition_reassignments(
        self, partitions: Sequence[TopicPartition] | None = None
    ) -> dict[TopicPartition, PartitionReassignment]:
        """The moves in progress (of `partitions` only, when given)."""
        request = admin_pb2.ListPartitionReassignmentsRequest(
            partitions=[
                common_pb2.TopicPartition(topic=t, partition=p) for t, p in partitions or ()
            ]
        )
        response = await self.cluster.call_any(
            lambda a: self.cluster.admin_stub(a).ListPartitionReassignments, request
        )
        return {
            (r.partition.topic, r.partition.partition): PartitionReassignment(
                tuple(r.replicas), tuple(r.adding_replicas), tuple(r.removing_replicas)
            )
            for r in response.reassignments
        }
