"""Every RPC of every strom service, fed hypothesis-generated requests, against a real node.

One combined node runs in this process with its real gRPC listeners (PLAINTEXT, so every
request reaches its handler). For each method of each service in strom.v1, hypothesis builds
request messages from the message descriptors: every field set or not, integers from Kafka's
edge values and small numbers, arbitrary text and bytes, unknown enum numbers, nested messages
and short repeated fields. Each answer must be a response or a gRPC status a handler chose:
never UNKNOWN or INTERNAL (an exception that escaped a handler). Afterwards the node must still
serve: it answers metadata and a produce/fetch round trip. Issue #15: "nothing a client sends
can stop a broker"; the probe's 2,000 fuzzed batches family, extended to every RPC.

The run is bounded (`EXAMPLES_PER_RPC`) and random, so every CI run explores new requests (a
failure prints the request that caused it); `STROM_FUZZ_EXAMPLES=500` runs a longer hunt.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from node_thread import NodeThread

from strom.storage.record_batch import Record, encode_batch
from strom.v1 import (
    admin_pb2,
    broker_pb2,
    common_pb2,
    controller_pb2,
    group_pb2,
    raft_pb2,
    replica_pb2,
    txn_pb2,
)

EXAMPLES_PER_RPC = int(os.environ.get("STROM_FUZZ_EXAMPLES", "25"))
CALL_TIMEOUT_S = 3.0
PING_TIMEOUT_S = 2.0
# Services served on the controller listener; the rest on the client listener.
CONTROLLER_SERVICES = frozenset({"strom.v1.Raft", "strom.v1.Controller"})
# Statuses a handler may choose. UNKNOWN and INTERNAL mean an exception escaped a handler.
HANDLER_STATUSES = frozenset(grpc.StatusCode) - {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

INT_EDGES = (0, -1, 1, -2, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 2**32 - 1, 10_001)
F = descriptor.FieldDescriptor


def _int_strategy(field: descriptor.FieldDescriptor) -> st.SearchStrategy[int]:
    bits = 64 if field.type in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64,
                                F.TYPE_UINT64, F.TYPE_FIXED64) else 32  # fmt: skip
    unsigned = field.type in (F.TYPE_UINT32, F.TYPE_UINT64, F.TYPE_FIXED32, F.TYPE_FIXED64)
    low, high = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    edges = [v for v in INT_EDGES if low <= v <= high]
    # Small numbers, not the whole range: a random 5,000-partition topic would only cost time.
    return st.one_of(st.sampled_from(edges), st.integers(max(low, -3), 64))


def _scalar_strategy(field: descriptor.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_MESSAGE:
        return message_strategy(field.message_type, depth + 1)
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type == F.TYPE_STRING:
        return st.one_of(st.text(max_size=24), st.sampled_from(["t", "__consumer_offsets", "g"]))
    if field.type == F.TYPE_BYTES:
        return st.one_of(
            st.binary(max_size=96), st.just(GOOD_BATCH), st.binary(min_size=16, max_size=16)
        )
    if field.type == F.TYPE_ENUM:
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]),
                         st.integers(-5, 200))  # fmt: skip
    if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.floats(allow_nan=True, width=32)
    return _int_strategy(field)


def message_strategy(desc: descriptor.Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of type `desc`: each field unset or set, nested up to three levels."""
    cls = message_factory.GetMessageClass(desc)
    if depth > 3:
        return st.just(cls())
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in desc.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key = _scalar_strategy(field.message_type.fields_by_name["key"], depth)
            value = _scalar_strategy(field.message_type.fields_by_name["value"], depth)
            fields[field.name] = st.dictionaries(key, value, max_size=3)
            continue
        value_strategy = _scalar_strategy(field, depth)
        if field.is_repeated:
            value_strategy = st.lists(value_strategy, max_size=3)  # type: ignore[assignment]
        fields[field.name] = st.one_of(st.none(), value_strategy)

    def build(values: dict[str, Any]) -> Message:
        out = cls()
        for name, value in values.items():
            if value is None:
                continue
            field = desc.fields_by_name[name]
            target = getattr(out, name)
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                for k, v in value.items():
                    if value_field.type == F.TYPE_MESSAGE:
                        target[k].CopyFrom(v)
                    else:
                        target[k] = v
            elif field.is_repeated:
                if field.type == F.TYPE_MESSAGE:
                    for item in value:
                        target.add().CopyFrom(item)
                else:
                    target.extend(value)
            elif field.type == F.TYPE_MESSAGE:
                target.CopyFrom(value)
            else:
                setattr(out, name, value)
        return out

    return st.fixed_dictionaries(fields).map(build)


# Fields that name a node: the fuzz never speaks as the node under test (node id 1). Speaking
# for it on a PLAINTEXT controller listener can shut it down by design; refusing impostors is
# what the security tests check.
NODE_ID_FIELDS = frozenset({"broker_id", "replica_id", "node_id", "from_id"})
NODE_ID = 1


def not_the_node(message: Message) -> Message:
    for field, value in message.ListFields():
        if field.type == F.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                items = value.values() if field.message_type.fields_by_name[
                    "value"].type == F.TYPE_MESSAGE else ()  # fmt: skip
            else:
                items = value if field.is_repeated else (value,)
            for item in items:
                not_the_node(item)
        elif field.name in NODE_ID_FIELDS and not field.is_repeated and value == NODE_ID:
            setattr(message, field.name, NODE_ID + 1)
    return message


