"""A strom node: assembles the roles a configuration asks for and runs them on one event loop.

Controller role: the Raft driver over the file-backed metadata log, the Raft and Controller
services, and the active controller's timers. Broker role: the log manager, the replica manager
and fetchers, registration and heartbeats, and the Broker, Replica and Admin services. A node
without the controller role follows the metadata log as an observer. Every listener is its own
gRPC server with health checking and reflection; controller listeners serve the quorum's
services, the others serve clients and replication (DESIGN.md §1, §3, §9). The node decides
what each listener serves; node/listeners.py decides how it is reached.

Shutdown (SIGTERM) is orderly: health goes NOT_SERVING, the broker asks the controller to move
its leaderships away, an active controller hands Raft leadership to another voter, listeners
stop, logs are flushed and closed cleanly (the clean-shutdown marker). SIGKILL is recovered from
at the next start by the storage layer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from pathlib import Path
from typing import Any

from grpc_health.v1 import health, health_pb2
from prometheus_client import REGISTRY

from strom.node import listeners
from strom.node.admin_http import AdminHttpServer, readiness
from strom.node.broker.admin_service import AdminServicer
from strom.node.broker.lifecycle import BrokerLifecycle
from strom.node.broker.producer_ids import ProducerIdAllocator
from strom.node.broker.service import BrokerServicer
from strom.node.clock import SYSTEM_CLOCK, Clock
from strom.node.config import Endpoint, NodeConfig
from strom.node.controller.logic import ControllerLogic, ControllerSettings
from strom.node.controller.service import ControllerService
from strom.node.dynamic_config import DynamicBrokerConfig
from strom.node.group.coordinator import GroupCoordinator
from strom.node.group.service import EndOffsets, GroupServicer
from strom.node.kafka.apis import KafkaApis
from strom.node.kafka.listener import KafkaListener
from strom.node.listeners import GrpcListeners, Listeners, ListenerServices
from strom.node.loop_turns import LoopStallWatchdog
from strom.node.meta_properties import check_directories
from strom.node.metadata.image import MetadataDelta, MetadataImage
from strom.node.metadata.state import MetadataState
from strom.node.metrics import NodeCollector, RequestTimer
from strom.node.peers import ControllerClient, GrpcPeers, Peers
from strom.node.quorum.driver import RaftDriver
from strom.node.quorum.observer import MetadataObserver
from strom.node.quorum.service import RaftServicer, RaftTransport
from strom.node.replica.manager import ReplicaManager
from strom.node.replica.service import ReplicaServicer
from strom.node.security.interceptor import NodeSecurity
from strom.node.tls import check_files, controller_security, server_ssl_context
from strom.node.txn.host import TxnCoordinatorHost
from strom.node.txn.service import TransactionServicer
from strom.raft.config import Config as RaftConfig
from strom.raft.rawnode import RawNode
from strom.raft.types import Role
from strom.storage import compiled_codec
from strom.storage.log_config import LogConfig
from strom.storage.log_manager import LogManager
from strom.storage.raft_store import FileRaftStore
from strom.v1 import metadata_pb2

log = logging.getLogger("strom.node")

# Not named like a partition folder (<topic>-<n>), so the log manager never mistakes it for one.
METADATA_LOG_DIR = "__cluster_metadata"
SHUTDOWN_GRACE_S = 5.0
APPLY_BYTES_PER_READY_MAX = 256 * 1024


class Node:
    def __init__(
        self,
        config: NodeConfig,
        clock: Clock = SYSTEM_CLOCK,
        peers: Peers | None = None,
        rng: random.Random | None = None,
        listeners: Listeners | None = None,
    ) -> None:
        """`clock`, `peers` and `rng` are the node's only sources of time, other nodes and
        chance, and `listeners` is where its services are served: the deterministic simulation
        (tests/sim) replaces all four."""
        self.config = config
        self.clock = clock
        self.peers: Peers = GrpcPeers() if peers is None else peers
        self.rng = random.SystemRandom() if rng is None else rng
        self.cluster_id = ""
        self.metadata: MetadataState | None = None
        self.driver: RaftDriver | None = None
        self.raft_store: FileRaftStore | None = None
        self.transport: RaftTransport | None = None
        self.controller_service: ControllerService | None = None
        self.observer: MetadataObserver | None = None
        self.logs: LogManager | None = None
        self.manager: ReplicaManager | None = None
        self.lifecycle: BrokerLifecycle | None = None
        self.controller_client: ControllerClient | None = None
        self.coordinator: GroupCoordinator | None = None
        self.txn_host: TxnCoordinatorHost | None = None
        self.end_offsets: EndOffsets | None = None
        self.health = health.aio.HealthServicer()
        self.listeners: Listeners = (
            GrpcListeners(config, self.health) if listeners is None else listeners
        )
        self.admin_http: AdminHttpServer | None = None
        self.kafka_listeners: list[KafkaListener] = []
        self.collector: NodeCollector | None = None
        self.stopping = False
        self._tasks: list[asyncio.Task[Any]] = []
        self.stopped = asyncio.Event()

    # ---- start -------------------------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        directories = [Path(d) for d in config["log.dirs"]] + [config.metadata_log_dir]
        self.cluster_id = check_directories(directories, config.node_id)
        self.metadata = MetadataState(self.cluster_id)
        # First: whatever reads the config on a metadata change must see the dynamic values.
        self.metadata.subscribe(DynamicBrokerConfig(config).on_metadata)
        self.security = NodeSecurity(config, self._image)
        security = self.security
        self.metadata.subscribe(lambda _, delta: security.on_users_changed(delta.changed_users))
        # NOT_SERVING until every listener is up: health checks must not pass while starting.
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        check_files(config)
        voters = {v.node_id: v.address() for v in config.voters}
        timeout_s = config["controller.quorum.request.timeout.ms"] / 1000
        if config.is_controller:
            self._start_controller(voters, timeout_s)
        else:
            self.observer = MetadataObserver(
                config.node_id, self.cluster_id, voters, self.metadata, self.peers, timeout_s,
                controller_security(config),
            )  # fmt: skip
            self._spawn(self.observer.run(), "metadata-observer")
        if config.is_broker:
            await self._start_broker(voters, timeout_s)
        await self._start_listeners()
        await self._start_admin_http()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "node %d started: roles %s, cluster %s, record codec %s",
            config.node_id, ",".join(sorted(config.roles)), self.cluster_id,
            compiled_codec.describe(),
        )  # fmt: skip

    async def _start_admin_http(self) -> None:
        address = self.config["admin.listener"]
        if not address:
            return
        self.collector = NodeCollector(self)
        REGISTRY.register(self.collector)
        self.admin_http = AdminHttpServer(address, lambda: readiness(self))
        try:
            await self.admin_http.start()
        except OSError as exc:
            raise OSError(f"admin.listener: cannot bind {address}: {exc.strerror}") from exc

    async def _stop_admin_http(self) -> None:
        if self.admin_http is not None:
            await self.admin_http.stop()
        if self.collector is not None:
            REGISTRY.unregister(self.collector)
            self.collector = None

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())
            self.stopped.set()  # a dead core task leaves the node useless: stop it

    def _start_controller(self, voters: dict[int, str], timeout_s: float) -> None:
        config = self.config
        assert self.metadata is not None
        store = FileRaftStore(str(config.metadata_log_dir / METADATA_LOG_DIR))
        self.raft_store = store
        snapshot = store.snapshot()
        if snapshot.index:
            self.metadata.restore(snapshot)
        tick_ms = config["controller.quorum.tick.ms"]
        raft_config = RaftConfig(
            node_id=config.node_id,
            voters=tuple(sorted(voters)),
            election_timeout_ticks=max(
                2, config["controller.quorum.election.timeout.ms"] // tick_ms
            ),
            heartbeat_interval_ticks=1,
            applied=snapshot.index,
            # Replay in small slices, so the loop serves others between them (quorum/driver.py).
            committed_bytes_per_ready_max=APPLY_BYTES_PER_READY_MAX,
        )
        raw = RawNode(raft_config, store, self.rng.randrange)
        peers = {n: a for n, a in voters.items() if n != config.node_id}
        self.transport = RaftTransport(
            self.cluster_id, peers, self.peers, timeout_s, controller_security(config)
        )
        logic = ControllerLogic(
            ControllerSettings(
                num_partitions=config["num.partitions"],
                default_replication_factor=config["default.replication.factor"],
                topic_defaults=config.topic_defaults(),
                delete_topic_enable=config["delete.topic.enable"],
            ),
            self.metadata.image,
            new_topic_id=lambda: self.rng.randbytes(16),
        )
        self.driver = RaftDriver(
            raw,
            store,
            self.metadata,
            self.transport.send,
            tick_s=tick_ms / 1000,
            snapshot_bytes_threshold=config["metadata.log.max.record.bytes.between.snapshots"],
            clock=self.clock,
        )
        self.controller_service = ControllerService(
            config, self.cluster_id, self.driver, self.metadata, logic, self.clock
        )
        self.driver.on_role_change = self._on_role_change
        self.driver.on_leader_ready = self.controller_service.on_leader_ready
        self.transport.start()
        self.controller_service.start()
        self._spawn(self.driver.run(), "raft-driver")

    def _on_role_change(self, role: Role, leader_id: int, term: int) -> None:
        assert self.controller_service is not None
        self.controller_service.on_role_change(role, leader_id, term)

    async def _start_broker(self, voters: dict[int, str], timeout_s: float) -> None:
        config = self.config
        assert self.metadata is not None
        controller_names = set(config.controller_listener_names)
        endpoints = [
            metadata_pb2.Endpoint(
                listener=e.listener,
                host=e.host,
                port=e.port,
                security_protocol=config.security_protocols.get(e.listener, "PLAINTEXT"),
            )
            for e in config.advertised_listeners
            if e.listener not in controller_names
        ]
        # Opening every log (recovery after a crash, producer state from snapshots) reads files:
        # a worker thread does it while the loop goes on serving Raft on a combined node.
        self.logs = await asyncio.to_thread(
            LogManager,
            str(config.log_dir),
            LogConfig.from_kafka(self._log_defaults()),
            now_ms=self.clock.now_ms(),
        )
        for (topic, index), reason in sorted(self.logs.failed.items()):
            log.error(
                "%s-%d: its log cannot be opened (%s); the replica is offline on this broker "
                "until a restart opens it", topic, index, reason,
            )  # fmt: skip
        self.controller_client = ControllerClient(
            voters, self.peers, timeout_s, controller_security(config), self._quorum_leader
        )
        metadata = self.metadata
        self.lifecycle = BrokerLifecycle(
            config, self.cluster_id, self.controller_client, lambda: metadata.image.last_index,
            endpoints, new_incarnation_id=lambda: self.rng.randbytes(16),
        )  # fmt: skip
        lifecycle = self.lifecycle
        self.manager = ReplicaManager(
            config, self.logs, self.controller_client, lambda: lifecycle.broker_epoch,
            self.peers, self.clock,
        )  # fmt: skip
        self.manager.on_metadata(self.metadata.image, MetadataDelta())  # applied meanwhile
        self.metadata.subscribe(self.manager.on_metadata)
        lifecycle.offline_replicas = self.manager.offline_replicas
        self.producer_ids = ProducerIdAllocator(
            self.controller_client, config.node_id, lambda: lifecycle.broker_epoch
        )
        self.end_offsets = EndOffsets(self.manager, timeout_s, self.peers)
        self.coordinator = GroupCoordinator(
            config, self.manager, self.end_offsets, self.clock,
            new_member_id=lambda: self.rng.randbytes(16).hex(),
            has_lease=lifecycle.has_lease,
        )  # fmt: skip
        # After the replica manager: the coordinator reads the partitions it has just opened.
        self.metadata.subscribe(self.coordinator.on_metadata)
        self.manager.on_txn_marker.append(self.coordinator.on_txn_marker)
        self.txn_host = TxnCoordinatorHost(
            config, self.manager, self.peers, self.clock, has_lease=lifecycle.has_lease
        )
        self.metadata.subscribe(self.txn_host.on_metadata)
        self.manager.start()
        self.coordinator.start()
        self.txn_host.start()
        self._spawn(self.lifecycle.run(), "broker-lifecycle")
        self._spawn(self._act_when_caught_up(), "act-when-caught-up")

    async def _act_when_caught_up(self) -> None:
        assert self.lifecycle is not None and self.manager is not None
        assert self.coordinator is not None
        await self.lifecycle.unfenced.wait()
        self.manager.start_acting()
        self.coordinator.on_metadata(self.manager.image, MetadataDelta())
        if self.txn_host is not None:
            self.txn_host.on_metadata(self.manager.image, MetadataDelta())

    def _log_defaults(self) -> dict[str, int]:
        values = self.config.topic_defaults()
        known = LogConfig.keys()
        return {k: int(v) for k, v in values.items() if k in known}

    async def _start_listeners(self) -> None:
        kafka_names = set(self.config.kafka_listener_names)
        for endpoint in self.config.listeners:
            servicers = self._servicers(endpoint.listener)
            if servicers is None:
                continue
            if endpoint.listener in kafka_names:
                await self._start_kafka_listener(endpoint, servicers)
                continue
            # Request timing only when someone can read it (the admin listener is on).
            timers = [RequestTimer()] if self.config["admin.listener"] else []
            # Authentication, then authorization, before any handler (node/security/).
            security = self.security.server_interceptors(endpoint.listener)
            await self.listeners.start(ListenerServices(endpoint, servicers, timers + security))

    async def _start_kafka_listener(self, endpoint: Endpoint, servicers: dict[str, Any]) -> None:
        """Kafka's protocol on `endpoint`, answered by the servicers gRPC would use there."""
        assert self.coordinator is not None
        sasl = self.config.security_protocols[endpoint.listener].startswith("SASL_")
        apis = KafkaApis(
            servicers[listeners.BROKER],
            servicers[listeners.GROUP],
            servicers[listeners.ADMIN],
            self.coordinator,
            self.security.access_control,
            self.security.verifier if sasl else None,
            servicers[listeners.TRANSACTION],
            scram_logins=self.security.scram_logins if sasl else None,
            sasl_mechanisms=tuple(
                m.upper()
                for m in self.config.listener_setting(endpoint.listener, "sasl.enabled.mechanisms")
            ),
            failure_delay_s=self.config["connection.failed.authentication.delay.ms"] / 1000,
        )
        listener = KafkaListener(
            endpoint.listener,
            endpoint.host,
            endpoint.port,
            apis,
            max_request_bytes=self.config["socket.request.max.bytes"],
            idle_timeout_s=self.config["connections.max.idle.ms"] / 1000,
            ssl_context=server_ssl_context(self.config, endpoint.listener),
            sasl=sasl,
        )
        try:
            await listener.start()
        except OSError as exc:
            raise OSError(
                f"listeners: cannot bind {endpoint.listener} on "
                f"{endpoint.host or '0.0.0.0'}:{endpoint.port}: {exc.strerror}"
            ) from exc
        self.kafka_listeners.append(listener)
        log.info(
            "listening: %s on %s:%d (Kafka protocol, %s)", endpoint.listener,
            endpoint.host or "0.0.0.0", endpoint.port,
            self.config.security_protocols[endpoint.listener],
        )  # fmt: skip

    def _servicers(self, listener: str) -> dict[str, Any] | None:
        """What `listener` serves, by full service name; None when this node's roles give it
        nothing to serve there."""
        if listener in self.config.controller_listener_names:
            if self.driver is None or self.controller_service is None:
                return None
            assert self.metadata is not None
            return {
                listeners.RAFT: RaftServicer(
                    self.cluster_id, self.driver, self.metadata, self.clock
                ),
                listeners.CONTROLLER: self.controller_service,
            }
        if self.manager is None or self.controller_client is None:
            return None
        assert self.coordinator is not None and self.txn_host is not None
        group_servicer = GroupServicer(
            self.coordinator, self.manager, self.controller_client, listener
        )
        return {
            listeners.BROKER: BrokerServicer(
                self.manager,
                self.controller_client,
                self.cluster_id,
                listener,
                producer_ids=self.producer_ids,
                clock=self.clock,
            ),
            listeners.REPLICA: ReplicaServicer(self.manager),
            listeners.GROUP: group_servicer,
            listeners.TRANSACTION: TransactionServicer(
                self.txn_host,
                self.coordinator,
                self.manager,
                self.producer_ids.next_id,
                group_servicer.ensure_internal_topic,
            ),
            listeners.ADMIN: AdminServicer(
                self.config,
                self.cluster_id,
                self.controller_client,
                self._image,
                lambda: self.manager,
                listener,
            ),
        }

    def _quorum_leader(self) -> int:
        """The metadata quorum's leader as this node sees it (-1 or 0 when unknown)."""
        if self.driver is not None:
            return self.driver.leader_id
        if self.observer is not None:
            return self.observer.leader_id
        return -1

    def _image(self) -> MetadataImage:
        assert self.metadata is not None
        return self.metadata.image

    # ---- stop --------------------------------------------------------------------------

    async def stop(self) -> None:
        log.info("node %d shutting down", self.config.node_id)
        self.stopping = True  # /readyz answers 503 from now on
        await self.health.enter_graceful_shutdown()
        if self.lifecycle is not None:
            for task in self._tasks:
                if task.get_name() == "broker-lifecycle":
                    task.cancel()
            if self.config["controlled.shutdown.enable"]:
                await self.lifecycle.controlled_shutdown(timeout_s=SHUTDOWN_GRACE_S * 2)
        await self._hand_over_raft_leadership()
        await self.listeners.stop(SHUTDOWN_GRACE_S)
        kafka, self.kafka_listeners = self.kafka_listeners, []
        await asyncio.gather(*(k.stop() for k in kafka))
        if self.controller_service is not None:
            await self.controller_service.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.transport is not None:
            await self.transport.stop()
        if self.txn_host is not None:
            await self.txn_host.stop()
        if self.coordinator is not None:
            await self.coordinator.stop()
        if self.manager is not None:
            await self.manager.stop()
        if self.logs is not None:
            self.logs.close()
        await self.peers.close()
        if self.raft_store is not None:
            self.raft_store.close()
        await self._stop_admin_http()
        log.info("node %d stopped cleanly", self.config.node_id)

    async def _hand_over_raft_leadership(self) -> None:
        """An active controller that stops hands Raft leadership to the most caught-up voter,
        so the quorum has a leader without waiting for an election timeout."""
        driver = self.driver
        if driver is None or not driver.is_leader:
            return
        status = driver.status
        peers = [p for p in status.progress if p.node_id != status.node_id]
        if not peers:
            return
        target = max(peers, key=lambda p: p.match).node_id
        driver.transfer_leadership(target)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config["controller.quorum.election.timeout.ms"] / 1000 * 2
        while driver.is_leader and loop.time() < deadline:
            await asyncio.sleep(0.02)


async def run_node(config: NodeConfig) -> int:
    node = Node(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.stopped.set)
    # A real process only: the simulation's virtual loop has no wall-clock stalls to report.
    watchdog = LoopStallWatchdog()
    watchdog.start()
    try:
        await node.start()
        await node.stopped.wait()
        await node.stop()
    finally:
        await watchdog.stop()
    return 0
