"""Authorization rules of the data plane (Broker service), Kafka's KafkaApis checks:

| RPC            | needs                                                                    |
|----------------|--------------------------------------------------------------------------|
| Produce        | WRITE on each topic, else that topic's partitions: TOPIC_AUTHORIZATION_FAILED |
| Fetch          | READ on each topic, likewise                                             |
| ListOffsets    | DESCRIBE on each topic, likewise                                         |
| Metadata       | lists only topics the caller may DESCRIBE; a named topic it may not      |
|                | DESCRIBE answers TOPIC_AUTHORIZATION_FAILED whether or not it exists, so |
|                | nothing is revealed; auto-creation needs CREATE (cluster or topic)       |
| InitProducerId | IDEMPOTENT_WRITE on the cluster, or WRITE on some topic (Kafka's rule);  |
|                | else CLUSTER_AUTHORIZATION_FAILED                                        |
"""

from __future__ import annotations

from typing import Any

from strom.client.acl import Operation, ResourceType
from strom.v1 import broker_pb2, common_pb2

from .access import Access, Call, split_call

FAILED = common_pb2.TOPIC_AUTHORIZATION_FAILED


async def produce(access: Access, request: Any, call: Call) -> Any:
    def refused(topic: broker_pb2.TopicProduceData) -> broker_pb2.TopicProduceResponse:
        message = access.refusal(Operation.WRITE, "topic", topic.name)
        out = broker_pb2.TopicProduceResponse(name=topic.name)
        for p in topic.partitions:
            out.partitions.add(
                partition=p.partition, error_code=FAILED, error_message=message, base_offset=-1,
                log_append_time_ms=-1,
            )  # fmt: skip
        return out

    return await split_call(
        request, "topics", lambda t: access.topic(Operation.WRITE, t.name), call, "topics", refused,
        broker_pb2.ProduceResponse,
    )  # fmt: skip


async def fetch(access: Access, request: Any, call: Call) -> Any:
    def refused(topic: broker_pb2.FetchTopic) -> broker_pb2.FetchTopicResponse:
        message = access.refusal(Operation.READ, "topic", topic.name)
        out = broker_pb2.FetchTopicResponse(name=topic.name)
        for p in topic.partitions:
            out.partitions.add(
                partition=p.partition, error_code=FAILED, error_message=message,
                high_watermark=-1, log_start_offset=-1,
            )  # fmt: skip
        return out

    return await split_call(
        request, "topics", lambda t: access.topic(Operation.READ, t.name), call, "topics", refused,
        broker_pb2.FetchResponse,
    )  # fmt: skip


async def list_offsets(access: Access, request: Any, call: Call) -> Any:
    def refused(topic: broker_pb2.ListOffsetsTopic) -> broker_pb2.ListOffsetsTopicResponse:
        message = access.refusal(Operation.DESCRIBE, "topic", topic.name)
        out = broker_pb2.ListOffsetsTopicResponse(name=topic.name)
        for p in topic.partitions:
            out.partitions.add(
                partition=p.partition, error_code=FAILED, error_message=message, offset=-1,
                timestamp=-1,
            )  # fmt: skip
        return out

    return await split_call(
        request,
        "topics",
        lambda t: access.topic(Operation.DESCRIBE, t.name),
        call,
        "topics",
        refused,
        broker_pb2.ListOffsetsResponse,
    )


async def metadata(access: Access, request: Any, call: Call) -> Any:
    def describable(name: str) -> bool:
        return access.topic(Operation.DESCRIBE, name)

    if not request.topics:
        response = await call(request)
        visible = [t for t in response.topics if describable(t.name)]
        del response.topics[:]
        response.topics.extend(visible)
        return response
    kept = [n for n in request.topics if describable(n)]
    inner = broker_pb2.MetadataRequest(
        topics=kept,
        all_topics=False,
        # Auto-creation only when the caller could create every topic it names.
        allow_auto_topic_creation=request.allow_auto_topic_creation
        and all(access.create_topic(n) for n in kept),
    )
    response = await call(inner)
    answered = {t.name: t for t in response.topics}
    topics = []
    for name in request.topics:
        if name in answered:
            topics.append(answered[name])
        else:
            topics.append(
                broker_pb2.TopicMetadata(
                    name=name,
                    error_code=FAILED,
                    error_message=access.refusal(Operation.DESCRIBE, "topic", name),
                )
            )
    del response.topics[:]
    response.topics.extend(topics)
    return response


async def init_producer_id(access: Access, request: Any, call: Call) -> Any:
    if access.cluster(Operation.IDEMPOTENT_WRITE) or access.authorizer.authorize_any(
        access.principal, Operation.WRITE, ResourceType.TOPIC
    ):
        return await call(request)
    return broker_pb2.InitProducerIdResponse(
        error_code=common_pb2.CLUSTER_AUTHORIZATION_FAILED,
        error_message=f"{access.principal} may neither IDEMPOTENT_WRITE on the cluster nor "
        "WRITE on any topic",
        producer_id=-1,
        producer_epoch=-1,
    )
