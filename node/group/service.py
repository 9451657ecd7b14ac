"""The Group gRPC service: finding coordinators, heartbeats, offset commits and group admin.

Served on client listeners of every broker. FindCoordinator creates the internal topic
`__consumer_offsets` on first use (offsets.topic.num.partitions partitions, replicated up to
offsets.topic.replication.factor, compacted) and answers with the leader of the group's offsets
partition, at the listener the client used. With key_type TRANSACTION it does the same for a
transactional id and `__transaction_state` (transaction.state.log.*).
"""

from __future__ import annotations

import logging

import grpc

from strom.node.errors import answer_refusal, as_error_code
from strom.node.internal_topics import TRANSACTION_STATE_TOPIC
from strom.node.kafka.codec import CodecError, Reader, Schema
from strom.node.peers import ControllerClient, ControllerUnavailable, Peers
from strom.node.replica.manager import ReplicaManager
from strom.node.replica.partition import PartitionError
from strom.node.tls import inter_broker_security
from strom.v1 import (
    admin_pb2,
    broker_pb2,
    broker_pb2_grpc,
    common_pb2,
    group_pb2,
    group_pb2_grpc,
)

from .classic import ClassicGroup
from .coordinator import GroupCoordinator, GroupError, check_group_id
from .coordinator_key import coordinator_partition
from .offsets_log import OFFSETS_TOPIC

log = logging.getLogger("strom.group")


