"""`strom perf produce|consume|end-to-end`: load tools shaped like Kafka's perf tools.

They measure what an application sees, as Kafka's do: `perf produce` calls the SDK's `send()`
once per record (the asyncio core by default, `--api sync` for the thread-safe facade) and
counts a record only when its acknowledgement arrives; latency (send() to acknowledgement) is
sampled on every 16th record, whose batch-mates share its acknowledgement, because a Python
callback per record would cost as much as the send. `perf consume` counts the records `poll()`
hands to the application; `perf end-to-end` sends at a fixed rate, stamps each record with the
send time and measures send-to-poll latency in the same process (one monotonic clock, no skew).

Output lines follow kafka-producer-perf-test / kafka-consumer-perf-test; `--output json` prints
one JSON object instead (keys are stable: bench/ scripts read them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from strom.client.admin import Admin, NewTopic
from strom.client.consumer import AsyncConsumer, Consumer
from strom.client.errors import StromError
from strom.client.producer import AsyncProducer, Producer
from strom.client.records import TopicPartition
from strom.node.cli import produce_consume
from strom.node.cli.common import client_arguments, client_options, key_values
from strom.v1 import common_pb2

REPORT_INTERVAL_S = 5.0
LATENCY_SAMPLES_MAX = 500_000  # Kafka's perf tool keeps at most this many latency samples
LATENCY_SAMPLE_EVERY = 16


class Throttler:
    """Keeps a loop at `per_second` iterations (≤ 0: unthrottled), as Kafka's
    ThroughputThrottler: sleep only when ahead of schedule, so bursts catch up."""

    def __init__(self, per_second: float, started: float) -> None:
        self.per_second = per_second
        self.started = started

    def wait(self, done: int) -> None:
        if self.per_second <= 0:
            return
        ahead_s = done / self.per_second - (time.perf_counter() - self.started)
        if ahead_s > 0.001:
            time.sleep(ahead_s)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    records: int
    records_per_sec: float
    mb_per_sec: float
    avg_latency_ms: float
    max_latency_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float

    def line(self) -> str:
        return (
            f"{self.records} records sent, {self.records_per_sec:.1f} records/sec "
            f"({self.mb_per_sec:.2f} MB/sec), {self.avg_latency_ms:.2f} ms avg latency, "
            f"{self.max_latency_ms:.2f} ms max latency, {self.p50_ms:.0f} ms 50th, "
            f"{self.p95_ms:.0f} ms 95th, {self.p99_ms:.0f} ms 99th, {self.p999_ms:.0f} ms 99.9th."
        )


class LatencyStats:
    """Acknowledged records (counted as their futures complete) and a sample of their latencies
    (bounded memory for long runs). Fed from the SDK's callback thread and the sending one."""

    def __init__(self, record_size: int) -> None:
        self.record_size = record_size
        self.samples: list[float] = []
        self.count = 0
        self.total_ms = 0.0
        self.max_ms = 0.0
        self.window_count = 0
        self.window_total_ms = 0.0
        self.window_samples = 0
        self.window_max_ms = 0.0
        self.window_started = time.perf_counter()
        self.started = self.window_started
        self.lock = threading.Lock()

    def acked(self, records: int) -> None:
        with self.lock:
            self.count += records
            self.window_count += records

    def record(self, latency_ms: float) -> None:
        """One sampled record's send → acknowledgement (or send → poll) latency."""
        with self.lock:
            self.total_ms += latency_ms
            self.window_total_ms += latency_ms
            self.window_samples += 1
            if latency_ms > self.max_ms:
                self.max_ms = latency_ms
            if latency_ms > self.window_max_ms:
                self.window_max_ms = latency_ms
            if len(self.samples) < LATENCY_SAMPLES_MAX:
                self.samples.append(latency_ms)

    def window_line(self) -> str | None:
        """Kafka's periodic line, then a new window; None if the window is still young."""
        now = time.perf_counter()
        elapsed = now - self.window_started
        if elapsed < REPORT_INTERVAL_S:
            return None
        with self.lock:
            count, total, peak = self.window_count, self.window_total_ms, self.window_max_ms
            samples = self.window_samples
            self.window_count, self.window_total_ms, self.window_max_ms = 0, 0.0, 0.0
            self.window_samples = 0
            self.window_started = now
        rate = count / elapsed
        return (
            f"{count} records sent, {rate:.1f} records/sec "
            f"({rate * self.record_size / 1024 / 1024:.2f} MB/sec), "
            f"{total / max(samples, 1):.1f} ms avg latency, {peak:.1f} ms max latency."
        )

    def summary(self, elapsed_s: float) -> LatencySummary:
        with self.lock:
            ordered = sorted(self.samples)
            rate = self.count / elapsed_s if elapsed_s > 0 else 0.0
            return LatencySummary(
                records=self.count,
                records_per_sec=rate,
                mb_per_sec=rate * self.record_size / 1024 / 1024,
                avg_latency_ms=self.total_ms / max(len(self.samples), 1),
                max_latency_ms=self.max_ms,
                p50_ms=percentile(ordered, 0.5),
                p95_ms=percentile(ordered, 0.95),
                p99_ms=percentile(ordered, 0.99),
                p999_ms=percentile(ordered, 0.999),
            )


