"""Authorization rules of the Group service (Kafka's checks for the same APIs):

| RPC                    | needs                                                               |
|------------------------|---------------------------------------------------------------------|
| FindCoordinator        | DESCRIBE on the group, else GROUP_AUTHORIZATION_FAILED (key type    |
|                        | TRANSACTION: on the transactional id, else                          |
|                        | TRANSACTIONAL_ID_AUTHORIZATION_FAILED)                              |
| ConsumerGroupHeartbeat | READ on the group; DESCRIBE on every subscribed topic, else         |
|                        | TOPIC_AUTHORIZATION_FAILED                                          |
| OffsetCommit           | READ on the group; READ on each topic, else that topic's partitions |
|                        | answer TOPIC_AUTHORIZATION_FAILED                                   |
| OffsetFetch            | DESCRIBE on the group; only topics the caller may DESCRIBE are shown |
| ListGroups             | DESCRIBE on the cluster lists all; else the groups it may DESCRIBE  |
| DescribeGroups         | DESCRIBE on each group (per group)                                  |
| DeleteGroups           | DELETE on each group (per group)                                    |
"""

from __future__ import annotations

from typing import Any

from strom.client.acl import Operation
from strom.v1 import common_pb2, group_pb2

from .access import Access, Call, split_call

GROUP_FAILED = common_pb2.GROUP_AUTHORIZATION_FAILED
TOPIC_FAILED = common_pb2.TOPIC_AUTHORIZATION_FAILED


async def find_coordinator(access: Access, request: Any, call: Call) -> Any:
    if request.key_type == group_pb2.TRANSACTION:
        if access.transactional_id(Operation.DESCRIBE, request.key):
            return await call(request)
        return group_pb2.FindCoordinatorResponse(
            error_code=common_pb2.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            error_message=access.refusal(Operation.DESCRIBE, "transactional id", request.key),
            node_id=-1,
        )
    if access.group(Operation.DESCRIBE, request.key):
        return await call(request)
    return group_pb2.FindCoordinatorResponse(
        error_code=GROUP_FAILED,
        error_message=access.refusal(Operation.DESCRIBE, "group", request.key),
        node_id=-1,
    )


async def heartbeat(access: Access, request: Any, call: Call) -> Any:
    if not access.group(Operation.READ, request.group_id):
        return group_pb2.ConsumerGroupHeartbeatResponse(
            error_code=GROUP_FAILED,
            error_message=access.refusal(Operation.READ, "group", request.group_id),
        )
    hidden = [t for t in request.subscribed_topic_names if not access.topic(Operation.DESCRIBE, t)]
    if hidden:
        return group_pb2.ConsumerGroupHeartbeatResponse(
            error_code=TOPIC_FAILED,
            error_message=f"{access.principal} is not authorized to DESCRIBE subscribed topics "
            f"{sorted(hidden)}",
        )
    return await call(request)


async def offset_commit(access: Access, request: Any, call: Call) -> Any:
    if not access.group(Operation.READ, request.group_id):
        return group_pb2.OffsetCommitResponse(
            error_code=GROUP_FAILED,
            error_message=access.refusal(Operation.READ, "group", request.group_id),
        )

    return await commit_readable_topics(
        access, request, call, group_pb2.OffsetCommitTopicResult, group_pb2.OffsetCommitResponse
    )


async def commit_readable_topics(
    access: Access, request: Any, call: Call, topic_result: type, response: type
) -> Any:
    """Commit offsets of the topics the caller may READ; each partition of the others answers
    TOPIC_AUTHORIZATION_FAILED. OffsetCommit and TxnOffsetCommit share this shape."""

    def refused(topic: Any) -> Any:
        message = access.refusal(Operation.READ, "topic", topic.name)
        out = topic_result(name=topic.name)
        for p in topic.partitions:
            out.partitions.add(
                partition=p.partition, error_code=TOPIC_FAILED, error_message=message
            )
        return out

    return await split_call(
        request, "topics", lambda t: access.topic(Operation.READ, t.name), call, "topics",
        refused, response,
    )  # fmt: skip


async def offset_fetch(access: Access, request: Any, call: Call) -> Any:
    if not access.group(Operation.DESCRIBE, request.group_id):
        return group_pb2.OffsetFetchResponse(
            error_code=GROUP_FAILED,
            error_message=access.refusal(Operation.DESCRIBE, "group", request.group_id),
        )
    response = await call(request)
    visible = [t for t in response.topics if access.topic(Operation.DESCRIBE, t.name)]
    del response.topics[:]
    response.topics.extend(visible)
    return response


async def list_groups(access: Access, request: Any, call: Call) -> Any:
    response = await call(request)
    if access.cluster(Operation.DESCRIBE):
        return response
    visible = [g for g in response.groups if access.group(Operation.DESCRIBE, g.group_id)]
    del response.groups[:]
    response.groups.extend(visible)
    return response


async def describe_groups(access: Access, request: Any, call: Call) -> Any:
    def refused(group_id: str) -> group_pb2.GroupDescription:
        return group_pb2.GroupDescription(
            group_id=group_id,
            error_code=GROUP_FAILED,
            error_message=access.refusal(Operation.DESCRIBE, "group", group_id),
            state="Dead",
        )

    return await split_call(
        request, "group_ids", lambda g: access.group(Operation.DESCRIBE, g), call, "groups",
        refused, group_pb2.DescribeGroupsResponse,
    )  # fmt: skip


async def delete_groups(access: Access, request: Any, call: Call) -> Any:
    def refused(group_id: str) -> group_pb2.DeleteGroupResult:
        return group_pb2.DeleteGroupResult(
            group_id=group_id,
            error_code=GROUP_FAILED,
            error_message=access.refusal(Operation.DELETE, "group", group_id),
        )

    return await split_call(
        request, "group_ids", lambda g: access.group(Operation.DELETE, g), call, "results",
        refused, group_pb2.DeleteGroupsResponse,
    )  # fmt: skip
