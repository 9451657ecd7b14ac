"""A consumer's membership in a group (KIP-848 style, DESIGN.md §8).

`GroupMembership` finds the group's coordinator and heartbeats in the background with the
subscription and the partitions the application currently owns; the coordinator answers with
the member's current assignment. Changes are not applied here: `poll()` applies them (running
the revoke and assign callbacks in the application's task), then the next heartbeat reports the
new ownership, which lets the coordinator hand revoked partitions to other members.

Safety: a member that has not had a successful heartbeat for a session timeout, or that the
coordinator fences or no longer knows, must consider every partition lost and rejoin, so a
partition is never consumed by two members of one group at once. The session is counted from
when the last successful heartbeat was *sent*: the coordinator received it later, so its own
session of the member ends no earlier than ours. And it is enforced on time: no heartbeat
attempt (finding the coordinator, a request to a coordinator that no longer answers) and no
retry backoff outlasts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from strom.v1 import common_pb2, group_pb2, group_pb2_grpc

from .cluster import Backoff, ClusterClient
from .coordinator import find_coordinator
from .errors import RetriableError, StromError, error_from_code
from .records import TopicPartition

log = logging.getLogger("strom.client.group")

_REJOIN = frozenset({common_pb2.UNKNOWN_MEMBER_ID, common_pb2.FENCED_MEMBER_EPOCH})
FIND_AGAIN = frozenset(
    {
        common_pb2.NOT_COORDINATOR,
        common_pb2.COORDINATOR_NOT_AVAILABLE,
        common_pb2.COORDINATOR_LOAD_IN_PROGRESS,
    }
)


def _monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


class GroupMembership:
    def __init__(
        self,
        cluster: ClusterClient,
        group_id: str,
        *,
        client_id: str,
        instance_id: str = "",
        assignor: str = "range",
    ) -> None:
        self.cluster = cluster
        self.group_id = group_id
        self.client_id = client_id
        self.instance_id = instance_id
        self.assignor = assignor
        self.topics: list[str] = []
        self.member_id = ""
        self.member_epoch = 0
        self.owned: set[TopicPartition] = set()  # applied by poll(), reported to the coordinator
        self.assignment: set[TopicPartition] | None = None  # latest from the coordinator
        # Set when the partitions were lost (session over, fenced), not revoked: poll() then
        # drops them without committing their offsets.
        self.lost = False
        self.coordinator: str | None = None
        self.session_timeout_ms = 45_000
        self.heartbeat_interval_ms = 1_000
        self.last_success_ms = _monotonic_ms()  # when the last successful heartbeat was sent
        self.fatal: StromError | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._subscription_changed = True

    # ---- control -----------------------------------------------------------------------

    def subscribe(self, topics: Sequence[str]) -> None:
        self.topics = sorted(set(topics))
        self._subscription_changed = True
        self.wake()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="group-heartbeat")

    def wake(self) -> None:
        self._wake.set()

    async def leave(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.member_id and self.member_epoch > 0 and self.coordinator:
            try:
                await self._send(epoch=-1)
            except StromError as exc:
                log.info("leaving group %s: %s", self.group_id, exc)
        self.member_epoch = 0

    # ---- coordinator -------------------------------------------------------------------

    async def find_coordinator(self) -> str:
        self.coordinator = await find_coordinator(self.cluster, self.group_id)
        return self.coordinator

    def stub(self, address: str) -> group_pb2_grpc.GroupStub:
        return group_pb2_grpc.GroupStub(self.cluster.channel(address))

    # ---- heartbeats --------------------------------------------------------------------

    async def _send(self, epoch: int) -> group_pb2.ConsumerGroupHeartbeatResponse:
        assert self.coordinator is not None
        owned: dict[str, list[int]] = {}
        for tp in sorted(self.owned):
            owned.setdefault(tp.topic, []).append(tp.partition)
        request = group_pb2.ConsumerGroupHeartbeatRequest(
            group_id=self.group_id,
            member_id=self.member_id,
            member_epoch=epoch,
            instance_id=self.instance_id,
            client_id=self.client_id,
            server_assignor=self.assignor,
            owned_partitions=[
                group_pb2.TopicPartitions(topic=t, partitions=ps) for t, ps in owned.items()
            ],
            owned_partitions_present=True,
        )
        if epoch == 0 or self._subscription_changed:
            request.subscribed_topic_names.extend(self.topics)
        response: group_pb2.ConsumerGroupHeartbeatResponse = await self.cluster.call(
            self.coordinator,
            self.stub(self.coordinator).ConsumerGroupHeartbeat,
            request,
            self.cluster.request_timeout_s,
        )
        return response

    async def _run(self) -> None:
        backoff = Backoff(self.cluster.retry_backoff_ms, self.cluster.retry_backoff_max_ms)
        while True:
            sent_ms = _monotonic_ms()
            try:
                async with asyncio.timeout(self._session_left_s()):
                    if self.coordinator is None:
                        await self.find_coordinator()
                    response = await self._send(self.member_epoch)
                self._handle(response, sent_ms)
                backoff.attempt = 0
                delay_s = self.heartbeat_interval_ms / 1000
            except RetriableError as exc:
                log.debug("group %s heartbeat: %s", self.group_id, exc)
                self.coordinator = None
                delay_s = backoff.next_delay_s()
            except TimeoutError:
                log.debug("group %s heartbeat: no answer within the session", self.group_id)
                self.coordinator = None
                delay_s = backoff.next_delay_s()
            except StromError as exc:
                self.fatal = exc
                return
            self._check_session()
            self._wake.clear()
            left_s = self._session_left_s()
            try:
                async with asyncio.timeout(delay_s if left_s is None else min(delay_s, left_s)):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _session_left_s(self) -> float | None:
        """Seconds until the session ends without another successful heartbeat (None while
        the member holds no session)."""
        if self.member_epoch <= 0:
            return None
        return max(0.0, (self.last_success_ms + self.session_timeout_ms - _monotonic_ms()) / 1000)

    def _handle(self, response: group_pb2.ConsumerGroupHeartbeatResponse, sent_ms: int) -> None:
        code = response.error_code
        if code in _REJOIN:
            log.info("group %s: %s; rejoining", self.group_id, response.error_message)
            self.member_epoch = 0
            self.assignment = set()  # poll() revokes everything before we rejoin
            self.lost = True
            return
        if code in FIND_AGAIN:
            self.coordinator = None
            raise error_from_code(code, response.error_message)
        if code != common_pb2.NONE:
            raise error_from_code(code, response.error_message)
        self.last_success_ms = sent_ms
        self._subscription_changed = False
        self.member_id = response.member_id
        self.member_epoch = response.member_epoch
        if response.heartbeat_interval_ms > 0:
            self.heartbeat_interval_ms = response.heartbeat_interval_ms
        if response.session_timeout_ms > 0:
            self.session_timeout_ms = response.session_timeout_ms
        self.assignment = {
            TopicPartition(tp.topic, p) for tp in response.assignment for p in tp.partitions
        }

    def _check_session(self) -> None:
        """No successful heartbeat for a session timeout: the coordinator has removed us (or
        another one took over), so our partitions may already be someone else's."""
        if (
            self.member_epoch > 0
            and _monotonic_ms() - self.last_success_ms >= self.session_timeout_ms
        ):
            log.info("group %s: session lost; dropping partitions and rejoining", self.group_id)
            self.member_epoch = 0
            self.assignment = set()
            self.lost = True
