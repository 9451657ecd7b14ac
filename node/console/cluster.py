"""The console's view of the cluster, built from the SDK only (`strom.client.aio`).

`ClusterAccess` holds one identity's clients: with SASL, each signed-in person has their own
(so the cluster applies their ACLs and nothing else); without, one is shared. The functions below
turn SDK answers into plain view objects for the templates. A part of a page the person may not
see (the cluster's ACLs refuse it) becomes a note on that part, never a failed page.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from strom.client.admin import AsyncAdmin, GroupDescription, NewTopic, TopicDescription
from strom.client.aio import AsyncConsumer, AsyncProducer
from strom.client.errors import AuthorizationFailedError, StromError
from strom.client.log_dirs import LogDir
from strom.client.offset_reset import ResetRequest, plan_offsets_reset

REQUEST_TIMEOUT_MS = 10_000
EARLIEST, LATEST = -2, -1


class Refused(Exception):
    """The cluster's state forbids the action (not the person's input); the message says why."""


class ClusterAccess:
    """One identity's SDK clients: an admin (opened at once) and a producer (on first use).
    Consumers are opened per browse or tail and closed by their user."""

    def __init__(self, bootstrap: str, options: Mapping[str, Any]) -> None:
        self.bootstrap = bootstrap
        self.options = {"request_timeout_ms": REQUEST_TIMEOUT_MS, **options}
        self.admin = AsyncAdmin(bootstrap, client_id="strom-console", **self.options)
        self._producer: AsyncProducer | None = None
        self._producer_lock = asyncio.Lock()

    async def producer(self) -> AsyncProducer:
        async with self._producer_lock:
            if self._producer is None:
                self._producer = AsyncProducer(
                    self.bootstrap,
                    acks="all",
                    linger_ms=0,
                    client_id="strom-console",
                    delivery_timeout_ms=REQUEST_TIMEOUT_MS,
                    **self.options,
                )
            return self._producer

    def consumer(self) -> AsyncConsumer:
        return AsyncConsumer(
            self.bootstrap,
            auto_offset_reset="latest",
            client_id="strom-console",
            fetch_max_wait_ms=250,
            **self.options,
        )

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.close()
        await self.admin.close()


# ---- overview ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerView:
    node_id: int
    address: str
    rack: str
    state: str
    replicas: int
    leaders: int
    disk_bytes: int | None
    active_controller: bool


@dataclass(frozen=True, slots=True)
class VoterView:
    replica_id: int
    log_end_offset: int
    lag: int
    last_fetch_age_ms: int | None
    is_leader: bool


@dataclass(frozen=True, slots=True)
class QuorumView:
    leader_id: int
    leader_epoch: int
    high_watermark: int
    voters: tuple[VoterView, ...]
    observers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Overview:
    cluster_id: str
    controller_id: int
    brokers: tuple[BrokerView, ...]
    quorum: QuorumView | None
    topics: int
    partitions: int
    under_replicated: int
    offline: int
    notes: tuple[str, ...] = ()


def broker_state(fenced: bool, in_controlled_shutdown: bool) -> str:
    if in_controlled_shutdown:
        return "shutting down"
    return "fenced" if fenced else "running"


async def overview(access: ClusterAccess) -> Overview:
    admin = access.admin
    description = await admin.describe_cluster()
    topics = await admin.describe_topics(None, include_configs=False)
    notes: list[str] = []
    quorum: QuorumView | None = None
    try:
        quorum = quorum_view(await admin.describe_quorum(), int(time.time() * 1000))
    except AuthorizationFailedError:
        notes.append("The quorum is hidden: describing it needs DESCRIBE on the cluster.")
    disk = await disk_by_broker(admin, notes)
    replicas: dict[int, int] = {}
    leaders: dict[int, int] = {}
    alive = {b.node_id for b in description.brokers if not b.fenced}
    partitions = under_replicated = offline = 0
    for topic in topics:
        for p in topic.partitions:
            partitions += 1
            for r in p.replicas:
                replicas[r] = replicas.get(r, 0) + 1
            if p.leader >= 0:
                leaders[p.leader] = leaders.get(p.leader, 0) + 1
            if p.leader < 0 or p.leader not in alive:
                offline += 1
            elif len(p.isr) < len(p.replicas):
                under_replicated += 1
    brokers = tuple(
        BrokerView(
            b.node_id,
            f"{b.host}:{b.port}",
            b.rack,
            broker_state(b.fenced, b.in_controlled_shutdown),
            replicas.get(b.node_id, 0),
            leaders.get(b.node_id, 0),
            disk.get(b.node_id),
            b.node_id == description.controller_id,
        )
        for b in sorted(description.brokers, key=lambda b: b.node_id)
    )
    return Overview(
        description.cluster_id,
        description.controller_id,
        brokers,
        quorum,
        len(topics),
        partitions,
        under_replicated,
        offline,
        tuple(notes),
    )


def quorum_view(quorum: Any, now_ms: int) -> QuorumView:
    leader_end = max(
        (v.log_end_offset for v in quorum.voters if v.replica_id == quorum.leader_id), default=0
    )
    voters = tuple(
        VoterView(
            v.replica_id,
            v.log_end_offset,
            max(0, leader_end - v.log_end_offset),
            now_ms - v.last_fetch_timestamp_ms if v.last_fetch_timestamp_ms > 0 else None,
            v.replica_id == quorum.leader_id,
        )
        for v in sorted(quorum.voters, key=lambda v: v.replica_id)
    )
    return QuorumView(
        quorum.leader_id,
        quorum.leader_epoch,
        quorum.high_watermark,
        voters,
        tuple(sorted(o.replica_id for o in quorum.observers)),
    )


async def log_dirs(admin: AsyncAdmin, notes: list[str], hidden: str) -> list[LogDir] | None:
    """Every broker's log directories (DescribeLogDirs), or None with a note saying why not."""
    try:
        return await admin.describe_log_dirs()
    except AuthorizationFailedError:
        notes.append(f"{hidden} hidden: describing log directories needs DESCRIBE on the cluster.")
    except StromError as exc:
        notes.append(f"{hidden} unavailable: a broker did not describe its logs ({exc}).")
    return None


