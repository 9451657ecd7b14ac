"""The Admin service, served by every broker.

Requests that change metadata are forwarded to the active controller (which may be this node);
once the controller has committed the change, the answer waits (briefly) until this node's own
metadata image shows it too, so a `describe` right after a `create` on the same node never
contradicts it. Descriptions are answered from the local image.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
from collections.abc import Callable
from typing import Any

import grpc

from strom.client.acl import binding_from_proto, binding_to_proto, filter_from_proto
from strom.node.broker.config_describe import DYNAMIC_SOURCES, describe_broker
from strom.node.config import NODE_KEYS_BY_NAME, NodeConfig
from strom.node.errors import answer_refusal
from strom.node.internal_topics import internal_topic_refusal, is_internal
from strom.node.metadata.image import MetadataImage
from strom.node.peers import ControllerClient, ControllerRefused, ControllerUnavailable
from strom.node.replica.partition import PartitionError
from strom.node.security.access import split_call
from strom.node.topic_config import TOPIC_CONFIGS
from strom.v1 import admin_pb2, admin_pb2_grpc, common_pb2, metadata_pb2

VISIBLE_WAIT_S = 5.0


def config_text(raw: Any) -> str:
    """A config value as Kafka's tools show it: booleans lower case, lists comma-separated."""
    if isinstance(raw, bool):
        return str(raw).lower()
    if isinstance(raw, list | tuple):
        return ",".join(str(v) for v in raw)
    return str(raw)


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(
        self,
        config: NodeConfig,
        cluster_id: str,
        controller: ControllerClient,
        image: Callable[[], MetadataImage],
        manager: Callable[[], Any] | None = None,
        listener: str | None = None,
    ) -> None:
        """`manager`: the broker's replica manager (`strom.node.replica.manager`), for
        DescribeLogDirs; None where the node hosts no partitions."""
        self.config = config
        # The listener this servicer answers on: DescribeCluster reports every broker's endpoint
        # on it, as Kafka does, so a client outside Docker is told outside addresses.
        self.listener = listener or config.inter_broker_listener_name
        self.cluster_id = cluster_id
        self.controller = controller
        self.image = image
        self.manager = manager
        self.timeout_s = config["request.timeout.ms"] / 1000

    async def _forward(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await self.controller.call(
                lambda stub: getattr(stub, method), request, deadline_s=self.timeout_s
            )
        except ControllerRefused as exc:
            await context.abort(exc.code, exc.details)  # the controller's answer, as it gave it
        except ControllerUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc}; retry when a quorum is up")

    async def _until(self, visible: Callable[[MetadataImage], bool]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + VISIBLE_WAIT_S
        while not visible(self.image()) and loop.time() < deadline:
            await asyncio.sleep(0.02)

    # Internal topics are the cluster's (node/internal_topics.py): a client's request naming one
    # is answered INVALID_REQUEST here, where client requests enter, and the rest of the request
    # goes on to the controller. The group coordinator creates `__consumer_offsets` by calling
    # the controller itself.

    async def CreateTopics(
        self, request: admin_pb2.CreateTopicsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateTopicsResponse:
        async def create(inner: admin_pb2.CreateTopicsRequest) -> admin_pb2.CreateTopicsResponse:
            response = await self._forward("CreateTopics", inner, context)
            if not inner.validate_only:
                created = [t.topic_id for t in response.topics if t.error_code == common_pb2.NONE]
                await self._until(lambda image: all(tid in image.topics for tid in created))
            return response  # type: ignore[no-any-return]

        return await split_call(  # type: ignore[no-any-return]
            request, "topics", lambda t: not is_internal(t.name), create, "topics",
            lambda t: admin_pb2.CreateTopicResult(
                name=t.name, error_code=common_pb2.INVALID_REQUEST,
                error_message=internal_topic_refusal(t.name, "created by a client"),
            ),
            admin_pb2.CreateTopicsResponse,
        )  # fmt: skip

    async def DeleteTopics(
        self, request: admin_pb2.DeleteTopicsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DeleteTopicsResponse:
        async def delete(inner: admin_pb2.DeleteTopicsRequest) -> admin_pb2.DeleteTopicsResponse:
            response = await self._forward("DeleteTopics", inner, context)
            gone = [t.topic_id for t in response.topics if t.error_code == common_pb2.NONE]
            await self._until(lambda image: all(tid not in image.topics for tid in gone))
            return response  # type: ignore[no-any-return]

        return await split_call(  # type: ignore[no-any-return]
            request, "names", lambda name: not is_internal(name), delete, "topics",
            lambda name: admin_pb2.DeleteTopicResult(
                name=name, error_code=common_pb2.INVALID_REQUEST,
                error_message=internal_topic_refusal(name, "deleted"),
            ),
            admin_pb2.DeleteTopicsResponse,
        )  # fmt: skip

    async def CreatePartitions(
        self, request: admin_pb2.CreatePartitionsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreatePartitionsResponse:
        return await split_call(  # type: ignore[no-any-return]
            request, "topics", lambda t: not is_internal(t.name),
            functools.partial(self._create_partitions, context=context), "topics",
            lambda t: admin_pb2.CreatePartitionsResult(
                name=t.name, error_code=common_pb2.INVALID_REQUEST,
                error_message=internal_topic_refusal(t.name, "given more partitions"),
            ),
            admin_pb2.CreatePartitionsResponse,
        )  # fmt: skip

    async def _create_partitions(
        self, request: admin_pb2.CreatePartitionsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreatePartitionsResponse:
        response = await self._forward("CreatePartitions", request, context)
        wanted = {t.name: t.count for t in request.topics}

        def grown(image: MetadataImage) -> bool:
            for result in response.topics:
                topic = image.topic_by_name(result.name)
                if result.error_code == common_pb2.NONE and (
                    topic is None or len(topic.partitions) < wanted[result.name]
                ):
                    return False
            return True

        await self._until(grown)
        return response  # type: ignore[no-any-return]

    async def IncrementalAlterConfigs(
        self, request: admin_pb2.IncrementalAlterConfigsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.IncrementalAlterConfigsResponse:
        before = self.image().last_index
        response = await self._forward("IncrementalAlterConfigs", request, context)
        if not request.validate_only and any(
            r.error_code == common_pb2.NONE for r in response.results
        ):
            # The change committed as some entry after `before`: wait until it is applied here.
            await self._until(lambda image: image.last_index > before)
        return response  # type: ignore[no-any-return]

    async def ElectLeaders(
        self, request: admin_pb2.ElectLeadersRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ElectLeadersResponse:
        return await self._forward("ElectLeaders", request, context)  # type: ignore[no-any-return]

    async def AlterPartitionReassignments(
        self,
        request: admin_pb2.AlterPartitionReassignmentsRequest,
        context: grpc.aio.ServicerContext,
    ) -> admin_pb2.AlterPartitionReassignmentsResponse:
        response = await self._forward("AlterPartitionReassignments", request, context)
        accepted = [
            item
            for item, result in zip(request.partitions, response.results, strict=True)
            if result.error_code == common_pb2.NONE
        ]

        def shown(image: MetadataImage) -> bool:
            # An accepted item may have needed no record (already so): wait for the state it
            # asked for, not for a new metadata index.
            for item in accepted:
                topic = image.topic_by_name(item.topic)
                part = None if topic is None else topic.partitions.get(item.partition)
                if part is None:
                    continue
                if item.cancel and part.reassigning:
                    return False
                if not item.cancel and part.target_replicas != tuple(item.replicas):
                    return False
            return True

        await self._until(shown)
        return response  # type: ignore[no-any-return]

    async def ListPartitionReassignments(
        self,
        request: admin_pb2.ListPartitionReassignmentsRequest,
        context: grpc.aio.ServicerContext,
    ) -> admin_pb2.ListPartitionReassignmentsResponse:
        """The moves in progress, as this node's metadata image shows them."""
        image = self.image()
        wanted = {(tp.topic, tp.partition) for tp in request.partitions}
        response = admin_pb2.ListPartitionReassignmentsResponse()
        for topic in sorted(image.topics.values(), key=lambda t: t.name):
            for index, part in sorted(topic.partitions.items()):
                if not part.reassigning or (wanted and (topic.name, index) not in wanted):
                    continue
                response.reassignments.add(
                    partition=common_pb2.TopicPartition(topic=topic.name, partition=index),
                    replicas=part.replicas,
                    adding_replicas=part.adding_replicas,
                    removing_replicas=part.removing_replicas,
                )
        return response

    async def DeleteRecords(
        self, request: admin_pb2.DeleteRecordsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DeleteRecordsResponse:
        """Advance the log start offset of each partition this broker leads."""
        manager = self.manager() if self.manager is not None else None
        response = admin_pb2.DeleteRecordsResponse()
        for item in request.partitions:
            result = response.results.add(
                partition=common_pb2.TopicPartition(topic=item.topic, partition=item.partition),
                low_watermark=-1,
            )
            if manager is None:
                result.error_code = common_pb2.NOT_LEADER_OR_FOLLOWER
                result.error_message = f"node {self.config.node_id} hosts no partitions"
                continue
            try:
                partition = manager.partition_by_name(item.topic, item.partition)
                result.low_watermark = partition.delete_records_before(item.offset)  # leader only
            except PartitionError as exc:
                answer_refusal(result, exc)
        return response

    async def UnregisterBroker(
        self, request: admin_pb2.UnregisterBrokerRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.UnregisterBrokerResponse:
        response = await self._forward("UnregisterBroker", request, context)
        if response.error_code == common_pb2.NONE:
            await self._until(lambda image: request.broker_id not in image.brokers)
        return response  # type: ignore[no-any-return]

    async def DescribeQuorum(
        self, request: admin_pb2.DescribeQuorumRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DescribeQuorumResponse:
        return await self._forward("DescribeQuorum", request, context)  # type: ignore[no-any-return]

    async def DescribeCluster(
        self, request: admin_pb2.DescribeClusterRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DescribeClusterResponse:
        image = self.image()
        response = admin_pb2.DescribeClusterResponse(
            cluster_id=self.cluster_id, controller_id=self.controller.controller_id
        )
        for broker in sorted(image.brokers.values(), key=lambda b: b.broker_id):
            endpoint = broker.endpoint(self.listener) or (
                broker.endpoints[0] if broker.endpoints else None
            )
            response.brokers.add(
                node_id=broker.broker_id,
                host=endpoint.host if endpoint else "",
                port=endpoint.port if endpoint else 0,
                rack=broker.rack,
                fenced=broker.fenced,
                in_controlled_shutdown=broker.in_controlled_shutdown,
                broker_epoch=broker.broker_epoch,
            )
        return response

    async def DescribeConfigs(
        self, request: admin_pb2.DescribeConfigsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DescribeConfigsResponse:
        image = self.image()
        response = admin_pb2.DescribeConfigsResponse()
        for resource in request.resources:
            result = response.results.add(resource=resource)
            if resource.resource_type == metadata_pb2.CONFIG_RESOURCE_BROKER:
                describe_broker(self.config, image, result)
                continue
            if resource.resource_type != metadata_pb2.CONFIG_RESOURCE_TOPIC:
                result.error_code = common_pb2.INVALID_REQUEST
                result.error_message = "only topic and broker configs can be described"
                continue
            if image.topic_by_name(resource.resource_name) is None:
                result.error_code = common_pb2.UNKNOWN_TOPIC_OR_PARTITION
                result.error_message = f"topic {resource.resource_name!r} does not exist"
                continue
            overrides = image.topic_configs(resource.resource_name)
            for key in TOPIC_CONFIGS:
                name, broker_key = key.name, key.broker_key
                if name in overrides:
                    value, source = overrides[name], admin_pb2.CONFIG_SOURCE_DYNAMIC_TOPIC
                else:
                    raw = self.config[broker_key]
                    value = str(raw).lower() if isinstance(raw, bool) else str(raw)
                    dynamic = self.config.dynamic_source(broker_key)
                    if dynamic is not None:
                        source = DYNAMIC_SOURCES[dynamic]
                    elif raw == NODE_KEYS_BY_NAME[broker_key].default:
                        source = admin_pb2.CONFIG_SOURCE_DEFAULT
                    else:
                        source = admin_pb2.CONFIG_SOURCE_STATIC_BROKER
                result.configs.add(name=name, value=value, source=source)
        return response

    async def DescribeLogDirs(
        self, request: admin_pb2.DescribeLogDirsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DescribeLogDirsResponse:
        """This broker's partition logs by log directory, with sizes and offsets (read from the
        logs' in-memory state on the loop that owns them; only `disk_usage` asks the OS)."""
        response = admin_pb2.DescribeLogDirsResponse(broker_id=self.config.node_id)
        manager = self.manager() if self.manager is not None else None
        wanted = set(request.topics)
        dirs = {
            os.path.abspath(d): response.results.add(log_dir=d) for d in self.config["log.dirs"]
        }
        topics: dict[tuple[str, str], admin_pb2.LogDirTopic] = {}
        partitions = list(manager.partitions.values()) if manager is not None else []
        for partition in sorted(partitions, key=lambda p: (p.topic, p.partition)):
            if wanted and partition.topic not in wanted:
                continue
            log = partition.log
            home = os.path.dirname(os.path.abspath(log.directory))
            result = dirs.get(home)
            if result is None:
                continue
            if (home, partition.topic) not in topics:
                topics[(home, partition.topic)] = result.topics.add(name=partition.topic)
            end = log.log_end_offset
            topics[(home, partition.topic)].partitions.add(
                partition=partition.partition,
                size_bytes=log.size_in_bytes,
                offset_lag=max(0, partition.high_watermark - end),
                log_start_offset=log.log_start_offset,
                log_end_offset=end,
                high_watermark=partition.high_watermark,
                is_leader=partition.is_leader,
            )
        for path, result in dirs.items():
            try:
                usage = shutil.disk_usage(path)
                result.total_bytes, result.usable_bytes = usage.total, usage.free
            except OSError as exc:
                result.total_bytes = result.usable_bytes = -1
                result.error_code = common_pb2.KAFKA_STORAGE_ERROR
                result.error_message = f"{result.log_dir}: {exc.strerror}"
        return response

    # ---- users and ACLs ----------------------------------------------------------------

    async def _forward_and_wait(
        self, method: str, request: Any, context: grpc.aio.ServicerContext, changed: bool
    ) -> Any:
        before = self.image().last_index
        response = await self._forward(method, request, context)
        if changed and any(r.error_code == common_pb2.NONE for r in response.results):
            await self._until(lambda image: image.last_index > before)
        return response

    async def AlterUserCredentials(
        self, request: admin_pb2.AlterUserCredentialsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.AlterUserCredentialsResponse:
        return await self._forward_and_wait("AlterUserCredentials", request, context, True)  # type: ignore[no-any-return]

    async def CreateAcls(
        self, request: admin_pb2.CreateAclsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateAclsResponse:
        return await self._forward_and_wait("CreateAcls", request, context, True)  # type: ignore[no-any-return]

    async def DeleteAcls(
        self, request: admin_pb2.DeleteAclsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DeleteAclsResponse:
        response = await self._forward("DeleteAcls", request, context)
        gone = [binding_from_proto(b) for r in response.results for b in r.deleted]
        await self._until(lambda image: not image.acls & set(gone))
        return response  # type: ignore[no-any-return]

    async def DescribeUsers(
        self, request: admin_pb2.DescribeUsersRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DescribeUsersResponse:
        image = self.image()
        response = admin_pb2.DescribeUsersResponse()
        for name in list(request.names) or sorted(image.user_names()):
            credential = image.users.get(name)
            scram = image.scram_of(name)
            if credential is None and not scram:
                response.users.add(
                    name=name,
                    error_code=common_pb2.RESOURCE_NOT_FOUND,
                    error_message=f"user {name!r} does not exist",
                )
                continue
            # Never salts, hashes or keys: they stay in the metadata log.
            user = response.users.add(name=name)
            if credential is not None:
                user.mechanism = metadata_pb2.CREDENTIAL_MECHANISM_SCRYPT
                user.n = credential.n
            for mechanism, one in sorted(scram.items()):
                user.scram.add(mechanism=mechanism, iterations=one.iterations)
        return response

    async def DescribeAcls(
        self, request: admin_pb2.DescribeAclsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DescribeAclsResponse:
        try:
            selector = filter_from_proto(request.filter)
        except ValueError as exc:
            return admin_pb2.DescribeAclsResponse(
                error_code=common_pb2.INVALID_REQUEST, error_message=f"invalid ACL filter: {exc}"
            )
        matching = sorted(b for b in self.image().acls if selector.matches(b))
        return admin_pb2.DescribeAclsResponse(bindings=[binding_to_proto(b) for b in matching])