class EndOffsets:
    """The latest offset (high watermark) of any partition: locally when this broker leads it,
    else by asking its leader (ListOffsets)."""

    def __init__(self, manager: ReplicaManager, timeout_s: float, peers: Peers) -> None:
        self.manager = manager
        self.timeout_s = timeout_s
        self.peers = peers

    async def __call__(self, topic: str, partition: int) -> int:
        image = self.manager.image
        meta = image.topic_by_name(topic)
        if meta is None or partition not in meta.partitions:
            raise GroupError(
                common_pb2.UNKNOWN_TOPIC_OR_PARTITION, f"{topic}-{partition} does not exist"
            )
        leader = meta.partitions[partition].leader
        if leader == self.manager.broker_id:
            try:
                return self.manager.partition_by_name(topic, partition).high_watermark
            except PartitionError as exc:
                raise GroupError(exc.code, exc.message) from exc
        broker = image.brokers.get(leader)
        endpoint = (
            broker.endpoint(self.manager.config.inter_broker_listener_name) if broker else None
        )
        if endpoint is None:
            raise GroupError(
                common_pb2.LEADER_NOT_AVAILABLE, f"{topic}-{partition} has no leader right now"
            )
        address = f"{endpoint.host}:{endpoint.port}"
        stub = self.peers.stub(
            broker_pb2_grpc.BrokerStub, address, inter_broker_security(self.manager.config)
        )
        request = broker_pb2.ListOffsetsRequest()
        request.topics.add(name=topic).partitions.add(
            partition=partition, timestamp=-1, current_leader_epoch=-1
        )
        try:
            response = await stub.ListOffsets(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise GroupError(
                common_pb2.LEADER_NOT_AVAILABLE, f"{address}: {exc.details()}"
            ) from exc
        result = response.topics[0].partitions[0]
        if result.error_code != common_pb2.NONE:
            raise GroupError(result.error_code, result.error_message)
        return int(result.offset)


class GroupServicer(group_pb2_grpc.GroupServicer):
    def __init__(
        self,
        coordinator: GroupCoordinator,
        manager: ReplicaManager,
        controller: ControllerClient,
        listener: str,
    ) -> None:
        self.coordinator = coordinator
        self.manager = manager
        self.controller = controller
        self.listener = listener
        self.config = manager.config

    async def ensure_internal_topic(self, name: str) -> bool:
        """True when the internal topic `name` exists; else asks the controller to create it
        (its partitions and replication from the node's config; compacted) and answers False:
        the caller says "retry".
        The configured replication is capped by the cluster's size, taken as the larger of the
        brokers registered and the controller voters (a one-node cluster works with the default
        of 3), never by the brokers active right now: a cluster still starting (this broker's
        image may know of one broker) must not get a topic with fewer replicas than it will
        have for good; with min.insync.replicas 2 a one-replica __transaction_state never takes
        a write. Until enough brokers are active the controller refuses the topic (Kafka's
        rule) and the caller retries. (The node simulation found the one-replica topic.)"""
        if self.manager.image.topic_by_name(name) is not None:
            return True
        prefix = "offsets.topic" if name == OFFSETS_TOPIC else "transaction.state.log"
        size = max(len(self.manager.image.brokers), len(self.config.voters))
        factor = max(1, min(self.config[f"{prefix}.replication.factor"], size))
        request = admin_pb2.CreateTopicsRequest(
            topics=[
                admin_pb2.CreatableTopic(
                    name=name,
                    num_partitions=self.config[f"{prefix}.num.partitions"],
                    replication_factor=factor,
                    configs={"cleanup.policy": "compact"},
                )
            ]
        )
        try:
            await self.controller.call(lambda s: s.CreateTopics, request, deadline_s=5.0)
        except ControllerUnavailable as exc:
            log.info("cannot create %s yet: %s", name, exc)
        return False

    async def FindCoordinator(
        self, request: group_pb2.FindCoordinatorRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.FindCoordinatorResponse:
        if not request.key:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "key (the group id) is empty")
        if request.key_type == group_pb2.TRANSACTION:
            topic_name = TRANSACTION_STATE_TOPIC
            count = self.config["transaction.state.log.num.partitions"]
        elif request.key_type == group_pb2.GROUP:
            topic_name = OFFSETS_TOPIC
            try:
                check_group_id(request.key)
            except GroupError as exc:
                return answer_refusal(group_pb2.FindCoordinatorResponse(), exc)
        else:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"key_type {request.key_type} is unknown"
            )
        if not await self.ensure_internal_topic(topic_name):
            return group_pb2.FindCoordinatorResponse(
                error_code=common_pb2.COORDINATOR_NOT_AVAILABLE,
                error_message=f"creating {topic_name}; retry",
            )
        image = self.manager.image
        topic = image.topic_by_name(topic_name)
        assert topic is not None
        if topic_name == OFFSETS_TOPIC:
            partition = self.coordinator.partition_for(request.key)
        else:
            # The transaction coordinator hashes over the configured count (node/txn/host.py)
            partition = coordinator_partition(request.key, count)
        info = topic.partitions.get(partition)
        broker = image.brokers.get(info.leader) if info else None
        endpoint = broker.endpoint(self.listener) if broker and not broker.fenced else None
        if endpoint is None:
            return group_pb2.FindCoordinatorResponse(
                error_code=common_pb2.COORDINATOR_NOT_AVAILABLE,
                error_message=f"{topic_name}-{partition} has no leader right now; retry",
            )
        return group_pb2.FindCoordinatorResponse(
            node_id=broker.broker_id if broker else -1, host=endpoint.host, port=endpoint.port
        )

    async def ConsumerGroupHeartbeat(
        self, request: group_pb2.ConsumerGroupHeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.ConsumerGroupHeartbeatResponse:
        if request.member_epoch < -1:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "member_epoch must be >= -1")
        owned = None
        if request.owned_partitions_present:
            owned = {tp.topic: list(tp.partitions) for tp in request.owned_partitions}
        try:
            member_id, epoch, assignment = self.coordinator.heartbeat(
                request.group_id,
                request.member_id,
                request.member_epoch,
                request.client_id,
                request.instance_id,
                context.peer() or "",
                list(request.subscribed_topic_names) if request.subscribed_topic_names else None,
                request.server_assignor,
                owned,
            )
        except GroupError as exc:
            return answer_refusal(group_pb2.ConsumerGroupHeartbeatResponse(), exc)
        return group_pb2.ConsumerGroupHeartbeatResponse(
            member_id=member_id,
            member_epoch=epoch,
            heartbeat_interval_ms=self.coordinator.heartbeat_interval_ms,
            session_timeout_ms=self.coordinator.session_timeout_ms,
            assignment=[
                group_pb2.TopicPartitions(topic=t, partitions=ps) for t, ps in assignment.items()
            ],
        )

    async def OffsetCommit(
        self, request: group_pb2.OffsetCommitRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.OffsetCommitResponse:
        items = [
            (t.name, p.partition, p.offset, p.metadata)
            for t in request.topics
            for p in t.partitions
        ]
        try:
            results = await self.coordinator.commit(
                request.group_id, request.member_id, request.member_epoch, items
            )
        except GroupError as exc:
            return answer_refusal(group_pb2.OffsetCommitResponse(), exc)
        response = group_pb2.OffsetCommitResponse()
        for t in request.topics:
            out = response.topics.add(name=t.name)
            for p in t.partitions:
                code, message = results.get((t.name, p.partition), (common_pb2.NONE, ""))
                out.partitions.add(
                    partition=p.partition, error_code=as_error_code(code), error_message=message
                )
        return response

    async def OffsetFetch(
        self, request: group_pb2.OffsetFetchRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.OffsetFetchResponse:
        wanted = [(t.topic, p) for t in request.topics for p in t.partitions] or None
        try:
            offsets = self.coordinator.fetch_offsets(request.group_id, wanted)
        except GroupError as exc:
            return answer_refusal(group_pb2.OffsetFetchResponse(), exc)
        unstable = set()
        if request.require_stable:  # KIP-447
            unstable = self.coordinator.pending_offsets(request.group_id)
            if wanted is None:
                for key in unstable:
                    offsets.setdefault(key, None)
        response = group_pb2.OffsetFetchResponse()
        by_topic: dict[str, group_pb2.OffsetFetchTopic] = {}
        for (topic, partition), entry in sorted(offsets.items()):
            out = by_topic.get(topic)
            if out is None:
                out = by_topic[topic] = response.topics.add(name=topic)
            if (topic, partition) in unstable:
                out.partitions.add(
                    partition=partition, offset=-1, commit_timestamp_ms=-1,
                    error_code=common_pb2.UNSTABLE_OFFSET_COMMIT,
                    error_message=f"{topic}-{partition} has an offset pending in a transaction; "
                    "retry",
                )  # fmt: skip
                continue
            out.partitions.add(
                partition=partition,
                offset=-1 if entry is None else entry.offset,
                metadata="" if entry is None else entry.metadata,
                commit_timestamp_ms=-1 if entry is None else entry.commit_timestamp_ms,
            )
        return response

    async def ListGroups(
        self, request: group_pb2.ListGroupsRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.ListGroupsResponse:
        return group_pb2.ListGroupsResponse(
            groups=[
                group_pb2.ListedGroup(
                    group_id=g.group_id,
                    state=self.coordinator.group_state(g),
                    member_count=g.member_count,
                )
                for g in sorted(self.coordinator.groups.values(), key=lambda g: g.group_id)
            ]
        )

    async def DescribeGroups(
        self, request: group_pb2.DescribeGroupsRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.DescribeGroupsResponse:
        response = group_pb2.DescribeGroupsResponse()
        for group_id in request.group_ids:
            out = response.groups.add(group_id=group_id, coordinator_id=self.manager.broker_id)
            try:
                group = self.coordinator.describe(group_id)
            except GroupError as exc:
                answer_refusal(out, exc)
                out.state = "Dead"
                continue
            out.state = self.coordinator.group_state(group)
            out.group_epoch = group.reconciler.group_epoch
            out.assignor = group.assignor
            if group.classic is not None and group.classic.members:
                _describe_classic(group.classic, out)
                continue
            statuses = group.reconciler.members
            for member_id, info in sorted(group.members.items()):
                status = statuses.get(member_id)
                member = out.members.add(
                    member_id=member_id,
                    instance_id=info.instance_id,
                    client_id=info.client_id,
                    client_host=info.host,
                    member_epoch=status.member_epoch if status else 0,
                    subscribed_topic_names=sorted(info.topics),
                )
                current: dict[str, list[int]] = {}
                for topic, partition in sorted(status.assigned if status else ()):
                    current.setdefault(topic, []).append(partition)
                for topic, partitions in current.items():
                    member.assignment.add(topic=topic, partitions=partitions)
                for topic, targeted in group.reconciler.target_of(member_id).items():
                    member.target_assignment.add(topic=topic, partitions=targeted)
        return response

    async def DeleteGroups(
        self, request: group_pb2.DeleteGroupsRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.DeleteGroupsResponse:
        response = group_pb2.DeleteGroupsResponse()
        for group_id in request.group_ids:
            result = response.results.add(group_id=group_id)
            try:
                await self.coordinator.delete_group(group_id)
            except GroupError as exc:
                answer_refusal(result, exc)
        return response


# Kafka's ConsumerProtocol assignment (what a classic "consumer" group's leader hands out),
# after its int16 version: enough to show who owns which partitions.
_CONSUMER_ASSIGNMENT = Schema.of(
    "ConsumerAssignment", "partitions [struct] 0+\n  topic string 0+\n  indexes [int32] 0+", "none"
)


def _consumer_assignment(data: bytes) -> dict[str, list[int]]:
    """Topic -> partitions of a consumer-protocol assignment; empty when it is not one."""
    try:
        decoded = _CONSUMER_ASSIGNMENT.decode(Reader(data, 2), 0) if len(data) >= 2 else {}
    except CodecError:
        return {}
    return {p["topic"]: sorted(p["indexes"]) for p in decoded.get("partitions", ())}


def _describe_classic(classic: ClassicGroup, out: group_pb2.GroupDescription) -> None:
    """A group of Kafka's classic protocol: its generation, protocol and members."""
    out.group_epoch = classic.generation
    out.assignor = classic.protocol_name
    for member in classic.members.values():
        described = out.members.add(
            member_id=member.member_id,
            instance_id=member.instance_id or "",
            client_id=member.client_id,
            client_host=member.host,
            member_epoch=classic.generation,
        )
        if classic.protocol_type == "consumer":
            for topic, partitions in sorted(_consumer_assignment(member.assignment).items()):
                described.assignment.add(topic=topic, partitions=partitions)
