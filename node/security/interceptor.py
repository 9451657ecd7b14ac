"""The security of one listener: authenticate every call, then check it before it acts.

Each listener is its own gRPC server (node/server.py), so each gets its own
`SecurityInterceptor` with the listener's protocol from `listener.security.protocol.map`. For
every call to a strom service it (1) finds the principal (node/security/authn.py;
UNAUTHENTICATED on failure), then (2) with `authorizer.enabled`, runs the RPC's rule from `RULES`
(node/security/rules_*.py) around the real handler. A strom RPC missing from `RULES` is open to
super users only, so a new RPC is closed until someone writes its rule. Health checking and
reflection stay open (load balancers and `grpcurl` need them; they reveal no data).

The produce and fetch streams (Broker/ProduceStream, FetchStream) are authenticated once, when
they open, and each request on them is authorized by the unary RPC's rule, against the ACLs of
that moment (node/broker/streams.py `REQUEST_CHECK`). Any other streaming RPC is refused
(UNIMPLEMENTED) until it has a rule.

The other direction, the credentials a node sends on its own calls to other nodes when the
listener it calls is SASL (node.sasl.username / node.sasl.password, the JAAS-config idea kept
simple), is `strom.node.tls.client_security`: one SecurityOptions for TLS and SASL alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from strom.node.broker.streams import REQUEST_CHECK, Answer, RequestRefused
from strom.node.config import NodeConfig
from strom.node.metadata.image import MetadataImage

from . import rules_admin, rules_broker, rules_group, rules_txn
from .access import Access, AccessControl, Call, Denied, Rule, cluster_action, open_to_all
from .authn import (
    SASL_PROTOCOLS,
    AuthenticationError,
    Authenticator,
    FailureLog,
    principal_of,
)
from .authorizer import AuthorizerSettings, parse_super_users
from .credentials import CredentialVerifier
from .scram import ScramLogins

log = logging.getLogger("strom.security")

OPEN_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})

RULES: dict[str, Rule] = {
    "/strom.v1.Broker/Produce": rules_broker.produce,
    "/strom.v1.Broker/Fetch": rules_broker.fetch,
    "/strom.v1.Broker/ListOffsets": rules_broker.list_offsets,
    "/strom.v1.Broker/Metadata": rules_broker.metadata,
    "/strom.v1.Broker/InitProducerId": rules_broker.init_producer_id,
    "/strom.v1.Replica/Fetch": cluster_action,
    "/strom.v1.Replica/OffsetForLeaderEpoch": cluster_action,
    # a transaction coordinator's calls to partition leaders: brokers only (Kafka's
    # WriteTxnMarkers needs ClusterAction too)
    "/strom.v1.Replica/RegisterTxnPartitions": cluster_action,
    "/strom.v1.Replica/WriteTxnMarkers": cluster_action,
    "/strom.v1.Raft/Step": cluster_action,
    "/strom.v1.Raft/FetchLog": cluster_action,
    **{
        f"/strom.v1.Controller/{rpc}": cluster_action
        for rpc in (
            "RegisterBroker",
            "BrokerHeartbeat",
            "AlterPartition",
            "AllocateProducerIds",
            "CreateTopics",
            "DeleteTopics",
            "CreatePartitions",
            "IncrementalAlterConfigs",
            "ElectLeaders",
            "AlterPartitionReassignments",
            "UnregisterBroker",
            "DescribeQuorum",
            "AlterUserCredentials",
            "CreateAcls",
            "DeleteAcls",
        )
    },
    "/strom.v1.Admin/CreateTopics": rules_admin.create_topics,
    "/strom.v1.Admin/DeleteTopics": rules_admin.delete_topics,
    "/strom.v1.Admin/CreatePartitions": rules_admin.create_partitions,
    "/strom.v1.Admin/DescribeConfigs": rules_admin.describe_configs,
    "/strom.v1.Admin/IncrementalAlterConfigs": rules_admin.alter_configs,
    "/strom.v1.Admin/DescribeCluster": open_to_all,
    "/strom.v1.Admin/DescribeQuorum": rules_admin.describe_quorum,
    "/strom.v1.Admin/DescribeLogDirs": rules_admin.describe_log_dirs,
    "/strom.v1.Admin/ElectLeaders": rules_admin.elect_leaders,
    "/strom.v1.Admin/AlterPartitionReassignments": rules_admin.alter_partition_reassignments,
    "/strom.v1.Admin/ListPartitionReassignments": rules_admin.list_partition_reassignments,
    "/strom.v1.Admin/UnregisterBroker": rules_admin.unregister_broker,
    "/strom.v1.Admin/DeleteRecords": rules_admin.delete_records,
    "/strom.v1.Admin/AlterUserCredentials": rules_admin.alter_user_credentials,
    "/strom.v1.Admin/DescribeUsers": rules_admin.describe_users,
    "/strom.v1.Admin/CreateAcls": rules_admin.create_acls,
    "/strom.v1.Admin/DeleteAcls": rules_admin.delete_acls,
    "/strom.v1.Admin/DescribeAcls": rules_admin.describe_acls,
    "/strom.v1.Group/FindCoordinator": rules_group.find_coordinator,
    "/strom.v1.Group/ConsumerGroupHeartbeat": rules_group.heartbeat,
    "/strom.v1.Group/OffsetCommit": rules_group.offset_commit,
    "/strom.v1.Group/OffsetFetch": rules_group.offset_fetch,
    "/strom.v1.Group/ListGroups": rules_group.list_groups,
    "/strom.v1.Group/DescribeGroups": rules_group.describe_groups,
    "/strom.v1.Group/DeleteGroups": rules_group.delete_groups,
    "/strom.v1.Transaction/InitProducerId": rules_txn.init_producer_id,
    "/strom.v1.Transaction/AddPartitionsToTxn": rules_txn.add_partitions,
    "/strom.v1.Transaction/AddOffsetsToTxn": rules_txn.add_offsets,
    "/strom.v1.Transaction/EndTxn": rules_txn.end_txn,
    "/strom.v1.Transaction/TxnOffsetCommit": rules_txn.txn_offset_commit,
    "/strom.v1.Transaction/ListTransactions": rules_txn.list_transactions,
    "/strom.v1.Transaction/DescribeTransactions": rules_txn.describe_transactions,
}

# The streams, by the unary RPC whose requests they carry.
STREAM_RULES: dict[str, Rule] = {
    "/strom.v1.Broker/ProduceStream": RULES["/strom.v1.Broker/Produce"],
    "/strom.v1.Broker/FetchStream": RULES["/strom.v1.Broker/Fetch"],
}


async def super_users_only(access: Access, request: Any, call: Call) -> Any:
    if not access.authorizer.is_super_user(access.principal):
        raise Denied(f"{access.principal} is not authorized for this RPC")
    return await call(request)


def admits(allowed: frozenset[str], principal: str) -> bool:
    """`principal` is in `allowed`, exactly or by an entry ending in `*` (a prefix)."""
    return principal in allowed or any(
        entry.endswith("*") and principal.startswith(entry[:-1]) for entry in allowed
    )


class SecurityInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        authenticator: Authenticator,
        access_control: AccessControl,
        nodes_only: frozenset[str] | None = None,
    ) -> None:
        """`nodes_only`: on a controller listener, the principals allowed at all (the nodes),
        checked before any rule, authorizer or not."""
        self.authenticator = authenticator
        self.access_control = access_control
        self.nodes_only = nodes_only

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        method = str(details.method)
        service = method.lstrip("/").rpartition("/")[0]
        if handler is None or service in OPEN_SERVICES:
            return handler
        if handler.unary_unary is None:
            stream_rule = STREAM_RULES.get(method)
            if stream_rule is None or handler.stream_stream is None:
                return None  # refused UNIMPLEMENTED: clients fall back to unary calls
            return self._guard_stream(handler, stream_rule)
        inner = handler.unary_unary
        rule = RULES.get(method, super_users_only)
        access_control = self.access_control

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            access = access_control.access(await self._principal(context))
            if not access.enabled:
                return await inner(request, context)
            try:
                return await rule(access, request, lambda r: inner(r, context))
            except Denied as exc:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
                raise AssertionError("unreachable") from exc

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def _principal(self, context: grpc.aio.ServicerContext) -> str:
        """The caller's principal; ends the call UNAUTHENTICATED (or, on a controller
        listener, PERMISSION_DENIED for a principal that is not a node)."""
        try:
            principal = await self.authenticator.principal(
                context.invocation_metadata(), context.auth_context(), context.peer()
            )
        except AuthenticationError as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
            raise AssertionError("unreachable") from exc
        if self.nodes_only is not None and not admits(self.nodes_only, principal):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{principal} is not a node: this controller listener serves only the nodes "
                "named by controller.allowed.principals",
            )
        return principal

    def _guard_stream(self, handler: Any, rule: Rule) -> Any:
        """Authenticate the stream when it opens; authorize each of its requests by `rule`."""
        inner = handler.stream_stream
        access_control = self.access_control

        async def guarded(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            principal = await self._principal(context)

            async def check(request: Any, answer: Answer) -> Any:
                access = access_control.access(principal)  # the ACLs of this moment
                if not access.enabled:
                    return await answer(request)
                try:
                    return await rule(access, request, answer)
                except Denied as exc:
                    raise RequestRefused(grpc.StatusCode.PERMISSION_DENIED, str(exc)) from exc

            # This call's own task: the check reaches this stream's requests only.
            REQUEST_CHECK.set(check)
            async for answer in inner(requests, context):
                yield answer

        return grpc.stream_stream_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class NodeSecurity:
    """A node's security, built once from its config: the credential verifier every SASL
    listener shares, the access control every listener shares, and the interceptors."""

    def __init__(self, config: NodeConfig, image: Callable[[], MetadataImage]) -> None:
        self.config = config
        self.settings = AuthorizerSettings(
            enabled=config["authorizer.enabled"],
            super_users=parse_super_users(config["super.users"]),
            allow_everyone_if_no_acl_found=config["allow.everyone.if.no.acl.found"],
        )
        username = config["node.sasl.username"]
        node_passwords = {username: config["node.sasl.password"]} if username else {}
        self.verifier = CredentialVerifier(lambda: image().users, node_passwords)
        # SCRAM logins of the Kafka listeners (node/security/scram.py).
        self.scram_logins = ScramLogins(
            lambda name, m: image().scram.get((name, m)), node_passwords
        )
        self.failure_log = FailureLog()  # one rate limit for the node's SASL listeners
        self.access_control = AccessControl(self.settings, image)

    def node_principals(self) -> frozenset[str]:
        """Who counts as a node on the controller listeners (controller.allowed.principals, or
        by default the super users and the nodes' own SASL user)."""
        explicit = parse_super_users(self.config["controller.allowed.principals"])
        if explicit:
            return explicit
        username = self.config["node.sasl.username"]
        return self.settings.super_users | ({principal_of(username)} if username else set())

    def _authenticates(self, listener: str, protocol: str) -> bool:
        if protocol in SASL_PROTOCOLS:
            return True
        required = self.config.listener_setting(listener, "ssl.client.auth") == "required"
        return protocol == "SSL" and required

    def server_interceptors(self, listener: str) -> list[SecurityInterceptor]:
        """Nothing on a PLAINTEXT listener with the authorizer off: no cost at all. A controller
        listener that authenticates its callers admits only the nodes."""
        protocol = self.config.security_protocols.get(listener, "PLAINTEXT")
        authenticator = Authenticator(
            protocol, self.verifier,
            self.config["connection.failed.authentication.delay.ms"] / 1000, self.failure_log,
        )  # fmt: skip
        nodes_only = None
        if listener in self.config.controller_listener_names:
            if self._authenticates(listener, protocol):
                nodes_only = self.node_principals() or None
                if nodes_only is None:
                    log.warning(
                        "controller listener %s authenticates callers but no principal is "
                        "named as a node, so any authenticated caller can read the metadata "
                        "log: set controller.allowed.principals (or super.users)", listener,
                    )  # fmt: skip
            elif protocol != "PLAINTEXT" or self.settings.enabled:
                log.warning(
                    "controller listener %s does not authenticate callers (%s without client "
                    "certificates): it cannot tell nodes from clients; keep it on a private "
                    "network", listener, protocol,
                )  # fmt: skip
        if authenticator.trivial and not self.settings.enabled and nodes_only is None:
            return []
        return [SecurityInterceptor(authenticator, self.access_control, nodes_only)]

    def on_users_changed(self, usernames: set[str]) -> None:
        self.verifier.forget(usernames)
