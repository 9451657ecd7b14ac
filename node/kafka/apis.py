"""Kafka requests answered by strom's own handlers: this module translates, it adds no semantics.

Each Kafka request becomes the strom request of the same meaning (strom.v1 protobufs), runs
through the same authorization rule the gRPC listener applies (node/security/interceptor.py
RULES) and the same servicer (Broker, Group, Admin), and the answer is translated back. Error
codes need no mapping: strom's ErrorCode values are Kafka's. Record batches pass through as the
bytes they are: strom stores Kafka's RecordBatch v2.

Classic consumer groups (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) have no gRPC counterpart;
they go to the group coordinator's classic protocol (node/group/classic.py), beside strom's
server-side groups, with Kafka's group ACLs checked here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from strom.client.acl import Operation
from strom.node import metrics
from strom.node.broker.admin_service import AdminServicer
from strom.node.broker.service import BrokerServicer
from strom.node.config import SASL_MECHANISMS
from strom.node.errors import as_error_code
from strom.node.group.coordinator import GroupCoordinator, GroupError
from strom.node.group.service import GroupServicer
from strom.node.replica.partition import PartitionError, refusal
from strom.node.security.access import AccessControl, Denied
from strom.node.security.authn import principal_of
from strom.node.security.credentials import CredentialVerifier
from strom.node.security.interceptor import RULES, super_users_only
from strom.node.security.login_queue import LoginRefused
from strom.node.security.scram import ScramFailed, ScramLogins
from strom.node.txn.service import TransactionServicer
from strom.storage.errors import StorageError
from strom.v1 import admin_pb2, broker_pb2, common_pb2, group_pb2

from .admin_apis import KafkaAdminApis, describe_config_entry
from .codec import ZERO_UUID, Message
from .fetch_sessions import FINAL_EPOCH, FetchSessionCache, FetchSessionError
from .listener import Session, api_versions_body
from .messages import Api
from .scram_apis import ScramCredentialApis
from .txn_apis import TransactionApis, add_committed_offsets

log = logging.getLogger("strom.kafka")

NONE = 0
UNKNOWN_SERVER_ERROR = -1
INVALID_REQUIRED_ACKS = common_pb2.INVALID_REQUIRED_ACKS
INVALID_REQUEST = common_pb2.INVALID_REQUEST
CLUSTER_AUTHORIZATION_FAILED = common_pb2.CLUSTER_AUTHORIZATION_FAILED
GROUP_AUTHORIZATION_FAILED = common_pb2.GROUP_AUTHORIZATION_FAILED
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = common_pb2.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
COORDINATOR_NOT_AVAILABLE = common_pb2.COORDINATOR_NOT_AVAILABLE
UNSUPPORTED_FOR_MESSAGE_FORMAT = 43
UNSUPPORTED_SASL_MECHANISM = common_pb2.UNSUPPORTED_SASL_MECHANISM
ILLEGAL_SASL_STATE = 34
SASL_AUTHENTICATION_FAILED = common_pb2.SASL_AUTHENTICATION_FAILED
UNKNOWN_TOPIC_ID = common_pb2.UNKNOWN_TOPIC_ID


class InvalidRequest(Exception):
    """A servicer refused the request as a whole (gRPC INVALID_ARGUMENT or UNAVAILABLE)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class KafkaCallContext:
    """The part of a gRPC servicer context strom's servicers use, for calls from Kafka."""

    def __init__(self, session: Session) -> None:
        self.session = session

    async def abort(self, code: Any, details: str) -> None:
        unavailable = getattr(code, "name", "") == "UNAVAILABLE"
        raise InvalidRequest(COORDINATOR_NOT_AVAILABLE if unavailable else INVALID_REQUEST, details)

    def peer(self) -> str:
        return self.session.peer

    def invocation_metadata(self) -> tuple[()]:
        return ()


def _none_if_empty(text: str) -> str | None:
    return text or None