class AckCounter:
    """Counts acknowledged records by sweeping the futures of sent records in send order (a
    partition's records complete in order, batches roughly so), and samples the latency of
    every `LATENCY_SAMPLE_EVERY`-th record with a callback. Cheaper than a callback per record,
    which in Python costs as much as the send itself; records of one batch share one
    acknowledgement, so the samples see every batch's latency."""

    def __init__(self, stats: LatencyStats) -> None:
        self.stats = stats
        self.pending: deque[Any] = deque()
        self.errors: list[BaseException] = []

    def sent(self, index: int, future: Any, sent_at: float) -> None:
        self.pending.append(future)
        if index % LATENCY_SAMPLE_EVERY == 0:
            future.add_done_callback(partial(self._sampled, sent_at))

    def _sampled(self, sent_at: float, future: Any) -> None:
        if future.exception() is None:
            self.stats.record((time.perf_counter() - sent_at) * 1000)

    def sweep(self) -> None:
        pending, acked = self.pending, 0
        while pending and pending[0].done():
            error = pending.popleft().exception()
            if error is None:
                acked += 1
            else:
                self.errors.append(error)
        self.stats.acked(acked)


def payload(record_size: int) -> bytes:
    """Random printable bytes, as Kafka's tool sends: compressible only as much as text is."""
    rng = random.Random(42)
    return bytes(rng.randrange(65, 91) for _ in range(record_size))


# ---- produce ------------------------------------------------------------------------------


def run_produce(
    bootstrap: str,
    topic: str,
    num_records: int,
    record_size: int,
    throughput: float,
    options: dict[str, Any],
    progress: Callable[[str], None] | None = None,
    api: str = "async",
) -> LatencySummary:
    """`api`: "async" drives the SDK's asyncio core (AsyncProducer) from one event loop;
    "sync" calls the thread-safe facade (Producer), whose batches cross to a loop thread."""
    value = payload(record_size)
    stats = LatencyStats(record_size)
    acks = AckCounter(stats)

    def every_thousand() -> None:
        acks.sweep()
        if progress is not None:
            line = stats.window_line()
            if line is not None:
                progress(line)

    if api == "sync":
        clock = time.perf_counter
        with Producer(bootstrap, **options) as producer:
            started = stats.started = stats.window_started = clock()
            throttler = Throttler(throughput, started)
            for index in range(num_records):
                acks.sent(index, producer.send(topic, value), clock())
                throttler.wait(index + 1)
                if index % 1000 == 0:
                    every_thousand()
                    if acks.errors:
                        break
            producer.flush()
            elapsed = clock() - started
    else:
        elapsed = asyncio.run(
            _produce_async(bootstrap, topic, num_records, value, throughput, options, stats,
                           acks, every_thousand)
        )  # fmt: skip
    acks.sweep()
    if acks.errors:
        raise acks.errors[0]
    return stats.summary(elapsed)


async def _produce_async(
    bootstrap: str,
    topic: str,
    num_records: int,
    value: bytes,
    throughput: float,
    options: dict[str, Any],
    stats: LatencyStats,
    acks: AckCounter,
    every_thousand: Callable[[], None],
) -> float:
    clock = time.perf_counter
    async with AsyncProducer(bootstrap, **options) as producer:
        started = stats.started = stats.window_started = clock()
        for index in range(num_records):
            acks.sent(index, await producer.send(topic, value), clock())
            if throughput > 0:
                ahead_s = (index + 1) / throughput - (clock() - started)
                if ahead_s > 0.001:
                    await asyncio.sleep(ahead_s)
            if index % 1000 == 0:
                # send() does not wait while the buffer has room: let the sender run.
                await asyncio.sleep(0)
                every_thousand()
                if acks.errors:
                    break
        await producer.flush()
        return clock() - started


