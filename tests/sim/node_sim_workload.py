"""The node simulation's clients: they speak strom's gRPC API to the real handlers.

- `Producer`: idempotent, acks=all, one partition. InitProducerId, then one batch at a time;
  a batch is retried unchanged (same producer id and sequence) until the leader answers NONE,
  so a retry of a batch the log already has is answered with its first offset. A batch given
  up on is `info` in the history and the producer starts over with a new producer id.
- `Acks1Producer`: not idempotent, acks=1, one try per batch. acks=1 records may be lost by
  design, so they are recorded as `info` (the checker must not call them lost) but their reads
  still count (no value at two offsets, no two values at one offset).
- `Reader`: reads one partition from offset 0 below the high watermark, and checks each record
  against what the invariants know to be committed the moment it arrives.
- `Member`: a consumer-group member (KIP-848): heartbeats with its owned partitions, revokes
  before it takes, fetches what it owns from the committed offset and commits its position. Its
  ownership is a lease: valid only within a session timeout of the *send* time of its last
  successful heartbeat (the coordinator expires it no earlier), so the exclusivity invariant
  holds it to exactly what the coordinator can promise.

Every client records a Jepsen-style history (tests/faults/history.py) on the virtual clock, and
the fault suite's checker (tests/faults/checker.py) reads it at the end of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from random import Random
from typing import TYPE_CHECKING, Any

import grpc
from faults.history import Recorder
from node_sim_net import SimPeers

from strom.storage.batch_validation import split_batches
from strom.storage.record_batch import Record, encode_batch, parse_header
from strom.storage.record_decode import decode_batch
from strom.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    broker_pb2,
    broker_pb2_grpc,
    common_pb2,
    group_pb2,
    group_pb2_grpc,
)

if TYPE_CHECKING:
    from node_sim import NodeSimulation

CALL_TIMEOUT_S = 1.0
TopicPartition = tuple[str, int]


def broker_address(node_id: int) -> str:
    return f"n{node_id}:9092"


def batch_identity(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, crc, offset delta) of every record offset of the whole batches in `data`."""
    out = []
    for position, _ in split_batches(data):
        h = parse_header(data, position)
        out.extend((h.base_offset + d, h.crc, d) for d in range(h.last_offset_delta + 1))
    return out


def record_values(data: bytes) -> list[tuple[int, int]]:
    """(offset, value) of every record in `data`; values are the workload's decimal integers."""
    out = []
    for position, _ in split_batches(data):
        _, records = decode_batch(data, position)
        out.extend((r.offset, int(r.value or b"-1")) for r in records)
    return out


