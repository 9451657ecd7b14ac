"""Admin: topics, configs, cluster and quorum descriptions; users and ACLs (client/admin_security.py).

`AsyncAdmin` is the implementation; `Admin` is its synchronous facade. Each topic-level result
that failed raises a typed error naming the topic (Kafka's AdminClient surfaces per-topic futures;
with one call per topic here, raising is the simpler equivalent).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from strom.v1 import admin_pb2, broker_pb2, common_pb2, group_pb2, group_pb2_grpc, metadata_pb2

from . import scram
from ._loop import LoopThread
from .acl import AclBinding, AclBindingFilter
from .admin_security import AsyncSecurityAdmin, UserDescription
from .admin_transactions import (
    AsyncTransactionsAdmin,
    TransactionDescription,
    TransactionListing,
)
from .broker_configs import AsyncBrokerConfigsAdmin, ConfigEntry
from .cluster import Backoff, ClusterClient, TopicMeta
from .coordinator import call_coordinator
from .errors import METADATA_STALE, error_from_code
from .log_dirs import AsyncLogDirsAdmin, LogDir
from .reassignment import AsyncReassignmentAdmin, PartitionReassignment

# Tries of a request to partitions' leaders (ListOffsets, DeleteRecords) when a leader moved.
LEADER_ATTEMPTS_MAX = 3
# A leader's answer per partition: (error code, error message, the value asked for).
PartitionAnswers: TypeAlias = dict[tuple[str, int], tuple[int, str, int]]


@dataclass(frozen=True, slots=True)
class NewTopic:
    name: str
    num_partitions: int = -1
    replication_factor: int = -1
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PartitionDescription:
    partition: int
    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    # Replicas on a broker that is down, or offline there (their log failed).
    offline_replicas: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TopicDescription:
    name: str
    topic_id: str
    partitions: tuple[PartitionDescription, ...]
    configs: Mapping[str, str]  # overrides only
    is_internal: bool = False

    @property
    def replication_factor(self) -> int:
        return len(self.partitions[0].replicas) if self.partitions else 0


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    node_id: int
    host: str
    port: int
    rack: str
    fenced: bool
    in_controlled_shutdown: bool


@dataclass(frozen=True, slots=True)
class ClusterDescription:
    cluster_id: str
    controller_id: int
    brokers: tuple[BrokerInfo, ...]


@dataclass(frozen=True, slots=True)
class QuorumReplica:
    replica_id: int
    log_end_offset: int
    last_fetch_timestamp_ms: int
    last_caught_up_timestamp_ms: int


@dataclass(frozen=True, slots=True)
class QuorumDescription:
    cluster_id: str
    leader_id: int
    leader_epoch: int
    high_watermark: int
    voters: tuple[QuorumReplica, ...]
    observers: tuple[QuorumReplica, ...]


def topic_id_str(topic_id: bytes) -> str:
    """Kafka prints topic ids as base64url without padding."""
    return base64.urlsafe_b64encode(topic_id).decode().rstrip("=")


def _topic_resource(name: str) -> admin_pb2.ConfigResource:
    return admin_pb2.ConfigResource(
        resource_type=metadata_pb2.CONFIG_RESOURCE_TOPIC, resource_name=name
    )


class AsyncAdmin(
    AsyncSecurityAdmin,
    AsyncLogDirsAdmin,
    AsyncReassignmentAdmin,
    AsyncTransactionsAdmin,
    AsyncBrokerConfigsAdmin,
):
    def __init__(self, bootstrap_servers: str | Sequence[str] = "localhost:9092", **options: Any):
        self.cluster = ClusterClient(bootstrap_servers, **options)

    async def close(self) -> None:
        await self.cluster.close()

    async def __aenter__(self) -> AsyncAdmin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def create_topics(
        self, topics: Sequence[NewTopic], validate_only: bool = False
    ) -> dict[str, str]:
        """Create topics; returns name -> topic id. Raises on the first topic that failed."""
        request = admin_pb2.CreateTopicsRequest(
            topics=[
                admin_pb2.CreatableTopic(
                    name=t.name,
                    num_partitions=t.num_partitions,
                    replication_factor=t.replication_factor,
                    configs=dict(t.configs),
                )
                for t in topics
            ],
            timeout_ms=int(self.cluster.request_timeout_s * 1000),
            validate_only=validate_only,
        )
        response = await self.cluster.call_any(
            lambda a: self.cluster.admin_stub(a).CreateTopics, request
        )
        created = {}
        for result in response.topics:
            if result.error_code != common_pb2.NONE:
                raise error_from_code(result.error_code, result.error_message)
            created[result.name] = topic_id_str(result.topic_id)
        return created

    async def delete_topics(self, names: Sequence[str]) -> None:
        request = admin_pb2.DeleteTopicsRequest(
            names=list(names), timeout_ms=int(self.cluster.request_timeout_s * 1000)
        )
        response = await self.cluster.call_any(
            lambda a: self.cluster.admin_stub(a).DeleteTopics, request
        )
        for result in response.topics:
            if result.error_code != common_pb2.NONE:
                raise error_from_code(result.error_code, result.error_message)

    async def create_partitions(self, name: str, total_count: int) -> None:
        request = admin_pb2.CreatePartitionsRequest(
            topics=[admin_pb2.CreatePartitionsTopic(name=name, count=total_count)],
            timeout_ms=int(self.cluster.request_timeout_s * 1000),
        )
        response = await self.cluster.call_any(
            lambda a: self.cluster.admin_stub(a).CreatePartitions, request
        )
        for result in response.topics:
            if result.error_code != common_pb2.NONE:
                raise error_from_code(result.error_code, result.error_message)

    async def list_topics(self, include_internal: bool = False) -> list[str]:
        meta = await self.cluster.refresh_metadata(None)
        return sorted(
            name for name, t in meta.topics.items() if include_internal or not t.is_internal
        )

    async def describe_topics(
        self, names: Sequence[str] | None = None, include_configs: bool = True
    ) -> list[TopicDescription]:
        """Describe `names` (None: every topic). Unknown names raise UNKNOWN_TOPIC_OR_PARTITION.
        `include_configs` adds each topic's config overrides, which needs DESCRIBE_CONFIGS on
        the topic besides DESCRIBE (Kafka's describeTopics has no configs at all)."""
        meta = await self.cluster.refresh_metadata(list(names) if names else None)
        wanted = list(names) if names else sorted(meta.topics)
        for name in wanted:
            if name in self.cluster.unauthorized_topics:
                raise error_from_code(
                    common_pb2.TOPIC_AUTHORIZATION_FAILED, self.cluster.unauthorized_topics[name]
                )
            if name not in meta.topics:
                raise error_from_code(
                    common_pb2.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} does not exist"
                )
        configs = (
            await self.describe_topic_configs(wanted, overrides_only=True)
            if include_configs
            else {}
        )
        return [self._describe(meta.topics[name], configs.get(name, {})) for name in wanted]

    @staticmethod
    def _describe(topic: TopicMeta, configs: Mapping[str, str]) -> TopicDescription:
        return TopicDescription(
            name=topic.name,
            topic_id=topic_id_str(topic.topic_id),
            partitions=tuple(
                PartitionDescription(
                    p.partition, p.leader, p.leader_epoch, p.replicas, p.isr, p.offline_replicas
                )
                for _, p in sorted(topic.partitions.items())
            ),
            configs=dict(configs),
            is_internal=topic.is_internal,
        )

    async def describe_topic_configs(
        self, names: Sequence[str], overrides_only: bool = False
    ) -> dict[str, dict[str, str]]:
        if not names:
            return {}
        request = admin_pb2.DescribeConfigsRequest(resources=[_topic_resource(n) for n in names])
        response = await self.cluster.call_any(
            lambda a: self.cluster.admin_stub(a).DescribeConfigs, request
        )
        out: dict[str, dict[str, str]] = {}
        for result in response.results:
            if result.error_code != common_pb2.NONE:
                raise error_from_code(result.error_code, result.error_message)
            out[result.resource.resource_name] = {
                c.name: c.value
                for c in result.configs
                if not overrides_only or c.source == admin_pb2.CONFIG_SOURCE_DYNAMIC_TOPIC
            }
        return out

    async def alter_topic_configs(
        self, name: str, set_configs: Mapping[str, str], delete: Sequence[str] = ()
    ) -> None:
        ops = [
            admin_pb2.AlterableConfig(name=k, op=admin_pb2.ALTER_CONFIG_SET, value=v)
            for k, v in set_configs.items()
        ] + [admin_pb2.AlterableConfig(name=k, op=admin_pb2.ALTER_CONFIG_DELETE) for k in delete]
        request = admin_pb2.IncrementalAlterConfigsRequest(
            resources=[admin_pb2.AlterConfigsResource(resource=_topic_resource(name), configs=ops)]
        )
        response = await self.cluster.call_any(
            lambda a: self.cluster.admin_stub(a).IncrementalAlterConfigs, request
        )
        for result in response.results:
            if result.error_code != common_pb2.NONE:
                raise error_from_code(result.error_code, result.error_message)

    async def describe_cluster(self) -> ClusterDescription:
        response = await self.cluster.call_any(
            lambda a: self.cluster.admin_stub(a).DescribeCluster,
            admin_pb2.DescribeClusterRequest(),
        )
        return ClusterDescription(
            cluster_id=response.cluster_id,
            controller_id=response.controller_id,
            brokers=tuple(
                BrokerInfo(b.node_id, b.host, b.port, b.rack, b.fenced, b.in_controlled_shutdown)
                for b in response.brokers
            ),
        )

    async def describe_quorum(self) -> QuorumDescription:
        response = await self.cluster.call_any(
            lambda a: self.cluster.admin_stub(a).DescribeQuorum,
            admin_pb2.DescribeQuorumRequest(),
        )

        def replicas(items: Sequence[admin_pb2.QuorumReplicaState]) -> tuple[QuorumReplica, ...]:
            return tuple(
                QuorumReplica(
                    r.replica_id,
                    r.log_end_offset,
                    r.last_fetch_timestamp_ms,
                    r.last_caught_up_timestamp_ms,
                )
                for r in items
            )

        return QuorumDescription(
            cluster_id=response.cluster_id,
            leader_id=response.leader_id,
            leader_epoch=response.leader_epoch,
            high_watermark=response.high_watermark,
            voters=replicas(response.current_voters),
            observers=replicas(response.observers),
        )

    async def elect_preferred_leaders(
        self, partitions: Sequence[tuple[str, int]] | None = None
    ) -> dict[tuple[str, int], str]:
        """Returns (topic, partition) -> Kafka error name (NONE when leadership moved)."""
        return await self.elect_leaders("preferred", partitions)

    async def elect_leaders(
        self, election_type: str, partitions: Sequence[tuple[str, int]] | None = None
    ) -> dict[tuple[str, int], str]:
        """Kafka's electLeaders: "preferred" moves leadership back to each partition's first
        replica; "unclean" gives a partition without a live leader any live replica, losing
        what only the dead ISR held. Returns (topic, partition) -> Kafka error name."""
        types = {"preferred": admin_pb2.ELECTION_PREFERRED, "unclean": admin_pb2.ELECTION_UNCLEAN}
        if election_type not in types:
            raise ValueError(
                f"election_type must be 'preferred' or 'unclean', not {election_type!r}"
            )
        request = admin_pb2.ElectLeadersRequest(
            election_type=types[election_type],
            partitions=[
                common_pb2.TopicPartition(topic=t, partition=p) for t, p in partitions or []
            ],
            timeout_ms=int(self.cluster.request_timeout_s * 1000),
        )
        response = await self.cluster.call_any(
            lambda a: self.cluster.admin_stub(a).ElectLeaders, request
        )
        return {
            (r.partition.topic, r.partition.partition): common_pb2.ErrorCode.Name(r.error_code)
            for r in response.results
        }

    # ---- consumer groups ---------------------------------------------------------------

    async def _group_call(self, group_id: str, method: str, request: Any) -> Any:
        return await call_coordinator(self.cluster, group_id, method, request)

    async def list_groups(self) -> list[tuple[str, str, int]]:
        """(group id, state, member count) of every group, from every broker's coordinator."""
        await self.cluster.refresh_metadata(None)
        found: dict[str, tuple[str, str, int]] = {}
        for address in self.cluster.meta.brokers.values():
            stub = group_pb2_grpc.GroupStub(self.cluster.channel(address))
            response = await self.cluster.call(
                address,
                stub.ListGroups,
                group_pb2.ListGroupsRequest(),
                self.cluster.request_timeout_s,
            )
            for g in response.groups:
                found[g.group_id] = (g.group_id, g.state, g.member_count)
        return sorted(found.values())

    async def describe_group(self, group_id: str) -> GroupDescription:
        response = await self._group_call(
            group_id, "DescribeGroups", group_pb2.DescribeGroupsRequest(group_ids=[group_id])
        )
        g = response.groups[0]
        if g.error_code != common_pb2.NONE:
            raise error_from_code(g.error_code, g.error_message)
        return GroupDescription(
            group_id=g.group_id,
            state=g.state,
            group_epoch=g.group_epoch,
            assignor=g.assignor,
            coordinator_id=g.coordinator_id,
            members=tuple(
                GroupMember(
                    member_id=m.member_id,
                    client_id=m.client_id,
                    host=m.client_host,
                    member_epoch=m.member_epoch,
                    topics=tuple(m.subscribed_topic_names),
                    assignment=tuple((tp.topic, p) for tp in m.assignment for p in tp.partitions),
                )
                for m in g.members
            ),
        )

    async def list_group_offsets(self, group_id: str) -> dict[tuple[str, int], int]:
        response = await self._group_call(
            group_id, "OffsetFetch", group_pb2.OffsetFetchRequest(group_id=group_id)
        )
        if response.error_code != common_pb2.NONE:
            raise error_from_code(response.error_code, response.error_message)
        return {(t.name, p.partition): p.offset for t in response.topics for p in t.partitions}

    async def alter_group_offsets(self, group_id: str, offsets: dict[tuple[str, int], int]) -> None:
        """Set committed offsets of a group that has no active members (Kafka's
        AlterConsumerGroupOffsets); refused with NON_EMPTY_GROUP otherwise."""
        by_topic: dict[str, list[group_pb2.OffsetCommitPartition]] = {}
        for (topic, partition), offset in sorted(offsets.items()):
            by_topic.setdefault(topic, []).append(
                group_pb2.OffsetCommitPartition(partition=partition, offset=offset)
            )
        request = group_pb2.OffsetCommitRequest(
            group_id=group_id,
            member_id="",
            member_epoch=-1,
            topics=[
                group_pb2.OffsetCommitTopic(name=t, partitions=ps) for t, ps in by_topic.items()
            ],
        )
        response = await self._group_call(group_id, "OffsetCommit", request)
        if response.error_code != common_pb2.NONE:
            raise error_from_code(response.error_code, response.error_message)
        for topic in response.topics:
            for p in topic.partitions:
                if p.error_code != common_pb2.NONE:
                    raise error_from_code(p.error_code, p.error_message)

    async def delete_groups(self, group_ids: Sequence[str]) -> None:
        for group_id in group_ids:
            response = await self._group_call(
                group_id, "DeleteGroups", group_pb2.DeleteGroupsRequest(group_ids=[group_id])
            )
            for result in response.results:
                if result.error_code != common_pb2.NONE:
                    raise error_from_code(result.error_code, result.error_message)

    async def list_offsets(
        self, partitions: Sequence[tuple[str, int]], timestamp: int
    ) -> dict[tuple[str, int], int]:
        """Offsets at `timestamp` (-1 latest, -2 earliest, or ms) from each partition's leader
        (`_ask_leaders`)."""
        return await self._ask_leaders(
            partitions, lambda address, tps: self._list_offsets_at(address, tps, timestamp)
        )

    async def delete_records(
        self, offsets: Mapping[tuple[str, int], int]
    ) -> dict[tuple[str, int], int]:
        """Delete each partition's records before its offset (-1: every committed record),
        as Kafka's deleteRecords: the log start offset moves up, consumers can no longer read
        below it, and whole segments below it are removed by the next retention pass. Sent to
        each partition's leader (looked up again if it moved). Returns each partition's new
        log start offset (its low watermark, as its leader has it)."""
        return await self._ask_leaders(
            offsets, lambda address, tps: self._delete_records_at(address, tps, offsets)
        )

    async def _ask_leaders(
        self,
        partitions: Iterable[tuple[str, int]],
        ask: Callable[[str, list[tuple[str, int]]], Awaitable[PartitionAnswers]],
    ) -> dict[tuple[str, int], int]:
        """Each partition's value from its leader: one `ask` per leader, the leaders asked
        concurrently. A partition whose leader moved meanwhile (stale metadata) is looked up
        again, up to `LEADER_ATTEMPTS_MAX` times, with the cluster's backoff between tries."""
        out: dict[tuple[str, int], int] = {}
        pending = list(dict.fromkeys(partitions))
        backoff = Backoff(self.cluster.retry_backoff_ms, self.cluster.retry_backoff_max_ms)
        for attempt in range(LEADER_ATTEMPTS_MAX):
            by_leader: dict[str, list[tuple[str, int]]] = {}
            for topic, partition in pending:
                meta = await self.cluster.topic(topic)
                if partition not in meta.partitions:
                    raise error_from_code(
                        common_pb2.UNKNOWN_TOPIC_OR_PARTITION,
                        f"{topic} has no partition {partition}",
                    )
                address = self.cluster.address_of(meta.partitions[partition].leader)
                if address is None:
                    raise error_from_code(common_pb2.LEADER_NOT_AVAILABLE, f"{topic}-{partition}")
                by_leader.setdefault(address, []).append((topic, partition))
            answers = await asyncio.gather(*(ask(a, tps) for a, tps in by_leader.items()))
            stale: list[tuple[str, int]] = []
            for answer in answers:
                for tp, (code, message, value) in answer.items():
                    if code == common_pb2.NONE:
                        out[tp] = value
                    elif code in METADATA_STALE and attempt + 1 < LEADER_ATTEMPTS_MAX:
                        self.cluster.invalidate(tp[0])
                        stale.append(tp)
                    else:
                        raise error_from_code(code, message)
            if not stale:
                break
            pending = stale
            await asyncio.sleep(backoff.next_delay_s())
        return out

    async def _delete_records_at(
        self,
        address: str,
        partitions: list[tuple[str, int]],
        offsets: Mapping[tuple[str, int], int],
    ) -> PartitionAnswers:
        request = admin_pb2.DeleteRecordsRequest(
            partitions=[
                admin_pb2.DeleteRecordsPartition(topic=t, partition=p, offset=offsets[(t, p)])
                for t, p in partitions
            ]
        )
        response = await self.cluster.call(
            address, self.cluster.admin_stub(address).DeleteRecords, request,
            self.cluster.request_timeout_s,
        )  # fmt: skip
        return {
            (r.partition.topic, r.partition.partition): (
                r.error_code,
                r.error_message,
                r.low_watermark,
            )
            for r in response.results
        }

    async def _list_offsets_at(
        self, address: str, partitions: list[tuple[str, int]], timestamp: int
    ) -> PartitionAnswers:
        request = broker_pb2.ListOffsetsRequest()
        topics: dict[str, broker_pb2.ListOffsetsTopic] = {}
        for topic, partition in partitions:
            if topic not in topics:
                topics[topic] = request.topics.add(name=topic)
            topics[topic].partitions.add(
                partition=partition, timestamp=timestamp, current_leader_epoch=-1
            )
        response = await self.cluster.call(
            address, self.cluster.broker_stub(address).ListOffsets, request,
            self.cluster.request_timeout_s,
        )  # fmt: skip
        return {
            (t.name, p.partition): (p.error_code, p.error_message, p.offset)
            for t in response.topics
            for p in t.partitions
        }


