"""Authorization rules of the Admin service (Kafka's checks for the same APIs):

| RPC                     | needs                                                           |
|-------------------------|-----------------------------------------------------------------|
| CreateTopics            | CREATE on the cluster or the topic (per topic)                  |
| DeleteTopics            | DELETE on the topic (per topic)                                 |
| DeleteRecords           | DELETE on the topic (per partition, as in Kafka)                |
| CreatePartitions        | ALTER on the topic (per topic)                                  |
| DescribeConfigs         | DESCRIBE_CONFIGS on the topic, or the cluster for broker configs |
| IncrementalAlterConfigs | ALTER_CONFIGS likewise                                          |
| DescribeCluster         | nothing beyond authentication (brokers are public, as in Kafka) |
| DescribeQuorum          | DESCRIBE on the cluster                                         |
| DescribeLogDirs         | DESCRIBE on the cluster (as in Kafka)                           |
| ElectLeaders            | ALTER on the cluster                                            |
| AlterPartitionReassignments | ALTER on the cluster (as in Kafka)                          |
| ListPartitionReassignments  | DESCRIBE on the cluster (as in Kafka)                       |
| UnregisterBroker        | ALTER on the cluster (as in Kafka)                              |
| AlterUserCredentials    | ALTER on the cluster                                            |
| DescribeUsers           | DESCRIBE on the cluster                                         |
| CreateAcls, DeleteAcls  | ALTER on the cluster                                            |
| DescribeAcls            | DESCRIBE on the cluster                                         |

Per-item refusals are TOPIC_AUTHORIZATION_FAILED / CLUSTER_AUTHORIZATION_FAILED results; RPCs
without per-item results are refused whole (PERMISSION_DENIED).
"""

from __future__ import annotations

from typing import Any

from strom.client.acl import Operation
from strom.v1 import admin_pb2, common_pb2, metadata_pb2

from .access import Access, Call, split_call

TOPIC_FAILED = common_pb2.TOPIC_AUTHORIZATION_FAILED
CLUSTER_FAILED = common_pb2.CLUSTER_AUTHORIZATION_FAILED


async def create_topics(access: Access, request: Any, call: Call) -> Any:
    def refused(topic: admin_pb2.CreatableTopic) -> admin_pb2.CreateTopicResult:
        return admin_pb2.CreateTopicResult(
            name=topic.name,
            error_code=TOPIC_FAILED,
            error_message=access.refusal(Operation.CREATE, "topic", topic.name),
        )

    return await split_call(
        request, "topics", lambda t: access.create_topic(t.name), call, "topics", refused,
        admin_pb2.CreateTopicsResponse,
    )  # fmt: skip


async def delete_topics(access: Access, request: Any, call: Call) -> Any:
    def refused(name: str) -> admin_pb2.DeleteTopicResult:
        return admin_pb2.DeleteTopicResult(
            name=name,
            error_code=TOPIC_FAILED,
            error_message=access.refusal(Operation.DELETE, "topic", name),
        )

    return await split_call(
        request, "names", lambda n: access.topic(Operation.DELETE, n), call, "topics", refused,
        admin_pb2.DeleteTopicsResponse,
    )  # fmt: skip


async def delete_records(access: Access, request: Any, call: Call) -> Any:
    def refused(item: admin_pb2.DeleteRecordsPartition) -> admin_pb2.DeleteRecordsResult:
        return admin_pb2.DeleteRecordsResult(
            partition=common_pb2.TopicPartition(topic=item.topic, partition=item.partition),
            low_watermark=-1,
            error_code=TOPIC_FAILED,
            error_message=access.refusal(Operation.DELETE, "topic", item.topic),
        )

    return await split_call(
        request, "partitions", lambda p: access.topic(Operation.DELETE, p.topic), call, "results",
        refused, admin_pb2.DeleteRecordsResponse,
    )  # fmt: skip


async def create_partitions(access: Access, request: Any, call: Call) -> Any:
    def refused(topic: admin_pb2.CreatePartitionsTopic) -> admin_pb2.CreatePartitionsResult:
        return admin_pb2.CreatePartitionsResult(
            name=topic.name,
            error_code=TOPIC_FAILED,
            error_message=access.refusal(Operation.ALTER, "topic", topic.name),
        )

    return await split_call(
        request, "topics", lambda t: access.topic(Operation.ALTER, t.name), call, "topics",
        refused, admin_pb2.CreatePartitionsResponse,
    )  # fmt: skip


