"""The node simulation's transactions (issue #21): transactional producers, zombies,
read_committed readers and faults aimed at the transaction coordinator, over the real
Transaction, Group and Broker services of the simulated nodes.

On in `NodeSimulation(seed, transactions=True)`; every draw here comes from generators of its
own (`{seed}/txn...`), so turning it on changes nothing else a seed draws.

- `TxnProducer`: one instance of a transactional id, speaking the wire sequence of the SDK's
  TransactionManager (client/transactions.py) over the simulated network (the SDK's own
  channels cannot ride it): FindCoordinator(TRANSACTION), InitProducerId, then transactions:
  AddPartitionsToTxn for two of topic x0's three partitions, two transactional batches of one
  record to each (acks=all, retried with the same sequence), in most transactions
  AddOffsetsToTxn and TxnOffsetCommit of the transaction's number for the id's group, then
  EndTxn, commit or (one in three) abort. A failed batch aborts the transaction and starts a
  new epoch (KIP-360, as the SDK does); an EndTxn whose answer never came re-initializes.
- Zombies: every so often a new instance of a transactional id starts (InitProducerId fences
  the old epoch) while the old one goes on. Once the old one is refused as fenced it does not
  stop, as a zombie would not: it sends a few more batches with its old epoch, to partitions
  it never added, then asks to commit. None of that may ever become visible.
- `TxnReader`: a read_committed reader of one x0 partition from offset 0, dropping aborted
  transactions' batches and markers as the SDK's consumer does (client/consumer.py `_take`).
- Aimed faults (`TxnNemesis`): armed with a coordinator state (Ongoing, PrepareCommit,
  PrepareAbort, CompleteCommit, CompleteAbort) and a victim (the coordinator, i.e. the leader of
  the id's `__transaction_state` partition, or the leader of one of the transaction's
  partitions, which fails between its markers), it crashes or pauses the victim the turn after
  some coordinator holds a transactional id in that state.
- The end: producers stop with the other producers at the heal; after convergence a last
  InitProducerId per id ends whatever was open, every x0 partition's LSO must reach its HW, the
  readers drain to it, and the history goes through the fault suite's transactional checker
  (tests/faults/txn_checker.py). The invariants are in node_sim_txn_invariants.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from random import Random
from typing import TYPE_CHECKING, Any

import grpc
from faults.history import Recorder
from node_sim_invariants import Violation
from node_sim_workload import CALL_TIMEOUT_S, Client, TopicPartition, broker_address

from strom.node.txn.state import TxnState
from strom.storage.batch_validation import split_batches
from strom.storage.record_batch import Record, encode_batch, parse_header
from strom.storage.record_decode import decode_batch
from strom.v1 import broker_pb2, common_pb2, group_pb2, group_pb2_grpc, txn_pb2, txn_pb2_grpc

if TYPE_CHECKING:
    from node_sim import NodeSimulation

TXN_TOPIC = "x0"
TXN_PARTITIONS = 3
TRANSACTIONAL_IDS = ("tx-a", "tx-b")
TXN_TIMEOUT_MS = 3_000
ABORT_ONE_IN = 3
RECORDS_PER_PARTITION = 2
# A coordinator call or a batch is retried this long; then the call's outcome is unknown, and
# the batch's transaction aborts.
CALL_DEADLINE_S = 4.0
ZOMBIE_SENDS_MAX = 3
ZOMBIE_WAIT_S = 2.0
# Node settings for transactions in the simulation: few state partitions (as the offsets
# topic), and the timeout timer often enough to matter within a seed's seconds of faults.
TXN_OVERRIDES = {
    "transaction.state.log.num.partitions": 2,
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": 500,
}
# Coordinator states the aimed faults wait for, and who they hit.
AIMED_STATES = (
    TxnState.ONGOING, TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT,
    TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT,
)  # fmt: skip
RETRIABLE = frozenset(
    {
        common_pb2.NOT_COORDINATOR, common_pb2.COORDINATOR_NOT_AVAILABLE,
        common_pb2.COORDINATOR_LOAD_IN_PROGRESS, common_pb2.CONCURRENT_TRANSACTIONS,
        common_pb2.LEADER_NOT_AVAILABLE, common_pb2.NOT_LEADER_OR_FOLLOWER,
        common_pb2.REQUEST_TIMED_OUT, common_pb2.NETWORK_EXCEPTION,
        common_pb2.NOT_ENOUGH_REPLICAS, common_pb2.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        common_pb2.FENCED_LEADER_EPOCH, common_pb2.UNKNOWN_LEADER_EPOCH,
        common_pb2.KAFKA_STORAGE_ERROR, common_pb2.UNKNOWN_TOPIC_OR_PARTITION,
    }
)  # fmt: skip
FENCED = frozenset(
    {common_pb2.INVALID_PRODUCER_EPOCH, common_pb2.PRODUCER_FENCED,
     common_pb2.INVALID_PRODUCER_ID_MAPPING}
)  # fmt: skip
_MOVED = frozenset(
    {common_pb2.NOT_COORDINATOR, common_pb2.COORDINATOR_NOT_AVAILABLE,
     common_pb2.COORDINATOR_LOAD_IN_PROGRESS}
)  # fmt: skip


def group_of(transactional_id: str) -> str:
    return f"g-{transactional_id}"


class Fenced(Exception):
    """This instance's epoch is fenced (a newer instance, or the coordinator's timeout)."""


class Abortable(Exception):
    """The transaction cannot commit; abort it."""


class Unknown(Exception):
    """Gave up without an answer: the outcome is unknown."""


class TxnProducer(Client):
    def __init__(
        self, sim: NodeSimulation, work: TxnWorkload, client_id: int, rng: Random, tid: str
    ) -> None:
        super().__init__(sim, client_id, rng)
        self.work = work
        self.tid = tid
        self.producer_id = -1
        self.epoch = -1
        self.sequences: dict[TopicPartition, int] = {}
        self.coordinators: dict[str, str] = {}  # key -> "host:port"
        self.replaced = False  # a newer instance of the id has started

    @property
    def recorder(self) -> Recorder:
        return self.work.history

    # ---- calls ------------------------------------------------------------------------

    async def _coordinator(self, key: str, key_type: int) -> str | None:
        known = self.coordinators.get(key)
        if known is not None:
            return known
        stub = self.peers.stub(group_pb2_grpc.GroupStub, broker_address(self.any_broker()), None)
        try:
            response = await stub.FindCoordinator(
                group_pb2.FindCoordinatorRequest(key=key, key_type=key_type),  # type: ignore[arg-type]
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError:
            return None
        if response.error_code != common_pb2.NONE:
            return None
        self.coordinators[key] = f"{response.host}:{response.port}"
        return self.coordinators[key]

    async def call(
        self,
        method: str,
        request: Any,
        key: str | None = None,
        key_type: int = group_pb2.TRANSACTION,
    ) -> Any:
        """`method` on the coordinator of `key` (the transactional id), retried on retriable
        answers; the response, or `Unknown` when every try went unanswered or refused."""
        key = self.tid if key is None else key
        deadline = self.loop.time() + CALL_DEADLINE_S
        while self.loop.time() < deadline:
            address = await self._coordinator(key, key_type)
            if address is None:
                await self.pause(0.05, 0.2)
                continue
            stub = self.peers.stub(txn_pb2_grpc.TransactionStub, address, None)
            try:
                response = await getattr(stub, method)(request, timeout=CALL_TIMEOUT_S * 2)
            except grpc.aio.AioRpcError as exc:
                self.sim.event(f"c{self.client_id} {method} to {address}: {exc.code().name}")
                self.coordinators.pop(key, None)
                await self.pause(0.02, 0.1)
                continue
            codes = [response.error_code]
            if method == "TxnOffsetCommit":
                codes += [p.error_code for t in response.topics for p in t.partitions]
            code = next((c for c in codes if c != common_pb2.NONE), common_pb2.NONE)
            if code != common_pb2.NONE:
                self.sim.event(
                    f"c{self.client_id} {method} to {address}: {common_pb2.ErrorCode.Name(code)}"
                )
            if code in RETRIABLE:
                self.sim.stats[f"txn {method} {common_pb2.ErrorCode.Name(code)}"] += 1
                if code in _MOVED or method == "TxnOffsetCommit":
                    self.coordinators.pop(key, None)
                await self.pause(0.02, 0.1)
                continue
            if code in FENCED:
                raise Fenced(f"{method}: {common_pb2.ErrorCode.Name(code)}")
            if code != common_pb2.NONE:
                raise Abortable(f"{method}: {common_pb2.ErrorCode.Name(code)}")
            return response
        raise Unknown(f"{method}: no answer")

    async def init(self) -> None:
        """InitProducerId until answered: a new epoch (fencing every older one)."""
        while True:
            request = txn_pb2.TxnInitProducerIdRequest(
                transactional_id=self.tid, transaction_timeout_ms=TXN_TIMEOUT_MS
            )
            with contextlib.suppress(Unknown, Abortable):
                response = await self.call("InitProducerId", request)
                self.producer_id, self.epoch = response.producer_id, response.producer_epoch
                self.sequences.clear()
                self.sim.txn_checker.on_init(self.tid, self.producer_id, self.epoch)
                self.sim.event(f"c{self.client_id} {self.tid}: producer id {self.producer_id} "
                               f"epoch {self.epoch}")  # fmt: skip
                return
            await self.pause(0.1, 0.3)

    async def produce(self, tp: TopicPartition, value: int) -> None:
        """One transactional batch of one record, retried unchanged until answered."""
        seq = self.sequences.get(tp, 0)
        data = encode_batch(
            [Record(None, str(value).encode(), (), self.sim.clock.now_ms())],
            producer_id=self.producer_id, producer_epoch=self.epoch, base_sequence=seq,
            is_transactional=True,
        )  # fmt: skip
        self.sim.txn_checker.on_send(self.tid, self.producer_id, self.epoch, value)
        request = broker_pb2.ProduceRequest(acks=-1, timeout_ms=1_500)
        request.topics.add(name=tp[0]).partitions.add(partition=tp[1], records=data)
        deadline = self.loop.time() + CALL_DEADLINE_S
        while self.loop.time() < deadline:
            leader = await self.leader_of(tp)
            if leader is None:
                await self.pause(0.05, 0.2)
                continue
            try:
                response = await self.broker(leader[0]).Produce(request, timeout=2.0)
            except grpc.aio.AioRpcError as exc:
                self.sim.stats[f"txn produce {exc.code().name}"] += 1
                self.leaders.pop(tp, None)
                await self.pause(0.02, 0.1)
                continue
            code = response.topics[0].partitions[0].error_code
            if code == common_pb2.NONE:
                self.sequences[tp] = seq + 1
                return
            self.sim.stats[f"txn produce {common_pb2.ErrorCode.Name(code)}"] += 1
            if code in FENCED:
                raise Fenced(f"produce to {tp}: {common_pb2.ErrorCode.Name(code)}")
            if code not in RETRIABLE:
                raise Abortable(f"produce to {tp}: {common_pb2.ErrorCode.Name(code)}")
            self.leaders.pop(tp, None)
            await self.pause(0.02, 0.1)
        raise Abortable(f"produce to {tp}: no answer")

    def _ids(self) -> dict[str, Any]:
        return {"transactional_id": self.tid, "producer_id": self.producer_id,
                "producer_epoch": self.epoch}  # fmt: skip

    # ---- transactions -----------------------------------------------------------------

    async def run(self, initialized: bool = False) -> None:
        if not initialized:
            await self.init()
        while True:
            try:
                await self.transaction()
            except Fenced:
                self.sim.stats["txn fenced"] += 1
                await self.zombie()
                return
            await self.pause(0.01, 0.08)

    async def transaction(self) -> None:
        number = self.work.next_txn()
        chosen = sorted(self.rng.sample(range(TXN_PARTITIONS), 2))
        writes = [[p, self.work.next_value()] for _ in range(RECORDS_PER_PARTITION) for p in chosen]
        commit = self.rng.randrange(ABORT_ONE_IN) != 0
        with_offsets = self.rng.random() < 0.7
        name = f"{self.tid}/{number}"
        op = self.recorder.invoke(self.client_id, "txn", {
            "txn": name, "writes": writes, "outcome": "commit" if commit else "abort",
        })  # fmt: skip
        checker = self.sim.txn_checker
        checker.on_begin(name, [v for _, v in writes], number if with_offsets else None,
                         self.tid, (self.producer_id, self.epoch))  # fmt: skip
        try:
            try:
                await self.call("AddPartitionsToTxn", txn_pb2.AddPartitionsToTxnRequest(
                    **self._ids(), partitions=[txn_pb2.TxnTopicPartition(topic=TXN_TOPIC,
                                                                          partition=p)
                                               for p in chosen],
                ))  # fmt: skip
                for p, value in writes:
                    await self.produce((TXN_TOPIC, p), value)
                if with_offsets:
                    await self.send_offsets(number)
            except Abortable as exc:
                self.sim.event(f"c{self.client_id} {name}: {exc}; aborting")
                await self.end(name, commit=False)
                op.fail(str(exc))
                await self.init()  # a failed batch leaves a sequence gap: a new epoch
                return
            await self.end(name, commit)
            op.ok()
        except Unknown as exc:
            op.info(str(exc))
            await self.init()
        except Fenced as exc:
            op.info(str(exc))
            raise
        except Abortable as exc:  # EndTxn refused: e.g. aborted meanwhile by the timeout
            op.info(str(exc))
            await self.init()

    async def send_offsets(self, number: int) -> None:
        group = group_of(self.tid)
        await self.call("AddOffsetsToTxn", txn_pb2.AddOffsetsToTxnRequest(
            **self._ids(), group_id=group))  # fmt: skip
        request = txn_pb2.TxnOffsetCommitRequest(
            **self._ids(), group_id=group, member_id="", generation_id=-1,
            topics=[txn_pb2.TxnOffsetCommitTopic(name=TXN_TOPIC, partitions=[
                txn_pb2.TxnOffsetCommitPartition(partition=0, offset=number)])],
        )  # fmt: skip
        await self.call("TxnOffsetCommit", request, key=group, key_type=group_pb2.GROUP)

    async def end(self, name: str, commit: bool) -> None:
        self.sim.txn_checker.on_end_requested(name, commit)
        await self.call("EndTxn", txn_pb2.EndTxnRequest(**self._ids(), commit=commit))
        self.sim.txn_checker.on_end_answered(name, commit)
        self.sim.stats["txn commits" if commit else "txn aborts"] += 1

    async def zombie(self) -> None:
        """Fenced, and going on anyway: batches of the old epoch to partitions never added
        (each refused, or else a violation once visible), then a commit request. Aimed, as a
        worst case: it waits (a little) for its successor's transaction to be open, and sends
        to that transaction's partitions where its own sequence numbers are still current."""
        aimed: list[int] = []
        deadline = self.loop.time() + ZOMBIE_WAIT_S
        while self.loop.time() < deadline and not aimed:
            successor = self.work.ongoing_partitions(self.tid, self.epoch)
            aimed = sorted(p for t, p in self.sequences if (t, p) in successor) or (
                sorted(p for _, p in successor) if successor else []
            )
            if not aimed:
                await asyncio.sleep(0.005)
        number = self.work.next_txn()
        name = f"{self.tid}/{number}"
        writes = [[self.rng.choice(aimed) if aimed else self.rng.randrange(TXN_PARTITIONS),
                   self.work.next_value()]
                  for _ in range(self.rng.randint(1, ZOMBIE_SENDS_MAX))]  # fmt: skip
        op = self.recorder.invoke(self.client_id, "txn", {
            "txn": name, "writes": writes, "outcome": "commit"})  # fmt: skip
        self.sim.txn_checker.on_begin(name, [v for _, v in writes], None, self.tid,
                                      (self.producer_id, self.epoch))  # fmt: skip
        self.sim.event(f"c{self.client_id} {self.tid}: fenced at epoch {self.epoch}, "
                       f"sending {len(writes)} more as a zombie")  # fmt: skip
        for p, value in writes:
            try:
                await self.produce((TXN_TOPIC, p), value)
                self.sim.stats["txn zombie batch accepted"] += 1
            except (Fenced, Abortable) as exc:
                self.sim.stats["txn zombie batch refused"] += 1
                self.sim.event(f"c{self.client_id} zombie: {exc}")
        with contextlib.suppress(Fenced, Abortable, Unknown):
            await self.end(name, commit=True)
        op.info("a zombie: fenced")