# ---- consume ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsumeSummary:
    start_time: str
    end_time: str
    data_consumed_in_mb: float
    mb_sec: float
    data_consumed_in_nmsg: int
    nmsg_sec: float
    rebalance_time_ms: int
    fetch_time_ms: int
    fetch_mb_sec: float
    fetch_nmsg_sec: float

    HEADER = (
        "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, "
        "rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec"
    )

    def line(self) -> str:
        return (
            f"{self.start_time}, {self.end_time}, {self.data_consumed_in_mb:.4f}, "
            f"{self.mb_sec:.4f}, {self.data_consumed_in_nmsg}, {self.nmsg_sec:.4f}, "
            f"{self.rebalance_time_ms}, {self.fetch_time_ms}, {self.fetch_mb_sec:.4f}, "
            f"{self.fetch_nmsg_sec:.4f}"
        )


def _stamp(epoch_s: float) -> str:
    return (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s))
        + f":{int(epoch_s * 1000) % 1000:03d}"
    )


def run_consume(
    bootstrap: str, topic: str, messages: int, group: str | None, timeout_ms: int,
    options: dict[str, Any],
) -> ConsumeSummary:  # fmt: skip
    """Consume `messages` records (or until `timeout_ms` without any). With a group, joining it
    is the rebalance time; without, every partition is assigned from the beginning."""
    started_wall = time.time()
    started = time.perf_counter()
    consumed = 0
    consumed_bytes = 0
    rebalance_s = 0.0
    first_record_at: float | None = None
    consumer = Consumer(bootstrap, group_id=group, auto_offset_reset="earliest", **options)
    try:
        if group is not None:
            consumer.subscribe([topic])
        else:
            consumer.assign(
                [TopicPartition(topic, p) for p in _partitions(bootstrap, topic, options)]
            )
        last_data = time.perf_counter()
        while consumed < messages:
            records = consumer.poll(timeout_ms=500, max_records=100_000)
            now = time.perf_counter()
            if not records:
                if (now - last_data) * 1000 >= timeout_ms:
                    break
                continue
            if first_record_at is None:
                first_record_at = now
                rebalance_s = now - started if group is not None else 0.0
            last_data = now
            for record in records:
                value = record.value
                consumed_bytes += (len(value) if value is not None else 0) + (
                    len(record.key) if record.key is not None else 0
                )
            consumed += len(records)
    finally:
        consumer.close()
    ended = time.perf_counter()
    elapsed = ended - started
    fetch_s = max(ended - (first_record_at or ended), 1e-9)
    mb = consumed_bytes / 1024 / 1024
    return ConsumeSummary(
        start_time=_stamp(started_wall),
        end_time=_stamp(started_wall + elapsed),
        data_consumed_in_mb=mb,
        mb_sec=mb / elapsed,
        data_consumed_in_nmsg=consumed,
        nmsg_sec=consumed / elapsed,
        rebalance_time_ms=int(rebalance_s * 1000),
        fetch_time_ms=int(fetch_s * 1000),
        fetch_mb_sec=mb / fetch_s,
        fetch_nmsg_sec=consumed / fetch_s,
    )


# ---- end to end ---------------------------------------------------------------------------

_SENT_AT = struct.Struct(">d")


