"""Server-side reconciliation of a consumer group's members (KIP-848 style), as a state machine.

The coordinator computes a *target* assignment with an assignor (assignors.py) and hands it to
``GroupReconciler.set_target``. Members do not jump to it: each member's *current* assignment moves
towards its target one heartbeat at a time, so that **a partition is held by at most one member at
any moment** ("held" = in a member's current assignment or still awaiting its revocation).

Per member (Kafka's ``CurrentAssignmentBuilder`` states)::

    state                  meaning                                   leaves when
    STABLE                 current == target, epoch == target epoch   a new target arrives
    UNREVOKED_PARTITIONS   must give up ``pending_revocation`` first  its heartbeat no longer
                           (epoch stays at the old target's)          reports them as owned
    UNRELEASED_PARTITIONS  at the target epoch, but some target        their holders release them
                           partitions are still held by others

Reconciling a member against its latest target ``T`` (at each of its heartbeats, after releasing
what it reported no longer owning): every partition it holds outside ``T`` is pending revocation
(the member learns it from the partition's absence in its current assignment; its epoch does not
move), and a pending partition that ``T`` gives back returns to its assignment. With nothing left
to revoke it moves to the target epoch and takes every partition of ``T`` that no other member
holds; the rest arrive at later heartbeats, once their holders have released them.

Epochs: ``set_target`` bumps the group epoch and the target takes it. A member's epoch becomes the
target epoch when it has revoked everything the new target takes away (so partitions it gained
later at the same epoch do not bump it again, as in KIP-848). A heartbeat must carry the member's
epoch, or its previous epoch when the partitions it reports are all still in its assignment (its
last response was lost); anything else is FENCED_MEMBER_EPOCH. Offset commits must carry the
current epoch exactly (STALE_MEMBER_EPOCH).

Leaving or missing heartbeats for ``session_timeout_ms`` removes a member and releases everything
it held at once. Time enters only as ``now_ms`` arguments; nothing here reads a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace

from strom.node.group.assignors import GroupAssignment, MemberAssignment

__all__ = [
    "FencedMemberEpochError",
    "GroupReconciler",
    "HeartbeatResponse",
    "MemberState",
    "MemberStatus",
    "StaleMemberEpochError",
    "TopicPartition",
    "UnknownMemberIdError",
]

TopicPartition = tuple[str, int]


class MemberState(enum.Enum):
    STABLE = "stable"
    UNREVOKED_PARTITIONS = "unrevoked_partitions"
    UNRELEASED_PARTITIONS = "unreleased_partitions"


class UnknownMemberIdError(LookupError):
    """The member is not in the group (left or expired): it must rejoin with epoch 0 (fatal)."""

    error_code = 25
    error_name = "UNKNOWN_MEMBER_ID"


class FencedMemberEpochError(ValueError):
    """The heartbeat's epoch is neither current nor a tolerated previous one: rejoin (fatal)."""

    error_code = 110
    error_name = "FENCED_MEMBER_EPOCH"


class StaleMemberEpochError(ValueError):
    """An offset commit carried an epoch other than the member's current one (refresh, retry)."""

    error_code = 113
    error_name = "STALE_MEMBER_EPOCH"


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """The coordinator's view of one member."""

    member_id: str
    member_epoch: int
    previous_member_epoch: int
    state: MemberState
    assigned: frozenset[TopicPartition]
    """The current assignment: what the member may consume now."""
    pending_revocation: frozenset[TopicPartition]
    """Taken away by the target but not yet confirmed revoked; still held by this member."""
    session_deadline_ms: int


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    member_epoch: int
    assignment: MemberAssignment
    """The member's current assignment (topic → sorted partitions); what is absent, it revokes."""


def _to_pairs(assignment: Mapping[str, Collection[int]]) -> frozenset[TopicPartition]:
    return frozenset((topic, p) for topic, parts in assignment.items() for p in parts)


def _to_assignment(pairs: Iterable[TopicPartition]) -> MemberAssignment:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in pairs:
        by_topic.setdefault(topic, []).append(partition)
    return {topic: tuple(sorted(parts)) for topic, parts in sorted(by_topic.items())}


