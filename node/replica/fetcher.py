"""Follower side of replication: one fetcher per leader broker (DESIGN.md §7).

A `ReplicaFetcher` pulls every partition this broker follows from one leader broker in one
request, long-polling while there is nothing new, so a broker with hundreds of idle partitions
costs one parked RPC per leader. Each request carries, per partition, the follower's log end
offset, the leader epoch it believes current (KIP-320) and the epoch of its last batch. When the
leader reports a diverging epoch, the follower truncates its divergent suffix before fetching
again (KIP-101/279/595). A partition the leader refuses (fenced epoch, not leader) stops being
fetched until the metadata image assigns it again.

A fetcher never dies silently (its task only ends when stopped):
- an error while handling one partition's data (appending, truncating) backs that partition off
  (`RETRY_DELAY_MS`, doubling up to `RETRY_DELAY_MS_MAX`) and is retried; after
  `PARTITION_FAILURES_MAX` failures in a row, or at once for damaged files, the partition is
  reported failed (`on_partition_failed`: the replica manager takes it offline, as Kafka does
  with a failed log directory) and no longer fetched;
- any other error (a failed RPC, a bug) is logged and the loop goes on after a backoff;
- both are counted in `strom_server_replicafetcher_errors_total`.
A partition whose producer state is being replayed (after a truncation) is not fetched until
that replay is done.

A partition added while a fetch is in flight (a new topic, a new leader epoch) does not wait
for that fetch to come back, which may be a whole long-poll (`replica.fetch.wait.max.ms`) away
when the leader has nothing new for the others: `add` cancels that fetch's RPC, and a new
fetch asks for every partition (nothing of the abandoned one was applied here; its answer is
never read). So that adds arriving faster than fetches complete cannot starve replication, at
most `FETCH_RESTARTS_MAX` fetches in a row are abandoned; the next one is waited for. The
abandoned request may still reach the leader, or wake from its long-poll there, after the new
one: every request carries a `fetch_sequence` (growing across the follower's fetchers) by which
the leader tells it was overtaken and takes no positions from it (node/replica/service.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

import grpc

from strom.client.tls import PLAINTEXT, SecurityOptions
from strom.node import metrics
from strom.node.clock import SYSTEM_CLOCK, Clock
from strom.node.peers import Peers
from strom.storage.errors import LogCorruptionError
from strom.v1 import common_pb2, replica_pb2, replica_pb2_grpc

from .leader_state import truncation_offset
from .partition import Partition
from .throttle import ReplicationThrottle

log = logging.getLogger("strom.fetcher")

Key = tuple[bytes, int]
RETRY_DELAY_MS = 200
RETRY_DELAY_MS_MAX = 5_000
PARTITION_FAILURES_MAX = 5
LOOP_BACKOFF_S_MAX = 1.0
FETCH_RESTARTS_MAX = 3  # fetches abandoned in a row for partitions added meanwhile

OnPartitionFailed = Callable[[Partition, BaseException], None]


def _report_only(partition: Partition, exc: BaseException) -> None:
    log.error("%s: replication failed: %s", partition.name, exc)


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
        on_partition_failed: OnPartitionFailed = _report_only,
        throttle: ReplicationThrottle | None = None,
        throttled: Callable[[Key], bool] = lambda key: False,
        next_fetch_sequence: Callable[[], int] | None = None,
    ) -> None:
        """`throttle`, `throttled`: the broker's bucket for partition moves, and which
        partitions it applies to (the replicas this broker is adding; node/replica/throttle.py).
        `next_fetch_sequence`: the broker's counter for `fetch_sequence`, shared by its
        fetchers so that a fetcher replacing another to the same leader goes on counting."""
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
        self._failures: dict[Key, int] = {}  # consecutive failures per partition
        self.on_partition_failed = on_partition_failed
        self._wake = asyncio.Event()
        # The fetch in flight, the leader epochs it asks for, and the one add() abandoned.
        self._in_flight: asyncio.Future[replica_pb2.ReplicaFetchResponse] | None = None
        self._asked_epochs: dict[Key, int] = {}
        self._abandoned: asyncio.Future[replica_pb2.ReplicaFetchResponse] | None = None
        self._restarts = 0  # fetches abandoned in a row (FETCH_RESTARTS_MAX)
        self.clock = clock
        self._stub = peers.stub(replica_pb2_grpc.ReplicaStub, address, security)
        self._task: asyncio.Task[None] | None = None
        self.throttle = throttle
        self.throttled = throttled
        self.next_fetch_sequence = next_fetch_sequence or itertools.count(1).__next__

    def add(self, partition: Partition) -> None:
        key = (partition.topic_id, partition.partition)
        self.partitions[key] = partition
        self._wake.set()
        self._maybe_abandon_fetch(key, partition)

    def _maybe_abandon_fetch(self, key: Key, partition: Partition) -> None:
        """Cancel the fetch in flight when it does not ask for `key` at its current leader
        epoch, so that the partition need not wait out the long-poll (the module docstring)."""
        fetch = self._in_flight
        if fetch is None or fetch.done() or self._restarts >= FETCH_RESTARTS_MAX:
            return
        if self._asked_epochs.get(key) == partition.leader_epoch:
            return
        if self._delayed_until.get(key, 0) > self.clock.now_ms():
            return  # backing off: it would not be asked for anyway
        self._restarts += 1
        self._abandoned = fetch
        fetch.cancel()

    def remove(self, key: Key) -> None:
        self.partitions.pop(key, None)
        self._delayed_until.pop(key, None)
        self._failures.pop(key, None)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"replica-fetcher-{self.leader_id}")
        self._task.add_done_callback(self._ended)

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def _ended(self, task: asyncio.Task[None]) -> None:
        # run() catches everything; this is the last line of defence, and says so loudly.
        if not task.cancelled() and task.exception() is not None:
            metrics.FETCHER_ERRORS.labels("fetcher").inc()
            log.error("fetcher of leader %d ended", self.leader_id, exc_info=task.exception())

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
                await asyncio.sleep(min(LOOP_BACKOFF_S_MAX, 0.05 * failures))
            except Exception:
                failures += 1
                metrics.FETCHER_ERRORS.labels("fetcher").inc()
                log.exception("fetcher of leader %d failed; going on", self.leader_id)
                await asyncio.sleep(min(LOOP_BACKOFF_S_MAX, 0.05 * failures))

    def _request(self) -> tuple[replica_pb2.ReplicaFetchRequest, dict[Key, Partition]]:
        request = replica_pb2.ReplicaFetchRequest(
            replica_id=self.broker_id,
            broker_epoch=self.broker_epoch(),
            max_wait_ms=self.max_wait_ms,
            min_bytes=1,
            max_bytes=self.response_bytes_max,
            fetch_sequence=self.next_fetch_sequence(),
        )
        now = self.clock.now_ms()
        held_back = self.throttle is not None and not self.throttle.allows(now)
        snapshot = {
            key: partition
            for key, partition in self.partitions.items()
            if self._delayed_until.get(key, 0) <= now and not (held_back and self.throttled(key))
        }
        for key, partition in list(snapshot.items()):
            if partition.flushes_before_ack and partition.has_unflushed:
                # Its fetch offset must be durable (flush.messages=1): fetched again once the
                # flush in flight is done.
                partition.flush()
                del snapshot[key]
                continue
            if not partition.producer_state_ready:
                partition.start_producer_state_load()  # a short replay completes here
                if not partition.producer_state_ready:
                    del snapshot[key]  # a long one: fetched again once it is done
                    continue
            latest = partition.latest_epoch
            request.partitions.append(
                replica_pb2.ReplicaFetchPartition(
                    topic_id=key[0],
                    partition=key[1],
                    fetch_offset=partition.log_end_offset,
                    current_leader_epoch=partition.leader_epoch,
                    partition_epoch=partition.partition_epoch,
                    last_fetched_epoch=-1 if latest is None else latest,
                    log_start_offset=partition.log_start_offset,
                    partition_max_bytes=self.partition_bytes_max,
                )
            )
        return request, snapshot

    async def _fetch_once(self) -> None:
        request, snapshot = self._request()
        if not snapshot:
            wait_ms = RETRY_DELAY_MS
            if self.throttle is not None and self.throttle.limited:
                wait_ms = max(1, min(wait_ms, self.throttle.wait_ms(self.clock.now_ms())))
            await asyncio.sleep(wait_ms / 1000)
            return
        asked_epochs = {key: p.leader_epoch for key, p in snapshot.items()}
        self._asked_epochs = asked_epochs
        fetch: asyncio.Future[replica_pb2.ReplicaFetchResponse] = asyncio.ensure_future(
            self._stub.Fetch(request, timeout=self.max_wait_ms / 1000 + self.request_timeout_s)
        )
        self._in_flight = fetch
        try:
            response = await fetch
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if fetch is self._abandoned and not (current is not None and current.cancelling()):
                return  # abandoned for a partition added meanwhile: ask again, for all of them
            raise
        finally:
            self._in_flight, self._asked_epochs = None, {}
            if fetch is not self._abandoned:
                self._restarts = 0  # this fetch was waited for, whatever it brought
            fetch.cancel()  # when this task itself was cancelled
        for result in response.partitions:
            key = (result.topic_id, result.partition)
            partition = snapshot.get(key)
            if partition is None or self.partitions.get(key) is not partition:
                continue  # reassigned while the fetch was in flight
            if partition.leader_epoch != asked_epochs[key]:
                continue  # the answer to an older epoch's request: ask again
            if self.throttle is not None and self.throttled(key):
                self.throttle.charge(len(result.records), self.clock.now_ms())
            try:
                self._handle(partition, result)
            except Exception as exc:
                self._partition_failed(key, partition, exc)
            else:
                self._failures.pop(key, None)
        # fsyncs the topics' flush policies ask for, in worker threads; with flush.messages=1
        # the next fetch (which reports our log end to the leader) waits for them.
        before_next_fetch = []
        for partition in snapshot.values():
            flushing = partition.maybe_flush()
            if flushing is not None and partition.flushes_before_ack:
                before_next_fetch.append(flushing)
        if before_next_fetch:
            await asyncio.gather(*before_next_fetch, return_exceptions=True)

    def _partition_failed(self, key: Key, partition: Partition, exc: Exception) -> None:
        """Back off one partition whose data could not be handled; report it failed when the
        error persists (or is damage on disk, which never goes away by itself)."""
        metrics.FETCHER_ERRORS.labels("partition").inc()
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        if failures >= PARTITION_FAILURES_MAX or isinstance(exc, LogCorruptionError):
            log.error(
                "%s: replication from leader %d failed %d time(s) in a row: %s",
                partition.name, self.leader_id, failures, exc,
            )  # fmt: skip
            self.remove(key)
            self.on_partition_failed(partition, exc)
            return
        delay_ms = min(RETRY_DELAY_MS_MAX, RETRY_DELAY_MS << (failures - 1))
        log.warning(
            "%s: could not handle data from leader %d (%s: %s); retrying in %d ms",
            partition.name, self.leader_id, type(exc).__name__, exc, delay_ms,
        )  # fmt: skip
        self._delayed_until[key] = self.clock.now_ms() + delay_ms

    def _handle(
        self, partition: Partition, result: replica_pb2.ReplicaFetchPartitionResponse
    ) -> None:
        key = (partition.topic_id, partition.partition)
        now = self.clock.now_ms()
        if result.error_code == common_pb2.NONE:
            if result.HasField("diverging_epoch"):
                diverging = (result.diverging_epoch.epoch, result.diverging_epoch.end_offset)
                local = partition.end_offset_for_epoch(diverging[0])
                partition.truncate_to(
                    truncation_offset(diverging, local, partition.log_end_offset), now
                )
                return
            partition.append_as_follower(result.records, result.high_watermark, now)
            partition.follow_log_start_offset(result.log_start_offset)
            return
        if (
            result.error_code == common_pb2.OFFSET_OUT_OF_RANGE
            and partition.log_end_offset < result.log_start_offset
        ):
            # The leader deleted what we would fetch next (retention): start over there.
            partition.truncate_fully_and_start_at(result.log_start_offset, now)
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
