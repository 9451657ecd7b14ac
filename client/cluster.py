"""The client's view of the cluster: one gRPC channel per broker, cached metadata, leader routing.

`ClusterClient` is the asyncio core every SDK class shares. It bootstraps from any of several
addresses, caches which broker leads each partition, and refreshes that on demand (the SDK calls
`invalidate` on NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION and connection loss). Every
call has a deadline; transport failures become `RetriableError(NETWORK_EXCEPTION)` and request
refusals become `FatalError(INVALID_REQUEST)` with the server's message.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

import grpc

from strom.v1 import admin_pb2_grpc, broker_pb2, broker_pb2_grpc, common_pb2

from .broker_stream import BrokerStream
from .errors import FatalError, KafkaTimeoutError, RetriableError, StromError, error_from_code
from .tls import SecurityOptions, connection_hint, open_channel

T = TypeVar("T")

DEFAULT_BOOTSTRAP = "localhost:9092"
MESSAGE_BYTES_MAX = 128 * 1024 * 1024  # gRPC message cap: above fetch.max.bytes' 55 MiB default


def channel_options(message_bytes_max: int = MESSAGE_BYTES_MAX) -> list[tuple[str, int]]:
    """gRPC options both sides must agree on: the 4 MiB default is too small for Kafka sizes."""
    return [
        ("grpc.max_send_message_length", message_bytes_max),
        ("grpc.max_receive_message_length", message_bytes_max),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.enable_retries", 0),
        # gRPC's reconnect backoff grows to 120 s by default: after a partition heals, a broker
        # could wait minutes to reach the controller again. Kafka's reconnect.backoff.max.ms.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1_000),
    ]


def parse_bootstrap(servers: str | Sequence[str]) -> list[str]:
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    addresses = [s.strip() for s in items if s.strip()]
    if not addresses:
        raise FatalError(common_pb2.INVALID_REQUEST, "bootstrap_servers is empty")
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise FatalError(
                common_pb2.INVALID_REQUEST, f"bootstrap server {address!r} is not host:port"
            )
    return addresses


def grpc_error(exc: grpc.aio.AioRpcError, address: str, hint: str = "") -> StromError:
    code = exc.code()
    detail = (exc.details() or code.name) + hint
    if code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ):
        return RetriableError(common_pb2.NETWORK_EXCEPTION, f"{address}: {detail}")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return error_from_code(common_pb2.SASL_AUTHENTICATION_FAILED, f"{address}: {detail}")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return error_from_code(common_pb2.CLUSTER_AUTHORIZATION_FAILED, f"{address}: {detail}")
    return FatalError(common_pb2.INVALID_REQUEST, f"{address}: {detail}")


@dataclass(frozen=True, slots=True)
class PartitionMeta:
    partition: int
    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    error_code: int = common_pb2.NONE
    # On a broker that is down, or offline there (its log failed): Kafka's offline replicas.
    offline_replicas: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TopicMeta:
    name: str
    topic_id: bytes
    partitions: Mapping[int, PartitionMeta]
    is_internal: bool = False


@dataclass(frozen=True, slots=True)
class ClusterMeta:
    cluster_id: str = ""
    controller_id: int = -1
    brokers: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))
    topics: Mapping[str, TopicMeta] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with jitter, bounded by `max_ms`."""

    initial_ms: int = 100
    max_ms: int = 1_000
    attempt: int = 0

    def next_delay_s(self) -> float:
        delay = min(self.max_ms, self.initial_ms << min(self.attempt, 20))
        self.attempt += 1
        return delay * random.uniform(0.8, 1.2) / 1000