@dataclass
class Client:
    sim: NodeSimulation
    client_id: int
    rng: Random
    leaders: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.peers = SimPeers(self.sim.network, self.client_id)
        self.sim.network.add_host(f"c{self.client_id}", self.client_id)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.sim.loop

    @property
    def history(self) -> Recorder:
        return self.sim.history

    def broker(self, node_id: int) -> Any:
        return self.peers.stub(broker_pb2_grpc.BrokerStub, broker_address(node_id), None)

    def group_stub(self, address: str) -> Any:
        return self.peers.stub(group_pb2_grpc.GroupStub, address, None)

    def any_broker(self) -> int:
        return self.rng.choice(sorted(self.sim.cluster.nodes))

    async def refresh(self, topics: list[str], timeout_s: float = CALL_TIMEOUT_S) -> None:
        try:
            response = await self.broker(self.any_broker()).Metadata(
                broker_pb2.MetadataRequest(topics=topics), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return
        for topic in response.topics:
            for p in topic.partitions:
                known = self.leaders.get((topic.name, p.partition))
                if known is None or p.leader_epoch >= known[1]:
                    self.leaders[(topic.name, p.partition)] = (p.leader_id, p.leader_epoch)

    async def leader_of(
        self, tp: TopicPartition, timeout_s: float = CALL_TIMEOUT_S
    ) -> tuple[int, int] | None:
        if tp not in self.leaders or self.leaders[tp][0] < 0:
            await self.refresh([tp[0]], timeout_s)
        found = self.leaders.get(tp)
        return found if found is not None and found[0] > 0 else None

    async def pause(self, low_s: float, high_s: float) -> None:
        await asyncio.sleep(low_s + self.rng.random() * (high_s - low_s))


class Producer(Client):
    def __init__(self, sim: NodeSimulation, client_id: int, rng: Random, tp: TopicPartition):
        super().__init__(sim, client_id, rng)
        self.tp = tp
        self.producer_id = -1
        self.sequence = 0

    async def _init(self) -> None:
        while self.producer_id < 0:
            try:
                response = await self.broker(self.any_broker()).InitProducerId(
                    broker_pb2.InitProducerIdRequest(), timeout=CALL_TIMEOUT_S * 3
                )
                if response.error_code == common_pb2.NONE:
                    self.producer_id, self.sequence = response.producer_id, 0
                    return
            except grpc.aio.AioRpcError:
                pass
            await self.pause(0.05, 0.2)

    async def run(self) -> None:
        while True:
            await self._init()
            value = self.sim.next_value()
            data = encode_batch(
                [Record(None, str(value).encode(), (), self.sim.clock.now_ms())],
                producer_id=self.producer_id,
                producer_epoch=0,
                base_sequence=self.sequence,
            )
            crc = parse_header(data).crc
            op = self.history.invoke(
                self.client_id, "send", {"value": value, "partition": list(self.tp)}
            )
            sent = await self._send(data)
            offset = None if sent is None else sent[0]
            if sent is None:
                op.info("gave up")
                self.producer_id = -1  # start over: the lost sequence would block the next one
            else:
                op.ok({"offset": offset})
                self.sequence += 1
                self.sim.checker.on_acked(self.tp, sent[0], (crc, 0), value, sent[1])
            await self.pause(0.01, 0.08)

    async def _send(self, data: bytes) -> tuple[int, int] | None:
        """(offset, the leader that acknowledged it), or None when given up."""
        topic, index = self.tp
        request = broker_pb2.ProduceRequest(acks=-1, timeout_ms=1_500)
        request.topics.add(name=topic).partitions.add(partition=index, records=data)
        for _ in range(40):
            leader = await self.leader_of(self.tp)
            if leader is None:
                await self.pause(0.05, 0.2)
                continue
            try:
                response = await self.broker(leader[0]).Produce(request, timeout=2.0)
            except grpc.aio.AioRpcError:
                self.leaders.pop(self.tp, None)
                await self.pause(0.02, 0.1)
                continue
            result = response.topics[0].partitions[0]
            code = result.error_code
            if code == common_pb2.NONE:
                return int(result.base_offset), leader[0]
            if code in (
                common_pb2.OUT_OF_ORDER_SEQUENCE_NUMBER,
                common_pb2.UNKNOWN_PRODUCER_ID,
                common_pb2.INVALID_PRODUCER_EPOCH,
            ):
                return None
            self.sim.stats[f"produce {common_pb2.ErrorCode.Name(code)}"] += 1
            self.leaders.pop(self.tp, None)
            await self.pause(0.02, 0.1)
        return None


class Acks1Producer(Client):
    def __init__(self, sim: NodeSimulation, client_id: int, rng: Random, tps: list[TopicPartition]):
        super().__init__(sim, client_id, rng)
        self.tps = tps

    async def run(self) -> None:
        while True:
            tp = self.rng.choice(self.tps)
            value = self.sim.next_value()
            data = encode_batch([Record(None, str(value).encode(), (), self.sim.clock.now_ms())])
            op = self.history.invoke(
                self.client_id, "send", {"value": value, "partition": list(tp)}
            )
            leader = await self.leader_of(tp)
            if leader is None:
                op.info("no leader")
                continue
            request = broker_pb2.ProduceRequest(acks=1, timeout_ms=1_000)
            request.topics.add(name=tp[0]).partitions.add(partition=tp[1], records=data)
            try:
                response = await self.broker(leader[0]).Produce(request, timeout=CALL_TIMEOUT_S)
                code = response.topics[0].partitions[0].error_code
                op.info("acks=1" if code == common_pb2.NONE else common_pb2.ErrorCode.Name(code))
                if code != common_pb2.NONE:
                    self.leaders.pop(tp, None)
            except grpc.aio.AioRpcError as exc:
                op.info(exc.code().name)
                self.leaders.pop(tp, None)
            await self.pause(0.05, 0.3)


async def fetch(
    client: Client, tp: TopicPartition, offset: int, timeout_s: float = CALL_TIMEOUT_S
) -> tuple[bytes, int] | None:
    """Records of `tp` from `offset` (below the HW) and the HW, or None on any error."""
    leader = await client.leader_of(tp, timeout_s)
    if leader is None:
        return None
    request = broker_pb2.FetchRequest(max_wait_ms=0, min_bytes=1, max_bytes=64 * 1024)
    request.topics.add(name=tp[0]).partitions.add(
        partition=tp[1], fetch_offset=offset, current_leader_epoch=leader[1]
    )
    try:
        response = await client.broker(leader[0]).Fetch(request, timeout=timeout_s)
    except grpc.aio.AioRpcError:
        client.leaders.pop(tp, None)
        return None
    result = response.topics[0].partitions[0]
    if result.error_code != common_pb2.NONE:
        client.leaders.pop(tp, None)
        return None
    return result.records, int(result.high_watermark)


def records_from(client: Client, tp: TopicPartition, data: bytes, offset: int) -> list[list[Any]]:
    """The records at or after `offset`, checked against what is committed."""
    checker = client.sim.checker
    by_offset = {o: ident for o, *ident in batch_identity(data)}
    out = []
    for record_offset, value in record_values(data):
        if record_offset < offset:
            continue
        crc, delta = by_offset[record_offset]
        checker.on_consumed(tp, record_offset, (crc, delta), client.client_id)
        out.append([list(tp), record_offset, value])
    return out


class Reader(Client):
    def __init__(self, sim: NodeSimulation, client_id: int, rng: Random, tp: TopicPartition):
        super().__init__(sim, client_id, rng)
        self.tp = tp
        self.position = 0
        self.high_watermark = 0
        self.last_ok = False  # the last fetch succeeded: `high_watermark` is current

    async def poll_once(self) -> int:
        op = self.history.invoke(self.client_id, "poll", {})
        try:
            got = await fetch(self, self.tp, self.position)
        except asyncio.CancelledError:
            op.info("cancelled")  # the drain reuses this reader
            raise
        self.last_ok = got is not None
        if got is None:
            op.fail("fetch failed")  # a read that failed moved nothing
            return 0
        data, self.high_watermark = got
        records = records_from(self, self.tp, data, self.position)
        op.ok({"records": records})
        if records:
            self.position = records[-1][1] + 1
        return len(records)

    async def run(self) -> None:
        while True:
            if not await self.poll_once():
                await self.pause(0.05, 0.2)


class Member(Client):
    def __init__(
        self, sim: NodeSimulation, client_id: int, rng: Random, group: str, topics: list[str]
    ):
        super().__init__(sim, client_id, rng)
        self.group = group
        self.topics = topics
        self.member_id = ""
        self.member_epoch = 0
        self.coordinator: str | None = None
        self.assignment: set[TopicPartition] = set()
        self.owned: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.lease_from = -1.0  # send time of the last successful heartbeat
        self.session_s = 1.0
        self.interval_s = 0.25
        self.next_heartbeat = 0.0
        self.committed: dict[TopicPartition, int] = {}

    def lease_valid(self, now: float) -> bool:
        return self.member_epoch > 0 and now - self.lease_from < self.session_s

    def _timeout(self) -> float:
        """A call made while owning partitions ends by the end of the lease, so the member
        notices a lost lease when it happens, not up to a call's timeout later."""
        if self.member_epoch <= 0:
            return CALL_TIMEOUT_S
        left = self.lease_from + self.session_s - self.loop.time()
        return max(0.001, min(CALL_TIMEOUT_S, left))

    def _set_owned(self, owned: set[TopicPartition]) -> None:
        if owned == self.owned:
            return
        op = self.history.invoke(self.client_id, "assign", {})
        self.owned = owned
        self.sim.checker.members_changed()
        for tp in list(self.positions):
            if tp not in owned:
                del self.positions[tp]
        op.ok(
            {
                "group": self.group,
                "member": self.client_id,
                "epoch": self.member_epoch,
                "partitions": sorted([list(tp) for tp in owned]),
            }
        )

    def _lose_everything(self) -> None:
        self.member_epoch = 0
        self.assignment = set()
        self._set_owned(set())

    async def _find_coordinator(self) -> None:
        try:
            response = await self.group_stub(broker_address(self.any_broker())).FindCoordinator(
                group_pb2.FindCoordinatorRequest(key=self.group), timeout=self._timeout()
            )
        except grpc.aio.AioRpcError:
            return
        if response.error_code == common_pb2.NONE:
            self.coordinator = f"{response.host}:{response.port}"

    async def _heartbeat(self) -> None:
        if self.coordinator is None:
            await self._find_coordinator()
            if self.coordinator is None:
                return
        request = group_pb2.ConsumerGroupHeartbeatRequest(
            group_id=self.group,
            member_id=self.member_id,
            member_epoch=self.member_epoch,
            client_id=f"c{self.client_id}",
            owned_partitions_present=True,
        )
        by_topic: dict[str, list[int]] = {}
        for topic, index in sorted(self.owned):
            by_topic.setdefault(topic, []).append(index)
        for topic, indexes in by_topic.items():
            request.owned_partitions.add(topic=topic, partitions=indexes)
        if self.member_epoch == 0:
            request.subscribed_topic_names.extend(self.topics)
        sent = self.loop.time()
        try:
            response = await self.group_stub(self.coordinator).ConsumerGroupHeartbeat(
                request, timeout=self._timeout()
            )
        except grpc.aio.AioRpcError:
            self.coordinator = None
            return
        code = response.error_code
        if code in (common_pb2.UNKNOWN_MEMBER_ID, common_pb2.FENCED_MEMBER_EPOCH):
            self._lose_everything()
            return
        if code != common_pb2.NONE:
            self.coordinator = None
            return
        self.member_id, self.member_epoch = response.member_id, response.member_epoch
        self.lease_from = sent
        self.sim.checker.members_changed()
        self.session_s = response.session_timeout_ms / 1000
        self.interval_s = response.heartbeat_interval_ms / 1000
        self.assignment = {(a.topic, p) for a in response.assignment for p in a.partitions}

    async def _commit(self, tps: list[TopicPartition]) -> None:
        if not tps or self.coordinator is None or not self.lease_valid(self.loop.time()):
            return
        request = group_pb2.OffsetCommitRequest(
            group_id=self.group, member_id=self.member_id, member_epoch=self.member_epoch
        )
        for topic, index in tps:
            request.topics.add(name=topic).partitions.add(
                partition=index, offset=self.positions[(topic, index)]
            )
        try:
            response = await self.group_stub(self.coordinator).OffsetCommit(
                request, timeout=self._timeout()
            )
        except grpc.aio.AioRpcError:
            return
        if response.error_code != common_pb2.NONE:
            return
        for topic in response.topics:
            for p in topic.partitions:
                if p.error_code == common_pb2.NONE:
                    tp = (topic.name, p.partition)
                    offset = request.topics[[t.name for t in request.topics].index(topic.name)]
                    committed = next(
                        q.offset for q in offset.partitions if q.partition == p.partition
                    )
                    self.sim.checker.on_offset_committed(self.group, tp, committed)
                    self.sim.stats["offset commits"] += 1

    async def _start_positions(self, tps: set[TopicPartition]) -> None:
        if not tps or self.coordinator is None:
            return
        request = group_pb2.OffsetFetchRequest(group_id=self.group)
        for topic in sorted({t for t, _ in tps}):
            request.topics.add(topic=topic, partitions=sorted(i for t, i in tps if t == topic))
        try:
            response = await self.group_stub(self.coordinator).OffsetFetch(
                request, timeout=self._timeout()
            )
        except grpc.aio.AioRpcError:
            return
        if response.error_code != common_pb2.NONE:
            return
        for topic in response.topics:
            for p in topic.partitions:
                tp = (topic.name, p.partition)
                if tp in tps:
                    self.positions[tp] = max(0, p.offset)

    async def step(self) -> None:
        now = self.loop.time()
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + self.interval_s
            await self._heartbeat()
        if not self.lease_valid(self.loop.time()):
            if self.owned or self.member_epoch:
                self._lose_everything()
            return
        revoked = self.owned - self.assignment
        if revoked:
            await self._commit(sorted(tp for tp in revoked if tp in self.positions))
            self._set_owned(self.owned - revoked)
            self.next_heartbeat = 0.0  # tell the coordinator at once
            return
        added = self.assignment - self.owned
        if added:
            await self._start_positions(added)
            if not self.lease_valid(self.loop.time()):
                return
            ready = {tp for tp in added if tp in self.positions}
            self._set_owned(self.owned | ready)
            self.next_heartbeat = 0.0
        for tp in sorted(self.owned):
            if not self.lease_valid(self.loop.time()) or tp not in self.positions:
                break
            await self._poll(tp)
        if self.positions and self.rng.random() < 0.3:
            await self._commit(sorted(self.positions))

    async def _poll(self, tp: TopicPartition) -> None:
        op = self.history.invoke(self.client_id, "poll", {})
        got = await fetch(self, tp, self.positions[tp], self._timeout())
        if got is None or tp not in self.owned or not self.lease_valid(self.loop.time()):
            op.fail("fetch failed, or the lease ended meanwhile: nothing is processed")
            return
        records = records_from(self, tp, got[0], self.positions[tp])
        op.ok({"records": records})
        if records:
            self.positions[tp] = records[-1][1] + 1

    async def run(self) -> None:
        while True:
            await self.step()
            # Wake no later than the lease ends, so ownership ends when the lease does.
            pause = self.rng.uniform(0.02, 0.06)
            if self.member_epoch > 0:
                pause = min(pause, max(0.0, self.lease_from + self.session_s - self.loop.time()))
            await asyncio.sleep(pause)

    async def leave(self) -> None:
        if self.coordinator is None or not self.member_id:
            return
        request = group_pb2.ConsumerGroupHeartbeatRequest(
            group_id=self.group, member_id=self.member_id, member_epoch=-1
        )
        self._set_owned(set())
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self.group_stub(self.coordinator).ConsumerGroupHeartbeat(
                request, timeout=CALL_TIMEOUT_S
            )
        self.member_epoch = 0


async def create_topic(
    client: Client, name: str, partitions: int, factor: int, configs: dict[str, str] | None = None
) -> bool:
    stub = client.peers.stub(admin_pb2_grpc.AdminStub, broker_address(client.any_broker()), None)
    request = admin_pb2.CreateTopicsRequest(
        topics=[admin_pb2.CreatableTopic(name=name, num_partitions=partitions,
                                         replication_factor=factor, configs=configs or {})]
    )  # fmt: skip
    try:
        response = await stub.CreateTopics(request, timeout=CALL_TIMEOUT_S * 3)
    except grpc.aio.AioRpcError:
        return False
    code = response.topics[0].error_code
    return code in (common_pb2.NONE, common_pb2.TOPIC_ALREADY_EXISTS)
