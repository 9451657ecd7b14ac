"""Building real replica managers, partitions and metadata images for unit tests: real logs in a
temporary folder, the node's own `ReplicaManager`, `Partition` and `ReplicaFetcher`; only other
brokers are scripted, through the `peers` seam (node/peers.py) and a scripted controller."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

from strom.node.config import build_config
from strom.node.metadata.image import (
    BrokerRegistration,
    EndpointInfo,
    MetadataDelta,
    MetadataImage,
    PartitionInfo,
    TopicImage,
)
from strom.node.replica.manager import ReplicaManager
from strom.storage.log_manager import LogManager
from strom.storage.record_batch import Record, encode_batch
from strom.v1 import controller_pb2, replica_pb2

TOPIC_ID = bytes(range(16))
BROKERS = (1, 2, 3)


def leader_batches(
    start: int, count: int, epoch: int = 1, pid: int = -1, value_bytes: int = 8
) -> bytes:
    """What a follower fetches: one-record batches at offsets start..start+count-1, stamped with
    leader epoch `epoch` (with a producer id, sequences following the offsets)."""
    producer = {} if pid < 0 else {"producer_id": pid, "producer_epoch": 0}
    return b"".join(
        encode_batch(
            [Record(None, f"v{i}".encode().ljust(value_bytes, b"."), (), 1000 + i)],
            base_offset=i,
            partition_leader_epoch=epoch,
            **({**producer, "base_sequence": i} if producer else {}),
        )
        for i in range(start, start + count)
    )


def image(
    partitions: dict[int, PartitionInfo],
    topic: str = "t",
    configs: dict[str, str] | None = None,
    topic_id: bytes = TOPIC_ID,
) -> MetadataImage:
    brokers = {
        b: BrokerRegistration(
            b, 10 + b, b"", (EndpointInfo("PLAINTEXT", "127.0.0.1", 9000 + b, "PLAINTEXT"),), "",
            fenced=False,
        )
        for b in BROKERS
    }  # fmt: skip
    return MetadataImage(
        last_index=1,
        brokers=MappingProxyType(brokers),
        topics=MappingProxyType(
            {topic_id: TopicImage(topic, topic_id, MappingProxyType(dict(partitions)))}
        ),
        topic_ids=MappingProxyType({topic: topic_id}),
        configs=MappingProxyType({(2, topic): MappingProxyType(configs or {})}),
    )


def changed(img: MetadataImage) -> MetadataDelta:
    delta = MetadataDelta()
    for topic_id, topic in img.topics.items():
        delta.changed_partitions |= {(topic_id, p) for p in topic.partitions}
    delta.changed_configs = set(img.configs)
    return delta


def led_by(leader: int, epoch: int = 1) -> PartitionInfo:
    return PartitionInfo(replicas=BROKERS, isr=BROKERS, leader=leader, leader_epoch=epoch,
                         partition_epoch=epoch)  # fmt: skip


class ScriptedController:
    """Answers AlterPartition and heartbeats with NONE and remembers the requests."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def call(self, method: Any, request: Any, deadline_s: float) -> Any:
        self.requests.append(request)
        if isinstance(request, controller_pb2.BrokerHeartbeatRequest):
            return controller_pb2.BrokerHeartbeatResponse(status=controller_pb2.ControllerStatus())
        return controller_pb2.AlterPartitionResponse(status=controller_pb2.ControllerStatus())


FetchScript = Callable[[replica_pb2.ReplicaFetchRequest], replica_pb2.ReplicaFetchResponse]


class ScriptedLeaderPeers:
    """The `peers` seam: every ReplicaStub answers Fetch with `script(request)` (after a
    yield, as a network call would); `requests` records what followers asked."""

    def __init__(self, script: FetchScript) -> None:
        self.script = script
        self.requests: list[replica_pb2.ReplicaFetchRequest] = []

    def stub(self, stub_type: Any, address: str, security: Any) -> Any:
        peers = self

        class Stub:
            async def Fetch(
                self, request: replica_pb2.ReplicaFetchRequest, timeout: float
            ) -> replica_pb2.ReplicaFetchResponse:
                await asyncio.sleep(0.001)
                peers.requests.append(request)
                return peers.script(request)

        return Stub()

    async def close(self) -> None:
        pass


def manager(
    tmp_path: Path, peers: Any = None, broker_id: int = 1, **config: object
) -> ReplicaManager:
    """A ReplicaManager over a LogManager in `tmp_path / "data"`, acting on metadata at once."""
    node_config = build_config(
        {
            "node.id": broker_id,
            "controller.quorum.voters": "1@localhost:9093",
            "replica.fetch.wait.max.ms": 10,
            **config,
        },
        environ={},
    )
    logs = LogManager(str(tmp_path / "data"), now_ms=0)
    replica_manager = ReplicaManager(
        node_config, logs, ScriptedController(), lambda: 5, peers or ScriptedLeaderPeers(
            lambda r: replica_pb2.ReplicaFetchResponse()
        ),
    )  # type: ignore[arg-type]  # fmt: skip
    replica_manager.caught_up = True
    return replica_manager


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait for `condition` on the event loop; the timeout only bounds a broken run."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition never became true"
        await asyncio.sleep(0.005)