def run_end_to_end(
    bootstrap: str,
    topic: str,
    num_records: int,
    record_size: int,
    throughput: float,
    producer_options: dict[str, Any],
    connection_keys: frozenset[str] = frozenset(),
    api: str = "async",
) -> LatencySummary:
    """Send at `throughput` records/s with the send time in each value; a consumer in this
    process measures send → poll latency. The consumer is positioned at the end first, so only
    this run's records count. `api` "async": producer and consumer share one event loop (the
    SDK's asyncio core); "sync": the thread-safe facades, a sending thread and a polling one."""
    if record_size < _SENT_AT.size:
        raise ValueError(f"--record-size must be at least {_SENT_AT.size} bytes")
    filler = payload(record_size - _SENT_AT.size)
    stats = LatencyStats(record_size)
    connection = {k: v for k, v in producer_options.items() if k in connection_keys}
    if api == "async":
        partitions = _partitions(bootstrap, topic, connection)
        elapsed, received = asyncio.run(
            _end_to_end_async(bootstrap, topic, partitions, num_records, filler, throughput,
                              producer_options, connection, stats)
        )  # fmt: skip
        if received < num_records:
            raise PerfError(f"only {received} of {num_records} records arrived within 30 s")
        return stats.summary(elapsed)
    consumer = Consumer(bootstrap, auto_offset_reset="latest", **connection)
    producer = Producer(bootstrap, **producer_options)
    failures: list[BaseException] = []
    try:
        partitions = _partitions(bootstrap, topic, connection)
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        consumer.seek_to_end()
        for p in partitions:  # resolve the end offsets now, not after the first send
            consumer.position(TopicPartition(topic, p))

        def produce() -> None:
            try:
                throttler = Throttler(throughput, time.perf_counter())
                for index in range(num_records):
                    producer.send(topic, _SENT_AT.pack(time.perf_counter()) + filler)
                    throttler.wait(index + 1)
                producer.flush()
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        sender = threading.Thread(target=produce, name="perf-e2e-producer", daemon=True)
        started = time.perf_counter()
        sender.start()
        received = 0
        idle_since = time.perf_counter()
        while received < num_records and not failures:
            records = consumer.poll(timeout_ms=200, max_records=100_000)
            now = time.perf_counter()
            if not records:
                if now - idle_since > 30:
                    break
                continue
            idle_since = now
            received += _polled(stats, records, now)
        elapsed = time.perf_counter() - started
        sender.join()
    finally:
        producer.close()
        consumer.close()
    if failures:
        raise failures[0]
    if received < num_records:
        raise PerfError(f"only {received} of {num_records} records arrived within 30 s")
    return stats.summary(elapsed)


async def _end_to_end_async(
    bootstrap: str,
    topic: str,
    partitions: list[int],
    num_records: int,
    filler: bytes,
    throughput: float,
    producer_options: dict[str, Any],
    connection: dict[str, Any],
    stats: LatencyStats,
) -> tuple[float, int]:
    clock = time.perf_counter
    async with (
        AsyncProducer(bootstrap, **producer_options) as producer,
        AsyncConsumer(bootstrap, auto_offset_reset="latest", **connection) as consumer,
    ):
        assigned = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        await consumer.seek_to_end()
        for tp in assigned:  # resolve the end offsets now, not after the first send
            await consumer.position(tp)

        async def produce() -> None:
            started = clock()
            for index in range(num_records):
                await producer.send(topic, _SENT_AT.pack(clock()) + filler)
                ahead_s = (index + 1) / throughput - (clock() - started)
                if ahead_s > 0.001:
                    await asyncio.sleep(ahead_s)
            await producer.flush()

        started = clock()
        sender = asyncio.create_task(produce())
        received = 0
        idle_since = clock()
        while received < num_records and not (sender.done() and sender.exception()):
            records = await consumer.poll(timeout_ms=200, max_records=100_000)
            now = clock()
            if not records:
                if now - idle_since > 30:
                    break
                continue
            idle_since = now
            received += _polled(stats, records, now)
        elapsed = clock() - started
        await sender  # raises what the sender raised
        return elapsed, received


def _polled(stats: LatencyStats, records: Sequence[Any], now: float) -> int:
    """Count records handed over by a poll at `now` and their send → poll latencies."""
    for record in records:
        (sent,) = _SENT_AT.unpack_from(record.value or b"\0" * 8)
        stats.record((now - sent) * 1000)
    stats.acked(len(records))
    return len(records)


class PerfError(Exception):
    """A perf run that could not complete (printed as an error by the CLI)."""


# ---- the command line ---------------------------------------------------------------------


def _ensure_topic(
    bootstrap: str, topic: str, partitions: int, replication: int, connection: dict[str, Any]
) -> None:
    """Create the topic if it does not exist (a perf run against a fresh cluster)."""
    with Admin(bootstrap, **connection) as admin:
        try:
            admin.create_topics([NewTopic(topic, partitions, replication)])
        except StromError as exc:
            if exc.code != common_pb2.TOPIC_ALREADY_EXISTS:
                raise


