"""What a coordinator needs before it can answer, asked for from the controller: its internal
topic (__consumer_offsets, __transaction_state), with the configured replication capped by the
cluster's size (registered brokers or controller voters, the larger), never by the brokers
active at that moment; and producer ids, whose unavailability is a retriable answer."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from strom.node.config import build_config
from strom.node.group.service import GroupServicer
from strom.node.metadata.image import MetadataImage
from strom.v1 import admin_pb2


class RecordingController:
    def __init__(self) -> None:
        self.asked: list[admin_pb2.CreateTopicsRequest] = []

    async def call(self, method: Any, request: Any, deadline_s: float) -> Any:
        self.asked.append(request)
        return admin_pb2.CreateTopicsResponse()


def asked_factor(voters: str, registered: int, name: str = "__transaction_state") -> int:
    config = build_config({"node.id": 1, "controller.quorum.voters": voters}, environ={})
    brokers = {b: object() for b in range(1, registered + 1)}
    manager = SimpleNamespace(config=config, image=MetadataImage(brokers=brokers))
    controller = RecordingController()
    servicer = GroupServicer(None, manager, controller, "PLAINTEXT")  # type: ignore[arg-type]
    assert asyncio.run(servicer.ensure_internal_topic(name)) is False  # "retry"
    (request,) = controller.asked
    return int(request.topics[0].replication_factor)


THREE_VOTERS = "1@a:1,2@b:2,3@c:3"


@pytest.mark.parametrize("name", ["__transaction_state", "__consumer_offsets"])
def test_a_starting_cluster_asks_for_every_replica_it_will_have(name: str) -> None:
    # Only this broker registered so far (its image knows of one): still 3, as configured;
    # the controller refuses until three brokers are active and the caller retries.
    assert asked_factor(THREE_VOTERS, registered=1, name=name) == 3


def test_a_one_node_cluster_gets_one_replica_with_the_default_of_three() -> None:
    assert asked_factor("1@a:1", registered=1) == 1


def test_more_brokers_than_voters_are_counted_and_the_config_caps() -> None:
    assert asked_factor("1@a:1", registered=2) == 2
    assert asked_factor("1@a:1", registered=5) == 3


def test_a_transactional_init_without_a_reachable_controller_is_retriable() -> None:
    """InitProducerId with a transactional id needs a producer id block from the controller;
    a stale broker epoch or no active controller answers COORDINATOR_NOT_AVAILABLE (the client
    retries), never an exception out of the handler (the node simulation's seed 196)."""
    from strom.node.peers import ControllerUnavailable
    from strom.node.txn.service import TransactionServicer
    from strom.v1 import common_pb2, txn_pb2

    async def no_ids() -> int:
        raise ControllerUnavailable("broker 4 epoch 41 is stale; current is 34: register again")

    host = SimpleNamespace(
        coordinator=SimpleNamespace(owned_partition=lambda tid: 0),
        check_coordinator=lambda tid: None,
    )
    servicer = TransactionServicer(host, None, None, no_ids, None)  # type: ignore[arg-type]
    request = txn_pb2.TxnInitProducerIdRequest(transactional_id="tx", transaction_timeout_ms=60_000)
    answer = asyncio.run(servicer.InitProducerId(request, None))  # type: ignore[arg-type]
    assert answer.error_code == common_pb2.COORDINATOR_NOT_AVAILABLE
    assert "stale" in answer.error_message
