"""The one way to a group coordinator: found again while it moves, bounded, with backoff."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from strom.client import coordinator
from strom.client.coordinator import COORDINATOR_ATTEMPTS_MAX, call_coordinator
from strom.client.errors import RetriableError, error_from_code
from strom.v1 import common_pb2, group_pb2


class ScriptedCluster:
    """FindCoordinator answers with the next address; calls answer from `answers` in turn."""

    retry_backoff_ms = 1
    retry_backoff_max_ms = 2
    request_timeout_s = 1.0

    def __init__(self, answers: list[Any], addresses: list[str]) -> None:
        self.answers = answers
        self.addresses = addresses
        self.finds = 0
        self.called: list[str] = []

    def channel(self, address: str) -> str:
        return address

    async def call_any(self, fn: Any, request: Any) -> Any:
        self.finds += 1
        host, port = self.addresses[min(self.finds, len(self.addresses)) - 1].split(":")
        return group_pb2.FindCoordinatorResponse(host=host, port=int(port))

    async def call(self, address: str, fn: Any, request: Any, timeout_s: float) -> Any:
        self.called.append(address)
        answer = self.answers.pop(0) if self.answers else self.answers_forever
        if isinstance(answer, Exception):
            raise answer
        return answer

    answers_forever: Any = None


def _commit_answer(code: int) -> group_pb2.OffsetCommitResponse:
    return group_pb2.OffsetCommitResponse(error_code=code)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def plain_stubs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        coordinator.group_pb2_grpc, "GroupStub", lambda ch: SimpleNamespace(OffsetCommit=ch)
    )


def test_a_moved_coordinator_is_found_again_and_the_cache_follows() -> None:
    cluster = ScriptedCluster(
        [
            error_from_code(common_pb2.NETWORK_EXCEPTION, "gone"),
            _commit_answer(common_pb2.NOT_COORDINATOR),
            _commit_answer(common_pb2.NONE),
        ],
        ["a:1", "b:2", "c:3"],
    )
    cache = SimpleNamespace(coordinator="old:9")
    response = asyncio.run(
        call_coordinator(cluster, "g", "OffsetCommit", None, cache)  # type: ignore[arg-type]
    )
    assert response.error_code == common_pb2.NONE
    assert cluster.called == ["old:9", "a:1", "b:2"]
    assert cache.coordinator == "b:2"


def test_other_answers_go_back_to_the_caller() -> None:
    cluster = ScriptedCluster([_commit_answer(common_pb2.GROUP_AUTHORIZATION_FAILED)], ["a:1"])
    response = asyncio.run(call_coordinator(cluster, "g", "OffsetCommit", None))  # type: ignore[arg-type]
    assert response.error_code == common_pb2.GROUP_AUTHORIZATION_FAILED


def test_a_coordinator_that_never_settles_fails_after_the_bound() -> None:
    cluster = ScriptedCluster([], ["a:1"])
    cluster.answers_forever = _commit_answer(common_pb2.COORDINATOR_LOAD_IN_PROGRESS)
    with pytest.raises(RetriableError, match="no coordinator for 'g'") as err:
        asyncio.run(call_coordinator(cluster, "g", "OffsetCommit", None))  # type: ignore[arg-type]
    assert err.value.code == common_pb2.COORDINATOR_NOT_AVAILABLE
    assert len(cluster.called) == COORDINATOR_ATTEMPTS_MAX