class KafkaApis(TransactionApis):
    """Answers the requests of one Kafka listener with that listener's servicers."""

    def __init__(
        self,
        broker: BrokerServicer,
        group: GroupServicer,
        admin: AdminServicer,
        coordinator: GroupCoordinator,
        access_control: AccessControl,
        verifier: CredentialVerifier | None = None,
        transactions: TransactionServicer | None = None,
        *,
        scram_logins: ScramLogins | None = None,
        sasl_mechanisms: tuple[str, ...] = SASL_MECHANISMS,
        failure_delay_s: float = 0.0,
    ) -> None:
        """`verifier`: the node's users, on a SASL listener (None elsewhere). `transactions`:
        the Transaction service (node/kafka/txn_apis.py). `scram_logins`: SCRAM credentials
        (node/security/scram.py). `sasl_mechanisms`: what SaslHandshake offers
        (`sasl.enabled.mechanisms`); SCRAM ones only with `scram_logins`. `failure_delay_s`:
        a refused login is answered after this (connection.failed.authentication.delay.ms)."""
        self.scram_logins = scram_logins
        self.sasl_mechanisms = tuple(
            m for m in sasl_mechanisms if m == "PLAIN" or scram_logins is not None
        )
        self.failure_delay_s = failure_delay_s
        self.transactions = transactions
        self.broker = broker
        self.group = group
        self.admin = admin
        self.coordinator = coordinator
        self.access_control = access_control
        self.verifier = verifier
        # KIP-227 sessions of this listener's consumers (Fetch v7+).
        self.fetch_sessions = FetchSessionCache(lambda: int(time.monotonic() * 1000))
        self._handlers: dict[int, Callable[[Session, int, Message], Awaitable[Message | None]]] = {
            0: self.produce,
            1: self.fetch,
            2: self.list_offsets,
            3: self.metadata,
            8: self.offset_commit,
            9: self.offset_fetch,
            10: self.find_coordinator,
            11: self.join_group,
            12: self.heartbeat,
            13: self.leave_group,
            14: self.sync_group,
            15: self.describe_groups,
            16: self.list_groups,
            18: self.api_versions,
            19: self.create_topics,
            20: self.delete_topics,
            22: self.init_producer_id,
            32: self.describe_configs,
            37: self.create_partitions,
            17: self.sasl_handshake,
            36: self.sasl_authenticate,
            23: self.offset_for_leader_epoch,
            **self.txn_handlers(),
        }
        admin_apis = KafkaAdminApis(self)
        self._handlers.update(admin_apis.handlers())
        self._handlers.update(ScramCredentialApis(admin_apis).handlers())

    async def __call__(
        self, session: Session, api: Api, version: int, body: Message
    ) -> Message | None:
        return await self._handlers[api.key](session, version, body)

    async def _call(
        self,
        session: Session,
        path: str,
        request: Any,
        method: Callable[[Any, Any], Awaitable[Any]],
    ) -> Any:
        """`method` (a servicer's RPC) behind the authorization rule gRPC applies to `path`."""
        context = KafkaCallContext(session)

        async def inner(r: Any) -> Any:
            return await method(r, context)

        access = self.access_control.access(session.principal)
        if not access.enabled:
            return await inner(request)
        rule = RULES.get(path, super_users_only)
        return await rule(access, request, inner)

    # ---- ApiVersions ---------------------------------------------------------------------

    async def api_versions(self, session: Session, version: int, body: Message) -> Message:
        return api_versions_body(NONE)

    # ---- SASL ----------------------------------------------------------------------------

    async def sasl_handshake(self, session: Session, version: int, body: Message) -> Message:
        offered = list(self.sasl_mechanisms) if self.verifier is not None else []
        mechanism = body["mechanism"].upper()
        if session.authenticated or session.sasl_mechanism or mechanism not in offered:
            return {"error_code": UNSUPPORTED_SASL_MECHANISM, "mechanisms": offered}
        session.sasl_mechanism = mechanism
        return {"error_code": NONE, "mechanisms": offered}

    async def sasl_authenticate(self, session: Session, version: int, body: Message) -> Message:
        """PLAIN in one round; SCRAM in two (server-first, then server-final). Any refusal
        answers SASL_AUTHENTICATION_FAILED (after the failure delay), is logged and counted,
        and closes the connection."""
        if session.authenticated or not session.sasl_mechanism or self.verifier is None:
            return self._sasl_failed(
                session, ILLEGAL_SASL_STATE, "SaslAuthenticate without a SaslHandshake first"
            )
        if session.sasl_mechanism == "PLAIN":
            return await self._plain(session, body["auth_bytes"])
        return await self._scram(session, body["auth_bytes"])

    def _sasl_failed(self, session: Session, code: int, message: str) -> Message:
        session.close_after_response = f"SASL authentication failed: {message}"
        return {"error_code": code, "error_message": message, "auth_bytes": b""}

    async def _refused(self, session: Session, reason: str, message: str) -> Message:
        metrics.record_authentication_failure(reason)
        # Kafka's connection.failed.authentication.delay.ms: a guesser waits for each answer.
        await asyncio.sleep(self.failure_delay_s)
        return self._sasl_failed(session, SASL_AUTHENTICATION_FAILED, message)

    @staticmethod
    def _sasl_ok(session: Session, username: str, auth_bytes: bytes = b"") -> Message:
        session.principal = principal_of(username)
        session.authenticated = True
        return {
            "error_code": NONE,
            "error_message": None,
            "auth_bytes": auth_bytes,
            "session_lifetime_ms": 0,
        }

    async def _plain(self, session: Session, auth_bytes: bytes) -> Message:
        assert self.verifier is not None
        parts = auth_bytes.split(b"\0")
        if len(parts) != 3:
            return await self._refused(session, "malformed", "malformed PLAIN message")
        authzid, username, password = (p.decode("utf-8", errors="replace") for p in parts)
        if authzid and authzid != username:
            return await self._refused(
                session, "malformed", "authorization id differs from the user"
            )
        try:
            ok = await self.verifier.verify(username, password, session.peer)
        except LoginRefused:
            return await self._refused(session, "busy", "too many login attempts; retry later")
        if not ok:
            # Neither the password nor whether the user exists.
            return await self._refused(
                session, "credentials", "authentication failed: wrong username or password"
            )
        return self._sasl_ok(session, username)

    async def _scram(self, session: Session, auth_bytes: bytes) -> Message:
        assert self.scram_logins is not None
        try:
            if session.scram is None:  # round 1: client-first -> server-first
                session.scram = self.scram_logins.start(session.sasl_mechanism)
                server_first = session.scram.first(auth_bytes)
                return {"error_code": NONE, "error_message": None, "auth_bytes": server_first,
                        "session_lifetime_ms": 0}  # fmt: skip
            server_final = session.scram.final(auth_bytes)  # round 2
        except ScramFailed as exc:
            return await self._refused(session, exc.reason, str(exc))
        assert session.scram.username is not None
        return self._sasl_ok(session, session.scram.username, server_final)

    # ---- data plane ----------------------------------------------------------------------

    async def produce(self, session: Session, version: int, body: Message) -> Message | None:
        acks = body["acks"]
        request = broker_pb2.ProduceRequest(acks=acks, timeout_ms=body["timeout_ms"])
        for topic in body["topic_data"]:
            out = request.topics.add(name=topic["name"])
            for p in topic["partition_data"]:
                out.partitions.add(partition=p["index"], records=p["records"] or b"")
        if version < 3:
            response = self._produce_refused(
                request, UNSUPPORTED_FOR_MESSAGE_FORMAT,
                "message sets before RecordBatch v2 (Produce v3) are not stored",
            )  # fmt: skip
        elif body["transactional_id"] is not None and not self._txn_id_allowed(
            session, body["transactional_id"]
        ):  # Kafka's check: a transactional Produce needs WRITE on its transactional id
            response = self._produce_refused(
                request, TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                f"{session.principal} is not authorized to WRITE transactional id "
                f"{body['transactional_id']!r}",
            )  # fmt: skip
        else:  # transactional or not: the partition's log checks the producer (KIP-98)
            try:
                response = await self._call(
                    session, "/strom.v1.Broker/Produce", request, self.broker.Produce
                )
            except InvalidRequest as exc:
                code = INVALID_REQUIRED_ACKS if "acks" in str(exc) else exc.code
                response = self._produce_refused(request, code, str(exc))
            except Denied as exc:
                response = self._produce_refused(request, CLUSTER_AUTHORIZATION_FAILED, str(exc))
        if acks == 0:
            return None
        return {
            "responses": [
                {
                    "name": t.name,
                    "partition_responses": [
                        {
                            "index": p.partition,
                            "error_code": p.error_code,
                            "base_offset": p.base_offset,
                            "log_append_time_ms": p.log_append_time_ms,
                            "log_start_offset": p.log_start_offset if not p.error_code else -1,
                            "record_errors": [],
                            "error_message": _none_if_empty(p.error_message),
                        }
                        for p in t.partitions
                    ],
                }
                for t in response.topics
            ],
            "throttle_time_ms": 0,
        }

    @staticmethod
    def _produce_refused(
        request: broker_pb2.ProduceRequest, code: int, message: str
    ) -> broker_pb2.ProduceResponse:
        response = broker_pb2.ProduceResponse()
        for topic in request.topics:
            out = response.topics.add(name=topic.name)
            for p in topic.partitions:
                out.partitions.add(
                    partition=p.partition,
                    error_code=as_error_code(code),
                    error_message=message,
                    base_offset=-1,
                    log_append_time_ms=-1,
                    log_start_offset=-1,
                )
        return response

    async def fetch(self, session: Session, version: int, body: Message) -> Message:
        request = broker_pb2.FetchRequest(
            max_wait_ms=max(0, body["max_wait_ms"]),
            min_bytes=max(0, body["min_bytes"]),
            max_bytes=max(0, body["max_bytes"]),
            isolation_level=(
                broker_pb2.READ_COMMITTED if body["isolation_level"] == 1
                else broker_pb2.READ_UNCOMMITTED
            ),
            rack_id=body["rack_id"] or "",  # KIP-392, v11+
        )  # fmt: skip
        try:
            plan = self.fetch_sessions.plan(
                body["session_id"] if version >= 7 else 0,
                body["session_epoch"] if version >= 7 else FINAL_EPOCH,
                [
                    ((t["topic"], p["partition"]), p)
                    for t in body["topics"]
                    for p in t["partitions"]
                ],
                [(t["topic"], i) for t in body["forgotten_topics_data"] for i in t["partitions"]],
            )
        except FetchSessionError as exc:
            return {"error_code": exc.code, "session_id": 0, "responses": [],
                    "throttle_time_ms": 0}  # fmt: skip
        topics: dict[str, Any] = {}
        for (name, _), p in plan.partitions:
            if name not in topics:
                topics[name] = request.topics.add(name=name)
            topics[name].partitions.add(
                partition=p["partition"],
                fetch_offset=p["fetch_offset"],
                current_leader_epoch=p["current_leader_epoch"],
                partition_max_bytes=max(0, p["partition_max_bytes"]),
            )
        try:
            response = await self._call(
                session, "/strom.v1.Broker/Fetch", request, self.broker.Fetch
            )
        except (InvalidRequest, Denied) as exc:
            code = exc.code if isinstance(exc, InvalidRequest) else CLUSTER_AUTHORIZATION_FAILED
            return {"error_code": code, "session_id": 0, "responses": [], "throttle_time_ms": 0}
        answered = [
            {"topic": t.name, "partitions": [
                p for p in t.partitions
                if self.fetch_sessions.worth_answering(
                    plan, (t.name, p.partition), bool(p.records), p.error_code,
                    p.high_watermark, p.log_start_offset, p.last_stable_offset,
                )
            ]}
            for t in response.topics
        ]  # fmt: skip
        return {
            "throttle_time_ms": 0,
            "error_code": NONE,
            "session_id": plan.session.session_id if plan.session is not None else 0,
            "responses": [
                {
                    "topic": t["topic"],
                    "partitions": [
                        {
                            "partition_index": p.partition,
                            "error_code": p.error_code,
                            "high_watermark": p.high_watermark if not p.error_code else -1,
                            "last_stable_offset": p.last_stable_offset if not p.error_code else -1,
                            "log_start_offset": p.log_start_offset if not p.error_code else -1,
                            "aborted_transactions": [
                                {"producer_id": a.producer_id, "first_offset": a.first_offset}
                                for a in p.aborted_transactions
                            ]
                            if body["isolation_level"] == 1
                            else None,
                            "preferred_read_replica": p.preferred_read_replica or -1,
                            "records": p.records,
                        }
                        for p in t["partitions"]
                    ],
                }
                for t in answered
                if t["partitions"]
            ],
        }

    async def list_offsets(self, session: Session, version: int, body: Message) -> Message:
        request = broker_pb2.ListOffsetsRequest(
            isolation_level=(
                broker_pb2.READ_COMMITTED if body["isolation_level"] == 1
                else broker_pb2.READ_UNCOMMITTED
            )
        )  # fmt: skip
        for topic in body["topics"]:
            out = request.topics.add(name=topic["name"])
            for p in topic["partitions"]:
                out.partitions.add(
                    partition=p["partition_index"],
                    current_leader_epoch=p["current_leader_epoch"],
                    timestamp=p["timestamp"],
                )
        response = await self._call(
            session, "/strom.v1.Broker/ListOffsets", request, self.broker.ListOffsets
        )
        return {
            "throttle_time_ms": 0,
            "topics": [
                {
                    "name": t.name,
                    "partitions": [
                        {
                            "partition_index": p.partition,
                            "error_code": p.error_code,
                            "timestamp": p.timestamp,
                            "offset": p.offset,
                            "leader_epoch": p.leader_epoch if not p.error_code else -1,
                        }
                        for p in t.partitions
                    ],
                }
                for t in response.topics
            ],
        }

    async def metadata(self, session: Session, version: int, body: Message) -> Message:
        wanted = body["topics"]
        image = self.broker.manager.image
        by_id = {v: k for k, v in image.topic_ids.items()}
        unknown_ids: list[bytes] = []
        names: list[str] = []
        for topic in wanted or ():
            name = topic["name"]
            if name is None:
                found = by_id.get(topic["topic_id"])
                if found is None:
                    unknown_ids.append(topic["topic_id"])
                    continue
                name = found
            names.append(name)
        every = wanted is None or (version == 0 and not wanted)
        request = broker_pb2.MetadataRequest(
            topics=names,
            all_topics=every,
            allow_auto_topic_creation=body["allow_auto_topic_creation"],
        )
        response = await self._call(
            session, "/strom.v1.Broker/Metadata", request, self.broker.Metadata
        )
        topics: list[Message] = [
            {
                "error_code": t.error_code,
                "name": t.name,
                "topic_id": t.topic_id or ZERO_UUID,
                "is_internal": t.is_internal,
                "partitions": [
                    {
                        "error_code": p.error_code,
                        "partition_index": p.partition,
                        "leader_id": p.leader_id,
                        "leader_epoch": p.leader_epoch,
                        "replica_nodes": list(p.replicas),
                        "isr_nodes": list(p.isr),
                        "offline_replicas": list(p.offline_replicas),
                    }
                    for p in t.partitions
                ],
                "topic_authorized_operations": -(2**31),
            }
            for t in response.topics
            if every or t.name in names  # all_topics with an empty list at v1+: none
        ]
        topics += [
            {"error_code": UNKNOWN_TOPIC_ID, "name": None, "topic_id": i, "partitions": []}
            for i in unknown_ids
        ]
        return {
            "throttle_time_ms": 0,
            "brokers": [
                {"node_id": b.node_id, "host": b.host, "port": b.port, "rack": b.rack or None}
                for b in response.brokers
            ],
            "cluster_id": response.cluster_id,
            "controller_id": response.controller_id,
            "topics": topics,
            "cluster_authorized_operations": -(2**31),
        }

    async def init_producer_id(self, session: Session, version: int, body: Message) -> Message:
        if body["transactional_id"] is not None:
            return await self.init_transactional_producer(session, body)
        response = await self._call(
            session,
            "/strom.v1.Broker/InitProducerId",
            broker_pb2.InitProducerIdRequest(),
            self.broker.InitProducerId,
        )
        return {
            "throttle_time_ms": 0,
            "error_code": response.error_code,
            "producer_id": response.producer_id if not response.error_code else -1,
            "producer_epoch": response.producer_epoch if not response.error_code else -1,
        }

    async def offset_for_leader_epoch(
        self, session: Session, version: int, body: Message
    ) -> Message:
        """The end offset of a leader epoch on this partition's leader (KIP-320: consumers
        check their position after a leader change); DESCRIBE on the topic, as in Kafka."""
        access = self.access_control.access(session.principal)
        manager = self.broker.manager
        topics = []
        for topic in body["topics"]:
            name = topic["topic"]
            allowed = not access.enabled or access.topic(Operation.DESCRIBE, name)
            results = []
            for p in topic["partitions"]:
                result = {"partition": p["partition"], "error_code": NONE, "leader_epoch": -1,
                          "end_offset": -1}  # fmt: skip
                try:
                    if not allowed:
                        raise PartitionError(common_pb2.TOPIC_AUTHORIZATION_FAILED, "")
                    partition = manager.partition_by_name(name, p["partition"])
                    partition.check_leader(p["current_leader_epoch"])
                    epoch, end = partition.end_offset_for_epoch(p["leader_epoch"])
                    result["leader_epoch"], result["end_offset"] = epoch, end
                except (PartitionError, StorageError) as exc:
                    result["error_code"] = refusal(exc).code
                results.append(result)
            topics.append({"topic": name, "partitions": results})
        return {"throttle_time_ms": 0, "topics": topics}

    # ---- groups --------------------------------------------------------------------------

    async def find_coordinator(self, session: Session, version: int, body: Message) -> Message:
        keys = body["coordinator_keys"] if version >= 4 else [body["key"]]
        results = []
        for key in keys:
            if body["key_type"] not in (0, 1):
                results.append(
                    {"key": key, "node_id": -1, "host": "", "port": -1,
                     "error_code": INVALID_REQUEST,
                     "error_message": f"key type {body['key_type']} is not served"}
                )  # fmt: skip
                continue
            key_type = group_pb2.TRANSACTION if body["key_type"] == 1 else group_pb2.GROUP
            try:
                r = await self._call(
                    session,
                    "/strom.v1.Group/FindCoordinator",
                    group_pb2.FindCoordinatorRequest(key=key, key_type=key_type),
                    self.group.FindCoordinator,
                )
                results.append(
                    {"key": key, "node_id": r.node_id if not r.error_code else -1,
                     "host": r.host, "port": r.port if not r.error_code else -1,
                     "error_code": r.error_code, "error_message": _none_if_empty(r.error_message)}
                )  # fmt: skip
            except InvalidRequest as exc:
                results.append(
                    {"key": key, "node_id": -1, "host": "", "port": -1,
                     "error_code": common_pb2.INVALID_GROUP_ID, "error_message": str(exc)}
                )  # fmt: skip
        first = results[0] if results else {}
        return {
            "throttle_time_ms": 0,
            "error_code": first.get("error_code", NONE),
            "error_message": first.get("error_message"),
            "node_id": first.get("node_id", -1),
            "host": first.get("host", ""),
            "port": first.get("port", -1),
            "coordinators": results,
        }

    async def offset_commit(self, session: Session, version: int, body: Message) -> Message:
        request = group_pb2.OffsetCommitRequest(
            group_id=body["group_id"],
            member_id=body["member_id"],
            member_epoch=body["generation_id_or_member_epoch"],
        )
        add_committed_offsets(request.topics, body["topics"])

        def everywhere(code: int) -> Message:
            return {
                "throttle_time_ms": 0,
                "topics": [
                    {
                        "name": t["name"],
                        "partitions": [
                            {"partition_index": p["partition_index"], "error_code": code}
                            for p in t["partitions"]
                        ],
                    }
                    for t in body["topics"]
                ],
            }

        try:
            response = await self._call(
                session, "/strom.v1.Group/OffsetCommit", request, self.group.OffsetCommit
            )
        except InvalidRequest as exc:
            return everywhere(exc.code)
        if response.error_code:
            return everywhere(response.error_code)
        return {
            "throttle_time_ms": 0,
            "topics": [
                {
                    "name": t.name,
                    "partitions": [
                        {"partition_index": p.partition, "error_code": p.error_code}
                        for p in t.partitions
                    ],
                }
                for t in response.topics
            ],
        }

    async def _offsets_of(
        self, session: Session, group_id: str, topics: list[Message] | None, require_stable: bool
    ) -> tuple[int, list[Message]]:
        request = group_pb2.OffsetFetchRequest(group_id=group_id, require_stable=require_stable)
        for topic in topics or ():
            request.topics.add(topic=topic["name"], partitions=topic["partition_indexes"])
        response = await self._call(
            session, "/strom.v1.Group/OffsetFetch", request, self.group.OffsetFetch
        )
        if response.error_code:
            return response.error_code, []
        return NONE, [
            {
                "name": t.name,
                "partitions": [
                    {
                        "partition_index": p.partition,
                        "committed_offset": p.offset,
                        "committed_leader_epoch": -1,
                        "metadata": p.metadata,
                        "error_code": p.error_code,
                    }
                    for p in t.partitions
                ],
            }
            for t in response.topics
        ]

    async def offset_fetch(self, session: Session, version: int, body: Message) -> Message:
        if version < 8:
            code, topics = await self._offsets_of(
                session, body["group_id"], body["topics"], body["require_stable"]
            )
            if code and version < 2:  # no top-level error before v2: per partition
                topics = [
                    {"name": t["name"],
                     "partitions": [
                         {"partition_index": i, "committed_offset": -1, "metadata": "",
                          "error_code": code}
                         for i in t["partition_indexes"]
                     ]}
                    for t in body["topics"] or ()
                ]  # fmt: skip
            return {"throttle_time_ms": 0, "topics": topics, "error_code": code}
        groups = []
        for group in body["groups"]:
            code, topics = await self._offsets_of(
                session, group["group_id"], group["topics"], body["require_stable"]
            )
            groups.append({"group_id": group["group_id"], "topics": topics, "error_code": code})
        return {"throttle_time_ms": 0, "groups": groups}

    def _txn_id_allowed(self, session: Session, transactional_id: str) -> bool:
        access = self.access_control.access(session.principal)
        return not access.enabled or access.transactional_id(Operation.WRITE, transactional_id)

    def _group_allowed(self, session: Session, operation: Operation, group_id: str) -> bool:
        access = self.access_control.access(session.principal)
        return not access.enabled or access.group(operation, group_id)

    async def join_group(self, session: Session, version: int, body: Message) -> Message:
        def error(code: int, member_id: str = "") -> Message:
            return {
                "throttle_time_ms": 0, "error_code": code, "generation_id": -1,
                "protocol_type": None, "protocol_name": None if version >= 7 else "",
                "leader": "", "member_id": member_id, "members": [],
            }  # fmt: skip

        group_id = body["group_id"]
        if not self._group_allowed(session, Operation.READ, group_id):
            return error(GROUP_AUTHORIZATION_FAILED)
        try:
            result = await self.coordinator.classic_join(
                group_id,
                member_id=body["member_id"],
                instance_id=body["group_instance_id"],
                client_id=session.client_id,
                host=session.peer,
                session_timeout_ms=body["session_timeout_ms"],
                rebalance_timeout_ms=body["rebalance_timeout_ms"]
                if body["rebalance_timeout_ms"] >= 0
                else body["session_timeout_ms"],
                protocol_type=body["protocol_type"],
                protocols=[(p["name"], p["metadata"]) for p in body["protocols"]],
                require_known_member_id=version >= 4,  # KIP-394
            )
        except GroupError as exc:
            return error(exc.code, body["member_id"])
        return {
            "throttle_time_ms": 0,
            "error_code": result.error_code,
            "generation_id": result.generation,
            "protocol_type": result.protocol_type,
            "protocol_name": result.protocol_name,
            "leader": result.leader,
            "member_id": result.member_id,
            "members": [
                {"member_id": m, "group_instance_id": i, "metadata": meta}
                for m, i, meta in result.members
            ],
        }

    async def sync_group(self, session: Session, version: int, body: Message) -> Message:
        def answer(code: int, assignment: bytes = b"", name: str | None = None) -> Message:
            return {
                "throttle_time_ms": 0, "error_code": code, "protocol_type": body["protocol_type"],
                "protocol_name": name, "assignment": assignment,
            }  # fmt: skip

        if not self._group_allowed(session, Operation.READ, body["group_id"]):
            return answer(GROUP_AUTHORIZATION_FAILED)
        try:
            name, assignment = await self.coordinator.classic_sync(
                body["group_id"],
                body["member_id"],
                body["generation_id"],
                {a["member_id"]: a["assignment"] for a in body["assignments"]},
            )
        except GroupError as exc:
            return answer(exc.code)
        return answer(NONE, assignment, name)

    async def heartbeat(self, session: Session, version: int, body: Message) -> Message:
        if not self._group_allowed(session, Operation.READ, body["group_id"]):
            return {"throttle_time_ms": 0, "error_code": GROUP_AUTHORIZATION_FAILED}
        try:
            self.coordinator.classic_heartbeat(
                body["group_id"], body["member_id"], body["generation_id"]
            )
        except GroupError as exc:
            return {"throttle_time_ms": 0, "error_code": exc.code}
        return {"throttle_time_ms": 0, "error_code": NONE}

    async def leave_group(self, session: Session, version: int, body: Message) -> Message:
        if not self._group_allowed(session, Operation.READ, body["group_id"]):
            return {"throttle_time_ms": 0, "error_code": GROUP_AUTHORIZATION_FAILED, "members": []}
        leaving = (
            [(m["member_id"], m["group_instance_id"]) for m in body["members"]]
            if version >= 3
            else [(body["member_id"], None)]
        )
        members = []
        top = NONE
        for member_id, instance_id in leaving:
            code = NONE
            try:
                self.coordinator.classic_leave(body["group_id"], member_id)
            except GroupError as exc:
                code = exc.code
                top = top or (exc.code if version < 3 or exc.code != 25 else NONE)
            members.append(
                {"member_id": member_id, "group_instance_id": instance_id, "error_code": code}
            )
        return {"throttle_time_ms": 0, "error_code": top, "members": members}

    async def list_groups(self, session: Session, version: int, body: Message) -> Message:
        response = await self._call(
            session,
            "/strom.v1.Group/ListGroups",
            group_pb2.ListGroupsRequest(),
            self.group.ListGroups,
        )
        states = {s.lower() for s in body["states_filter"]}
        return {
            "throttle_time_ms": 0,
            "error_code": NONE,
            "groups": [
                {
                    "group_id": g.group_id,
                    "protocol_type": self.coordinator.protocol_type(g.group_id),
                    "group_state": g.state,
                }
                for g in response.groups
                if not states or g.state.lower() in states
            ],
        }

    async def describe_groups(self, session: Session, version: int, body: Message) -> Message:
        groups = []
        for group_id in body["groups"]:
            if not self._group_allowed(session, Operation.DESCRIBE, group_id):
                groups.append(
                    {"error_code": GROUP_AUTHORIZATION_FAILED, "group_id": group_id,
                     "group_state": "Dead", "protocol_type": "", "protocol_data": "",
                     "members": []}
                )  # fmt: skip
                continue
            try:
                groups.append(self.coordinator.describe_kafka(group_id))
            except GroupError as exc:
                code = NONE if exc.code == common_pb2.GROUP_ID_NOT_FOUND else exc.code
                groups.append(
                    {"error_code": code, "group_id": group_id, "group_state": "Dead",
                     "protocol_type": "", "protocol_data": "", "members": []}
                )  # fmt: skip
        return {"throttle_time_ms": 0, "groups": groups}

    # ---- admin ---------------------------------------------------------------------------

    async def create_topics(self, session: Session, version: int, body: Message) -> Message:
        request = admin_pb2.CreateTopicsRequest(
            timeout_ms=body["timeout_ms"], validate_only=body["validate_only"]
        )
        refused: dict[str, str] = {}
        for topic in body["topics"]:
            if topic["assignments"]:
                refused[topic["name"]] = "manual replica assignments are not supported"
                continue
            request.topics.add(
                name=topic["name"],
                num_partitions=topic["num_partitions"],
                replication_factor=topic["replication_factor"],
                configs={c["name"]: c["value"] or "" for c in topic["configs"]},
            )
        results: list[Message] = [
            {"name": n, "error_code": INVALID_REQUEST, "error_message": m}
            for n, m in refused.items()
        ]
        if request.topics:
            try:
                response = await self._call(
                    session, "/strom.v1.Admin/CreateTopics", request, self.admin.CreateTopics
                )
                topics = list(response.topics)
            except (InvalidRequest, Denied) as exc:
                code = exc.code if isinstance(exc, InvalidRequest) else CLUSTER_AUTHORIZATION_FAILED
                topics = [
                    admin_pb2.CreateTopicResult(
                        name=t.name, error_code=as_error_code(code), error_message=str(exc)
                    )
                    for t in request.topics
                ]
            results += [
                {
                    "name": t.name,
                    "topic_id": t.topic_id or ZERO_UUID,
                    "error_code": t.error_code,
                    "error_message": _none_if_empty(t.error_message),
                    "num_partitions": t.num_partitions if not t.error_code else -1,
                    "replication_factor": t.replication_factor if not t.error_code else -1,
                    "configs": None,
                }
                for t in topics
            ]
        return {"throttle_time_ms": 0, "topics": results}

    async def delete_topics(self, session: Session, version: int, body: Message) -> Message:
        names = (
            [t["name"] for t in body["topics"] if t["name"] is not None]
            if version >= 6
            else body["topic_names"]
        )
        request = admin_pb2.DeleteTopicsRequest(names=names, timeout_ms=body["timeout_ms"])
        try:
            response = await self._call(
                session, "/strom.v1.Admin/DeleteTopics", request, self.admin.DeleteTopics
            )
            results = list(response.topics)
        except (InvalidRequest, Denied) as exc:
            code = exc.code if isinstance(exc, InvalidRequest) else CLUSTER_AUTHORIZATION_FAILED
            results = [
                admin_pb2.DeleteTopicResult(
                    name=n, error_code=as_error_code(code), error_message=str(exc)
                )
                for n in names
            ]
        return {
            "throttle_time_ms": 0,
            "responses": [
                {
                    "name": t.name,
                    "topic_id": t.topic_id or ZERO_UUID,
                    "error_code": t.error_code,
                    "error_message": _none_if_empty(t.error_message),
                }
                for t in results
            ],
        }

    async def create_partitions(self, session: Session, version: int, body: Message) -> Message:
        request = admin_pb2.CreatePartitionsRequest(
            timeout_ms=body["timeout_ms"], validate_only=body["validate_only"]
        )
        for topic in body["topics"]:
            request.topics.add(name=topic["name"], count=topic["count"])
        try:
            response = await self._call(
                session, "/strom.v1.Admin/CreatePartitions", request, self.admin.CreatePartitions
            )
            results = list(response.topics)
        except (InvalidRequest, Denied) as exc:
            code = exc.code if isinstance(exc, InvalidRequest) else CLUSTER_AUTHORIZATION_FAILED
            results = [
                admin_pb2.CreatePartitionsResult(
                    name=t.name, error_code=as_error_code(code), error_message=str(exc)
                )
                for t in request.topics
            ]
        return {
            "throttle_time_ms": 0,
            "results": [
                {"name": r.name, "error_code": r.error_code,
                 "error_message": _none_if_empty(r.error_message)}
                for r in results
            ],
        }  # fmt: skip

    async def describe_configs(self, session: Session, version: int, body: Message) -> Message:
        request = admin_pb2.DescribeConfigsRequest()
        for resource in body["resources"]:
            request.resources.add(
                resource_type=resource["resource_type"], resource_name=resource["resource_name"]
            )
        response = await self._call(
            session, "/strom.v1.Admin/DescribeConfigs", request, self.admin.DescribeConfigs
        )
        results = []
        for resource, result in zip(body["resources"], response.results, strict=True):
            keys = resource["configuration_keys"]
            results.append(
                {
                    "error_code": result.error_code,
                    "error_message": _none_if_empty(result.error_message),
                    "resource_type": resource["resource_type"],
                    "resource_name": resource["resource_name"],
                    "configs": [
                        describe_config_entry(resource["resource_type"], c.name, c.value, c.source)
                        for c in result.configs
                        if keys is None or c.name in keys
                    ],
                }
            )
        return {"throttle_time_ms": 0, "results": results}
