"""Partition reassignment (KIP-455, the KRaft way): pure functions of a partition's state.

A move is kept in the partition record itself, so every step is a metadata record and a new
active controller, replaying the log, resumes exactly where the last one stopped:

1. **start**: `replicas` becomes the target replicas followed by those being removed;
   `adding_replicas` are the targets the partition did not have, `removing_replicas` the old
   ones the target drops. The ISR and the leader stay: the adding replicas are followers (the
   brokers' replica managers create their logs and fetch, because they are now in `replicas`)
   outside the ISR until they catch up.
2. each adding replica joins the ISR the ordinary way (the leader's AlterPartition, once it
   holds everything committed).
3. **complete**, in the same record as the ISR change that brought the last target in (or as
   soon as the state allows it): `replicas` = target, ISR = ISR ∩ target, leadership moves to an
   active target ISR member if the leader was being removed, both lists emptied. The removed
   brokers see themselves gone from `replicas` and delete their logs.

**cancel** returns to the original replicas (`replicas` minus the adding ones, in that order, as
Kafka's revert does: the original preference order is not kept, so the preferred leader may
change; the current leader stays if it is an original replica): the ISR keeps
its original members, leadership moves back if it had gone to an adding replica. A cancel that
would leave no ISR member (only adding replicas are in sync) is refused: it would need an
unclean election. A new target for a partition already moving replaces the move, measured from
the original replicas (Kafka does the same).

Leader choice follows `placement.choose_leader`: only active ISR members, never an offline one.
No step makes a replica that is not in the ISR leader, so nothing acknowledged is lost.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from strom.node.metadata.image import NO_LEADER, PartitionInfo
from strom.v1 import common_pb2

from .errors import ControllerError
from .placement import choose_leader


@dataclass(frozen=True, slots=True)
class Assignment:
    """A partition's replica assignment after one step; the record sets every field."""

    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    adding: tuple[int, ...]
    removing: tuple[int, ...]

    def differs_from(self, part: PartitionInfo) -> bool:
        return (
            self.replicas != part.replicas
            or self.isr != part.isr
            or self.leader != part.leader
            or self.adding != part.adding_replicas
            or self.removing != part.removing_replicas
        )


def validate_target(target: Sequence[int], registered: Collection[int]) -> None:
    """Kafka's checks of a manual assignment: non-empty, no broker twice, every broker known."""
    if not target:
        raise ControllerError(
            common_pb2.INVALID_REPLICA_ASSIGNMENT, "the target replica list is empty"
        )
    if len(set(target)) != len(target):
        raise ControllerError(
            common_pb2.INVALID_REPLICA_ASSIGNMENT,
            f"the target replicas {list(target)} name a broker more than once",
        )
    unknown = sorted(r for r in target if r not in registered)
    if unknown:
        raise ControllerError(
            common_pb2.INVALID_REPLICA_ASSIGNMENT,
            f"the target replicas include brokers {unknown}, which are not registered",
        )


def start(part: PartitionInfo, target: Sequence[int], active: Collection[int]) -> Assignment:
    """The state that starts moving `part` to `target` (or replaces the move in progress), and
    completes it at once when the target is already in sync (a shrink or a reorder)."""
    original = part.original_replicas
    adding = tuple(r for r in target if r not in original)
    removing = tuple(r for r in original if r not in target)
    replicas = (*target, *removing)
    # Replicas of a replaced move that the new one drops leave the ISR with their assignment.
    isr = tuple(r for r in replicas if r in part.isr)
    if not isr:
        raise ControllerError(
            common_pb2.INVALID_REPLICA_ASSIGNMENT,
            f"the new assignment {list(target)} keeps none of the in-sync replicas "
            f"{list(part.isr)}",
        )
    leader = part.leader
    if leader not in replicas:
        leader = choose_leader(replace(part, replicas=replicas), active, False, isr=isr)
        if leader == NO_LEADER and part.leader != NO_LEADER:
            raise ControllerError(
                common_pb2.INVALID_REPLICA_ASSIGNMENT,
                f"the new assignment drops leader {part.leader} and no other in-sync replica "
                "of it can lead now",
            )
    moving = Assignment(replicas, isr, leader, adding, removing)
    return complete(moving, part, active) or moving


def complete(state: Assignment, part: PartitionInfo, active: Collection[int]) -> Assignment | None:
    """The completed assignment if `state` is a move whose every target replica is in the ISR
    and an active target ISR member can lead; None while it must wait."""
    if not state.adding and not state.removing:
        return None
    target = tuple(r for r in state.replicas if r not in state.removing)
    if any(r not in state.isr for r in target):
        return None
    isr = tuple(r for r in target if r in state.isr)
    leader = state.leader
    if leader not in target:
        candidate = replace(part, replicas=target, isr=isr, leader=state.leader)
        leader = choose_leader(candidate, active, False, isr=isr)
        if leader == NO_LEADER and state.leader != NO_LEADER:
            return None  # no target member can lead yet: the old leader keeps serving
    return Assignment(target, isr, leader, (), ())


def after_isr_change(
    part: PartitionInfo, isr: Sequence[int], active: Collection[int]
) -> Assignment | None:
    """When the ISR becomes `isr`: the completed move, if this change completes one."""
    state = Assignment(
        part.replicas, tuple(isr), part.leader, part.adding_replicas, part.removing_replicas
    )
    return complete(state, part, active)


def cancel(part: PartitionInfo, active: Collection[int]) -> Assignment:
    """The state that abandons the move in progress, back to the original replicas."""
    if not part.reassigning:
        raise ControllerError(
            common_pb2.NO_REASSIGNMENT_IN_PROGRESS,
            "no reassignment of this partition is in progress",
        )
    original = part.original_replicas
    isr = tuple(r for r in part.isr if r in original)
    if not isr:
        raise ControllerError(
            common_pb2.INVALID_REPLICA_ASSIGNMENT,
            f"cannot cancel: none of the original replicas {list(original)} is in sync "
            f"(ISR {list(part.isr)}); it would need an unclean election",
        )
    leader = part.leader
    if leader not in original:
        leader = choose_leader(replace(part, replicas=original), active, False, isr=isr)
        if leader == NO_LEADER and part.leader != NO_LEADER:
            raise ControllerError(
                common_pb2.INVALID_REPLICA_ASSIGNMENT,
                f"cannot cancel: leader {part.leader} is an added replica and no original "
                "replica can lead now",
            )
    return Assignment(original, isr, leader, (), ())
