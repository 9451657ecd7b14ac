"""Follower side of replication: one fetcher per leader broker (DESIGN.md §7).

A `ReplicaFetcher` pulls every partition this broker follows from one leader broker in one
request, long-polling while there is nothing new, so a broker with hundreds of idle partitions
costs one parked RPC per leader. Each request carries, per partition, the follower's log end
offset, the leader epoch it believes current (KIP-320) and the epoch of its last batch. When the
leader reports a diverging epoch, the follower truncates its divergent suffix before fetching
again (KIP-101/279/595). A partition the leader refuses (fenced epoch, not leader) stops being
fetched until the metadata image assigns it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from strom.client.tls import PLAINTEXT, SecurityOptions
from strom.node.clock import SYSTEM_CLOCK, Clock
from strom.node.peers import Peers
from strom.storage.errors import StorageError
from strom.v1 import common_pb2, replica_pb2, replica_pb2_grpc

from .leader_state import truncation_offset
from .partition import Partition
from .producer_state import ProducerState

log = logging.getLogger("strom.fetcher")

Key = tuple[bytes, int]
RETRY_DELAY_MS = 200


class ReplicaFetcher:
    def __init__(
        self,
        broker_id: int,
        broker_epoch: Callable[[], int],
        leader_id: int,
        address: str,
        max_wait_ms: int,
        partition_bytes_max: int,
        response_bytes_max: int,
        request_timeout_s: float,
        peers: Peers,
        security: SecurityOptions = PLAINTEXT,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.broker_id = broker_id
        self.broker_epoch = broker_epoch
        self.leader_id = leader_id
        self.address = address
        self.max_wait_ms = max_wait_ms
        self.partition_bytes_max = partition_bytes_max
        self.response_bytes_max = response_bytes_max
        self.request_timeout_s = request_timeout_s
        self.partitions: dict[Key, Partition] = {}
        self._delayed_until: dict[Key, int] = {}
        self._wake = asyncio.Event()
        self.clock = clock
        self._stub = peers.stub(replica_pb2_grpc.ReplicaStub, address, security)
        self._task: asyncio.Task[None] | None = None

    def add(self, partition: Partition) -> None:
        self.partitions[(partition.topic_id, partition.partition)] = partition
        self._wake.set()

    def remove(self, key: Key) -> None:
        self.partitions.pop(key, None)
        self._delayed_until.pop(key, None)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"replica-fetcher-{self.leader_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def run(self) -> None:
        failures = 0
        while True:
            if not self.partitions:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._fetch_once()
                failures = 0
            except grpc.aio.AioRpcError as exc:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.info(
                        "fetch from leader %d at %s failed (%s): %s",
                        self.leader_id, self.address, exc.code().name, exc.details(),
                    )  # fmt: skip
                await asyncio.sleep(min(1.0, 0.05 * failures))

    def _request(self) -> tuple[replica_pb2.ReplicaFetchRequest, dict[Key, Partition]]:
        request = replica_pb2.ReplicaFetchRequest(
            replica_id=self.broker_id,
            broker_epoch=self.broker_epoch(),
            max_wait_ms=self.max_wait_ms,
            min_bytes=1,
            max_bytes=self.response_bytes_max,
        )
        now = self.clock.now_ms()
        snapshot = {
            key: partition
            for key, partition in self.partitions.items()
            if self._delayed_until.get(key, 0) <= now
        }
        for (topic_id, index), partition in snapshot.items():
            latest = partition.log.leader_epoch_cache.latest_epoch
            request.partitions.append(
                replica_pb2.ReplicaFetchPartition(
                    topic_id=topic_id,
                    partition=index,
                    fetch_offset=partition.log.log_end_offset,
                    current_leader_epoch=partition.leader_epoch,
                    last_fetched_epoch=-1 if latest is None else latest,
                    log_start_offset=partition.log.log_start_offset,
                    partition_max_bytes=self.partition_bytes_max,
                )
            )
        return request, snapshot

    async def _fetch_once(self) -> None:
        request, snapshot = self._request()
        if not snapshot:
            await asyncio.sleep(RETRY_DELAY_MS / 1000)
            return
        asked_epochs = {key: p.leader_epoch for key, p in snapshot.items()}
        response = await self._stub.Fetch(
            request, timeout=self.max_wait_ms / 1000 + self.request_timeout_s
        )
        for result in response.partitions:
            key = (result.topic_id, result.partition)
            partition = snapshot.get(key)
            if partition is None or self.partitions.get(key) is not partition:
                continue  # reassigned while the fetch was in flight
            if partition.leader_epoch != asked_epochs[key]:
                continue  # the answer to an older epoch's request: ask again
            self._handle(partition, result)

    def _handle(
        self, partition: Partition, result: replica_pb2.ReplicaFetchPartitionResponse
    ) -> None:
        key = (partition.topic_id, partition.partition)
        now = self.clock.now_ms()
        if result.error_code == common_pb2.NONE:
            if result.HasField("diverging_epoch"):
                diverging = (result.diverging_epoch.epoch, result.diverging_epoch.end_offset)
                leo = partition.log.log_end_offset
                local = partition.log.leader_epoch_cache.end_offset_for(diverging[0], leo)
                partition.truncate_to(truncation_offset(diverging, local, leo), now)
                return
            try:
                partition.append_as_follower(result.records, result.high_watermark, now)
            except StorageError as exc:
                log.warning("%s: could not append fetched data: %s", partition.name, exc)
            return
        if result.error_code == common_pb2.OFFSET_OUT_OF_RANGE:
            leo = partition.log.log_end_offset
            if leo < result.log_start_offset:
                # The leader deleted what we would fetch next (retention): start over there.
                log.info(
                    "%s: log end %d is before the leader's start %d; restarting there",
                    partition.name, leo, result.log_start_offset,
                )  # fmt: skip
                partition.log.truncate_fully_and_start_at(result.log_start_offset, now_ms=now)
                partition.producers = ProducerState()
                return
        if result.error_code == common_pb2.FENCED_LEADER_EPOCH:
            # Our view is older than the leader's: new metadata will reassign this partition.
            log.info("%s: fenced by leader %d; waiting for new metadata", partition.name,
                     self.leader_id)  # fmt: skip
            self.remove(key)
            return
        # The leader has not caught up with the metadata we act on (UNKNOWN_LEADER_EPOCH,
        # NOT_LEADER_OR_FOLLOWER): retry this partition shortly.
        log.debug(
            "%s: leader %d refused fetch: %s %s",
            partition.name, self.leader_id,
            common_pb2.ErrorCode.Name(result.error_code), result.error_message,
        )  # fmt: skip
        self._delayed_until[key] = now + RETRY_DELAY_MS
