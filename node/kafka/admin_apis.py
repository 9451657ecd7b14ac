"""Kafka's admin APIs beyond topics, translated onto strom's Admin and Group servicers.

DeleteRecords, AlterConfigs and IncrementalAlterConfigs, DescribeCluster, ElectLeaders,
AlterPartitionReassignments and ListPartitionReassignments, DescribeAcls, CreateAcls and
DeleteAcls, DescribeLogDirs and DeleteGroups: each request becomes the strom request of the same
meaning, behind the same authorization rule gRPC applies (KafkaApis._call), and the answer is
regrouped the way Kafka's response nests it (by topic, by resource). Semantics that strom's
servicers do not have are added here, as Kafka defines them:

- AlterConfigs replaces a resource's whole set of overrides: keys it does not name are deleted.
- IncrementalAlterConfigs' APPEND and SUBTRACT edit list-valued keys (cleanup.policy) starting
  from the current value, the topic's override or else the broker default.
- ElectLeaders answers UNKNOWN_TOPIC_OR_PARTITION for partitions that do not exist.
- DescribeCluster lists the unfenced brokers, at the addresses of the listener asked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from strom.client.acl import Operation
from strom.node.config import SECRET_KEYS
from strom.node.security.access import Denied
from strom.node.topic_config import TOPIC_CONFIGS
from strom.v1 import admin_pb2, common_pb2, group_pb2, metadata_pb2

from .codec import Message
from .listener import Session

if TYPE_CHECKING:
    from .apis import KafkaApis

NONE = 0
INVALID_REQUEST = common_pb2.INVALID_REQUEST
INVALID_CONFIG = common_pb2.INVALID_CONFIG
CLUSTER_AUTHORIZATION_FAILED = common_pb2.CLUSTER_AUTHORIZATION_FAILED
UNKNOWN_TOPIC_OR_PARTITION = common_pb2.UNKNOWN_TOPIC_OR_PARTITION
UNSUPPORTED_ENDPOINT_TYPE = 115
ENDPOINT_TYPE_BROKERS = 1
NO_AUTHORIZED_OPERATIONS = -(2**31)  # Kafka's "not asked for"

# Kafka's AlterConfigOp and ConfigType numbers.
OP_SET, OP_DELETE, OP_APPEND, OP_SUBTRACT = 0, 1, 2, 3
CONFIG_TYPES = {"boolean": 1, "int": 3, "long": 5, "list": 7}
TOPIC_CONFIG_KINDS = {key.name: key.kind for key in TOPIC_CONFIGS}
TOPIC_CONFIG_BROKER_KEYS = {key.name: key.broker_key for key in TOPIC_CONFIGS}
# The cluster operations DescribeCluster reports as authorized (Kafka's set for the cluster).
CLUSTER_OPERATIONS = (
    Operation.CREATE, Operation.CLUSTER_ACTION, Operation.DESCRIBE_CONFIGS,
    Operation.ALTER_CONFIGS, Operation.IDEMPOTENT_WRITE, Operation.ALTER, Operation.DESCRIBE,
)  # fmt: skip


class Refused(Exception):
    """The whole request was refused (not authorized, or invalid as a whole)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _none_if_empty(text: str) -> str | None:
    return text or None


def _by_topic(items: list[tuple[str, Message]]) -> list[tuple[str, list[Message]]]:
    """(topic, partition entry) pairs grouped by topic, topics in first-seen order."""
    grouped: dict[str, list[Message]] = {}
    for topic, entry in items:
        grouped.setdefault(topic, []).append(entry)
    return list(grouped.items())


