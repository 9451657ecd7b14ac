"""Offline replicas: what the controller does when a broker reports replicas it cannot serve.

A broker whose log of a partition failed (it could not be opened, an I/O error, damage) keeps
running and reports that replica in every heartbeat (`BrokerHeartbeatRequest.offline_replicas`,
the full set each time), as Kafka's brokers report failed log directories (KIP-858; per replica
here, because a strom broker fails one partition's log, not a whole directory). The controller
reconciles the partition records with the report, a pure function of the image:

- a newly reported replica is marked in `PartitionInfo.offline_replicas`, leaves the ISR unless
  it is the last member (so no acknowledged data is elected away, the rule fencing follows), and
  loses leadership to another eligible ISR member, or the partition goes offline (leader -1)
  unless its topic allows unclean election;
- a marked replica no longer reported (its broker restarted and opened the log, or the cause
  went away) is unmarked; a partition left without a leader gets one if it can.

Offline replicas are never elected (`placement.choose_leader`) nor added to an ISR
(`ControllerLogic.alter_partition`). Reports of replicas the broker does not host are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

from strom.node.metadata.image import NO_LEADER, MetadataImage, PartitionInfo, TopicImage

from .placement import choose_leader

# A heartbeat naming more offline replicas than this is refused (INVALID_REQUEST): no broker
# hosts that many.
OFFLINE_REPLICAS_MAX = 100_000


@dataclass(frozen=True, slots=True)
class OfflineChange:
    """One partition record to propose: a new leader and ISR where they change (None: keep)."""

    topic_id: bytes
    partition: int
    leader: int | None
    isr: tuple[int, ...] | None
    offline_replicas: tuple[int, ...]


def offline_changes(
    image: MetadataImage,
    broker_id: int,
    reported: Collection[tuple[bytes, int]],
    active: Collection[int],
    unclean: Callable[[TopicImage], bool],
) -> list[OfflineChange]:
    """The changes that make the image agree with `broker_id`'s report of its offline replicas."""
    wanted = set(reported)
    changes = []
    for topic in image.topics.values():
        for index, part in topic.partitions.items():
            if broker_id not in part.replicas:
                continue
            offline = (topic.topic_id, index) in wanted
            if offline == (broker_id in part.offline_replicas):
                continue
            if offline:
                change = _going(part, broker_id, active, unclean(topic))
            else:
                change = _back(part, broker_id, active, unclean(topic))
            changes.append(OfflineChange(topic.topic_id, index, *change))
    return changes


def _going(
    part: PartitionInfo, broker_id: int, active: Collection[int], unclean: bool
) -> tuple[int | None, tuple[int, ...] | None, tuple[int, ...]]:
    marked = tuple(r for r in part.replicas if r in part.offline_replicas or r == broker_id)
    isr = tuple(r for r in part.isr if r != broker_id) or (broker_id,)
    leader = choose_leader(replace(part, offline_replicas=marked), active, unclean, isr=isr)
    if leader != NO_LEADER and leader not in isr:
        isr = (leader,)  # unclean election: the new leader's log is the truth
    return (
        None if leader == part.leader else leader,
        None if isr == part.isr else isr,
        marked,
    )


def _back(
    part: PartitionInfo, broker_id: int, active: Collection[int], unclean: bool
) -> tuple[int | None, tuple[int, ...] | None, tuple[int, ...]]:
    marked = tuple(r for r in part.offline_replicas if r != broker_id)
    if part.leader != NO_LEADER:
        return None, None, marked  # it rejoins the ISR by fetching, as any follower
    leader = choose_leader(replace(part, offline_replicas=marked), active, unclean)
    if leader == NO_LEADER:
        return None, None, marked
    isr = part.isr if leader in part.isr else (leader,)
    return leader, None if isr == part.isr else isr, marked