async def disk_by_broker(admin: AsyncAdmin, notes: list[str]) -> dict[int, int]:
    """Bytes of partition logs per broker."""
    out: dict[int, int] = {}
    for d in await log_dirs(admin, notes, "Disk use is") or []:
        out[d.broker_id] = out.get(d.broker_id, 0) + sum(p.size_bytes for p in d.partitions)
    return out


# ---- topics ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicRow:
    name: str
    internal: bool
    partitions: int
    replication_factor: int
    under_replicated: int
    size_bytes: int | None


async def topic_rows(access: ClusterAccess, notes: list[str]) -> list[TopicRow]:
    topics = await access.admin.describe_topics(None, include_configs=False)
    sizes = await leader_sizes(access.admin, notes)
    rows = []
    for t in topics:
        size = None
        if sizes is not None:
            size = sum(sizes.get((t.name, p.partition), 0) for p in t.partitions)
        rows.append(
            TopicRow(
                t.name,
                t.is_internal,
                len(t.partitions),
                t.replication_factor,
                sum(1 for p in t.partitions if len(p.isr) < len(p.replicas)),
                size,
            )
        )
    return sorted(rows, key=lambda r: (r.internal, r.name))


async def leader_sizes(admin: AsyncAdmin, notes: list[str]) -> dict[tuple[str, int], int] | None:
    """Bytes of each partition's log on its leader (one copy of the data), or None."""
    dirs = await log_dirs(admin, notes, "Sizes are")
    if dirs is None:
        return None
    return {(p.topic, p.partition): p.size_bytes for d in dirs for p in d.partitions if p.leader}


@dataclass(frozen=True, slots=True)
class PartitionRow:
    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    log_start_offset: int
    high_watermark: int
    log_end_offset: int | None

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)


@dataclass(frozen=True, slots=True)
class ConfigRow:
    name: str
    value: str
    overridden: bool


@dataclass(frozen=True, slots=True)
class TopicDetail:
    description: TopicDescription
    partitions: tuple[PartitionRow, ...]
    configs: tuple[ConfigRow, ...]
    notes: tuple[str, ...] = ()


async def topic_detail(access: ClusterAccess, name: str) -> TopicDetail:
    admin = access.admin
    (description,) = await admin.describe_topics([name], include_configs=False)
    tps = [(name, p.partition) for p in description.partitions]
    notes: list[str] = []
    earliest, latest = await asyncio.gather(
        admin.list_offsets(tps, EARLIEST), admin.list_offsets(tps, LATEST)
    )
    ends = {
        (p.topic, p.partition): p.log_end_offset
        for d in await log_dirs(admin, notes, "Log end offsets are") or []
        for p in d.partitions
        if p.leader and p.topic == name
    }
    configs: tuple[ConfigRow, ...] = ()
    try:
        every = (await admin.describe_topic_configs([name])).get(name, {})
        overrides = (await admin.describe_topic_configs([name], overrides_only=True)).get(name, {})
        configs = tuple(ConfigRow(k, v, k in overrides) for k, v in sorted(every.items()))
    except AuthorizationFailedError:
        notes.append("Configs are hidden: they need DESCRIBE_CONFIGS on the topic.")
    partitions = tuple(
        PartitionRow(
            p.partition,
            p.leader,
            p.replicas,
            p.isr,
            earliest[(name, p.partition)],
            latest[(name, p.partition)],
            ends.get((name, p.partition)),
        )
        for p in description.partitions
    )
    return TopicDetail(description, partitions, configs, tuple(notes))


async def create_topic(
    access: ClusterAccess,
    name: str,
    partitions: int,
    replication_factor: int,
    configs: Mapping[str, str],
) -> None:
    await access.admin.create_topics([NewTopic(name, partitions, replication_factor, configs)])