class GroupReconciler:
    """Members, the target assignment, and who holds which partition, for one group."""

    def __init__(self, session_timeout_ms: int) -> None:
        assert session_timeout_ms > 0
        self.session_timeout_ms = session_timeout_ms
        self.group_epoch = 0
        self.target_epoch = 0
        self._target: dict[str, frozenset[TopicPartition]] = {}
        self._members: dict[str, MemberStatus] = {}
        self._holder: dict[TopicPartition, str] = {}

    # -- queries -------------------------------------------------------------------------------

    @property
    def members(self) -> Mapping[str, MemberStatus]:
        return self._members

    def target_of(self, member_id: str) -> MemberAssignment:
        return _to_assignment(self._target.get(member_id, frozenset()))

    def holder_of(self, topic: str, partition: int) -> str | None:
        """The member holding the partition (assigned or pending revocation), if any."""
        return self._holder.get((topic, partition))

    def is_converged(self) -> bool:
        """Every member is STABLE at the target epoch with exactly its target."""
        return all(
            m.state is MemberState.STABLE
            and m.member_epoch == self.target_epoch
            and m.assigned == self._target.get(m.member_id, frozenset())
            for m in self._members.values()
        )

    def check_invariants(self) -> None:
        """Raise AssertionError unless the at-most-one-holder invariant and its index agree."""
        seen: dict[TopicPartition, str] = {}
        for member in self._members.values():
            assert not member.assigned & member.pending_revocation, member
            for tp in member.assigned | member.pending_revocation:
                assert tp not in seen, f"{tp} held by {seen[tp]} and {member.member_id}"
                seen[tp] = member.member_id
            if member.pending_revocation:
                assert member.state is MemberState.UNREVOKED_PARTITIONS, member
        assert seen == self._holder, "holder index out of date"

    # -- inputs --------------------------------------------------------------------------------

    def join(self, member_id: str, now_ms: int) -> MemberStatus:
        """Add a member at epoch 0 holding nothing; the caller then recomputes the target."""
        if member_id in self._members:
            raise ValueError(f"member {member_id!r} already joined")
        status = MemberStatus(
            member_id=member_id,
            member_epoch=0,
            previous_member_epoch=0,
            state=MemberState.STABLE,
            assigned=frozenset(),
            pending_revocation=frozenset(),
            session_deadline_ms=now_ms + self.session_timeout_ms,
        )
        self._members[member_id] = status
        return status

    def leave(self, member_id: str) -> None:
        """Remove a member (it left, or its session expired); release everything it held."""
        member = self._members.pop(member_id, None)
        if member is None:
            raise UnknownMemberIdError(f"member {member_id!r} is not in the group")
        for tp in member.assigned | member.pending_revocation:
            del self._holder[tp]

    def expire_sessions(self, now_ms: int) -> list[str]:
        """Remove members whose session deadline has passed; return their ids, sorted."""
        expired = sorted(m for m, s in self._members.items() if s.session_deadline_ms <= now_ms)
        for member_id in expired:
            self.leave(member_id)
        return expired

    def set_target(self, target: GroupAssignment) -> int:
        """Install a new target assignment (member → topic → partitions); returns its epoch.

        Every member id must be in the group and no partition may appear twice. Members absent
        from ``target`` are targeted to hold nothing.
        """
        pairs: dict[str, frozenset[TopicPartition]] = {}
        owner: dict[TopicPartition, str] = {}
        for member_id, assignment in target.items():
            if member_id not in self._members:
                raise ValueError(f"target names {member_id!r}, which is not a member")
            pairs[member_id] = _to_pairs(assignment)
            for tp in pairs[member_id]:
                if tp in owner:
                    raise ValueError(f"target gives {tp} to {owner[tp]} and {member_id}")
                owner[tp] = member_id
        self.group_epoch += 1
        self.target_epoch = self.group_epoch
        self._target = pairs
        return self.target_epoch

    def heartbeat(
        self,
        member_id: str,
        member_epoch: int,
        owned: Mapping[str, Collection[int]] | None,
        now_ms: int,
    ) -> HeartbeatResponse:
        """A member's heartbeat: ``owned`` is what it owns now (None: unchanged since last time)."""
        member = self._members.get(member_id)
        if member is None:
            raise UnknownMemberIdError(f"member {member_id!r} is not in the group; rejoin")
        owned_pairs = _to_pairs(owned) if owned is not None else None
        self._check_epoch(member, member_epoch, owned_pairs)
        member = replace(member, session_deadline_ms=now_ms + self.session_timeout_ms)
        if owned_pairs is not None and member.pending_revocation:
            member = self._release(member, member.pending_revocation - owned_pairs)
        member = self._reconcile(member)
        self._members[member_id] = member
        return HeartbeatResponse(member.member_epoch, _to_assignment(member.assigned))

    def validate_offset_commit(self, member_id: str, member_epoch: int) -> None:
        """Refuse a commit from a non-member or from any epoch but the member's current one."""
        member = self._members.get(member_id)
        if member is None:
            raise UnknownMemberIdError(f"member {member_id!r} is not in the group")
        if member_epoch != member.member_epoch:
            raise StaleMemberEpochError(
                f"commit from member {member_id!r} at epoch {member_epoch}, "
                f"current epoch is {member.member_epoch}: refresh the assignment and retry"
            )

    # -- transitions ---------------------------------------------------------------------------

    def _check_epoch(
        self, member: MemberStatus, epoch: int, owned: frozenset[TopicPartition] | None
    ) -> None:
        if epoch == member.member_epoch:
            return
        # A lost response: the member still speaks the previous epoch. Safe only if it owns
        # nothing it should not (KIP-848's rule).
        if epoch == member.previous_member_epoch and owned is not None and owned <= member.assigned:
            return
        raise FencedMemberEpochError(
            f"member {member.member_id!r} sent epoch {epoch}, current is {member.member_epoch}: "
            "rejoin the group"
        )

    def _release(self, member: MemberStatus, revoked: Collection[TopicPartition]) -> MemberStatus:
        for tp in revoked:
            del self._holder[tp]
        pending = member.pending_revocation - frozenset(revoked)
        return replace(member, pending_revocation=pending)

    def _reconcile(self, member: MemberStatus) -> MemberStatus:
        target = self._target.get(member.member_id, frozenset())
        # Always measured against the latest target, even mid-revocation: a partition pending
        # revocation that the new target gives back is still held by this member, so it may
        # return to its assignment at once instead of after a second revocation round.
        held = member.assigned | member.pending_revocation
        to_revoke = held - target
        if to_revoke:
            return replace(
                member,
                state=MemberState.UNREVOKED_PARTITIONS,
                assigned=held & target,
                pending_revocation=to_revoke,
            )
        wanted = target - held
        free = frozenset(tp for tp in wanted if self._is_free(tp))
        for tp in free:
            self._holder[tp] = member.member_id
        if member.member_epoch != self.target_epoch:
            member = replace(
                member,
                member_epoch=self.target_epoch,
                previous_member_epoch=member.member_epoch,
            )
        unreleased = len(wanted) != len(free)
        return replace(
            member,
            state=MemberState.UNRELEASED_PARTITIONS if unreleased else MemberState.STABLE,
            assigned=held | free,
            pending_revocation=frozenset(),
        )

    def _is_free(self, tp: TopicPartition) -> bool:
        return tp not in self._holder