@dataclass(frozen=True, slots=True)
class GroupMember:
    member_id: str
    client_id: str
    host: str
    member_epoch: int
    topics: tuple[str, ...]
    assignment: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group_id: str
    state: str
    group_epoch: int
    assignor: str
    coordinator_id: int
    members: tuple[GroupMember, ...]


class Admin:
    """Synchronous facade over AsyncAdmin (same code path, one private loop thread)."""

    _loop: LoopThread | None = None

    def __init__(self, bootstrap_servers: str | Sequence[str] = "localhost:9092", **options: Any):
        if Admin._loop is None:
            Admin._loop = LoopThread("strom-admin")
        self._run = Admin._loop.run
        self._async = self._run(self._make(bootstrap_servers, options))

    @staticmethod
    async def _make(bootstrap_servers: str | Sequence[str], options: dict[str, Any]) -> AsyncAdmin:
        return AsyncAdmin(bootstrap_servers, **options)

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._run(self._async.close())

    def create_topics(
        self, topics: Sequence[NewTopic], validate_only: bool = False
    ) -> dict[str, str]:
        return self._run(self._async.create_topics(topics, validate_only))

    def delete_topics(self, names: Sequence[str]) -> None:
        self._run(self._async.delete_topics(names))

    def create_partitions(self, name: str, total_count: int) -> None:
        self._run(self._async.create_partitions(name, total_count))

    def list_topics(self, include_internal: bool = False) -> list[str]:
        return self._run(self._async.list_topics(include_internal))

    def describe_topics(
        self, names: Sequence[str] | None = None, include_configs: bool = True
    ) -> list[TopicDescription]:
        return self._run(self._async.describe_topics(names, include_configs))

    def describe_topic_configs(
        self, names: Sequence[str], overrides_only: bool = False
    ) -> dict[str, dict[str, str]]:
        return self._run(self._async.describe_topic_configs(names, overrides_only))

    def alter_topic_configs(
        self, name: str, set_configs: Mapping[str, str], delete: Sequence[str] = ()
    ) -> None:
        self._run(self._async.alter_topic_configs(name, set_configs, delete))

    def describe_cluster(self) -> ClusterDescription:
        return self._run(self._async.describe_cluster())

    def describe_quorum(self) -> QuorumDescription:
        return self._run(self._async.describe_quorum())

    def describe_log_dirs(self, topics: Sequence[str] | None = None) -> list[LogDir]:
        return self._run(self._async.describe_log_dirs(topics))

    def describe_broker_configs(self, broker_id: int | None = None) -> dict[str, ConfigEntry]:
        return self._run(self._async.describe_broker_configs(broker_id))

    def alter_broker_configs(
        self,
        broker_id: int | None,
        set_configs: Mapping[str, str],
        delete: Sequence[str] = (),
        validate_only: bool = False,
    ) -> None:
        self._run(self._async.alter_broker_configs(broker_id, set_configs, delete, validate_only))

    def alter_partition_reassignments(
        self,
        reassignments: Mapping[tuple[str, int], Sequence[int] | None],
        allow_replication_factor_change: bool = True,
    ) -> None:
        return self._run(
            self._async.alter_partition_reassignments(
                reassignments, allow_replication_factor_change
            )
        )

    def list_partition_reassignments(
        self, partitions: Sequence[tuple[str, int]] | None = None
    ) -> dict[tuple[str, int], PartitionReassignment]:
        return self._run(self._async.list_partition_reassignments(partitions))

    def elect_leaders(
        self, election_type: str, partitions: Sequence[tuple[str, int]] | None = None
    ) -> dict[tuple[str, int], str]:
        return self._run(self._async.elect_leaders(election_type, partitions))

    def delete_records(self, offsets: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        return self._run(self._async.delete_records(offsets))

    def unregister_broker(self, broker_id: int) -> None:
        return self._run(self._async.unregister_broker(broker_id))

    def elect_preferred_leaders(
        self, partitions: Sequence[tuple[str, int]] | None = None
    ) -> dict[tuple[str, int], str]:
        return self._run(self._async.elect_preferred_leaders(partitions))

    def list_groups(self) -> list[tuple[str, str, int]]:
        return self._run(self._async.list_groups())

    def describe_group(self, group_id: str) -> GroupDescription:
        return self._run(self._async.describe_group(group_id))

    def list_group_offsets(self, group_id: str) -> dict[tuple[str, int], int]:
        return self._run(self._async.list_group_offsets(group_id))

    def alter_group_offsets(self, group_id: str, offsets: dict[tuple[str, int], int]) -> None:
        self._run(self._async.alter_group_offsets(group_id, offsets))

    def delete_groups(self, group_ids: Sequence[str]) -> None:
        self._run(self._async.delete_groups(group_ids))

    def list_offsets(
        self, partitions: Sequence[tuple[str, int]], timestamp: int
    ) -> dict[tuple[str, int], int]:
        return self._run(self._async.list_offsets(partitions, timestamp))

    # ---- transactions (client/admin_transactions.py) ---------------------------------------

    def list_transactions(self, states: Sequence[str] | None = None) -> list[TransactionListing]:
        return self._run(self._async.list_transactions(states))

    def describe_transactions(
        self, transactional_ids: Sequence[str]
    ) -> list[TransactionDescription]:
        return self._run(self._async.describe_transactions(transactional_ids))

    # ---- users and ACLs (client/admin_security.py) -----------------------------------------

    def create_user(
        self,
        name: str,
        password: str,
        scram_mechanisms: Sequence[str] = tuple(scram.MECHANISMS),
        scram_iterations: int = scram.ITERATIONS_DEFAULT,
    ) -> None:
        self._run(self._async.create_user(name, password, scram_mechanisms, scram_iterations))

    def delete_user(self, name: str) -> None:
        self._run(self._async.delete_user(name))

    def describe_users(self, names: Sequence[str] | None = None) -> list[UserDescription]:
        return self._run(self._async.describe_users(names))

    def create_acls(self, bindings: Sequence[AclBinding]) -> None:
        self._run(self._async.create_acls(bindings))

    def delete_acls(self, filters: Sequence[AclBindingFilter]) -> list[AclBinding]:
        return self._run(self._async.delete_acls(filters))

    def describe_acls(self, selector: AclBindingFilter | None = None) -> list[AclBinding]:
        return self._run(self._async.describe_acls(selector))
