"""ACL bindings and filters: Kafka's access-control model, shared by the SDK and the node.

A binding says that a principal (`User:alice`, or `User:*` for everyone) is allowed or denied
one operation on the resources of one type whose name matches a pattern: LITERAL (exactly the
name; the literal `*` is every resource of the type) or PREFIXED (every name starting with it).
Every binding has host `*` (per-host rules are refused). A binding's value is its identity.
Enum numbers are Kafka's and equal the strom.v1 proto enums; the decision rules live in the
node's authorizer (strom.node.security.authorizer).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from strom.v1 import admin_pb2, metadata_pb2

CLUSTER_NAME = "kafka-cluster"  # the one CLUSTER resource, named as Kafka names it
WILDCARD = "*"
WILDCARD_PRINCIPAL = "User:*"
ANONYMOUS = "User:ANONYMOUS"
PRINCIPAL_TYPE = "User"
RESOURCE_NAME_LENGTH_MAX = 1024


class ResourceType(IntEnum):
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class PatternType(IntEnum):
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


class Permission(IntEnum):
    ANY = 1
    DENY = 2
    ALLOW = 3


def parse_principal(text: str) -> str:
    """`User:name` checked; raises ValueError naming what is wrong."""
    kind, sep, name = text.partition(":")
    if not sep or kind != PRINCIPAL_TYPE or not name:
        raise ValueError(f"principal {text!r} is not User:<name> (or User:* for everyone)")
    return text


@dataclass(frozen=True, slots=True, order=True)
class AclBinding:
    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    principal: str
    host: str
    operation: Operation
    permission: Permission

    def problem(self) -> str | None:
        """Why this binding may not be stored, or None (Kafka's CreateAcls validation)."""
        if self.resource_type not in (
            ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER,
            ResourceType.TRANSACTIONAL_ID,
        ):  # fmt: skip
            return "resource type must be TOPIC, GROUP, CLUSTER or TRANSACTIONAL_ID"
        if self.pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
            return "pattern type must be LITERAL or PREFIXED"
        if not self.resource_name or len(self.resource_name) > RESOURCE_NAME_LENGTH_MAX:
            return f"resource name must be 1..{RESOURCE_NAME_LENGTH_MAX} characters"
        if self.resource_type == ResourceType.CLUSTER and (
            self.pattern_type != PatternType.LITERAL or self.resource_name != CLUSTER_NAME
        ):
            return f"the cluster resource is the literal {CLUSTER_NAME!r}"
        try:
            parse_principal(self.principal)
        except ValueError as exc:
            return str(exc)
        if self.host != WILDCARD:
            return "host must be '*' (per-host ACLs are not supported)"
        if self.operation in (Operation.ANY,) or self.operation not in Operation:
            return "operation must be a concrete operation or ALL"
        if self.permission not in (Permission.ALLOW, Permission.DENY):
            return "permission must be ALLOW or DENY"
        return None


def pattern_applies(binding: AclBinding, resource_name: str) -> bool:
    """Whether the binding's pattern covers a resource of its type named `resource_name`."""
    if binding.pattern_type == PatternType.PREFIXED:
        return resource_name.startswith(binding.resource_name)
    return binding.resource_name in (WILDCARD, resource_name)


@dataclass(frozen=True, slots=True)
class AclBindingFilter:
    """Selects bindings: None and ANY match anything. Pattern type MATCH selects every binding
    that applies to the resource named `resource_name` (literal, wildcard or prefix)."""

    resource_type: ResourceType = ResourceType.ANY
    resource_name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: Operation = Operation.ANY
    permission: Permission = Permission.ANY

    def matches(self, binding: AclBinding) -> bool:
        if self.resource_type not in (ResourceType.ANY, binding.resource_type):
            return False
        if self.pattern_type == PatternType.MATCH:
            if self.resource_name is not None and not pattern_applies(binding, self.resource_name):
                return False
        else:
            if self.pattern_type not in (PatternType.ANY, binding.pattern_type):
                return False
            if self.resource_name not in (None, binding.resource_name):
                return False
        return (
            self.principal in (None, binding.principal)
            and self.host in (None, binding.host)
            and self.operation in (Operation.ANY, binding.operation)
            and self.permission in (Permission.ANY, binding.permission)
        )


def binding_from_proto(message: metadata_pb2.AclBinding) -> AclBinding:
    return AclBinding(
        resource_type=ResourceType(message.resource_type),
        resource_name=message.resource_name,
        pattern_type=PatternType(message.pattern_type),
        principal=message.principal,
        host=message.host,
        operation=Operation(message.operation),
        permission=Permission(message.permission),
    )


def binding_to_proto(binding: AclBinding) -> metadata_pb2.AclBinding:
    return metadata_pb2.AclBinding(
        resource_type=int(binding.resource_type),  # type: ignore[arg-type]
        resource_name=binding.resource_name,
        pattern_type=int(binding.pattern_type),  # type: ignore[arg-type]
        principal=binding.principal,
        host=binding.host,
        operation=int(binding.operation),  # type: ignore[arg-type]
        permission=int(binding.permission),  # type: ignore[arg-type]
    )


def _or_any(value: int, any_value: int) -> int:
    return any_value if value == 0 else value  # UNKNOWN (unset) in a filter means ANY


def filter_from_proto(message: admin_pb2.AclBindingFilter) -> AclBindingFilter:
    return AclBindingFilter(
        resource_type=ResourceType(_or_any(message.resource_type, ResourceType.ANY)),
        resource_name=message.resource_name if message.HasField("resource_name") else None,
        pattern_type=PatternType(_or_any(message.pattern_type, PatternType.ANY)),
        principal=message.principal if message.HasField("principal") else None,
        host=message.host if message.HasField("host") else None,
        operation=Operation(_or_any(message.operation, Operation.ANY)),
        permission=Permission(_or_any(message.permission, Permission.ANY)),
    )


def filter_to_proto(selector: AclBindingFilter) -> admin_pb2.AclBindingFilter:
    message = admin_pb2.AclBindingFilter(
        resource_type=int(selector.resource_type),  # type: ignore[arg-type]
        pattern_type=int(selector.pattern_type),  # type: ignore[arg-type]
        operation=int(selector.operation),  # type: ignore[arg-type]
        permission=int(selector.permission),  # type: ignore[arg-type]
    )
    if selector.resource_name is not None:
        message.resource_name = selector.resource_name
    if selector.principal is not None:
        message.principal = selector.principal
    if selector.host is not None:
        message.host = selector.host
    return message