def _config_allowed(access: Access, operation: Operation, resource: Any) -> bool:
    if resource.resource_type == metadata_pb2.CONFIG_RESOURCE_TOPIC:
        return access.topic(operation, resource.resource_name)
    return access.cluster(operation)


def _config_refusal(
    access: Access, operation: Operation, resource: Any
) -> tuple[common_pb2.ErrorCode.ValueType, str]:
    if resource.resource_type == metadata_pb2.CONFIG_RESOURCE_TOPIC:
        return TOPIC_FAILED, access.refusal(operation, "topic", resource.resource_name)
    return CLUSTER_FAILED, f"{access.principal} may not {operation.name} on the cluster"


async def describe_configs(access: Access, request: Any, call: Call) -> Any:
    op = Operation.DESCRIBE_CONFIGS

    def refused(resource: admin_pb2.ConfigResource) -> admin_pb2.DescribeConfigsResult:
        code, message = _config_refusal(access, op, resource)
        return admin_pb2.DescribeConfigsResult(
            resource=resource,
            error_code=code,
            error_message=message,
        )

    return await split_call(
        request, "resources", lambda r: _config_allowed(access, op, r), call, "results", refused,
        admin_pb2.DescribeConfigsResponse,
    )  # fmt: skip


async def alter_configs(access: Access, request: Any, call: Call) -> Any:
    op = Operation.ALTER_CONFIGS

    def refused(item: admin_pb2.AlterConfigsResource) -> admin_pb2.AlterConfigsResult:
        code, message = _config_refusal(access, op, item.resource)
        return admin_pb2.AlterConfigsResult(
            resource=item.resource,
            error_code=code,
            error_message=message,
        )

    return await split_call(
        request, "resources", lambda r: _config_allowed(access, op, r.resource), call, "results",
        refused, admin_pb2.IncrementalAlterConfigsResponse,
    )  # fmt: skip


def _cluster_rule(operation: Operation) -> Any:
    async def rule(access: Access, request: Any, call: Call) -> Any:
        access.require_cluster(operation)
        return await call(request)

    rule.__name__ = f"requires_cluster_{operation.name.lower()}"
    return rule


describe_quorum = _cluster_rule(Operation.DESCRIBE)
describe_log_dirs = _cluster_rule(Operation.DESCRIBE)
elect_leaders = _cluster_rule(Operation.ALTER)
alter_partition_reassignments = _cluster_rule(Operation.ALTER)
list_partition_reassignments = _cluster_rule(Operation.DESCRIBE)
unregister_broker = _cluster_rule(Operation.ALTER)
describe_users = _cluster_rule(Operation.DESCRIBE)


async def alter_user_credentials(access: Access, request: Any, call: Call) -> Any:
    if access.cluster(Operation.ALTER):
        return await call(request)
    message = f"{access.principal} may not ALTER on the cluster (needed to manage users)"
    names = [u.name for u in request.upsertions] + list(request.deletions)
    names += [u.name for u in request.scram_upsertions]
    names += [d.name for d in request.scram_deletions]
    return admin_pb2.AlterUserCredentialsResponse(
        results=[
            admin_pb2.AlterUserCredentialsResult(
                name=n, error_code=CLUSTER_FAILED, error_message=message
            )
            for n in names
        ]
    )


async def create_acls(access: Access, request: Any, call: Call) -> Any:
    if access.cluster(Operation.ALTER):
        return await call(request)
    message = f"{access.principal} may not ALTER on the cluster (needed to manage ACLs)"
    return admin_pb2.CreateAclsResponse(
        results=[
            admin_pb2.CreateAclsResult(error_code=CLUSTER_FAILED, error_message=message)
            for _ in request.creations
        ]
    )


async def delete_acls(access: Access, request: Any, call: Call) -> Any:
    if access.cluster(Operation.ALTER):
        return await call(request)
    message = f"{access.principal} may not ALTER on the cluster (needed to manage ACLs)"
    return admin_pb2.DeleteAclsResponse(
        results=[
            admin_pb2.DeleteAclsResult(error_code=CLUSTER_FAILED, error_message=message)
            for _ in request.filters
        ]
    )


async def describe_acls(access: Access, request: Any, call: Call) -> Any:
    if access.cluster(Operation.DESCRIBE):
        return await call(request)
    return admin_pb2.DescribeAclsResponse(
        error_code=CLUSTER_FAILED,
        error_message=f"{access.principal} may not DESCRIBE on the cluster (needed to list ACLs)",
    )
