"""A broker's life with the active controller: registration, heartbeats, controlled shutdown.

`BrokerLifecycle` (through node/peers.py's `ControllerClient`, which finds the active
controller) registers this broker with a
fresh incarnation id on start, heartbeats every `broker.heartbeat.interval.ms` with the metadata
index it has applied (so the controller unfences it once it has caught up) and the replicas it
cannot serve (`offline_replicas`, set by the replica manager: the controller moves them out of
the ISR and leadership), re-registers when the controller says its epoch is stale, and on
shutdown asks the controller to move its leaderships away before the process stops (KRaft's
controlled shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from strom.node.config import NodeConfig
from strom.node.peers import ControllerClient, ControllerUnavailable
from strom.v1 import common_pb2, controller_pb2, metadata_pb2

log = logging.getLogger("strom.broker")


class BrokerLifecycle:
    def __init__(
        self,
        config: NodeConfig,
        cluster_id: str,
        controller: ControllerClient,
        metadata_offset: Callable[[], int],
        endpoints: list[metadata_pb2.Endpoint],
        new_incarnation_id: Callable[[], bytes] = lambda: os.urandom(16),
    ) -> None:
        self.new_incarnation_id = new_incarnation_id
        self.config = config
        self.cluster_id = cluster_id
        self.controller = controller
        self.metadata_offset = metadata_offset
        self.endpoints = endpoints
        self.broker_epoch = -1
        self.fenced = True
        self.registered = asyncio.Event()
        self.unfenced = asyncio.Event()
        # Loop time until which no controller can have fenced this broker: the send time of the
        # last heartbeat answered "unfenced" plus the session timeout. The controller counts a
        # session from when it *received* that heartbeat, which is later, so this lease always
        # ends first (clock drift aside). Work that must not outlive this broker's membership
        # (group coordination) stops when it ends.
        self.lease_until_s = float("-inf")
        self.session_timeout_s = config["broker.session.timeout.ms"] / 1000
        self.interval_s = config["broker.heartbeat.interval.ms"] / 1000
        # (topic id, partition) of every replica this broker hosts and cannot serve.
        self.offline_replicas: Callable[[], list[tuple[bytes, int]]] = list

    async def run(self) -> None:
        while True:
            if self.broker_epoch < 0:
                await self._register()
                continue
            await self._heartbeat(want_shut_down=False)
            await asyncio.sleep(self.interval_s)

    async def _register(self) -> None:
        request = controller_pb2.BrokerRegistrationRequest(
            broker_id=self.config.node_id,
            cluster_id=self.cluster_id,
            incarnation_id=self.new_incarnation_id(),
            listeners=self.endpoints,
            rack=self.config["broker.rack"],
        )
        try:
            response = await self.controller.call(
                lambda s: s.RegisterBroker, request, deadline_s=self.interval_s * 2
            )
        except ControllerUnavailable as exc:
            log.info("registration pending: %s", exc)
            return
        if response.status.error_code != common_pb2.NONE:
            log.error("registration refused: %s", response.status.error_message)
            await asyncio.sleep(self.interval_s)
            return
        self.broker_epoch = response.broker_epoch
        self.registered.set()
        log.info("registered as broker %d, epoch %d", self.config.node_id, self.broker_epoch)

    async def _heartbeat(
        self, want_shut_down: bool
    ) -> controller_pb2.BrokerHeartbeatResponse | None:
        request = controller_pb2.BrokerHeartbeatRequest(
            broker_id=self.config.node_id,
            broker_epoch=self.broker_epoch,
            current_metadata_offset=self.metadata_offset(),
            want_shut_down=want_shut_down,
            offline_replicas=[
                controller_pb2.ReplicaRef(topic_id=topic_id, partition=index)
                for topic_id, index in self.offline_replicas()
            ],
        )
        sent_s = asyncio.get_running_loop().time()
        try:
            response: controller_pb2.BrokerHeartbeatResponse = await self.controller.call(
                lambda s: s.BrokerHeartbeat, request, deadline_s=self.interval_s * 2
            )
        except ControllerUnavailable as exc:
            log.debug("heartbeat not delivered: %s", exc)
            return None
        code = response.status.error_code
        if code in (common_pb2.STALE_BROKER_EPOCH, common_pb2.BROKER_ID_NOT_REGISTERED):
            log.info("controller says: %s; registering again", response.status.error_message)
            self.broker_epoch = -1
            self._set_fenced(True)
            return None
        if code != common_pb2.NONE:
            log.debug("heartbeat answered %s", common_pb2.ErrorCode.Name(code))
            return None
        self._set_fenced(response.is_fenced)
        if not response.is_fenced:
            self.lease_until_s = max(self.lease_until_s, sent_s + self.session_timeout_s)
        return response

    def has_lease(self) -> bool:
        """True while no controller can have fenced this broker (see `lease_until_s`)."""
        return not self.fenced and asyncio.get_running_loop().time() < self.lease_until_s

    def _set_fenced(self, fenced: bool) -> None:
        if fenced != self.fenced:
            log.info("broker %d is now %s", self.config.node_id, "fenced" if fenced else "unfenced")
        self.fenced = fenced
        if fenced:
            self.unfenced.clear()
            self.lease_until_s = float("-inf")
        else:
            self.unfenced.set()

    async def controlled_shutdown(self, timeout_s: float) -> bool:
        """Ask the controller to move leaderships away; True once it says we may stop."""
        if self.broker_epoch < 0:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            response = await self._heartbeat(want_shut_down=True)
            if response is not None and response.should_shut_down:
                log.info("controlled shutdown: leaderships moved away")
                return True
            await asyncio.sleep(min(0.2, self.interval_s))
        log.warning("controlled shutdown did not complete within %.1f s", timeout_s)
        return False
