"""What one caller may do: its principal and the authorizer of the current metadata image, plus
the helpers the per-RPC rules (node/security/rules_*.py) share.

A rule is `async rule(access, request, call) -> response`: it checks before it acts, then either
calls the real handler (`call`, perhaps with the unauthorized part of the request removed, whose
results it fills in itself with *_AUTHORIZATION_FAILED codes), answers without calling it, or
raises `Denied` (the interceptor turns that into gRPC PERMISSION_DENIED). Rules see no gRPC
context, so they are tested with plain requests and a fake `call`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from strom.client.acl import CLUSTER_NAME, AclBinding, Operation, ResourceType
from strom.node.loop_turns import TurnBudget
from strom.node.metadata.image import MetadataImage

from .authorizer import Authorizer, AuthorizerSettings

Call = Callable[[Any], Awaitable[Any]]
Rule = Callable[["Access", Any, Call], Awaitable[Any]]
T = TypeVar("T")


class Denied(Exception):
    """The whole request is refused (gRPC PERMISSION_DENIED); the message names the operation
    and the resource the caller asked for, nothing else."""


@dataclass(frozen=True, slots=True)
class Access:
    principal: str
    authorizer: Authorizer

    @property
    def enabled(self) -> bool:
        return self.authorizer.settings.enabled

    def topic(self, operation: Operation, name: str) -> bool:
        return self.authorizer.authorize(self.principal, operation, ResourceType.TOPIC, name)

    def group(self, operation: Operation, name: str) -> bool:
        return self.authorizer.authorize(self.principal, operation, ResourceType.GROUP, name)

    def transactional_id(self, operation: Operation, name: str) -> bool:
        return self.authorizer.authorize(
            self.principal, operation, ResourceType.TRANSACTIONAL_ID, name
        )

    def cluster(self, operation: Operation) -> bool:
        return self.authorizer.authorize(
            self.principal, operation, ResourceType.CLUSTER, CLUSTER_NAME
        )

    def create_topic(self, name: str) -> bool:
        """Kafka: CREATE on the cluster or on the topic."""
        return self.cluster(Operation.CREATE) or self.topic(Operation.CREATE, name)

    def require_cluster(self, operation: Operation) -> None:
        if not self.cluster(operation):
            raise Denied(f"{self.principal} may not "
                         f"{operation.name} on the cluster")  # fmt: skip

    def refusal(self, operation: Operation, kind: str, name: str) -> str:
        return f"{self.principal} is not authorized to {operation.name} {kind} {name!r}"


class AccessControl:
    """Builds an Authorizer for the image's current ACLs, once per change of them."""

    def __init__(self, settings: AuthorizerSettings, image: Callable[[], MetadataImage]) -> None:
        self.settings = settings
        self._image = image
        self._acls: frozenset[AclBinding] | None = None
        self._authorizer = Authorizer(settings, ())

    def authorizer(self) -> Authorizer:
        acls = self._image().acls
        if acls is not self._acls:
            self._authorizer = Authorizer(self.settings, acls)
            self._acls = acls
        return self._authorizer

    def access(self, principal: str) -> Access:
        return Access(principal, self.authorizer())


async def split_call(
    request: Any,
    field: str,
    allowed: Callable[[Any], bool],
    call: Call,
    results_field: str,
    refused: Callable[[Any], Any],
    response_type: Callable[[], Any],
) -> Any:
    """Call the handler with the allowed items of `request.field` only, and answer the refused
    ones with `refused(item)`, keeping request order in `response.results_field`. Handlers must
    answer allowed items one to one, in order (every per-item RPC here does). With nothing
    allowed the handler is not called at all (a fetch would long-poll for nothing).

    Each item is decided once, and the loops yield to the event loop in bounded slices
    (`TurnBudget`): a request of hundreds of thousands of topics must not freeze the node here,
    before its handler even starts (#15 defect 5)."""
    items = list(getattr(request, field))
    turns = TurnBudget()
    decisions = []
    for item in items:
        await turns.spend()
        decisions.append(allowed(item))
    if all(decisions):
        return await call(request)
    inner = type(request)()
    inner.CopyFrom(request)
    kept = [item for item, ok in zip(items, decisions, strict=True) if ok]
    del getattr(inner, field)[:]
    getattr(inner, field).extend(kept)
    response = await call(inner) if kept else response_type()
    answered = list(getattr(response, results_field))
    if len(answered) != len(kept):
        return response  # a request-level error: nothing per item to merge
    answers = iter(answered)
    merged = []
    for item, ok in zip(items, decisions, strict=True):
        await turns.spend()
        merged.append(next(answers) if ok else refused(item))
    del getattr(response, results_field)[:]
    getattr(response, results_field).extend(merged)
    return response


async def cluster_action(access: Access, request: Any, call: Call) -> Any:
    """Inter-node RPCs: CLUSTER_ACTION on the cluster (nodes are super users or granted it)."""
    access.require_cluster(Operation.CLUSTER_ACTION)
    return await call(request)


async def open_to_all(access: Access, request: Any, call: Call) -> Any:
    """Any authenticated caller (what Kafka also answers without an ACL)."""
    return await call(request)
