"""The consumer's fetch side: assigned partitions, positions, polling partition leaders.

`AsyncConsumer.assign()` takes partitions; `poll()` long-polls each leader broker for all the
assigned partitions it leads in one Fetch, decodes the returned batches, drops records before the
position (a fetch returns whole batches, which may start earlier) and advances positions. A
partition without a position starts where `auto_offset_reset` says (earliest, latest, or none:
an error). Leader changes and fenced epochs refresh metadata; an out-of-range position is reset
by the same policy. Consumer groups (subscribe, commits) build on this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from strom.storage.batch_validation import split_batches
from strom.storage.record_decode import decode_batch
from strom.v1 import broker_pb2, common_pb2

from ._loop import LoopThread
from .cluster import ClusterClient
from .errors import METADATA_STALE, FatalError, StromError, error_from_code
from .records import ConsumerRecord, TopicPartition

EARLIEST = -2
LATEST = -1


class AsyncConsumer:
    def __init__(
        self,
        bootstrap_servers: str | Sequence[str] = "localhost:9092",
        *,
        auto_offset_reset: str = "latest",
        fetch_min_bytes: int = 1,
        fetch_max_wait_ms: int = 500,
        fetch_max_bytes: int = 52_428_800,
        max_partition_fetch_bytes: int = 1_048_576,
        request_timeout_ms: int = 30_000,
        client_id: str = "strom-consumer",
    ) -> None:
        if auto_offset_reset not in ("earliest", "latest", "none"):
            raise FatalError(
                common_pb2.INVALID_CONFIG,
                f"auto_offset_reset must be earliest, latest or none, got {auto_offset_reset!r}",
            )
        self.auto_offset_reset = auto_offset_reset
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_max_bytes = fetch_max_bytes
        self.max_partition_fetch_bytes = max_partition_fetch_bytes
        self.cluster = ClusterClient(
            bootstrap_servers, client_id=client_id, request_timeout_ms=request_timeout_ms
        )
        self._assignment: list[TopicPartition] = []
        self._positions: dict[TopicPartition, int] = {}
        self._buffer: list[ConsumerRecord] = []

    async def __aenter__(self) -> AsyncConsumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.cluster.close()

    # ---- assignment and positions -------------------------------------------------------

    def assign(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> None:
        self._assignment = [TopicPartition(*tp) for tp in partitions]
        keep = set(self._assignment)
        self._positions = {tp: o for tp, o in self._positions.items() if tp in keep}
        self._buffer = [r for r in self._buffer if (r.topic, r.partition) in keep]

    def assignment(self) -> list[TopicPartition]:
        return list(self._assignment)

    def seek(self, partition: TopicPartition | tuple[str, int], offset: int) -> None:
        tp = TopicPartition(*partition)
        if tp not in self._assignment:
            raise FatalError(common_pb2.INVALID_REQUEST, f"{tp} is not assigned to this consumer")
        if offset < 0:
            raise FatalError(common_pb2.INVALID_REQUEST, f"offset must be >= 0, got {offset}")
        self._positions[tp] = offset
        self._buffer = [r for r in self._buffer if (r.topic, r.partition) != tp]

    async def seek_to_beginning(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        await self._reset(list(partitions or self._assignment), EARLIEST)

    async def seek_to_end(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        await self._reset(list(partitions or self._assignment), LATEST)

    async def position(self, partition: TopicPartition | tuple[str, int]) -> int:
        tp = TopicPartition(*partition)
        if tp not in self._positions:
            await self._reset_missing([tp])
        return self._positions[tp]

    async def list_offsets(
        self, partitions: Sequence[TopicPartition], timestamp: int
    ) -> dict[TopicPartition, int]:
        """Offsets for `timestamp` (-2 earliest, -1 latest, or ms) from each partition's leader."""
        out: dict[TopicPartition, int] = {}
        by_leader = await self._by_leader(partitions)
        for address, tps in by_leader.items():
            request = broker_pb2.ListOffsetsRequest()
            topics: dict[str, broker_pb2.ListOffsetsTopic] = {}
            for tp in tps:
                topic = topics.get(tp.topic) or request.topics.add(name=tp.topic)
                topics[tp.topic] = topic
                topic.partitions.add(
                    partition=tp.partition, timestamp=timestamp, current_leader_epoch=-1
                )
            response = await self.cluster.call(
                address, self.cluster.broker_stub(address).ListOffsets, request,
                self.cluster.request_timeout_s,
            )  # fmt: skip
            for t in response.topics:
                for p in t.partitions:
                    if p.error_code != common_pb2.NONE:
                        if p.error_code in METADATA_STALE:
                            self.cluster.invalidate(t.name)
                        raise error_from_code(p.error_code, p.error_message)
                    out[TopicPartition(t.name, p.partition)] = p.offset
        return out

    async def _reset(self, partitions: list[TopicPartition], timestamp: int) -> None:
        offsets = await self.list_offsets(partitions, timestamp)
        for tp, offset in offsets.items():
            self._positions[tp] = offset
        self._buffer = [
            r for r in self._buffer if TopicPartition(r.topic, r.partition) not in offsets
        ]

    async def _reset_missing(self, partitions: list[TopicPartition]) -> None:
        missing = [tp for tp in partitions if tp not in self._positions]
        if not missing:
            return
        if self.auto_offset_reset == "none":
            raise FatalError(
                common_pb2.OFFSET_OUT_OF_RANGE,
                f"no position for {missing} and auto_offset_reset is none: seek first",
            )
        await self._reset(missing, EARLIEST if self.auto_offset_reset == "earliest" else LATEST)

    async def _by_leader(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[str, list[TopicPartition]]:
        by_leader: dict[str, list[TopicPartition]] = {}
        for tp in partitions:
            meta = await self.cluster.topic(tp.topic)
            part = meta.partitions.get(tp.partition)
            if part is None:
                raise FatalError(
                    common_pb2.UNKNOWN_TOPIC_OR_PARTITION,
                    f"{tp.topic} has no partition {tp.partition}",
                )
            address = self.cluster.address_of(part.leader)
            if address is None:
                self.cluster.invalidate(tp.topic)
                continue  # no leader now: skip this round
            by_leader.setdefault(address, []).append(tp)
        return by_leader

    # ---- polling -----------------------------------------------------------------------

    async def poll(self, timeout_ms: int = 1_000, max_records: int = 500) -> list[ConsumerRecord]:
        """Records from the assigned partitions, at most `max_records`, waiting up to
        `timeout_ms` for some to arrive."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while not self._buffer and self._assignment:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await self._fetch(min(self.fetch_max_wait_ms, int(remaining * 1000)))
            except StromError as exc:
                if not exc.retriable:
                    raise
                await asyncio.sleep(min(0.1, max(0.0, deadline - loop.time())))
        records, self._buffer = self._buffer[:max_records], self._buffer[max_records:]
        return records

    async def _fetch(self, max_wait_ms: int) -> None:
        await self._reset_missing(self._assignment)
        by_leader = await self._by_leader(self._assignment)
        if not by_leader:
            await asyncio.sleep(0.1)
            return
        await asyncio.gather(
            *(self._fetch_from(a, tps, max_wait_ms) for a, tps in by_leader.items())
        )

    async def _fetch_from(
        self, address: str, partitions: list[TopicPartition], max_wait_ms: int
    ) -> None:
        request = broker_pb2.FetchRequest(
            max_wait_ms=max_wait_ms, min_bytes=self.fetch_min_bytes, max_bytes=self.fetch_max_bytes
        )
        topics: dict[str, broker_pb2.FetchTopic] = {}
        for tp in partitions:
            topic = topics.get(tp.topic) or request.topics.add(name=tp.topic)
            topics[tp.topic] = topic
            topic.partitions.add(
                partition=tp.partition,
                fetch_offset=self._positions[tp],
                current_leader_epoch=-1,
                partition_max_bytes=self.max_partition_fetch_bytes,
            )
        response = await self.cluster.call(
            address, self.cluster.broker_stub(address).Fetch, request,
            max_wait_ms / 1000 + self.cluster.request_timeout_s,
        )  # fmt: skip
        for t in response.topics:
            for p in t.partitions:
                tp = TopicPartition(t.name, p.partition)
                if tp not in self._positions:
                    continue  # unassigned or reset while the fetch was in flight
                if p.error_code == common_pb2.OFFSET_OUT_OF_RANGE:
                    del self._positions[tp]
                    continue
                if p.error_code != common_pb2.NONE:
                    if p.error_code in METADATA_STALE:
                        self.cluster.invalidate(t.name)
                        continue
                    raise error_from_code(p.error_code, p.error_message)
                self._take(tp, p.records)

    def _take(self, tp: TopicPartition, data: bytes) -> None:
        position = self._positions[tp]
        for start, _ in split_batches(data):
            _, records = decode_batch(data, start)
            for r in records:
                if r.offset >= position:
                    self._buffer.append(
                        ConsumerRecord(tp.topic, tp.partition, r.offset, r.timestamp_ms, r.key,
                                       r.value, r.headers)
                    )  # fmt: skip
                    position = r.offset + 1
        self._positions[tp] = position


class Consumer:
    """Synchronous facade over AsyncConsumer: each call is one operation on the client's loop
    thread (a whole poll's records cross at once)."""

    def __init__(self, bootstrap_servers: str | Sequence[str] = "localhost:9092", **options: Any):
        self._loop = LoopThread("strom-consumer")
        self._async: AsyncConsumer = self._loop.run(_make(bootstrap_servers, options))

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[ConsumerRecord]:
        while True:
            yield from self.poll(timeout_ms=1_000)

    def assign(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> None:
        self._async.assign(partitions)

    def assignment(self) -> list[TopicPartition]:
        return self._async.assignment()

    def seek(self, partition: TopicPartition | tuple[str, int], offset: int) -> None:
        self._async.seek(partition, offset)

    def seek_to_beginning(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        self._loop.run(self._async.seek_to_beginning(partitions))

    def seek_to_end(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        self._loop.run(self._async.seek_to_end(partitions))

    def position(self, partition: TopicPartition | tuple[str, int]) -> int:
        return self._loop.run(self._async.position(partition))

    def poll(self, timeout_ms: int = 1_000, max_records: int = 500) -> list[ConsumerRecord]:
        return self._loop.run(self._async.poll(timeout_ms, max_records))

    def close(self) -> None:
        self._loop.run(self._async.close())


async def _make(bootstrap_servers: str | Sequence[str], options: dict[str, Any]) -> AsyncConsumer:
    return AsyncConsumer(bootstrap_servers, **options)
