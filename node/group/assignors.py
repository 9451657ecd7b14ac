"""Partition assignors of a consumer group: pure functions from members to partitions.

An assignor takes the group's members (id, client id, optional ``group.instance.id``, subscribed
topics, partitions each owned in the previous assignment) and the partition count of each topic,
and returns, for every member, its partitions per topic as sorted tuples. The coordinator runs it
on the server (KIP-848 style) whenever the group's members, subscriptions or partition counts
change; its result is the *target* assignment (membership.py reconciles members towards it).

Rules every assignor keeps (checked by property tests):

- every partition of a subscribed, existing topic goes to exactly one member subscribed to that
  topic; nothing else is assigned (topics missing from ``partition_counts`` are skipped: they do
  not exist yet);
- the result depends only on the inputs' values, never on their order, so every coordinator
  computes the same assignment;
- members are ordered by ``group.instance.id`` (static members first, as in Kafka), then
  ``client.id``, then member id: that order is what "first" means below.

The assignors, by name (``ASSIGNORS``):

- ``range`` (default): Kafka's classic, non-sticky ``RangeAssignor``. Per topic, the partitions in
  numeric order are cut into contiguous ranges over the topic's subscribers in member order; the
  first ``count % subscribers`` members get one extra. Balanced within one *per topic*, so over
  many topics the first members may carry more (as Kafka documents).
- ``roundrobin``: Kafka's ``RoundRobinAssignor``. All partitions sorted by (topic, partition) are
  dealt one at a time to members in member order, cyclically, skipping members not subscribed to
  the partition's topic. Balanced within one when subscriptions are identical.
- ``uniform`` (alias ``sticky``): keeps each member's previously owned partitions where balance
  allows, like Kafka's ``StickyAssignor`` and KIP-848's uniform assignor. With identical
  subscriptions it reaches balance within one while moving the fewest partitions possible; with
  differing subscriptions it stops when no partition can move from a member to an eligible member
  carrying two or more fewer partitions.

An unknown name is ``UnsupportedAssignorError`` (Kafka's UNSUPPORTED_ASSIGNOR, code 112).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "ASSIGNORS",
    "DEFAULT_ASSIGNOR",
    "AssignorFn",
    "GroupAssignment",
    "MemberAssignment",
    "MemberSubscription",
    "UnsupportedAssignorError",
    "assign",
    "get_assignor",
    "member_order_key",
    "range_assign",
    "roundrobin_assign",
    "uniform_assign",
]

MemberAssignment = dict[str, tuple[int, ...]]
"""topic → the member's partitions of it, sorted; topics with no partition for it are absent."""
GroupAssignment = dict[str, MemberAssignment]
"""member id → its assignment; every member of the input has an entry (possibly empty)."""


@dataclass(frozen=True, slots=True)
class MemberSubscription:
    """What the assignor knows of one member."""

    member_id: str
    topics: frozenset[str]
    client_id: str = ""
    group_instance_id: str | None = None
    owned: Mapping[str, Collection[int]] = field(default_factory=dict)
    """Partitions per topic the member was assigned before (read only by sticky assignors)."""


AssignorFn = Callable[[Sequence[MemberSubscription], Mapping[str, int]], GroupAssignment]


class UnsupportedAssignorError(ValueError):
    """The group asked for an assignor this coordinator does not have (fatal for the request)."""

    error_code = 112
    error_name = "UNSUPPORTED_ASSIGNOR"


def member_order_key(member: MemberSubscription) -> tuple[int, str, str, str]:
    """Static members (with ``group.instance.id``) first, then by client id, then member id."""
    if member.group_instance_id is not None:
        return (0, member.group_instance_id, member.client_id, member.member_id)
    return (1, "", member.client_id, member.member_id)


def _ordered(members: Sequence[MemberSubscription]) -> list[MemberSubscription]:
    ordered = sorted(members, key=member_order_key)
    ids = [member.member_id for member in ordered]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate member ids in {sorted(ids)}")
    return ordered


def _subscribed_topics(
    members: Sequence[MemberSubscription], partition_counts: Mapping[str, int]
) -> list[str]:
    """Topics some member subscribes to that exist with at least one partition, sorted."""
    topics: set[str] = set()
    for member in members:
        topics.update(member.topics)
    return sorted(topic for topic in topics if partition_counts.get(topic, 0) > 0)


def _freeze(lists: dict[str, dict[str, list[int]]]) -> GroupAssignment:
    return {
        member_id: {topic: tuple(sorted(parts)) for topic, parts in sorted(topics.items()) if parts}
        for member_id, topics in lists.items()
    }


def range_assign(
    members: Sequence[MemberSubscription], partition_counts: Mapping[str, int]
) -> GroupAssignment:
    """Kafka's classic ``RangeAssignor`` (see the module docstring)."""
    ordered = _ordered(members)
    result: GroupAssignment = {member.member_id: {} for member in ordered}
    for topic in _subscribed_topics(ordered, partition_counts):
        count = partition_counts[topic]
        subscribers = [member for member in ordered if topic in member.topics]
        per_member, with_extra = divmod(count, len(subscribers))
        start = 0
        for position, member in enumerate(subscribers):
            length = per_member + (1 if position < with_extra else 0)
            if length:
                result[member.member_id][topic] = tuple(range(start, start + length))
            start += length
    return result


