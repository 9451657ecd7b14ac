"""The one way to reach a consumer group's coordinator, for the admin client and the consumer.

`find_coordinator` asks any broker where the group's coordinator is. `call_coordinator` sends one
request to it and, when the coordinator moved, died or is still loading (a retriable transport
error, NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS), finds it again
and retries, at most `COORDINATOR_ATTEMPTS_MAX` times with the cluster's `Backoff`. Any other
answer, errors included, goes back to the caller, who knows what its request's codes mean.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from strom.v1 import common_pb2, group_pb2, group_pb2_grpc

from .cluster import Backoff, ClusterClient
from .errors import RetriableError, error_from_code

# With the default backoff (100 ms doubling to 1 s) about 17 s: long enough for a coordinator
# to move after a broker dies, short enough to tell a caller when there is none.
COORDINATOR_ATTEMPTS_MAX = 20

FIND_AGAIN = frozenset(
    (
        common_pb2.NOT_COORDINATOR,
        common_pb2.COORDINATOR_NOT_AVAILABLE,
        common_pb2.COORDINATOR_LOAD_IN_PROGRESS,
    )
)


class CoordinatorCache(Protocol):
    """Where a caller keeps the coordinator's address between calls (None: find it)."""

    coordinator: str | None


async def find_coordinator(
    cluster: ClusterClient, group_id: str, key_type: int = group_pb2.GROUP
) -> str:
    """The address of `group_id`'s coordinator (with `key_type` TRANSACTION: the transaction
    coordinator of that transactional id), asked of any broker (one attempt)."""
    response = await cluster.call_any(
        lambda a: group_pb2_grpc.GroupStub(cluster.channel(a)).FindCoordinator,
        group_pb2.FindCoordinatorRequest(
            key=group_id, key_type=group_pb2.CoordinatorType.ValueType(key_type)
        ),
    )
    if response.error_code != common_pb2.NONE:
        raise error_from_code(response.error_code, response.error_message)
    return f"{response.host}:{response.port}"


async def call_coordinator(
    cluster: ClusterClient,
    group_id: str,
    method: str,
    request: Any,
    cache: CoordinatorCache | None = None,
    key_type: int = group_pb2.GROUP,
    stub_type: Callable[[Any], Any] | None = None,
) -> Any:
    """`method` of the Group service (or of `stub_type`'s) on `group_id`'s coordinator (or
    the transactional id's, with `key_type` TRANSACTION), found again (bounded, with backoff)
    while it moves. `cache` keeps the address between calls."""
    backoff = Backoff(cluster.retry_backoff_ms, cluster.retry_backoff_max_ms)
    last: Exception | None = None
    for _ in range(COORDINATOR_ATTEMPTS_MAX):
        if last is not None:
            await asyncio.sleep(backoff.next_delay_s())
        try:
            address = cache.coordinator if cache is not None else None
            if address is None:
                address = await find_coordinator(cluster, group_id, key_type)
                if cache is not None:
                    cache.coordinator = address
            stub = (stub_type or group_pb2_grpc.GroupStub)(cluster.channel(address))
            response = await cluster.call(
                address, getattr(stub, method), request, cluster.request_timeout_s
            )
        except RetriableError as exc:
            last = exc  # it moved or died: find it again
        else:
            code = getattr(response, "error_code", common_pb2.NONE)
            if code not in FIND_AGAIN:
                return response
            last = error_from_code(code, getattr(response, "error_message", ""))
        if cache is not None:
            cache.coordinator = None
    raise error_from_code(
        common_pb2.COORDINATOR_NOT_AVAILABLE,
        f"no coordinator for {group_id!r} after {COORDINATOR_ATTEMPTS_MAX} attempts: {last}",
    )
