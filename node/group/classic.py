"""Kafka's classic group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) for one group.

Here the group leader, a client, computes the assignment; the coordinator only gathers members,
picks a protocol they all support, and hands the leader's assignment out. States follow Kafka:

    Empty --join--> PreparingRebalance --every member joined, or the rebalance timeout-->
    CompletingRebalance --the leader's SyncGroup--> Stable --join/leave/expiry--> Preparing...

A rebalance completes once every known member has rejoined, or when the longest rebalance
timeout of its members has passed (members that did not rejoin are removed); the first one of
an empty group waits `group.initial.rebalance.delay.ms` so consumers started together join one
generation. Commits are accepted from the current generation only (ILLEGAL_GENERATION else).

Membership is in memory, like strom's server-side groups (coordinator.py): a new coordinator
starts with no members and clients rejoin (their heartbeats get UNKNOWN_MEMBER_ID there).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from strom.node.errors import CodedError
from strom.v1 import common_pb2

log = logging.getLogger("strom.group")

INCONSISTENT_GROUP_PROTOCOL = 23
ILLEGAL_GENERATION = common_pb2.ILLEGAL_GENERATION
UNKNOWN_MEMBER_ID = common_pb2.UNKNOWN_MEMBER_ID
REBALANCE_IN_PROGRESS = common_pb2.REBALANCE_IN_PROGRESS
INVALID_SESSION_TIMEOUT = common_pb2.INVALID_SESSION_TIMEOUT
MEMBER_ID_REQUIRED = 79

EMPTY = "Empty"
PREPARING = "PreparingRebalance"
COMPLETING = "CompletingRebalance"
STABLE = "Stable"


class ClassicGroupError(CodedError):
    """A classic-protocol request the group refuses."""


@dataclass(frozen=True, slots=True)
class JoinResult:
    error_code: int
    generation: int
    protocol_type: str
    protocol_name: str
    leader: str
    member_id: str
    members: list[tuple[str, str | None, bytes]]  # for the leader only


@dataclass(slots=True)
class ClassicMember:
    member_id: str
    instance_id: str | None
    client_id: str
    host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: list[tuple[str, bytes]]
    last_seen_ms: int
    assignment: bytes = b""
    joined: asyncio.Future[JoinResult] | None = None
    synced: asyncio.Future[tuple[str, bytes]] | None = None

    def metadata_for(self, protocol: str) -> bytes:
        return next((meta for name, meta in self.protocols if name == protocol), b"")


@dataclass(slots=True)
class ClassicGroup:
    group_id: str
    protocol_type: str
    now_ms: Callable[[], int]
    initial_delay_ms: int
    new_member_id: Callable[[], str]
    state: str = EMPTY
    generation: int = 0
    protocol_name: str = ""
    leader: str = ""
    members: dict[str, ClassicMember] = field(default_factory=dict)
    # KIP-394: member ids handed out with MEMBER_ID_REQUIRED and not yet used to join, each
    # with the time it expires (the asking member's session timeout), so a client that never
    # comes back costs nothing after that.
    pending_member_ids: dict[str, int] = field(default_factory=dict)
    _deadline: asyncio.TimerHandle | None = None
    _initial: bool = False

    # ---- join ----------------------------------------------------------------------------

    def join(
        self,
        member_id: str,
        instance_id: str | None,
        client_id: str,
        host: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        require_known_member_id: bool = False,
    ) -> asyncio.Future[JoinResult]:
        """`require_known_member_id` (JoinGroup v4+, KIP-394): a member without an id and
        without a static instance id is answered MEMBER_ID_REQUIRED with an id to join with,
        and only joins when it comes back with it, so a client whose join response was lost
        cannot leave a stray member behind."""
        if protocol_type != self.protocol_type or not protocols:
            raise ClassicGroupError(
                INCONSISTENT_GROUP_PROTOCOL,
                f"group {self.group_id!r} uses protocol type {self.protocol_type!r}, "
                f"not {protocol_type!r}",
            )
        if self.members and not self._common_protocols(protocols):
            raise ClassicGroupError(
                INCONSISTENT_GROUP_PROTOCOL,
                f"none of {[p for p, _ in protocols]} is supported by every member of "
                f"{self.group_id!r}",
            )
        now = self.now_ms()
        self._expire_pending_member_ids(now)
        if not member_id and instance_id is None and require_known_member_id:
            member_id = self.new_member_id()
            self.pending_member_ids[member_id] = now + session_timeout_ms
            required: asyncio.Future[JoinResult] = asyncio.get_running_loop().create_future()
            required.set_result(
                JoinResult(MEMBER_ID_REQUIRED, -1, protocol_type, "", "", member_id, [])
            )
            return required
        known = self.pending_member_ids.pop(member_id, None) is not None
        if member_id and member_id not in self.members and not known:
            raise ClassicGroupError(
                UNKNOWN_MEMBER_ID, f"member {member_id!r} is not in group {self.group_id!r}"
            )
        member = self.members.get(member_id) if member_id else None
        if member is None:
            member_id = member_id or self.new_member_id()
            member = ClassicMember(
                member_id, instance_id, client_id, host, session_timeout_ms,
                rebalance_timeout_ms, protocols, now,
            )  # fmt: skip
            self.members[member_id] = member
            log.info("group %s: classic member %s (%s) joins", self.group_id, member_id, client_id)
        else:
            member.protocols = protocols
            member.session_timeout_ms = session_timeout_ms
            member.rebalance_timeout_ms = rebalance_timeout_ms
            member.last_seen_ms = now
        future: asyncio.Future[JoinResult] = asyncio.get_running_loop().create_future()
        if member.joined is not None and not member.joined.done():
            member.joined.cancel()  # a retried join replaces the pending one
        member.joined = future
        if self.state != PREPARING:
            self._prepare_rebalance(initial=self.state == EMPTY)
        else:
            self._maybe_complete_join()
        return future

    def is_unused(self) -> bool:
        """No member, and no member id handed out that may still come back to join with."""
        self._expire_pending_member_ids(self.now_ms())
        return not self.members and not self.pending_member_ids

    def _expire_pending_member_ids(self, now: int) -> None:
        expired = [m for m, deadline in self.pending_member_ids.items() if deadline <= now]
        for member_id in expired:
            del self.pending_member_ids[member_id]

    def _common_protocols(self, protocols: list[tuple[str, bytes]]) -> set[str]:
        names = {p for p, _ in protocols}
        for m in self.members.values():
            names &= {p for p, _ in m.protocols}
        return names

    def _prepare_rebalance(self, initial: bool = False) -> None:
        self.state = PREPARING
        for member in self.members.values():  # syncs waiting for an old generation
            if member.synced is not None and not member.synced.done():
                member.synced.set_exception(
                    ClassicGroupError(REBALANCE_IN_PROGRESS, "the group is rebalancing; rejoin")
                )
        timeout_ms = max((m.rebalance_timeout_ms for m in self.members.values()), default=0)
        self._initial = initial and self.initial_delay_ms > 0
        if self._initial:
            timeout_ms = min(timeout_ms, self.initial_delay_ms)
        self._set_deadline(timeout_ms / 1000)
        self._maybe_complete_join()

    def _set_deadline(self, delay_s: float) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = asyncio.get_running_loop().call_later(delay_s, self._join_deadline)

    def _join_deadline(self) -> None:
        self._deadline = None
        self._initial = False
        if self.state != PREPARING:
            return
        for member_id, member in list(self.members.items()):
            if member.joined is None or member.joined.done():
                log.info("group %s: member %s did not rejoin in time", self.group_id, member_id)
                del self.members[member_id]
        self._complete_join()

    def _maybe_complete_join(self) -> None:
        if self._initial:
            return  # the initial delay runs out first: more members may come
        if all(m.joined is not None and not m.joined.done() for m in self.members.values()):
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self._complete_join()

    def _complete_join(self) -> None:
        if not self.members:
            self.state = EMPTY
            self.generation += 1
            self.leader = ""
            return
        self.generation += 1
        self.state = COMPLETING
        names = self._common_protocols(next(iter(self.members.values())).protocols)
        votes: Counter[str] = Counter()
        for m in self.members.values():
            for name, _ in m.protocols:  # each member votes for its most preferred common one
                if name in names:
                    votes[name] += 1
                    break
        self.protocol_name = max(sorted(names), key=lambda n: votes[n])
        if self.leader not in self.members:
            self.leader = next(iter(self.members))
        log.info(
            "group %s: generation %d, protocol %s, leader %s, %d member(s)", self.group_id,
            self.generation, self.protocol_name, self.leader, len(self.members),
        )  # fmt: skip
        everyone = [
            (m.member_id, m.instance_id, m.metadata_for(self.protocol_name))
            for m in self.members.values()
        ]
        for member in self.members.values():
            member.assignment = b""
            member.last_seen_ms = self.now_ms()
            if member.joined is not None and not member.joined.done():
                member.joined.set_result(
                    JoinResult(
                        0,
                        self.generation,
                        self.protocol_type,
                        self.protocol_name,
                        self.leader,
                        member.member_id,
                        everyone if member.member_id == self.leader else [],
                    )
                )
            member.joined = None

    # ---- sync ----------------------------------------------------------------------------

    def sync(
        self, member_id: str, generation: int, assignments: dict[str, bytes]
    ) -> asyncio.Future[tuple[str, bytes]]:
        member = self._member(member_id, generation)
        if self.state == PREPARING:
            raise ClassicGroupError(REBALANCE_IN_PROGRESS, "the group is rebalancing; rejoin")
        future: asyncio.Future[tuple[str, bytes]] = asyncio.get_running_loop().create_future()
        if self.state == STABLE:
            future.set_result((self.protocol_name, member.assignment))
            return future
        member.synced = future
        if member_id == self.leader:
            for m in self.members.values():
                m.assignment = assignments.get(m.member_id, b"")
            self.state = STABLE
            for m in self.members.values():
                if m.synced is not None and not m.synced.done():
                    m.synced.set_result((self.protocol_name, m.assignment))
                m.synced = None
        return future

    # ---- heartbeat, leave, expiry -----------------------------------------------------

    def _member(self, member_id: str, generation: int) -> ClassicMember:
        member = self.members.get(member_id)
        if member is None:
            raise ClassicGroupError(
                UNKNOWN_MEMBER_ID, f"member {member_id!r} is not in group {self.group_id!r}"
            )
        if generation != self.generation:
            raise ClassicGroupError(
                ILLEGAL_GENERATION,
                f"generation {generation} is not the group's current {self.generation}",
            )
        member.last_seen_ms = self.now_ms()
        return member

    def heartbeat(self, member_id: str, generation: int) -> None:
        self._member(member_id, generation)
        if self.state == PREPARING:
            raise ClassicGroupError(REBALANCE_IN_PROGRESS, "the group is rebalancing; rejoin")

    def validate_commit(self, member_id: str, generation: int) -> None:
        """A classic member's commit: its member id and the current generation, not mid-way
        through a rebalance (its partitions may already be someone else's)."""
        self._member(member_id, generation)
        if self.state == PREPARING:
            raise ClassicGroupError(REBALANCE_IN_PROGRESS, "the group is rebalancing; rejoin")

    def leave(self, member_id: str) -> None:
        member = self.members.pop(member_id, None)
        if member is None:
            raise ClassicGroupError(
                UNKNOWN_MEMBER_ID, f"member {member_id!r} is not in group {self.group_id!r}"
            )
        log.info("group %s: classic member %s leaves", self.group_id, member_id)
        self._drop(member)

    def _drop(self, member: ClassicMember) -> None:
        for pending in (member.joined, member.synced):
            if pending is not None and not pending.done():
                pending.set_exception(
                    ClassicGroupError(UNKNOWN_MEMBER_ID, "the member left the group")
                )
        if self.state == PREPARING:
            self._maybe_complete_join()
        else:
            self._prepare_rebalance()

    def expire(self) -> list[str]:
        """Remove members whose session ran out; returns their ids. Members waiting in a join
        are kept: the rebalance deadline decides for them."""
        now = self.now_ms()
        gone = [
            m for m in self.members.values()
            if (m.joined is None or m.joined.done())
            and now - m.last_seen_ms > m.session_timeout_ms
        ]  # fmt: skip
        for member in gone:
            del self.members[member.member_id]
            log.info("group %s: classic member %s expired", self.group_id, member.member_id)
            self._drop(member)
        return [m.member_id for m in gone]

    def close(self, code: int, message: str) -> None:
        """The coordinator stops coordinating this group: every waiting request is answered."""
        if self._deadline is not None:
            self._deadline.cancel()
        for member in self.members.values():
            for pending in (member.joined, member.synced):
                if pending is not None and not pending.done():
                    pending.set_exception(ClassicGroupError(code, message))
