"""How a broker asks for an internal topic (__consumer_offsets, __transaction_state): the
configured replication, capped by the cluster's size (registered brokers or controller voters,
the larger), never by the brokers active at that moment."""

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