class ClusterClient:
    """Channels, metadata and routing shared by Producer, Consumer and Admin."""

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str] = DEFAULT_BOOTSTRAP,
        *,
        client_id: str = "strom-python",
        request_timeout_ms: int = 30_000,
        retry_backoff_ms: int = 100,
        retry_backoff_max_ms: int = 1_000,
        bootstrap_timeout_ms: int | None = None,
        streaming: bool = False,
        **security_options: Any,
    ) -> None:
        """`security_options`: the fields of `SecurityOptions` (security_protocol, ssl_cafile,
        ssl_certfile, ssl_keyfile, sasl_mechanism, sasl_username, sasl_password), as
        kafka-python names them. `bootstrap_timeout_ms`: until some node has answered, give up
        after this long instead of the request timeout (command-line tools: a wrong or dead
        bootstrap address is reported in seconds, naming it). `streaming`: send Produce and
        Fetch on one bidirectional stream per broker (client/broker_stream.py) where the broker
        offers it; off by default, since it measured no faster than a unary call per request
        (bench/RESULTS.md, "Streaming RPCs")."""
        self.security = SecurityOptions.from_options(security_options)
        self.bootstrap = parse_bootstrap(bootstrap_servers)
        self.client_id = client_id
        self.request_timeout_s = request_timeout_ms / 1000
        self.retry_backoff_ms = retry_backoff_ms
        self.retry_backoff_max_ms = retry_backoff_max_ms
        self.bootstrap_timeout_s = (
            None if bootstrap_timeout_ms is None else bootstrap_timeout_ms / 1000
        )
        self.answered = False  # some node has answered a call
        self.meta = ClusterMeta()
        # Topics the last metadata answers refused (TOPIC_AUTHORIZATION_FAILED): name -> message.
        self.unauthorized_topics: dict[str, str] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.streaming = streaming
        self._produce_streams: dict[
            str, BrokerStream[broker_pb2.ProduceRequest, broker_pb2.ProduceResponse]
        ] = {}
        self._fetch_streams: dict[
            str, BrokerStream[broker_pb2.FetchRequest, broker_pb2.FetchResponse]
        ] = {}
        self._refresh_lock = asyncio.Lock()

    # ---- channels ----------------------------------------------------------------------

    def channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = open_channel(address, self.security, channel_options())
            self._channels[address] = channel
        return channel

    def broker_stub(self, address: str) -> broker_pb2_grpc.BrokerStub:
        return broker_pb2_grpc.BrokerStub(self.channel(address))

    def produce_call(
        self, address: str
    ) -> Callable[[broker_pb2.ProduceRequest], Awaitable[broker_pb2.ProduceResponse]]:
        """Produce to `address`: on the broker's stream, or unary (see `streaming`)."""
        stub = self.broker_stub(address)
        unary: Callable[[broker_pb2.ProduceRequest], Awaitable[broker_pb2.ProduceResponse]]
        unary = stub.Produce
        if not self.streaming:
            return unary
        stream = self._produce_streams.get(address)
        if stream is None:
            stream = self._produce_streams[address] = BrokerStream(
                stub.ProduceStream, broker_pb2.ProduceStreamRequest, unary
            )
        return stream.call

    def fetch_call(
        self, address: str
    ) -> Callable[[broker_pb2.FetchRequest], Awaitable[broker_pb2.FetchResponse]]:
        """Fetch from `address`: on the broker's stream, or unary (see `streaming`)."""
        stub = self.broker_stub(address)
        unary: Callable[[broker_pb2.FetchRequest], Awaitable[broker_pb2.FetchResponse]]
        unary = stub.Fetch
        if not self.streaming:
            return unary
        stream = self._fetch_streams.get(address)
        if stream is None:
            stream = self._fetch_streams[address] = BrokerStream(
                stub.FetchStream, broker_pb2.FetchStreamRequest, unary
            )
        return stream.call

    def admin_stub(self, address: str) -> admin_pb2_grpc.AdminStub:
        return admin_pb2_grpc.AdminStub(self.channel(address))

    def address_of(self, node_id: int) -> str | None:
        return self.meta.brokers.get(node_id)

    def known_addresses(self) -> list[str]:
        """Brokers from metadata first (they are current), then the bootstrap list."""
        return list(dict.fromkeys([*self.meta.brokers.values(), *self.bootstrap]))

    async def close(self) -> None:
        streams: list[BrokerStream[Any, Any]] = [
            *self._produce_streams.values(),
            *self._fetch_streams.values(),
        ]
        self._produce_streams, self._fetch_streams = {}, {}
        await asyncio.gather(*(s.close() for s in streams), return_exceptions=True)
        channels, self._channels = self._channels, {}
        await asyncio.gather(*(c.close() for c in channels.values()), return_exceptions=True)

    # ---- calls -------------------------------------------------------------------------

    async def call(
        self, address: str, fn: Callable[[Any], Awaitable[T]], request: Any, timeout_s: float
    ) -> T:
        """One RPC with a deadline; transport errors become typed StromErrors.

        The deadline is `asyncio.timeout`, not `asyncio.wait_for`: on Python 3.11 `wait_for`
        returns the answer and drops a cancellation that arrives in the same loop turn as it,
        and a task that lost its cancel that way ran on for ever (a group's heartbeat task, so
        a consumer's close() never returned: the demo hung now and then)."""
        try:
            async with asyncio.timeout(timeout_s):
                answer = await fn(request)
            self.answered = True
            return answer
        except grpc.aio.AioRpcError as exc:
            hint = ""
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                hint = connection_hint(self.security, exc.details() or "")
            raise grpc_error(exc, address, hint) from exc
        except TimeoutError as exc:
            raise RetriableError(
                common_pb2.REQUEST_TIMED_OUT, f"{address}: no answer within {timeout_s:.1f} s"
            ) from exc

    async def call_any(
        self,
        pick: Callable[[str], Callable[[Any], Awaitable[T]]],
        request: Any,
        timeout_s: float | None = None,
    ) -> T:
        """Call any reachable node (metadata and admin requests), trying each in turn until the
        deadline; raises the last error with every address tried in its message."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + (timeout_s or self.request_timeout_s)
        backoff = Backoff(self.retry_backoff_ms, self.retry_backoff_max_ms)
        errors: dict[str, str] = {}
        unreachable: set[str] = set()  # addresses whose last try could not connect at all
        while True:
            for address in self.known_addresses():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    return await self.call(address, pick(address), request, remaining)
                except RetriableError as exc:
                    errors[address] = exc.message or exc.name
                    if exc.code == common_pb2.NETWORK_EXCEPTION:
                        unreachable.add(address)
                    else:
                        unreachable.discard(address)
            tried = "; ".join(f"{a}: {e}" for a, e in errors.items()) or "none reachable"
            if (
                self.bootstrap_timeout_s is not None
                and not self.answered
                and loop.time() - started >= self.bootstrap_timeout_s
                and unreachable >= set(self.known_addresses())
            ):
                raise RetriableError(
                    common_pb2.NETWORK_EXCEPTION,
                    f"cannot reach the cluster: no bootstrap server could be connected to for "
                    f"{self.bootstrap_timeout_s:.1f} s (tried {tried})",
                )
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise KafkaTimeoutError(
                    f"no broker answered within {timeout_s or self.request_timeout_s:.1f} s "
                    f"(tried {tried})"
                )
            await asyncio.sleep(min(backoff.next_delay_s(), remaining))

    # ---- metadata ----------------------------------------------------------------------

    async def refresh_metadata(
        self,
        topics: Sequence[str] | None = None,
        allow_auto_topic_creation: bool = False,
        timeout_s: float | None = None,
    ) -> ClusterMeta:
        """Fetch metadata for `topics` (None: all) and merge it into the cache."""
        request = broker_pb2.MetadataRequest(
            topics=list(topics or []),
            all_topics=topics is None,
            allow_auto_topic_creation=allow_auto_topic_creation,
        )
        async with self._refresh_lock:
            response = await self.call_any(
                lambda a: self.broker_stub(a).Metadata, request, timeout_s
            )
            self.meta = self._merge(response, replace_all=topics is None)
        return self.meta

    def _merge(self, response: broker_pb2.MetadataResponse, replace_all: bool) -> ClusterMeta:
        topics = {} if replace_all else dict(self.meta.topics)
        for t in response.topics:
            if t.error_code == common_pb2.TOPIC_AUTHORIZATION_FAILED:
                self.unauthorized_topics[t.name] = t.error_message
            else:
                self.unauthorized_topics.pop(t.name, None)
            if t.error_code != common_pb2.NONE:
                topics.pop(t.name, None)
                continue
            topics[t.name] = TopicMeta(
                name=t.name,
                topic_id=t.topic_id,
                is_internal=t.is_internal,
                partitions=MappingProxyType(
                    {
                        p.partition: PartitionMeta(
                            p.partition,
                            p.leader_id,
                            p.leader_epoch,
                            tuple(p.replicas),
                            tuple(p.isr),
                            p.error_code,
                            tuple(p.offline_replicas),
                        )
                        for p in t.partitions
                    }
                ),
            )
        return ClusterMeta(
            cluster_id=response.cluster_id,
            controller_id=response.controller_id,
            brokers=MappingProxyType({b.node_id: f"{b.host}:{b.port}" for b in response.brokers}),
            topics=MappingProxyType(topics),
        )

    def invalidate(self, topic: str) -> None:
        """Forget what we know of `topic`, so the next lookup refreshes it."""
        if topic in self.meta.topics:
            topics = dict(self.meta.topics)
            del topics[topic]
            self.meta = ClusterMeta(
                self.meta.cluster_id,
                self.meta.controller_id,
                self.meta.brokers,
                MappingProxyType(topics),
            )

    async def topic(
        self, name: str, allow_auto_topic_creation: bool = False, timeout_s: float | None = None
    ) -> TopicMeta:
        """Metadata of one topic, refreshed if unknown; raises UNKNOWN_TOPIC_OR_PARTITION, or
        TOPIC_AUTHORIZATION_FAILED (fatal) when the caller may not describe it."""
        meta = self.meta.topics.get(name)
        if meta is None:
            await self.refresh_metadata([name], allow_auto_topic_creation, timeout_s)
            meta = self.meta.topics.get(name)
        if meta is None and name in self.unauthorized_topics:
            raise error_from_code(
                common_pb2.TOPIC_AUTHORIZATION_FAILED, self.unauthorized_topics[name]
            )
        if meta is None:
            raise RetriableError(
                common_pb2.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} does not exist"
            )
        return meta
