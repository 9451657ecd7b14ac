"""The Controller gRPC service: the shell around ControllerLogic on every controller node.

Only the active controller decides: the Raft leader whose own no-op has committed, so that its
speculative image starts from the whole committed log (DESIGN.md §6). Every other node answers
NOT_CONTROLLER with the leader it knows of. A decision is synchronous (validate, emit records,
apply them to the speculative image), then its batch is proposed to Raft and the caller is
answered once the batch commits. Proposals go to the core in the order they were decided, so
the speculative image is always the committed image plus the in-flight batches, in order. If a
proposal fails because leadership was lost, the speculative state is thrown away.

Timers owned here: broker session expiry (fencing) and, with auto.leader.rebalance.enable,
preferred-leader election.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import TypeVar

import grpc

from strom.client import scram
from strom.client.acl import binding_from_proto, binding_to_proto, filter_from_proto
from strom.client.sasl import credential_from_proto
from strom.node.clock import SYSTEM_CLOCK, Clock
from strom.node.config import NodeConfig
from strom.node.metadata.image import MetadataDelta, MetadataImage
from strom.node.metadata.state import MetadataState
from strom.node.quorum.driver import NotLeaderError, RaftDriver
from strom.raft.types import Role
from strom.v1 import admin_pb2, common_pb2, controller_pb2, controller_pb2_grpc, metadata_pb2

from .errors import ControllerError
from .logic import PARTITIONS_PER_REQUEST_MAX, ControllerLogic, check_partitions_per_request

log = logging.getLogger("strom.controller")
T = TypeVar("T")


class ControllerService(controller_pb2_grpc.ControllerServicer):
    def __init__(
        self,
        config: NodeConfig,
        cluster_id: str,
        driver: RaftDriver,
        metadata: MetadataState,
        logic: ControllerLogic,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.clock = clock
        self.config = config
        self.cluster_id = cluster_id
        self.driver = driver
        self.metadata = metadata
        self.logic = logic
        self.active = False
        # The Raft term this node became active in: a proposal that fails because an *older*
        # term's leadership was lost must not switch off a controller active in a newer term.
        self.active_term = -1
        self.propose_timeout_s = config["controller.quorum.request.timeout.ms"] / 1000 * 2
        metadata.subscribe(self._on_commit)
        self._tasks: list[asyncio.Task[None]] = []
        # The last batch proposed in this term (the driver's future, which no caller's timeout
        # ends): answers without records wait for it.
        self._last_proposal: asyncio.Future[int] | None = None

    # ---- leadership --------------------------------------------------------------------

    def on_role_change(self, role: Role, leader_id: int, term: int) -> None:
        if role != Role.LEADER and self.active:
            log.info("no longer the active controller (term %d, leader %s)", term, leader_id)
            self._deactivate()

    def on_leader_ready(self, term: int) -> None:
        self.logic.reset(self.metadata.image, self.clock.now_ms())
        self._last_proposal = None
        self.active = True
        self.active_term = term
        log.info("active controller for term %d", term)

    def _deactivate(self) -> None:
        self.active = False
        self._last_proposal = None
        self.active_term = -1
        self.logic.reset(self.metadata.image, self.clock.now_ms())

    def _on_commit(self, image: MetadataImage, delta: MetadataDelta) -> None:
        self.logic.on_commit(image, self.active)

    @property
    def controller_id(self) -> int:
        return self.driver.leader_id if self.driver.leader_id else -1

    def _status(
        self, code: int = common_pb2.NONE, message: str = ""
    ) -> controller_pb2.ControllerStatus:
        return controller_pb2.ControllerStatus(
            error_code=common_pb2.ErrorCode.ValueType(code),
            error_message=message,
            controller_id=self.controller_id,
        )

    def _not_controller(self) -> controller_pb2.ControllerStatus:
        return self._status(
            common_pb2.NOT_CONTROLLER,
            f"node {self.config.node_id} is not the active controller",
        )

    async def _require_active(self, context: grpc.aio.ServicerContext) -> None:
        """Forwarded admin requests have no status field: refuse at the gRPC level, so the
        forwarding node tries the next voter."""
        if not self.active:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"NOT_CONTROLLER: node {self.config.node_id} is not the active controller "
                f"(leader: {self.controller_id})",
            )

    def _busy(self) -> controller_pb2.ControllerStatus | None:
        """Back-pressure, checked before deciding: a refusal then leaves no trace in the
        speculative image. Retriable, and the controller stays active."""
        if self.driver.proposals_full:
            return self._status(
                common_pb2.REQUEST_TIMED_OUT, "the controller has too many changes in flight; retry"
            )
        return None

    async def _commit(self, records: list[metadata_pb2.MetadataRecord]) -> None:
        """Propose one batch and wait for it to commit. Raises NotLeaderError (leadership lost:
        the speculative state is thrown away) or TimeoutError (the batch may still commit, so
        the speculative state keeps it). Call only after `_busy()` said no, with no await in
        between, so that the driver cannot refuse the batch for back-pressure.

        A decision with no records still read the speculative image, which may hold batches
        not committed yet (a fencing that emptied an ISR, an unfencing): its answer waits until
        the last batch proposed before it has committed, as Kafka's controller does, and fails
        with it. Otherwise a leader could be told "already so" about a state that is then lost
        with the leadership, and wait forever for metadata that never comes."""
        term = self.active_term
        proposal: asyncio.Future[int] | None
        try:
            if records:
                data = metadata_pb2.MetadataBatch(records=records).SerializeToString()
                proposal = self.driver.submit(data)
                self._last_proposal = proposal
            else:
                proposal = self._last_proposal
            if proposal is not None:
                async with asyncio.timeout(self.propose_timeout_s):
                    await asyncio.shield(proposal)
        except NotLeaderError:
            if self.active and self.active_term == term:
                log.info("no longer the active controller: a proposal lost leadership")
                self._deactivate()
            raise

    async def _decide(
        self, decide: Callable[[], tuple[list[metadata_pb2.MetadataRecord], T]]
    ) -> tuple[controller_pb2.ControllerStatus, T | None]:
        """Run a decision and commit its records; errors become a ControllerStatus."""
        if not self.active:
            return self._not_controller(), None
        busy = self._busy()
        if busy is not None:
            return busy, None
        try:
            records, result = decide()
        except ControllerError as exc:
            return self._status(exc.code, exc.message), None
        try:
            await self._commit(records)
        except NotLeaderError:
            return self._not_controller(), None
        except TimeoutError:
            return self._status(
                common_pb2.REQUEST_TIMED_OUT, "the metadata quorum did not commit in time"
            ), None
        return self._status(), result

    @staticmethod
    def _without_result(
        decide: Callable[..., list[metadata_pb2.MetadataRecord]], *args: object
    ) -> tuple[list[metadata_pb2.MetadataRecord], None]:
        return decide(*args), None

    # ---- timers ------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._fence_expired(), name="fence-expired"))
        if self.config["auto.leader.rebalance.enable"]:
            self._tasks.append(asyncio.create_task(self._rebalance(), name="preferred-leaders"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _fence_expired(self) -> None:
        timeout_ms = self.config["broker.session.timeout.ms"]
        period_s = min(self.config["broker.heartbeat.interval.ms"], timeout_ms) / 2000
        while True:
            await asyncio.sleep(period_s)
            if not self.active:
                continue
            for broker_id in self.logic.expired_brokers(self.clock.now_ms(), timeout_ms):
                if not self.active or self._busy() is not None:
                    break  # the next period tries again
                log.info("fencing broker %d: no heartbeat for %d ms", broker_id, timeout_ms)
                try:
                    await self._commit(self.logic.fence_broker(broker_id))
                except (NotLeaderError, TimeoutError) as exc:
                    log.info("fencing broker %d not committed: %s", broker_id, exc)
                    break

    async def _rebalance(self) -> None:
        period_s = self.config["leader.imbalance.check.interval.seconds"]
        while True:
            await asyncio.sleep(period_s)
            if self.active and self._busy() is None:
                records, _ = self.logic.elect_preferred_leaders()
                if records:
                    log.info("moving %d leaderships back to preferred replicas", len(records))
                    try:
                        await self._commit(records)
                    except (NotLeaderError, TimeoutError) as exc:
                        log.info("preferred leader election not committed: %s", exc)

    # ---- brokers -----------------------------------------------------------------------

    async def RegisterBroker(
        self, request: controller_pb2.BrokerRegistrationRequest, context: grpc.aio.ServicerContext
    ) -> controller_pb2.BrokerRegistrationResponse:
        if request.cluster_id != self.cluster_id:
            return controller_pb2.BrokerRegistrationResponse(
                status=self._status(
                    common_pb2.INCONSISTENT_CLUSTER_ID,
                    f"broker {request.broker_id} belongs to cluster {request.cluster_id!r}; "
                    f"this cluster is {self.cluster_id!r}",
                )
            )
        status, epoch = await self._decide(
            lambda: self.logic.register_broker(
                request.broker_id,
                request.incarnation_id,
                list(request.listeners),
                request.rack,
                self.clock.now_ms(),
            )
        )
        if epoch is not None:
            log.info("registered broker %d with epoch %d", request.broker_id, epoch)
        return controller_pb2.BrokerRegistrationResponse(status=status, broker_epoch=epoch or -1)

    async def BrokerHeartbeat(
        self, request: controller_pb2.BrokerHeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> controller_pb2.BrokerHeartbeatResponse:
        status, answer = await self._decide(
            lambda: self.logic.broker_heartbeat(
                request.broker_id,
                request.broker_epoch,
                request.current_metadata_offset,
                request.want_fence,
                request.want_shut_down,
                self.clock.now_ms(),
                [(r.topic_id, r.partition) for r in request.offline_replicas],
            )
        )
        if answer is None:
            return controller_pb2.BrokerHeartbeatResponse(status=status, is_fenced=True)
        return controller_pb2.BrokerHeartbeatResponse(status=status, **answer)

    async def AlterPartition(
        self, request: controller_pb2.AlterPartitionRequest, context: grpc.aio.ServicerContext
    ) -> controller_pb2.AlterPartitionResponse:
        if not self.active:
            return controller_pb2.AlterPartitionResponse(status=self._not_controller())
        busy = self._busy()
        if busy is not None:
            return controller_pb2.AlterPartitionResponse(status=busy)
        results = []
        records: list[metadata_pb2.MetadataRecord] = []
        for item in request.partitions:
            result = controller_pb2.AlterPartitionResult(
                topic_id=item.topic_id, partition=item.partition
            )
            try:
                recs, part = self.logic.alter_partition(
                    request.broker_id,
                    request.broker_epoch,
                    item.topic_id,
                    item.partition,
                    item.leader_epoch,
                    item.partition_epoch,
                    list(item.new_isr),
                    {m.broker_id: m.broker_epoch for m in item.new_isr_with_epochs},
                )
                records += recs
                result.leader_id = part.leader
                result.leader_epoch = part.leader_epoch
                result.isr.extend(part.isr)
                result.partition_epoch = part.partition_epoch
            except ControllerError as exc:
                result.error_code = exc.code  # type: ignore[assignment]
            results.append(result)
        try:
            await self._commit(records)
        except NotLeaderError:
            return controller_pb2.AlterPartitionResponse(status=self._not_controller())
        except TimeoutError:
            return controller_pb2.AlterPartitionResponse(
                status=self._status(common_pb2.REQUEST_TIMED_OUT, "not committed in time")
            )
        return controller_pb2.AlterPartitionResponse(status=self._status(), partitions=results)

    async def AllocateProducerIds(
        self, request: controller_pb2.AllocateProducerIdsRequest, context: grpc.aio.ServicerContext
    ) -> controller_pb2.AllocateProducerIdsResponse:
        status, start = await self._decide(
            lambda: self.logic.allocate_producer_ids(request.broker_id, request.broker_epoch)
        )
        from .logic import PRODUCER_ID_BLOCK_SIZE

        return controller_pb2.AllocateProducerIdsResponse(
            status=status,
            producer_id_start=start if start is not None else -1,
            producer_id_len=PRODUCER_ID_BLOCK_SIZE if start is not None else 0,
        )

    # ---- admin (forwarded from any node) -------------------------------------------------

    async def CreateTopics(
        self, request: admin_pb2.CreateTopicsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateTopicsResponse:
        await self._require_active(context)
        try:
            # Each topic costs a decision even when it is refused: count it as at least one.
            check_partitions_per_request(
                max(1, self.logic.settings.num_partitions if t.num_partitions == -1 else
                    t.num_partitions)
                for t in request.topics
            )  # fmt: skip
        except ControllerError as refused:
            return admin_pb2.CreateTopicsResponse(
                topics=[
                    admin_pb2.CreateTopicResult(
                        name=t.name,
                        error_code=common_pb2.ErrorCode.ValueType(refused.code),
                        error_message=refused.message,
                    )
                    for t in request.topics
                ]
            )
        # Tasks start in order, and each decides (synchronously) before it awaits its commit,
        # so the batches are proposed in decision order and commit together.
        outcomes = await asyncio.gather(
            *(
                self._decide(functools.partial(self._create_topic, topic, request.validate_only))
                for topic in request.topics
            )
        )
        results = []
        for topic, (status, created) in zip(request.topics, outcomes, strict=True):
            result = admin_pb2.CreateTopicResult(name=topic.name)
            result.error_code = status.error_code
            result.error_message = status.error_message
            if created is not None:
                result.topic_id, result.num_partitions, result.replication_factor = created
            results.append(result)
        return admin_pb2.CreateTopicsResponse(topics=results)

    def _create_topic(
        self, topic: admin_pb2.CreatableTopic, validate_only: bool
    ) -> tuple[list[metadata_pb2.MetadataRecord], tuple[bytes, int, int]]:
        records, topic_id, partitions, factor = self.logic.create_topic(
            topic.name,
            topic.num_partitions,
            topic.replication_factor,
            dict(topic.configs),
            validate_only=validate_only,
        )
        return records, (topic_id, partitions, factor)

    async def DeleteTopics(
        self, request: admin_pb2.DeleteTopicsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DeleteTopicsResponse:
        await self._require_active(context)
        if len(request.names) > PARTITIONS_PER_REQUEST_MAX:
            message = (
                f"{len(request.names)} topics in one request; at most "
                f"{PARTITIONS_PER_REQUEST_MAX}: split the request"
            )
            return admin_pb2.DeleteTopicsResponse(
                topics=[
                    admin_pb2.DeleteTopicResult(
                        name=n, error_code=common_pb2.POLICY_VIOLATION, error_message=message
                    )
                    for n in request.names
                ]
            )
        outcomes = await asyncio.gather(
            *(self._decide(functools.partial(self.logic.delete_topic, n)) for n in request.names)
        )
        results = [
            admin_pb2.DeleteTopicResult(
                name=name,
                topic_id=topic_id or b"",
                error_code=status.error_code,
                error_message=status.error_message,
            )
            for name, (status, topic_id) in zip(request.names, outcomes, strict=True)
        ]
        return admin_pb2.DeleteTopicsResponse(topics=results)

    async def CreatePartitions(
        self, request: admin_pb2.CreatePartitionsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreatePartitionsResponse:
        await self._require_active(context)
        image = self.logic.image
        try:
            check_partitions_per_request(
                t.count - len(existing.partitions)
                for t in request.topics
                if (existing := image.topic_by_name(t.name)) is not None
            )
        except ControllerError as refused:
            return admin_pb2.CreatePartitionsResponse(
                topics=[
                    admin_pb2.CreatePartitionsResult(
                        name=t.name,
                        error_code=common_pb2.ErrorCode.ValueType(refused.code),
                        error_message=refused.message,
                    )
                    for t in request.topics
                ]
            )
        results = []
        for topic in request.topics:
            status, _ = await self._decide(
                functools.partial(self._without_result, self.logic.create_partitions, topic.name,
                                  topic.count)
            )  # fmt: skip
            results.append(
                admin_pb2.CreatePartitionsResult(
                    name=topic.name,
                    error_code=status.error_code,
                    error_message=status.error_message,
                )
            )
        return admin_pb2.CreatePartitionsResponse(topics=results)

    async def IncrementalAlterConfigs(
        self, request: admin_pb2.IncrementalAlterConfigsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.IncrementalAlterConfigsResponse:
        await self._require_active(context)
        results = []
        for resource in request.resources:
            result = admin_pb2.AlterConfigsResult(resource=resource.resource)
            to_set = {
                c.name: c.value for c in resource.configs if c.op == admin_pb2.ALTER_CONFIG_SET
            }
            to_delete = [c.name for c in resource.configs if c.op == admin_pb2.ALTER_CONFIG_DELETE]
            name = resource.resource.resource_name
            if resource.resource.resource_type == metadata_pb2.CONFIG_RESOURCE_BROKER:
                alter = functools.partial(self.logic.alter_broker_configs, name, to_set,
                                          to_delete, request.validate_only)  # fmt: skip
            elif resource.resource.resource_type == metadata_pb2.CONFIG_RESOURCE_TOPIC:
                alter = functools.partial(self.logic.alter_topic_configs, name, to_set, to_delete,
                                          request.validate_only)  # fmt: skip
            else:
                result.error_code = common_pb2.INVALID_REQUEST
                result.error_message = "only topic and broker configs can be altered"
                results.append(result)
                continue
            status, _ = await self._decide(functools.partial(self._without_result, alter))
            result.error_code = status.error_code
            result.error_message = status.error_message
            results.append(result)
        return admin_pb2.IncrementalAlterConfigsResponse(results=results)

    async def ElectLeaders(
        self, request: admin_pb2.ElectLeadersRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ElectLeadersResponse:
        await self._require_active(context)
        elect = (
            self.logic.elect_unclean_leaders
            if request.election_type == admin_pb2.ELECTION_UNCLEAN
            else self.logic.elect_preferred_leaders
        )
        image = self.logic.image
        wanted = []
        for tp in request.partitions:
            topic = image.topic_by_name(tp.topic)
            if topic is not None:
                wanted.append((topic.topic_id, tp.partition))
        status, results = await self._decide(lambda: elect(wanted if request.partitions else None))
        response = admin_pb2.ElectLeadersResponse()
        names = {t.topic_id: t.name for t in image.topics.values()}
        for (topic_id, partition), (code, message) in (results or {}).items():
            response.results.append(
                admin_pb2.ElectLeaderResult(
                    partition=common_pb2.TopicPartition(topic=names[topic_id], partition=partition),
                    error_code=code if status.error_code == common_pb2.NONE else status.error_code,  # type: ignore[arg-type]
                    error_message=message or status.error_message,
                )
            )
        return response

    async def AlterPartitionReassignments(
        self,
        request: admin_pb2.AlterPartitionReassignmentsRequest,
        context: grpc.aio.ServicerContext,
    ) -> admin_pb2.AlterPartitionReassignmentsResponse:
        await self._require_active(context)
        # Decided in order before any commit is awaited, so the batches commit in that order.
        outcomes = await asyncio.gather(
            *(
                self._decide(
                    functools.partial(
                        self._without_result,
                        self.logic.reassign_partition,
                        item.topic,
                        item.partition,
                        None if item.cancel else list(item.replicas),
                        request.keep_replication_factor,
                    )
                )
                for item in request.partitions
            )
        )
        response = admin_pb2.AlterPartitionReassignmentsResponse()
        for item, (status, _) in zip(request.partitions, outcomes, strict=True):
            response.results.add(
                partition=common_pb2.TopicPartition(topic=item.topic, partition=item.partition),
                error_code=status.error_code,
                error_message=status.error_message,
            )
        return response

    async def UnregisterBroker(
        self, request: admin_pb2.UnregisterBrokerRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.UnregisterBrokerResponse:
        await self._require_active(context)
        voters = [v.node_id for v in self.config.voters]
        status, _ = await self._decide(
            functools.partial(
                self._without_result, self.logic.unregister_broker, request.broker_id, voters
            )
        )
        if status.error_code == common_pb2.NONE:
            log.info("unregistered broker %d", request.broker_id)
        return admin_pb2.UnregisterBrokerResponse(
            error_code=status.error_code, error_message=status.error_message
        )

    async def AlterUserCredentials(
        self, request: admin_pb2.AlterUserCredentialsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.AlterUserCredentialsResponse:
        await self._require_active(context)
        response = admin_pb2.AlterUserCredentialsResponse()
        decisions: list[tuple[str, Callable[[], list[metadata_pb2.MetadataRecord]]]] = []
        for upsertion in request.upsertions:
            try:
                credential = credential_from_proto(upsertion.credential)
            except ValueError as exc:
                response.results.add(
                    name=upsertion.name,
                    error_code=common_pb2.UNACCEPTABLE_CREDENTIAL,
                    error_message=str(exc),
                )
                continue
            scram_credentials = [scram.credential_from_proto(c) for c in upsertion.scram]
            decisions.append(
                (
                    upsertion.name,
                    functools.partial(
                        self.logic.upsert_user, upsertion.name, credential, scram_credentials
                    ),
                )
            )
        for name in request.deletions:
            decisions.append((name, functools.partial(self.logic.delete_user, name)))
        for name, decide in decisions:
            status, _ = await self._decide(functools.partial(self._without_result, decide))
            response.results.add(
                name=name, error_code=status.error_code, error_message=status.error_message
            )
        await self._alter_scram(request, response)
        return response

    async def _alter_scram(
        self,
        request: admin_pb2.AlterUserCredentialsRequest,
        response: admin_pb2.AlterUserCredentialsResponse,
    ) -> None:
        """Kafka's AlterUserScramCredentials: one decision per user (all its operations or
        none), its outcome repeated for each of its items."""
        upserts: dict[str, list[scram.ScramCredential]] = {}
        deletes: dict[str, list[int]] = {}
        for u in request.scram_upsertions:
            upserts.setdefault(u.name, []).append(scram.credential_from_proto(u.credential))
        for d in request.scram_deletions:
            deletes.setdefault(d.name, []).append(int(d.mechanism))
        outcome: dict[str, controller_pb2.ControllerStatus] = {}
        for name in dict.fromkeys([*upserts, *deletes]):
            decide = functools.partial(
                self.logic.alter_scram, name, upserts.get(name, []), deletes.get(name, [])
            )
            outcome[name], _ = await self._decide(functools.partial(self._without_result, decide))
        for name in [u.name for u in request.scram_upsertions] + [
            d.name for d in request.scram_deletions
        ]:
            status = outcome[name]
            response.results.add(
                name=name, error_code=status.error_code, error_message=status.error_message
            )

    async def CreateAcls(
        self, request: admin_pb2.CreateAclsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateAclsResponse:
        await self._require_active(context)
        response = admin_pb2.CreateAclsResponse()
        for creation in request.creations:
            try:
                binding = binding_from_proto(creation)
            except ValueError as exc:
                response.results.add(
                    error_code=common_pb2.INVALID_REQUEST, error_message=f"invalid ACL: {exc}"
                )
                continue
            status, _ = await self._decide(
                functools.partial(self._without_result, self.logic.create_acl, binding)
            )
            response.results.add(error_code=status.error_code, error_message=status.error_message)
        return response

    async def DeleteAcls(
        self, request: admin_pb2.DeleteAclsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DeleteAclsResponse:
        await self._require_active(context)
        response = admin_pb2.DeleteAclsResponse()
        for message in request.filters:
            result = response.results.add()
            try:
                selector = filter_from_proto(message)
            except ValueError as exc:
                result.error_code = common_pb2.INVALID_REQUEST
                result.error_message = f"invalid ACL filter: {exc}"
                continue
            status, deleted = await self._decide(
                functools.partial(self.logic.delete_acls, selector)
            )
            result.error_code = status.error_code
            result.error_message = status.error_message
            result.deleted.extend(binding_to_proto(b) for b in deleted or ())
        return response

    async def DescribeQuorum(
        self, request: admin_pb2.DescribeQuorumRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DescribeQuorumResponse:
        status = self.driver.status
        response = admin_pb2.DescribeQuorumResponse(
            cluster_id=self.cluster_id,
            leader_id=status.leader_id or -1,
            leader_epoch=status.term,
            high_watermark=status.commit,
        )
        if status.leader_id != status.node_id:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"node {status.node_id} is not the quorum leader (leader: {status.leader_id})",
            )
        heard = self.driver.peer_last_heard_ms
        for peer in status.progress:
            last = (
                self.clock.now_ms()
                if peer.node_id == status.node_id
                else heard.get(peer.node_id, -1)
            )
            response.current_voters.append(
                admin_pb2.QuorumReplicaState(
                    replica_id=peer.node_id,
                    log_end_offset=status.last_index
                    if peer.node_id == status.node_id
                    else peer.match,
                    last_fetch_timestamp_ms=last,
                    last_caught_up_timestamp_ms=last if peer.match >= status.commit else -1,
                )
            )
        for observer_id, (index, fetched_ms) in sorted(self.driver.observer_progress.items()):
            response.observers.append(
                admin_pb2.QuorumReplicaState(
                    replica_id=observer_id,
                    log_end_offset=index,
                    last_fetch_timestamp_ms=fetched_ms,
                    last_caught_up_timestamp_ms=fetched_ms if index >= status.commit else -1,
                )
            )
        return response
