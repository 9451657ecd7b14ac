"""The authorizer's decision over a set of ACL bindings: pure, no gRPC (Kafka's model).

`authorize` decides one action, in this order (AclAuthorizer / StandardAuthorizer):

1. the authorizer is off → allowed;
2. the principal is a super user → allowed;
3. no binding at all matches the resource (whoever it names) → `allow.everyone.if.no.acl.found`;
4. a DENY binding for the principal (or `User:*`) on the operation (or ALL) → denied: deny wins;
5. an ALLOW binding for the principal (or `User:*`) on the operation, ALL, or an operation that
   implies it → allowed; otherwise denied.

Implied operations, as Kafka: READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies
DESCRIBE_CONFIGS. Implication applies to ALLOW only: denying READ does not deny DESCRIBE.
Hosts are not compared: every stored binding has host `*`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from strom.client.acl import (
    WILDCARD,
    WILDCARD_PRINCIPAL,
    AclBinding,
    Operation,
    PatternType,
    Permission,
    ResourceType,
    parse_principal,
)

# An ALLOW on any of these also allows the key (Kafka's AclEntry.supportedOperations rule).
IMPLIED_BY: Mapping[Operation, frozenset[Operation]] = MappingProxyType(
    {
        Operation.DESCRIBE: frozenset(
            {Operation.READ, Operation.WRITE, Operation.DELETE, Operation.ALTER}
        ),
        Operation.DESCRIBE_CONFIGS: frozenset({Operation.ALTER_CONFIGS}),
    }
)


@dataclass(frozen=True, slots=True)
class AuthorizerSettings:
    enabled: bool = False
    super_users: frozenset[str] = frozenset()
    allow_everyone_if_no_acl_found: bool = False


class _Index:
    """The bindings of one resource type: literal names in a dict, prefixes in a dict, so a
    lookup costs one probe per prefix length of the name, not one per binding."""

    def __init__(self) -> None:
        self.literal: dict[str, list[AclBinding]] = {}
        self.prefixed: dict[str, list[AclBinding]] = {}
        self.prefix_lengths: set[int] = set()

    def add(self, binding: AclBinding) -> None:
        if binding.pattern_type == PatternType.PREFIXED:
            self.prefixed.setdefault(binding.resource_name, []).append(binding)
            self.prefix_lengths.add(len(binding.resource_name))
        else:
            self.literal.setdefault(binding.resource_name, []).append(binding)

    def matching(self, name: str) -> list[AclBinding]:
        found = list(self.literal.get(name, ()))
        if name != WILDCARD:
            found += self.literal.get(WILDCARD, ())
        for length in self.prefix_lengths:
            if length <= len(name):
                found += self.prefixed.get(name[:length], ())
        return found


class Authorizer:
    """Decisions over one immutable set of bindings (rebuilt when the metadata image's ACLs
    change; building costs O(bindings))."""

    def __init__(self, settings: AuthorizerSettings, bindings: Iterable[AclBinding]) -> None:
        self.settings = settings
        self.bindings = frozenset(bindings)
        self._index: dict[ResourceType, _Index] = {t: _Index() for t in ResourceType}
        for binding in self.bindings:
            self._index[binding.resource_type].add(binding)

    def is_super_user(self, principal: str) -> bool:
        return principal in self.settings.super_users

    def authorize(
        self, principal: str, operation: Operation, resource_type: ResourceType, name: str
    ) -> bool:
        if not self.settings.enabled or self.is_super_user(principal):
            return True
        acls = self._index[resource_type].matching(name)
        if not acls:
            return self.settings.allow_everyone_if_no_acl_found
        principals = (principal, WILDCARD_PRINCIPAL)
        for b in acls:
            if (
                b.permission == Permission.DENY
                and b.principal in principals
                and b.operation in (operation, Operation.ALL)
            ):
                return False
        allowing = {operation, Operation.ALL} | IMPLIED_BY.get(operation, frozenset())
        return any(
            b.permission == Permission.ALLOW
            and b.principal in principals
            and b.operation in allowing
            for b in acls
        )

    def authorize_any(
        self, principal: str, operation: Operation, resource_type: ResourceType
    ) -> bool:
        """Whether some resource of the type is open to `operation` for `principal` (Kafka's
        authorizeByResourceType, used by InitProducerId): an ALLOW pattern that no DENY pattern
        of the principal covers; with no binding of the type at all, the no-ACL rule."""
        if not self.settings.enabled or self.is_super_user(principal):
            return True
        principals = (principal, WILDCARD_PRINCIPAL)
        of_type = [b for b in self.bindings if b.resource_type == resource_type]
        if not of_type:
            return self.settings.allow_everyone_if_no_acl_found
        mine = [
            b
            for b in of_type
            if b.principal in principals and b.operation in (operation, Operation.ALL)
        ]
        denies = [b for b in mine if b.permission == Permission.DENY]
        return any(
            b.permission == Permission.ALLOW and not any(_covers(d, b) for d in denies)
            for b in mine
        )


def _covers(deny: AclBinding, allow: AclBinding) -> bool:
    """Whether every resource `allow`'s pattern names is also named by `deny`'s pattern."""
    if deny.pattern_type == PatternType.LITERAL:
        return deny.resource_name == WILDCARD or (
            allow.pattern_type == PatternType.LITERAL and allow.resource_name == deny.resource_name
        )
    if allow.pattern_type == PatternType.LITERAL and allow.resource_name == WILDCARD:
        return False  # every name, not only those starting with the deny's prefix
    return allow.resource_name.startswith(deny.resource_name)


def parse_super_users(text: str) -> frozenset[str]:
    """`User:admin;User:node` (Kafka's form) or a comma list; raises ValueError."""
    items = [item.strip() for item in text.replace(",", ";").split(";")]
    return frozenset(parse_principal(item) for item in items if item)
