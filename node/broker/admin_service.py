"""The Admin service, served by every broker.

Requests that change metadata are forwarded to the active controller (which may be this node);
once the controller has committed the change, the answer waits (briefly) until this node's own
metadata image shows it too, so a `describe` right after a `create` on the same node never
contradicts it. Descriptions are answered from the local image.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

from strom.node.broker.lifecycle import ControllerClient, ControllerUnavailable
from strom.node.config import NODE_KEYS_BY_NAME, TOPIC_KEYS, NodeConfig
from strom.node.metadata.image import MetadataImage
from strom.v1 import admin_pb2, admin_pb2_grpc, common_pb2, metadata_pb2

VISIBLE_WAIT_S = 5.0


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(
        self,
        config: NodeConfig,
        cluster_id: str,
        controller: ControllerClient,
        image: Callable[[], MetadataImage],
    ) -> None:
        self.config = config
        self.cluster_id = cluster_id
        self.controller = controller
        self.image = image
        self.timeout_s = config["request.timeout.ms"] / 1000

    async def _forward(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await self.controller.call(
                lambda stub: getattr(stub, method), request, deadline_s=self.timeout_s
            )
        except ControllerUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc}; retry when a quorum is up")

    async def _until(self, visible: Callable[[MetadataImage], bool]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + VISIBLE_WAIT_S
        while not visible(self.image()) and loop.time() < deadline:
            await asyncio.sleep(0.02)

    async def CreateTopics(
        self, request: admin_pb2.CreateTopicsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateTopicsResponse:
        response = await self._forward("CreateTopics", request, context)
        if not request.validate_only:
            created = [t.topic_id for t in response.topics if t.error_code == common_pb2.NONE]
            await self._until(lambda image: all(tid in image.topics for tid in created))
        return response  # type: ignore[no-any-return]

    async def DeleteTopics(
        self, request: admin_pb2.DeleteTopicsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DeleteTopicsResponse:
        response = await self._forward("DeleteTopics", request, context)
        gone = [t.topic_id for t in response.topics if t.error_code == common_pb2.NONE]
        await self._until(lambda image: all(tid not in image.topics for tid in gone))
        return response  # type: ignore[no-any-return]

    async def CreatePartitions(
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
        if any(r.error_code == common_pb2.NONE for r in response.results):
            # The change committed as some entry after `before`: wait until it is applied here.
            await self._until(lambda image: image.last_index > before)
        return response  # type: ignore[no-any-return]

    async def ElectLeaders(
        self, request: admin_pb2.ElectLeadersRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ElectLeadersResponse:
        return await self._forward("ElectLeaders", request, context)  # type: ignore[no-any-return]

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
        listener = self.config.inter_broker_listener_name
        for broker in sorted(image.brokers.values(), key=lambda b: b.broker_id):
            endpoint = broker.endpoint(listener) or (
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
            if resource.resource_type != metadata_pb2.CONFIG_RESOURCE_TOPIC:
                result.error_code = common_pb2.INVALID_REQUEST
                result.error_message = "only topic configs can be described"
                continue
            if image.topic_by_name(resource.resource_name) is None:
                result.error_code = common_pb2.UNKNOWN_TOPIC_OR_PARTITION
                result.error_message = f"topic {resource.resource_name!r} does not exist"
                continue
            overrides = image.topic_configs(resource.resource_name)
            for name, (_, broker_key, _) in sorted(TOPIC_KEYS.items()):
                if name in overrides:
                    value, source = overrides[name], admin_pb2.CONFIG_SOURCE_DYNAMIC_TOPIC
                else:
                    raw = self.config[broker_key]
                    value = str(raw).lower() if isinstance(raw, bool) else str(raw)
                    default = NODE_KEYS_BY_NAME[broker_key].default
                    source = (
                        admin_pb2.CONFIG_SOURCE_DEFAULT
                        if raw == default
                        else admin_pb2.CONFIG_SOURCE_STATIC_BROKER
                    )
                result.configs.add(name=name, value=value, source=source)
        return response
