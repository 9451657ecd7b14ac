"""A node's metrics in Prometheus' text format, with names modelled on Kafka's JMX exporter.

Two kinds of metric, kept apart on purpose:

- **Event counters** (`MESSAGES_IN`, `BYTES_IN`, `BYTES_OUT`, `ISR_SHRINKS`, `ISR_EXPANDS`) and the
  request-duration histogram are incremented where the event happens, once per batch or per
  request, never per record (DESIGN.md §11): the produce path adds a batch's record count in one
  call.
- **State gauges** (under-replicated partitions, offline partitions, the active controller, Raft
  numbers, log sizes) are *not* updated on every change. `NodeCollector` computes them when
  Prometheus scrapes, reading the node's objects. Scrapes run on the node's event loop (see
  `admin_http`), the only writer of that state, so a scrape sees one consistent moment.

The event metrics live in prometheus_client's default registry (one node per process, and the
process and GC collectors come with it); `NodeCollector` is registered per node by `Node.start`
and unregistered by `Node.stop`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import grpc
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# `*_created` series double the output and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]
NO_RAFT_LEADER = 0  # strom.raft.types.NONE: Raft ids are > 0 there

MESSAGES_IN = Counter(
    "strom_server_brokertopicmetrics_messagesin",
    "Records appended by this broker as partition leader (counted per batch)",
    ["topic"],
)
BYTES_IN = Counter(
    "strom_server_brokertopicmetrics_bytesin",
    "Record-batch bytes appended by this broker as partition leader",
    ["topic"],
)
BYTES_OUT = Counter(
    "strom_server_brokertopicmetrics_bytesout",
    "Record-batch bytes returned to consumer fetches (replication excluded)",
    ["topic"],
)
ISR_SHRINKS = Counter(
    "strom_server_replicamanager_isrshrinks",
    "ISR shrinks of partitions this broker leads, as committed by the controller",
)
ISR_EXPANDS = Counter(
    "strom_server_replicamanager_isrexpands",
    "ISR expansions of partitions this broker leads, as committed by the controller",
)
FETCHER_ERRORS = Counter(
    "strom_server_replicafetcher_errors",
    "Errors of replica fetchers: handling one partition's data (kind=partition; retried, then "
    "the partition is taken offline) or the fetch loop itself (kind=fetcher; it goes on)",
    ["kind"],
)
OFFSETS_RECORDS_SKIPPED = Counter(
    "strom_group_coordinator_offsets_records_skipped",
    "Records of __consumer_offsets the group coordinator could not decode while loading a "
    "partition, passed over so the partition's groups still load",
)
AUTHENTICATION_FAILURES = Counter(
    "strom_authentication_failures",
    "Refused SASL logins: wrong username or password (reason=credentials), or too many "
    "attempts in flight for the user or connection (reason=busy)",
    ["reason"],
)
LOOP_STALLS = Counter(
    "strom_event_loop_stalls",
    "Times the node's event loop did not come round for longer than its stall threshold "
    "(each is logged with where the loop was stuck)",
)
REQUEST_DURATION = Histogram(
    "strom_request_duration_seconds",
    "Time from receiving a client RPC to sending its answer (long-poll waits included)",
    ["rpc"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

# Client-facing services whose RPCs are timed; replication and health are not client RPCs.
TIMED_SERVICES = frozenset({"strom.v1.Broker", "strom.v1.Group", "strom.v1.Admin"})

# Every metric name this module exports (tests check dashboards against it).
COLLECTED_NAMES = (
    "strom_server_replicamanager_underreplicatedpartitions",
    "strom_server_replicamanager_underminisrpartitioncount",
    "strom_server_replicamanager_partitioncount",
    "strom_server_replicamanager_leadercount",
    "strom_server_replicamanager_offlinereplicacount",
    "strom_server_brokerstate_fenced",
    "strom_controller_activecontrollercount",
    "strom_controller_offlinepartitionscount",
    "strom_controller_fencedbrokercount",
    "strom_controller_activebrokercount",
    "strom_raft_current_leader",
    "strom_raft_current_epoch",
    "strom_raft_high_watermark",
    "strom_metadata_last_applied_offset",
    "strom_log_size_bytes",
    "strom_log_segments",
    "strom_log_end_offset",
    "strom_consumergroup_lag",
)
EVENT_NAMES = (
    "strom_server_brokertopicmetrics_messagesin_total",
    "strom_server_brokertopicmetrics_bytesin_total",
    "strom_server_brokertopicmetrics_bytesout_total",
    "strom_server_replicamanager_isrshrinks_total",
    "strom_server_replicamanager_isrexpands_total",
    "strom_server_replicafetcher_errors_total",
    "strom_group_coordinator_offsets_records_skipped_total",
    "strom_event_loop_stalls_total",
    "strom_authentication_failures_total",
    "strom_request_duration_seconds",
)


def record_produce(topic: str, record_count: int, size_bytes: int) -> None:
    """One appended batch (or request's worth of batches) of `topic`: one call, not per record."""
    if record_count > 0:
        MESSAGES_IN.labels(topic).inc(record_count)
        BYTES_IN.labels(topic).inc(size_bytes)


def record_fetch(topic: str, size_bytes: int) -> None:
    if size_bytes > 0:
        BYTES_OUT.labels(topic).inc(size_bytes)


def record_authentication_failure(reason: str) -> None:
    AUTHENTICATION_FAILURES.labels(reason).inc()


def record_loop_stall() -> None:
    """Called from the watchdog's thread; prometheus_client counters are thread-safe."""
    LOOP_STALLS.inc()


def record_isr_change(old_isr: Iterable[int], new_isr: Iterable[int]) -> None:
    """A leader's ISR went from `old_isr` to `new_isr` (committed): count a shrink and/or an
    expansion, as Kafka's IsrShrinksPerSec / IsrExpandsPerSec do."""
    old, new = set(old_isr), set(new_isr)
    if old - new:
        ISR_SHRINKS.inc()
    if new - old:
        ISR_EXPANDS.inc()


class RequestTimer(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Observes `strom_request_duration_seconds{rpc}` for unary client RPCs."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        service, _, rpc = str(details.method).lstrip("/").rpartition("/")
        if handler is None or handler.unary_unary is None or service not in TIMED_SERVICES:
            return handler
        inner = handler.unary_unary
        observe = REQUEST_DURATION.labels(rpc).observe

        async def timed(request: Any, context: Any) -> Any:
            start = time.perf_counter()
            try:
                return await inner(request, context)
            finally:
                observe(time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class NodeCollector(Collector):
    """Gauges derived at scrape time from a node's objects (`strom.node.server.Node`, or any
    object with the same attributes: `manager`, `lifecycle`, `controller_service`, `driver`,
    `metadata`, each possibly None when the node lacks the role)."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._broker()
        yield from self._controller()
        yield from self._raft()
        yield from self._groups()

    def _groups(self) -> Iterator[GaugeMetricFamily]:
        """Consumer lag of the groups this broker coordinates, from the coordinator's cache
        (refreshed in the background, so a scrape never waits on another broker)."""
        coordinator = getattr(self.node, "coordinator", None)
        if coordinator is None:
            return
        lag = GaugeMetricFamily(
            "strom_consumergroup_lag",
            "log end offset minus committed offset, per group partition",
            labels=["group", "topic", "partition"],
        )
        for (group, topic, partition), value in sorted(coordinator.lag.items()):
            lag.add_metric([group, topic, str(partition)], value)
        yield lag

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # names vary with the roles; registering must not call collect()

    def _broker(self) -> Iterator[GaugeMetricFamily]:
        manager = self.node.manager
        if manager is None:
            return
        lifecycle = self.node.lifecycle
        under_replicated = under_min_isr = leaders = 0
        size = GaugeMetricFamily(
            "strom_log_size_bytes", "Bytes of a partition's log", labels=["topic", "partition"]
        )
        segments = GaugeMetricFamily(
            "strom_log_segments", "Segments of a partition's log", labels=["topic", "partition"]
        )
        end = GaugeMetricFamily(
            "strom_log_end_offset", "Log end offset of a replica", labels=["topic", "partition"]
        )
        min_isr_of: dict[str, int] = {}
        for partition in list(manager.partitions.values()):
            labels = [partition.topic, str(partition.partition)]
            log = partition.log
            size.add_metric(labels, log.size_in_bytes)
            segments.add_metric(labels, len(log.segment_base_offsets))
            end.add_metric(labels, log.log_end_offset)
            if not partition.is_leader:
                continue
            leaders += 1
            if len(partition.isr) < len(partition.replicas):
                under_replicated += 1
            if partition.topic not in min_isr_of:
                min_isr_of[partition.topic] = manager.min_insync_replicas(partition.topic)
            if len(partition.isr) < min_isr_of[partition.topic]:
                under_min_isr += 1
        yield _gauge(
            "strom_server_replicamanager_underreplicatedpartitions",
            "Partitions this broker leads whose ISR is smaller than their replica set",
            under_replicated,
        )
        yield _gauge(
            "strom_server_replicamanager_underminisrpartitioncount",
            "Partitions this broker leads whose ISR is below min.insync.replicas",
            under_min_isr,
        )
        yield _gauge(
            "strom_server_replicamanager_partitioncount",
            "Replicas hosted by this broker",
            len(manager.partitions),
        )
        yield _gauge(
            "strom_server_replicamanager_leadercount", "Partitions this broker leads", leaders
        )
        yield _gauge(
            "strom_server_replicamanager_offlinereplicacount",
            "Replicas offline on this broker: their log failed or their config cannot be applied "
            "(see the node's log for each; reported to the controller, which moves leadership)",
            len(manager.offline_replicas()),
        )
        fenced = lifecycle is None or lifecycle.fenced
        yield _gauge("strom_server_brokerstate_fenced", "1 while this broker is fenced", fenced)
        yield size
        yield segments
        yield end

    def _controller(self) -> Iterator[GaugeMetricFamily]:
        service = self.node.controller_service
        active = service is not None and bool(service.active)
        yield _gauge(
            "strom_controller_activecontrollercount",
            "1 on the active controller, 0 elsewhere (the sum over the cluster must be 1)",
            active,
        )
        offline = fenced = active_brokers = 0
        metadata = self.node.metadata
        if active and metadata is not None:
            # Like Kafka, only the active controller reports cluster-wide counts, so sums over
            # the nodes are right.
            image = metadata.image
            for topic in image.topics.values():
                offline += sum(1 for info in topic.partitions.values() if info.leader < 0)
            fenced = sum(1 for b in image.brokers.values() if b.fenced)
            active_brokers = len(image.brokers) - fenced
        yield _gauge(
            "strom_controller_offlinepartitionscount",
            "Partitions without a leader (reported by the active controller)",
            offline,
        )
        yield _gauge(
            "strom_controller_fencedbrokercount",
            "Registered brokers that are fenced (reported by the active controller)",
            fenced,
        )
        yield _gauge(
            "strom_controller_activebrokercount",
            "Registered brokers that are unfenced (reported by the active controller)",
            active_brokers,
        )

    def _raft(self) -> Iterator[GaugeMetricFamily]:
        metadata = self.node.metadata
        if metadata is not None:
            yield _gauge(
                "strom_metadata_last_applied_offset",
                "Raft index of the last metadata record applied to this node's image",
                metadata.image.last_index,
            )
        driver = self.node.driver
        if driver is None:
            return
        leader = driver.leader_id
        yield _gauge(
            "strom_raft_current_leader",
            "Node id of the Raft leader of the metadata quorum as this voter knows it; -1: none",
            leader if leader != NO_RAFT_LEADER else -1,
        )
        yield _gauge("strom_raft_current_epoch", "Raft term this voter is in", driver.term)
        yield _gauge(
            "strom_raft_high_watermark",
            "Raft commit index of the metadata log as this voter knows it",
            driver.committed_index,
        )


def exposition(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The registry in Prometheus' text format (what GET /metrics answers)."""
    return generate_latest(registry)