def roundrobin_assign(
    members: Sequence[MemberSubscription], partition_counts: Mapping[str, int]
) -> GroupAssignment:
    """Kafka's ``RoundRobinAssignor`` (see the module docstring)."""
    ordered = _ordered(members)
    lists: dict[str, dict[str, list[int]]] = {member.member_id: {} for member in ordered}
    cursor = 0
    for topic in _subscribed_topics(ordered, partition_counts):
        for partition in range(partition_counts[topic]):
            # Terminates: the topic came from some member's subscription.
            while topic not in ordered[cursor % len(ordered)].topics:
                cursor += 1
            member_id = ordered[cursor % len(ordered)].member_id
            lists[member_id].setdefault(topic, []).append(partition)
            cursor += 1
    return _freeze(lists)


class _StickyState:
    """Working state of ``uniform_assign``: who holds what, and how many, by member position."""

    def __init__(self, ordered: list[MemberSubscription], partition_counts: Mapping[str, int]):
        self.ordered = ordered
        self.topics = _subscribed_topics(ordered, partition_counts)
        self.counts = partition_counts
        self.held: list[dict[str, set[int]]] = [{} for _ in ordered]
        self.load = [0] * len(ordered)
        self.subscribers = {
            topic: [i for i, member in enumerate(ordered) if topic in member.topics]
            for topic in self.topics
        }

    def keep_owned(self) -> set[tuple[str, int]]:
        """Keep each still-valid owned partition; the first member in order wins a conflict."""
        claimed: set[tuple[str, int]] = set()
        for i, member in enumerate(self.ordered):
            for topic in sorted(member.owned):
                if topic not in member.topics or topic not in self.subscribers:
                    continue
                count = self.counts[topic]
                for partition in sorted(set(member.owned[topic])):
                    if 0 <= partition < count and (topic, partition) not in claimed:
                        claimed.add((topic, partition))
                        self.give(i, topic, partition)
        return claimed

    def give(self, i: int, topic: str, partition: int) -> None:
        self.held[i].setdefault(topic, set()).add(partition)
        self.load[i] += 1

    def take(self, i: int, topic: str, partition: int) -> None:
        self.held[i][topic].discard(partition)
        self.load[i] -= 1

    def assign_unclaimed(self, claimed: set[tuple[str, int]]) -> None:
        """Each free partition to its least-loaded eligible member; scarce topics first."""
        free = [
            (len(self.subscribers[topic]), topic, partition)
            for topic in self.topics
            for partition in range(self.counts[topic])
            if (topic, partition) not in claimed
        ]
        for _, topic, partition in sorted(free):
            target = min(self.subscribers[topic], key=lambda i: (self.load[i], i))
            self.give(target, topic, partition)

    def maybe_move_one(self) -> bool:
        """Move one partition from the most-loaded member able to give to one with ≥ 2 fewer."""
        members = range(len(self.ordered))
        for donor in sorted(members, key=lambda i: (-self.load[i], i)):
            receivers = sorted(
                (i for i in members if self.load[i] <= self.load[donor] - 2),
                key=lambda i: (self.load[i], i),
            )
            for receiver in receivers:
                wanted = self.ordered[receiver].topics
                for topic in sorted(self.held[donor]):
                    partitions = self.held[donor][topic]
                    if partitions and topic in wanted:
                        partition = max(partitions)
                        self.take(donor, topic, partition)
                        self.give(receiver, topic, partition)
                        return True
        return False

    def result(self) -> GroupAssignment:
        return {
            member.member_id: {
                topic: tuple(sorted(parts)) for topic, parts in sorted(held.items()) if parts
            }
            for member, held in zip(self.ordered, self.held, strict=True)
        }


def uniform_assign(
    members: Sequence[MemberSubscription], partition_counts: Mapping[str, int]
) -> GroupAssignment:
    """Sticky assignment: keep owned partitions, fill the rest, then rebalance by single moves.

    Each move takes a partition from the most-loaded member that can give one to an eligible
    member with at least two fewer; that lowers the sum of squared loads by at least two, so the
    loop ends.
    """
    state = _StickyState(_ordered(members), partition_counts)
    claimed = state.keep_owned()
    state.assign_unclaimed(claimed)
    while state.maybe_move_one():
        pass
    return state.result()


DEFAULT_ASSIGNOR = "range"
ASSIGNORS: Mapping[str, AssignorFn] = {
    "range": range_assign,
    "roundrobin": roundrobin_assign,
    "uniform": uniform_assign,
    "sticky": uniform_assign,
}


def get_assignor(name: str) -> AssignorFn:
    """The assignor registered as ``name``, or ``UnsupportedAssignorError``."""
    assignor = ASSIGNORS.get(name)
    if assignor is None:
        raise UnsupportedAssignorError(
            f"UNSUPPORTED_ASSIGNOR: the group asked for assignor {name!r}; "
            f"this coordinator supports {', '.join(sorted(ASSIGNORS))}"
        )
    return assignor


def assign(
    name: str, members: Sequence[MemberSubscription], partition_counts: Mapping[str, int]
) -> GroupAssignment:
    """Run the assignor registered as ``name``."""
    return get_assignor(name)(members, partition_counts)