# ---- consumer groups ---------------------------------------------------------------------------

LAG_SAMPLES_MAX = 120


@dataclass(frozen=True, slots=True)
class OffsetRow:
    topic: str
    partition: int
    committed: int  # -1: none
    end: int
    member_id: str
    client_id: str
    host: str

    @property
    def lag(self) -> int | None:
        return self.end - self.committed if self.committed >= 0 and self.end >= 0 else None


@dataclass(frozen=True, slots=True)
class GroupDetail:
    group: GroupDescription
    offsets: tuple[OffsetRow, ...]

    @property
    def total_lag(self) -> int:
        return sum(r.lag or 0 for r in self.offsets)

    @property
    def topics(self) -> list[str]:
        return sorted({r.topic for r in self.offsets})


async def group_detail(access: ClusterAccess, group_id: str) -> GroupDetail:
    """What `strom groups describe` shows: committed offset, log end offset (the high
    watermark, as Kafka's tool reports it) and lag per partition, with the owning member."""
    admin = access.admin
    group = await admin.describe_group(group_id)
    committed = await admin.list_group_offsets(group_id)
    owner = {tp: m for m in group.members for tp in m.assignment}
    partitions = sorted(set(committed) | set(owner))
    ends = await admin.list_offsets(partitions, LATEST) if partitions else {}
    rows = []
    for tp in partitions:
        member = owner.get(tp)
        rows.append(
            OffsetRow(
                tp[0],
                tp[1],
                committed.get(tp, -1),
                ends.get(tp, -1),
                member.member_id if member else "",
                member.client_id if member else "",
                member.host if member else "",
            )
        )
    return GroupDetail(group, tuple(rows))


@dataclass
class LagHistory:
    """Total lag of one group over time, as this session saw it (bounded)."""

    samples: list[tuple[int, int]] = field(default_factory=list)  # (time ms, total lag)

    def add(self, now_ms: int, total_lag: int) -> None:
        self.samples.append((now_ms, total_lag))
        del self.samples[:-LAG_SAMPLES_MAX]


def lag_chart_points(samples: Sequence[tuple[int, int]], width: int, height: int) -> str:
    """An SVG polyline's `points` for the samples, time left to right, lag bottom to top."""
    if not samples:
        return ""
    t0, t1 = samples[0][0], samples[-1][0]
    top = max(max(lag for _, lag in samples), 1)
    span = max(t1 - t0, 1)
    points = []
    for t, lag in samples:
        x = 0.0 if len(samples) == 1 else (t - t0) / span * width
        y = height - lag / top * height
        points.append(f"{x:.1f},{y:.1f}")
    return " ".join(points)


@dataclass(frozen=True, slots=True)
class ResetPlan:
    group_id: str
    rows: tuple[tuple[str, int, int, int], ...]  # topic, partition, committed (-1), new

    def encode(self) -> str:
        """The plan as a form field, so the confirmed plan is exactly the one shown."""
        return ";".join(f"{t}:{p}:{new}" for t, p, _, new in self.rows)


def decode_plan(text: str) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for item in filter(None, text.split(";")):
        topic, _, rest = item.rpartition(":")
        topic, _, partition = topic.rpartition(":")
        if not topic or not partition.isdigit() or not rest.lstrip("-").isdigit():
            raise ValueError(f"bad plan item {item!r}")
        out[(topic, int(partition))] = int(rest)
    return out


async def plan_reset(
    access: ClusterAccess, group_id: str, topic: str | None, request: ResetRequest
) -> ResetPlan:
    """A dry run: where each partition's committed offset would go. Changes nothing."""
    admin = access.admin
    committed = await admin.list_group_offsets(group_id)
    topics = [topic] if topic else sorted({t for t, _ in committed})
    partitions: list[tuple[str, int]] = []
    for description in await admin.describe_topics(topics, include_configs=False) if topics else []:
        partitions += [(description.name, p.partition) for p in description.partitions]
    if not partitions:
        return ResetPlan(group_id, ())
    earliest, latest = await asyncio.gather(
        admin.list_offsets(partitions, EARLIEST), admin.list_offsets(partitions, LATEST)
    )
    by_time = None
    if request.strategy == "to-datetime":
        assert request.value is not None
        by_time = await admin.list_offsets(partitions, request.value)
    new = plan_offsets_reset(request, partitions, committed, earliest, latest, by_time)
    rows = tuple((t, p, committed.get((t, p), -1), new[(t, p)]) for t, p in sorted(new))
    return ResetPlan(group_id, rows)


async def execute_reset(
    access: ClusterAccess, group_id: str, offsets: dict[tuple[str, int], int]
) -> None:
    group = await access.admin.describe_group(group_id)
    if group.members:
        raise Refused(
            f"group {group_id!r} has {len(group.members)} active member(s): offsets can be "
            "reset only while the group is empty; stop its consumers first",
        )
    await access.admin.alter_group_offsets(group_id, offsets)