def _producer_props(items: Sequence[str] | None) -> dict[str, Any]:
    """`--producer-props` items (key=value, Kafka's names) as SDK options: the console
    producer's parser, so both commands accept and refuse the same properties."""
    return produce_consume.producer_options(key_values(items, "--producer-props"))


def _partitions(bootstrap: str, topic: str, connection: dict[str, Any]) -> list[int]:
    with Admin(bootstrap, **connection) as admin:
        (description,) = admin.describe_topics([topic])
        return sorted(p.partition for p in description.partitions)


def add_commands(sub: Any) -> None:
    perf = sub.add_parser("perf", help="load tests: produce, consume, end-to-end latency")
    perf_sub = perf.add_subparsers(dest="action", required=True)

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        client_arguments(p)
        p.add_argument("--topic", required=True)
        p.add_argument(
            "--create-topic",
            metavar="PARTITIONS:RF",
            help="create the topic first if missing, e.g. 3:3",
        )
        p.add_argument(
            "--rpc",
            choices=("stream", "unary"),
            default="unary",
            help="Produce and Fetch as a call each (the SDK's default), or on one stream per "
            "broker where offered (the SDK's streaming=True)",
        )
        return p

    produce = common(perf_sub.add_parser("produce", help="like kafka-producer-perf-test"))
    produce.add_argument("--num-records", type=int, required=True)
    produce.add_argument("--record-size", type=int, default=100)
    produce.add_argument("--throughput", type=float, default=-1, help="records/s; -1: no limit")
    produce.add_argument("--acks", default="all", choices=("all", "-1", "1", "0"))
    produce.add_argument("--producer-props", nargs="*", metavar="KEY=VALUE")
    produce.add_argument(
        "--api",
        choices=("async", "sync"),
        default="async",
        help="the SDK's asyncio core (AsyncProducer) or its thread-safe facade (Producer)",
    )

    consume = common(perf_sub.add_parser("consume", help="like kafka-consumer-perf-test"))
    consume.add_argument("--messages", type=int, required=True)
    consume.add_argument("--group", help="consume as this group (default: assign partitions)")
    consume.add_argument("--timeout-ms", type=int, default=10_000)

    e2e = common(perf_sub.add_parser("end-to-end", help="produce → consume latency"))
    e2e.add_argument("--num-records", type=int, required=True)
    e2e.add_argument("--record-size", type=int, default=100)
    e2e.add_argument("--throughput", type=float, default=10_000, help="records/s")
    e2e.add_argument("--acks", default="all", choices=("all", "-1", "1", "0"))
    e2e.add_argument("--producer-props", nargs="*", metavar="KEY=VALUE")
    e2e.add_argument(
        "--api",
        choices=("async", "sync"),
        default="async",
        help="producer and consumer on one asyncio loop, or the thread-safe facades",
    )

    for p in (produce, consume, e2e):
        p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    connection = {**client_options(args), "streaming": args.rpc == "stream"}
    if args.create_topic:
        parts, _, rf = args.create_topic.partition(":")
        _ensure_topic(args.bootstrap_server, args.topic, int(parts), int(rf or 1), connection)
    as_json = args.output == "json"
    try:
        if args.action == "consume":
            consumed = run_consume(
                args.bootstrap_server, args.topic, args.messages, args.group, args.timeout_ms,
                connection,
            )  # fmt: skip
            if as_json:
                print(json.dumps(asdict(consumed), sort_keys=True))
            else:
                print(ConsumeSummary.HEADER)
                print(consumed.line())
            return 0
        options = {
            "acks": args.acks, **_producer_props(args.producer_props), **connection
        }  # fmt: skip
        if args.action == "produce":

            def progress(line: str) -> None:
                if not as_json:
                    print(line, flush=True)

            summary = run_produce(
                args.bootstrap_server, args.topic, args.num_records, args.record_size,
                args.throughput, options, progress, args.api,
            )  # fmt: skip
        else:
            summary = run_end_to_end(
                args.bootstrap_server, args.topic, args.num_records, args.record_size,
                args.throughput, options, frozenset(connection), args.api,
            )  # fmt: skip
    except (ValueError, PerfError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except StromError:
        raise
    print(json.dumps(asdict(summary), sort_keys=True) if as_json else summary.line())
    return 0