def stable_values(
    data: bytes, aborted: Iterable[Any], position: int
) -> tuple[list[tuple[int, int, int]], int]:
    """(offset, value, producer id) of the records a read_committed consumer takes from `data`
    at `position`, and its next position: markers are never records, and the batches of the
    `aborted` transactions (a producer's, from its first offset until its abort marker) are
    dropped — the rule of the SDK's consumer (client/consumer.py `_take`)."""
    starts = sorted((a.first_offset, a.producer_id) for a in aborted)
    aborting: set[int] = set()
    out = []
    for start, _ in split_batches(data):
        header = parse_header(data, start)
        end = header.base_offset + header.last_offset_delta + 1
        while starts and starts[0][0] <= end - 1:
            aborting.add(starts.pop(0)[1])
        if header.is_control:
            aborting.discard(header.producer_id)
        elif not (header.is_transactional and header.producer_id in aborting):
            _, records = decode_batch(data, start)
            out.extend((r.offset, int(r.value or b"-1"), header.producer_id)
                       for r in records if r.offset >= position)  # fmt: skip
        position = max(position, end)
    return out, position


class TxnReader(Client):
    """read_committed, one partition of x0, from offset 0."""

    def __init__(self, sim: NodeSimulation, work: TxnWorkload, client_id: int, rng: Random,
                 tp: TopicPartition) -> None:  # fmt: skip
        super().__init__(sim, client_id, rng)
        self.work = work
        self.tp = tp
        self.position = 0
        self.high_watermark = 0
        self.last_stable_offset = 0
        self.last_ok = False

    async def poll_once(self) -> int:
        """Records taken, plus one if skipped batches (markers, aborted ones) moved the
        position: 0 means nothing moved."""
        op = self.work.history.invoke(self.client_id, "poll", {})
        try:
            return await self._poll(op)
        except BaseException:
            op.info("cancelled")  # the drain reuses this reader
            raise

    async def _poll(self, op: Any) -> int:
        self.last_ok = False
        leader = await self.leader_of(self.tp)
        if leader is None:
            op.fail("no leader")
            return 0
        request = broker_pb2.FetchRequest(max_wait_ms=0, min_bytes=1, max_bytes=64 * 1024,
                                          isolation_level=broker_pb2.READ_COMMITTED)  # fmt: skip
        request.topics.add(name=self.tp[0]).partitions.add(
            partition=self.tp[1], fetch_offset=self.position, current_leader_epoch=leader[1]
        )
        try:
            response = await self.broker(leader[0]).Fetch(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            self.leaders.pop(self.tp, None)
            op.fail("fetch failed")
            return 0
        result = response.topics[0].partitions[0]
        if result.error_code != common_pb2.NONE:
            self.leaders.pop(self.tp, None)
            op.fail(common_pb2.ErrorCode.Name(result.error_code))
            return 0
        self.last_ok = True
        self.high_watermark = int(result.high_watermark)
        self.last_stable_offset = int(result.last_stable_offset)
        taken, position = stable_values(result.records, result.aborted_transactions,
                                        self.position)  # fmt: skip
        self.sim.txn_checker.on_read(self, leader, taken, result)
        op.ok({"records": [[self.tp[1], o, v] for o, v, _ in taken]})
        moved = position != self.position
        self.position = position
        return len(taken) + int(moved)

    async def run(self) -> None:
        while True:
            if not await self.poll_once():
                await self.pause(0.05, 0.2)


class TxnNemesis:
    """Crash or pause a node the turn after a coordinator holds a transactional id in the
    armed state: the coordinator itself, or a leader of one of the transaction's partitions."""

    def __init__(self, sim: NodeSimulation, rng: Random) -> None:
        self.sim = sim
        self.rng = rng
        self.armed: tuple[TxnState, str, str] | None = None

    def arm(self) -> None:
        state = self.rng.choice(AIMED_STATES)
        who = self.rng.choice(("coordinator", "coordinator", "partition leader"))
        action = self.rng.choice(("crash", "pause"))
        self.armed = (state, who, action)

    def after_turn(self) -> None:
        if self.armed is None:
            return
        state, who, action = self.armed
        for sim_node in self.sim.cluster.node_list:
            node = sim_node.node if sim_node.running and not sim_node.stopping else None
            host = None if node is None else node.txn_host
            if host is None:
                continue
            coordinator = host.coordinator
            for tid in TRANSACTIONAL_IDS:
                metadata = coordinator.states.get(tid)
                if metadata is None or metadata.state != state:
                    continue
                if not coordinator.owns(coordinator.partition_of(tid)):
                    continue
                victim = sim_node.node_id
                if who == "partition leader":
                    victim = self._a_leader_of(metadata.partitions)
                    if victim is None:
                        continue
                self.armed = None
                name = TxnState(state).name
                self.sim.stats[f"txn fault {name} {who} {action}"] += 1
                self.sim.loop.call_soon(self._fire, action, victim,
                                        f"{tid} {name} at coordinator n{sim_node.node_id}, "
                                        f"{who} n{victim}")  # fmt: skip
                return

    def _a_leader_of(self, partitions: frozenset[tuple[str, int]]) -> int | None:
        live = [s for s in self.sim.cluster.node_list if s.up]
        image = self.sim.checker.latest_image(live)
        leaders = []
        for topic_name, index in sorted(partitions):
            topic = image.topic_by_name(topic_name)
            info = None if topic is None else topic.partitions.get(index)
            if info is not None and info.leader > 0:
                leaders.append(info.leader)
        return self.rng.choice(leaders) if leaders else None

    def _fire(self, action: str, victim: int, why: str) -> None:
        self.sim.fault_node(action, victim, self.rng.uniform(0.3, 3.0), why)


class TxnWorkload:
    def __init__(self, sim: NodeSimulation) -> None:
        self.sim = sim
        self.rng = Random(f"{sim.seed}/txn")
        self.history = Recorder(clock=lambda: int(sim.loop.time() * 1e9))
        self.nemesis = TxnNemesis(sim, Random(f"{sim.seed}/txn faults"))
        self.producers: dict[str, TxnProducer] = {}
        self.readers: list[TxnReader] = []
        self.tasks: list[asyncio.Task[Any]] = []  # producers, zombies and the fault task
        self.reader_tasks: list[asyncio.Task[Any]] = []
        self._value = 0
        self._txn = 0
        self._client_id = 200

    def next_value(self) -> int:
        self._value += 1
        return self._value

    def next_txn(self) -> int:
        self._txn += 1
        return self._txn

    def ongoing_partitions(self, tid: str, older_than: int) -> set[TopicPartition]:
        """The x0 partitions of `tid`'s open transaction of a newer epoch than `older_than`,
        as a coordinator holds it (empty when none)."""
        for sim_node in self.sim.cluster.node_list:
            node = sim_node.node if sim_node.running else None
            host = None if node is None else node.txn_host
            metadata = None if host is None else host.coordinator.states.get(tid)
            if (metadata is not None and metadata.state == TxnState.ONGOING
                    and metadata.producer_epoch > older_than):  # fmt: skip
                return {tp for tp in metadata.partitions if tp[0] == TXN_TOPIC}
        return set()

    def _new_client_id(self) -> int:
        self._client_id += 1
        return self._client_id

    async def prepare(self) -> None:
        """Before the faults (as the topics are created): the first instance of each id
        initialized, which creates `__transaction_state` and loads its coordinators."""
        for tid in TRANSACTIONAL_IDS:
            producer = TxnProducer(self.sim, self, self._new_client_id(),
                                   Random(self.rng.random()), tid)  # fmt: skip
            await producer.init()
            self.producers[tid] = producer

    def start(self, end: float) -> None:
        loop = self.sim.loop
        for producer in self.producers.values():
            producer.task = loop.create_task(producer.run(initialized=True))
            self.tasks.append(producer.task)
        self.readers = [
            TxnReader(self.sim, self, 190 + p, Random(self.rng.random()), (TXN_TOPIC, p))
            for p in range(TXN_PARTITIONS)
        ]
        self.reader_tasks = [loop.create_task(reader.run()) for reader in self.readers]
        self.tasks.append(loop.create_task(self._zombies_and_faults(end)))

    def _start_instance(self, tid: str) -> None:
        old = self.producers.get(tid)
        if old is not None:
            old.replaced = True
        producer = TxnProducer(self.sim, self, self._new_client_id(), Random(self.rng.random()),
                               tid)  # fmt: skip
        self.producers[tid] = producer
        producer.task = self.sim.loop.create_task(producer.run())
        self.tasks.append(producer.task)

    async def _zombies_and_faults(self, end: float) -> None:
        """New instances of an id (the old one turns zombie) and aimed faults, until `end`."""
        rng = self.rng
        while self.sim.loop.time() < end:
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            if rng.random() < 0.2:
                tid = rng.choice(TRANSACTIONAL_IDS)
                self.sim.event(f"txn: a new instance of {tid}; the old one is a zombie now")
                self.sim.stats["txn new instances"] += 1
                self._start_instance(tid)
            else:
                self.nemesis.arm()
        self.nemesis.armed = None

    def stop_producers(self) -> None:
        """The heal: producers (zombies too) and aimed faults stop; readers go on."""
        for task in self.tasks:
            task.cancel()
        self.nemesis.armed = None

    async def finish(self, drain_s: float) -> None:
        """After convergence: end every open transaction, wait for every LSO to reach its HW,
        drain the readers, then check the history and the committed offsets."""
        for task in [*self.tasks, *self.reader_tasks]:
            task.cancel()
        ended = await asyncio.gather(*self.tasks, *self.reader_tasks, return_exceptions=True)
        for result in ended:
            if isinstance(result, Exception):  # a bug of the workload, never to pass unseen
                raise Violation("Crash", f"a transactional client raised {result!r}")
        loop = self.sim.loop
        deadline = loop.time() + drain_s
        for tid in TRANSACTIONAL_IDS:
            last = TxnProducer(self.sim, self, self._new_client_id(), Random(self.rng.random()),
                               tid)  # fmt: skip
            init = loop.create_task(last.init())
            await asyncio.wait({init}, timeout=max(0.0, deadline - loop.time()))
            if not init.done():
                init.cancel()
                raise Violation("TransactionsComplete", f"InitProducerId of {tid} not answered "
                                f"within {drain_s:.0f} s after convergence")  # fmt: skip
        while (why := self.sim.txn_checker.unstable()) is not None:
            if loop.time() > deadline:
                raise Violation("TransactionsComplete", f"{why} {drain_s:.0f} s after every "
                                "transaction was ended")  # fmt: skip
            await asyncio.sleep(0.05)
        for reader in self.readers:
            while True:
                got = await reader.poll_once()
                if (not got and reader.last_ok and reader.position >= reader.last_stable_offset
                        and reader.last_stable_offset == reader.high_watermark):  # fmt: skip
                    break
                if loop.time() > deadline:
                    raise Violation("Convergence", f"read_committed reader of {reader.tp} "
                                    f"stuck at {reader.position} (LSO "
                                    f"{reader.last_stable_offset}, HW {reader.high_watermark})")  # fmt: skip
                if not got:
                    await asyncio.sleep(0.05)
        # A coordinator that lost its lease reloads its offsets partitions a little after the
        # heal; the committed offsets are checked once every transactional group is loaded.
        while (missing := self.sim.txn_checker.groups_unloaded()) is not None:
            if loop.time() > deadline:
                raise Violation("Convergence", f"group {missing} is loaded by no coordinator "
                                f"{drain_s:.0f} s after convergence")  # fmt: skip
            await asyncio.sleep(0.05)
        self.sim.txn_checker.check_end(self.history.ops)