GOOD_BATCH = encode_batch([Record(b"k", b"v", (), 1_700_000_000_000)])
MODULES = (
    broker_pb2,
    admin_pb2,
    group_pb2,
    replica_pb2,
    controller_pb2,
    raft_pb2,
    common_pb2,
    txn_pb2,
)
METHODS = sorted(
    (
        (service, method)
        for module in MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ),
    key=lambda sm: (sm[0].full_name, sm[1].name),
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeThread]:
    with NodeThread(tmp_path_factory.mktemp("fuzz-node")) as running:
        yield running


@pytest.fixture(scope="module")
def channels(node: NodeThread) -> Iterator[dict[bool, grpc.Channel]]:
    options = [("grpc.max_receive_message_length", 64 << 20)]
    client = grpc.insecure_channel(f"localhost:{node.client_port}", options=options)
    controller = grpc.insecure_channel(f"localhost:{node.controller_port}", options=options)
    yield {False: client, True: controller}
    client.close()
    controller.close()


def _caller(
    channels: dict[bool, grpc.Channel], service: Any, method: Any
) -> Callable[[Message], Any]:
    channel = channels[service.full_name in CONTROLLER_SERVICES]
    response_cls = message_factory.GetMessageClass(method.output_type)
    return channel.unary_unary(  # type: ignore[no-any-return]
        f"/{service.full_name}/{method.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_cls.FromString,
    )


def _wait_ready(channels: dict[bool, grpc.Channel]) -> None:
    call = _caller(channels, broker_pb2.DESCRIPTOR.services_by_name["Broker"],
                   broker_pb2.DESCRIPTOR.services_by_name["Broker"].methods_by_name["Metadata"])  # fmt: skip
    deadline = 30.0
    import time

    started = time.monotonic()
    last: object = None
    while time.monotonic() - started < deadline:
        try:
            last = call(broker_pb2.MetadataRequest(), timeout=2)
            if last.brokers:  # type: ignore[attr-defined]
                return
        except grpc.RpcError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"the node never became ready: {last}")


@pytest.mark.parametrize(
    ("service", "method"), METHODS, ids=[f"{s.name}.{m.name}" for s, m in METHODS]
)
def test_every_rpc_answers_fuzzed_requests_without_crashing(
    channels: dict[bool, grpc.Channel], service: Any, method: Any
) -> None:
    _wait_ready(channels)
    call = _caller(channels, service, method)
    broker = broker_pb2.DESCRIPTOR.services_by_name["Broker"]
    ping = _caller(channels, broker, broker.methods_by_name["Metadata"])

    @settings(
        max_examples=EXAMPLES_PER_RPC,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=message_strategy(method.input_type).map(not_the_node))
    def one(request: Message) -> None:
        try:
            call(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            assert code in HANDLER_STATUSES, (
                f"{service.name}.{method.name}: {code} {exc.details()}"  # type: ignore[attr-defined]
                f"\nrequest: {request}"
            )
        # A request may leave work behind that blocks the node (a handler spinning after the
        # caller gave up): the node must still answer at once.
        try:
            ping(broker_pb2.MetadataRequest(), timeout=PING_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise AssertionError(
                f"the node stopped answering after {service.name}.{method.name}: "
                f"{exc.code()}\nrequest: {request}"  # type: ignore[attr-defined]
            ) from None

    one()


def test_what_the_fuzz_found_is_answered_at_once(channels: dict[bool, grpc.Channel]) -> None:
    """A long-polling fetch naming no partition spun the event loop until its max_wait_ms."""
    _wait_ready(channels)
    broker = broker_pb2.DESCRIPTOR.services_by_name["Broker"]
    fetch = _caller(channels, broker, broker.methods_by_name["Fetch"])
    assert not fetch(broker_pb2.FetchRequest(max_wait_ms=60_000, min_bytes=1), timeout=2).topics


def test_the_node_still_serves_after_the_fuzz(
    node: NodeThread, channels: dict[bool, grpc.Channel]
) -> None:
    _wait_ready(channels)
    admin = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
    broker = broker_pb2.DESCRIPTOR.services_by_name["Broker"]
    create = _caller(channels, admin, admin.methods_by_name["CreateTopics"])
    created = create(
        admin_pb2.CreateTopicsRequest(
            topics=[admin_pb2.CreatableTopic(name="after-fuzz", num_partitions=1,
                                             replication_factor=1)]
        ),
        timeout=10,
    )  # fmt: skip
    assert created.topics[0].error_code in (common_pb2.NONE, common_pb2.TOPIC_ALREADY_EXISTS)
    produce = _caller(channels, broker, broker.methods_by_name["Produce"])
    request = broker_pb2.ProduceRequest(acks=1, timeout_ms=5000)
    request.topics.add(name="after-fuzz").partitions.add(partition=0, records=GOOD_BATCH)
    import time

    for _ in range(100):
        answer = produce(request, timeout=5).topics[0].partitions[0]
        if answer.error_code == common_pb2.NONE:
            break
        time.sleep(0.1)
    assert answer.error_code == common_pb2.NONE, answer
    fetch = _caller(channels, broker, broker.methods_by_name["Fetch"])
    wanted = broker_pb2.FetchRequest(max_wait_ms=0, max_bytes=1 << 20)
    wanted.topics.add(name="after-fuzz").partitions.add(
        partition=0, fetch_offset=answer.base_offset, current_leader_epoch=-1
    )
    for _ in range(100):
        got = fetch(wanted, timeout=5).topics[0].partitions[0]
        if got.records:
            break
        time.sleep(0.1)
    assert got.records, got