class KafkaAdminApis:
    """The admin handlers of one Kafka listener, over that listener's KafkaApis."""

    def __init__(self, apis: KafkaApis) -> None:
        self.apis = apis

    def handlers(self) -> dict[int, Callable[[Session, int, Message], Awaitable[Message | None]]]:
        return {
            21: self.delete_records,
            29: self.describe_acls,
            30: self.create_acls,
            31: self.delete_acls,
            33: self.alter_configs,
            35: self.describe_log_dirs,
            42: self.delete_groups,
            43: self.elect_leaders,
            44: self.incremental_alter_configs,
            45: self.alter_partition_reassignments,
            46: self.list_partition_reassignments,
            60: self.describe_cluster,
        }

    async def _call(
        self, session: Session, path: str, request: Any, method: Callable[[Any, Any], Any]
    ) -> Any:
        """The servicer's answer, or Refused for a request refused whole."""
        from .apis import InvalidRequest

        try:
            return await self.apis._call(session, path, request, method)
        except InvalidRequest as exc:
            raise Refused(exc.code, str(exc)) from exc
        except Denied as exc:
            raise Refused(CLUSTER_AUTHORIZATION_FAILED, str(exc)) from exc

    # ---- records -------------------------------------------------------------------------

    async def delete_records(self, session: Session, version: int, body: Message) -> Message:
        request = admin_pb2.DeleteRecordsRequest(timeout_ms=body["timeout_ms"])
        for topic in body["topics"]:
            for p in topic["partitions"]:
                request.partitions.add(
                    topic=topic["name"], partition=p["partition_index"], offset=p["offset"]
                )
        admin = self.apis.admin
        try:
            response = await self._call(
                session, "/strom.v1.Admin/DeleteRecords", request, admin.DeleteRecords
            )
            results = [(r.partition.topic, r.partition.partition, r.low_watermark, r.error_code)
                       for r in response.results]  # fmt: skip
        except Refused as exc:
            results = [(p.topic, p.partition, -1, exc.code) for p in request.partitions]
        grouped = _by_topic(
            [(t, {"partition_index": p, "low_watermark": low, "error_code": code})
             for t, p, low, code in results]
        )  # fmt: skip
        return {
            "throttle_time_ms": 0,
            "topics": [{"name": name, "partitions": parts} for name, parts in grouped],
        }

    # ---- configs -------------------------------------------------------------------------

    async def alter_configs(self, session: Session, version: int, body: Message) -> Message:
        """Kafka's AlterConfigs: each resource's overrides become exactly the ones given."""
        image = self.apis.broker.manager.image
        plans: list[tuple[Message, list[tuple[str, int, str]] | tuple[int, str]]] = []
        for resource in body["resources"]:
            names = [c["name"] for c in resource["configs"]]
            if len(set(names)) != len(names):
                plans.append((resource, (INVALID_REQUEST, "a config key is named twice")))
                continue
            ops = [
                (c["name"], OP_SET if c["value"] is not None else OP_DELETE, c["value"] or "")
                for c in resource["configs"]
            ]
            if resource["resource_type"] == metadata_pb2.CONFIG_RESOURCE_TOPIC:
                current = image.topic_configs(resource["resource_name"])
                ops += [(name, OP_DELETE, "") for name in sorted(current) if name not in names]
            plans.append((resource, ops))
        return await self._alter(session, body["validate_only"], plans)

    async def incremental_alter_configs(
        self, session: Session, version: int, body: Message
    ) -> Message:
        plans: list[tuple[Message, list[tuple[str, int, str]] | tuple[int, str]]] = []
        for resource in body["resources"]:
            try:
                ops = self._incremental_ops(resource)
            except Refused as exc:
                plans.append((resource, (exc.code, str(exc))))
                continue
            plans.append((resource, ops))
        return await self._alter(session, body["validate_only"], plans)

    def _incremental_ops(self, resource: Message) -> list[tuple[str, int, str]]:
        """SET and DELETE as given; APPEND and SUBTRACT resolved to the SET of the new list."""
        names = [c["name"] for c in resource["configs"]]
        if len(set(names)) != len(names):
            raise Refused(INVALID_REQUEST, "a config key is named twice")
        ops = []
        for config in resource["configs"]:
            name, op, value = config["name"], config["config_operation"], config["value"]
            if op in (OP_SET, OP_DELETE):
                ops.append((name, op, value or ""))
                continue
            if op not in (OP_APPEND, OP_SUBTRACT):
                raise Refused(INVALID_REQUEST, f"unknown config operation {op} for {name!r}")
            if (
                resource["resource_type"] != metadata_pb2.CONFIG_RESOURCE_TOPIC
                or TOPIC_CONFIG_KINDS.get(name) != "list"
            ):
                raise Refused(
                    INVALID_CONFIG, f"{name!r} is not a list: APPEND and SUBTRACT do not apply"
                )
            items = self._current_list(resource["resource_name"], name)
            given = [v.strip() for v in (value or "").split(",") if v.strip()]
            if op == OP_APPEND:
                items += [v for v in given if v not in items]
            else:
                items = [v for v in items if v not in given]
            ops.append((name, OP_SET, ",".join(items)))
        return ops

    def _current_list(self, topic: str, name: str) -> list[str]:
        overrides = self.apis.broker.manager.image.topic_configs(topic)
        raw = overrides.get(name)
        if raw is None:
            raw = self.apis.admin.config[TOPIC_CONFIG_BROKER_KEYS[name]]
        items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
        return [str(v).strip() for v in items if str(v).strip()]

    async def _alter(
        self,
        session: Session,
        validate_only: bool,
        plans: list[tuple[Message, list[tuple[str, int, str]] | tuple[int, str]]],
    ) -> Message:
        """Send the resources whose plan is a list of (name, op, value) as one strom
        IncrementalAlterConfigs; the others carry their refusal (code, message)."""
        request = admin_pb2.IncrementalAlterConfigsRequest(validate_only=validate_only)
        for resource, plan in plans:
            if isinstance(plan, list):
                item = request.resources.add(
                    resource=admin_pb2.ConfigResource(
                        resource_type=resource["resource_type"],
                        resource_name=resource["resource_name"],
                    )
                )
                for name, op, value in plan:
                    item.configs.add(name=name, op=op, value=value)
        answers: list[tuple[int, str]] = []
        if request.resources:
            admin = self.apis.admin
            try:
                response = await self._call(
                    session, "/strom.v1.Admin/IncrementalAlterConfigs", request,
                    admin.IncrementalAlterConfigs,
                )  # fmt: skip
                answers = [(r.error_code, r.error_message) for r in response.results]
            except Refused as exc:
                answers = [(exc.code, str(exc))] * len(request.resources)
        sent = iter(answers)
        responses = []
        for resource, plan in plans:
            code, message = next(sent) if isinstance(plan, list) else plan
            responses.append(
                {"error_code": code, "error_message": _none_if_empty(message),
                 "resource_type": resource["resource_type"],
                 "resource_name": resource["resource_name"]}
            )  # fmt: skip
        return {"throttle_time_ms": 0, "responses": responses}

    # ---- cluster -------------------------------------------------------------------------

    async def describe_cluster(self, session: Session, version: int, body: Message) -> Message:
        def answer(code: int, message: str | None = None) -> Message:
            return {
                "throttle_time_ms": 0, "error_code": code, "error_message": message,
                "endpoint_type": body["endpoint_type"], "cluster_id": "", "controller_id": -1,
                "brokers": [], "cluster_authorized_operations": NO_AUTHORIZED_OPERATIONS,
            }  # fmt: skip

        if body["endpoint_type"] != ENDPOINT_TYPE_BROKERS:
            return answer(UNSUPPORTED_ENDPOINT_TYPE, "brokers are the only endpoints described")
        admin = self.apis.admin
        try:
            response = await self._call(
                session, "/strom.v1.Admin/DescribeCluster", admin_pb2.DescribeClusterRequest(),
                admin.DescribeCluster,
            )  # fmt: skip
        except Refused as exc:
            return answer(exc.code, str(exc))
        operations = NO_AUTHORIZED_OPERATIONS
        if body["include_cluster_authorized_operations"]:
            access = self.apis.access_control.access(session.principal)
            operations = sum(
                1 << int(op)
                for op in CLUSTER_OPERATIONS
                if not access.enabled or access.cluster(op)
            )
        return {
            "throttle_time_ms": 0,
            "error_code": NONE,
            "error_message": None,
            "endpoint_type": ENDPOINT_TYPE_BROKERS,
            "cluster_id": response.cluster_id,
            "controller_id": response.controller_id,
            "brokers": [
                {"broker_id": b.node_id, "host": b.host, "port": b.port, "rack": b.rack or None}
                for b in response.brokers
                if not b.fenced
            ],
            "cluster_authorized_operations": operations,
        }

    async def elect_leaders(self, session: Session, version: int, body: Message) -> Message:
        wanted = [(t["topic"], p) for t in body["topic_partitions"] or () for p in t["partitions"]]
        request = admin_pb2.ElectLeadersRequest(
            election_type=body["election_type"], timeout_ms=body["timeout_ms"]
        )
        for topic, partition in wanted:
            request.partitions.add(topic=topic, partition=partition)
        if body["election_type"] not in (admin_pb2.ELECTION_PREFERRED, admin_pb2.ELECTION_UNCLEAN):
            return self._elections(INVALID_REQUEST, [], wanted, "unknown election type")
        admin = self.apis.admin
        try:
            response = await self._call(
                session, "/strom.v1.Admin/ElectLeaders", request, admin.ElectLeaders
            )
        except Refused as exc:
            return self._elections(exc.code, [], wanted, str(exc))
        results = [
            (r.partition.topic, r.partition.partition, r.error_code, r.error_message)
            for r in response.results
        ]
        return self._elections(NONE, results, wanted, "")

    @staticmethod
    def _elections(
        code: int, results: list[tuple[str, int, int, str]], wanted: list[tuple[str, int]],
        message: str,
    ) -> Message:  # fmt: skip
        answered = {(t, p) for t, p, _, _ in results}
        missing = UNKNOWN_TOPIC_OR_PARTITION if code == NONE else code
        results += [
            (t, p, missing, message or "no such partition")
            for t, p in wanted
            if (t, p) not in answered
        ]
        grouped = _by_topic(
            [(t, {"partition_id": p, "error_code": c, "error_message": _none_if_empty(m)})
             for t, p, c, m in results]
        )  # fmt: skip
        return {
            "throttle_time_ms": 0,
            "error_code": code,
            "replica_election_results": [
                {"topic": t, "partition_result": parts} for t, parts in grouped
            ],
        }

    # ---- reassignments (KIP-455) ---------------------------------------------------------

    async def alter_partition_reassignments(
        self, session: Session, version: int, body: Message
    ) -> Message:
        allow_change = bool(body["allow_replication_factor_change"])
        request = admin_pb2.AlterPartitionReassignmentsRequest(
            timeout_ms=body["timeout_ms"], keep_replication_factor=not allow_change
        )
        for topic in body["topics"]:
            for p in topic["partitions"]:
                replicas = p["replicas"]
                request.partitions.add(
                    topic=topic["name"], partition=p["partition_index"],
                    replicas=replicas or [], cancel=replicas is None,
                )  # fmt: skip
        top, top_message = NONE, ""
        admin = self.apis.admin
        try:
            response = await self._call(
                session, "/strom.v1.Admin/AlterPartitionReassignments", request,
                admin.AlterPartitionReassignments,
            )  # fmt: skip
            results = [(r.partition.topic, r.partition.partition, r.error_code, r.error_message)
                       for r in response.results]  # fmt: skip
        except Refused as exc:
            top, top_message = exc.code, str(exc)
            results = [(p.topic, p.partition, exc.code, str(exc)) for p in request.partitions]
        grouped = _by_topic(
            [(t, {"partition_index": p, "error_code": c, "error_message": _none_if_empty(m)})
             for t, p, c, m in results]
        )  # fmt: skip
        return {
            "throttle_time_ms": 0,
            "allow_replication_factor_change": allow_change,
            "error_code": top,
            "error_message": _none_if_empty(top_message),
            "responses": [{"name": t, "partitions": parts} for t, parts in grouped],
        }

    async def list_partition_reassignments(
        self, session: Session, version: int, body: Message
    ) -> Message:
        request = admin_pb2.ListPartitionReassignmentsRequest()
        for topic in body["topics"] or ():
            for index in topic["partition_indexes"]:
                request.partitions.add(topic=topic["name"], partition=index)
        admin = self.apis.admin
        try:
            response = await self._call(
                session, "/strom.v1.Admin/ListPartitionReassignments", request,
                admin.ListPartitionReassignments,
            )  # fmt: skip
        except Refused as exc:
            return {"throttle_time_ms": 0, "error_code": exc.code, "error_message": str(exc),
                    "topics": []}  # fmt: skip
        grouped = _by_topic(
            [
                (r.partition.topic,
                 {"partition_index": r.partition.partition, "replicas": list(r.replicas),
                  "adding_replicas": list(r.adding_replicas),
                  "removing_replicas": list(r.removing_replicas)})
                for r in response.reassignments
            ]
        )  # fmt: skip
        return {
            "throttle_time_ms": 0,
            "error_code": NONE,
            "error_message": None,
            "topics": [{"name": t, "partitions": parts} for t, parts in grouped],
        }

    # ---- ACLs ----------------------------------------------------------------------------

    @staticmethod
    def _filter(message: Message) -> admin_pb2.AclBindingFilter:
        selector = admin_pb2.AclBindingFilter(
            resource_type=message["resource_type_filter"],
            pattern_type=message["pattern_type_filter"],
            operation=message["operation"],
            permission=message["permission_type"],
        )
        for field, key in (
            ("resource_name", "resource_name_filter"),
            ("principal", "principal_filter"),
            ("host", "host_filter"),
        ):
            if message[key] is not None:
                setattr(selector, field, message[key])
        return selector  # fmt: skip

    @staticmethod
    def _acl_entry(binding: metadata_pb2.AclBinding) -> Message:
        return {"principal": binding.principal, "host": binding.host,
                "operation": binding.operation, "permission_type": binding.permission}  # fmt: skip

    async def describe_acls(self, session: Session, version: int, body: Message) -> Message:
        request = admin_pb2.DescribeAclsRequest(filter=self._filter(body))
        admin = self.apis.admin
        try:
            response = await self._call(
                session, "/strom.v1.Admin/DescribeAcls", request, admin.DescribeAcls
            )
        except Refused as exc:
            return {"throttle_time_ms": 0, "error_code": exc.code, "error_message": str(exc),
                    "resources": []}  # fmt: skip
        resources: dict[tuple[int, str, int], list[Message]] = {}
        for b in response.bindings:
            key = (b.resource_type, b.resource_name, b.pattern_type)
            resources.setdefault(key, []).append(self._acl_entry(b))
        return {
            "throttle_time_ms": 0,
            "error_code": response.error_code,
            "error_message": _none_if_empty(response.error_message),
            "resources": [
                {"resource_type": t, "resource_name": n, "pattern_type": p, "acls": acls}
                for (t, n, p), acls in resources.items()
            ],
        }

    async def create_acls(self, session: Session, version: int, body: Message) -> Message:
        request = admin_pb2.CreateAclsRequest()
        for c in body["creations"]:
            request.creations.add(
                resource_type=c["resource_type"], resource_name=c["resource_name"],
                pattern_type=c["resource_pattern_type"], principal=c["principal"],
                host=c["host"], operation=c["operation"], permission=c["permission_type"],
            )  # fmt: skip
        admin = self.apis.admin
        try:
            response = await self._call(
                session, "/strom.v1.Admin/CreateAcls", request, admin.CreateAcls
            )
            results = [(r.error_code, r.error_message) for r in response.results]
        except Refused as exc:
            results = [(exc.code, str(exc))] * len(request.creations)
        return {
            "throttle_time_ms": 0,
            "results": [{"error_code": c, "error_message": _none_if_empty(m)} for c, m in results],
        }

    async def delete_acls(self, session: Session, version: int, body: Message) -> Message:
        request = admin_pb2.DeleteAclsRequest(filters=[self._filter(f) for f in body["filters"]])
        admin = self.apis.admin
        try:
            response = await self._call(
                session, "/strom.v1.Admin/DeleteAcls", request, admin.DeleteAcls
            )
        except Refused as exc:
            return {
                "throttle_time_ms": 0,
                "filter_results": [
                    {"error_code": exc.code, "error_message": str(exc), "matching_acls": []}
                    for _ in body["filters"]
                ],
            }
        return {
            "throttle_time_ms": 0,
            "filter_results": [
                {
                    "error_code": r.error_code,
                    "error_message": _none_if_empty(r.error_message),
                    "matching_acls": [
                        {
                            "error_code": NONE,
                            "error_message": None,
                            "resource_type": b.resource_type,
                            "resource_name": b.resource_name,
                            "pattern_type": b.pattern_type,
                            **self._acl_entry(b),
                        }
                        for b in r.deleted
                    ],
                }
                for r in response.results
            ],
        }

    # ---- log dirs, groups ----------------------------------------------------------------

    async def describe_log_dirs(self, session: Session, version: int, body: Message) -> Message:
        wanted = (
            None
            if body["topics"] is None
            else {(t["topic"], p) for t in body["topics"] for p in t["partitions"]}
        )
        request = admin_pb2.DescribeLogDirsRequest(
            topics=sorted({t for t, _ in wanted}) if wanted is not None else []
        )
        if wanted is not None and not wanted:  # an empty list asks for nothing
            return {"throttle_time_ms": 0, "error_code": NONE, "results": []}
        admin = self.apis.admin
        try:
            response = await self._call(
                session, "/strom.v1.Admin/DescribeLogDirs", request, admin.DescribeLogDirs
            )
        except Refused as exc:
            return {"throttle_time_ms": 0, "error_code": exc.code, "results": []}
        results = []
        for d in response.results:
            topics = []
            for t in d.topics:
                parts = [
                    {"partition_index": p.partition, "partition_size": p.size_bytes,
                     "offset_lag": p.offset_lag, "is_future_key": False}
                    for p in t.partitions
                    if wanted is None or (t.name, p.partition) in wanted
                ]  # fmt: skip
                if parts:
                    topics.append({"name": t.name, "partitions": parts})
            results.append(
                {"error_code": d.error_code, "log_dir": d.log_dir, "topics": topics,
                 "total_bytes": d.total_bytes, "usable_bytes": d.usable_bytes}
            )  # fmt: skip
        return {"throttle_time_ms": 0, "error_code": NONE, "results": results}

    async def delete_groups(self, session: Session, version: int, body: Message) -> Message:
        names = list(body["groups_names"])
        group = self.apis.group
        try:
            response = await self._call(
                session, "/strom.v1.Group/DeleteGroups",
                group_pb2.DeleteGroupsRequest(group_ids=names), group.DeleteGroups,
            )  # fmt: skip
            results = [(r.group_id, r.error_code) for r in response.results]
        except Refused as exc:
            results = [(name, exc.code) for name in names]
        return {
            "throttle_time_ms": 0,
            "results": [{"group_id": g, "error_code": c} for g, c in results],
        }


def describe_config_entry(resource_type: int, name: str, value: str, source: int) -> Message:
    """One DescribeConfigs entry as Kafka shows it: broker configs are read-only (strom has no
    dynamic broker configs) and secrets have no value; topic configs carry their type."""
    broker = resource_type == metadata_pb2.CONFIG_RESOURCE_BROKER
    sensitive = broker and name in SECRET_KEYS
    return {
        "name": name,
        "value": None if sensitive else value,
        "read_only": broker,
        "config_source": source,
        "is_sensitive": sensitive,
        "synonyms": [],
        "config_type": 0 if broker else CONFIG_TYPES.get(TOPIC_CONFIG_KINDS.get(name, ""), 0),
        "documentation": None,
    }
