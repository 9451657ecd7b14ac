"""The active controller's decisions, as a pure state machine (DESIGN.md §6).

`ControllerLogic` holds the *speculative* image: the committed image plus every batch this
controller has proposed but not yet seen committed, as Kafka's QuorumController does. Each request
is validated against that image and answered with the records to propose (one batch, applied
atomically) and a result; the records are already applied to the speculative image. The shell (node/controller/service.py) proposes the batch to Raft,
and answers the caller only when the batch commits. When
the controller loses leadership the shell throws the speculative state away (`reset`) and starts
again from the committed image.

Broker liveness is not in the log: the active controller keeps each broker's last heartbeat time
in memory, and a newly active controller gives every broker a fresh session (Kafka does the same),
so a controller failover never fences healthy brokers.

Rules kept here:
- a broker is fenced when it registers, unfenced once a heartbeat shows it has caught up with the
  metadata log up to its own registration, fenced again when its session expires;
- fencing removes the broker from every ISR except where it is the last member (so no
  acknowledged data is elected away) and moves its leaderships to other ISR members; a partition
  with no eligible leader goes offline (leader -1) unless its topic allows unclean election;
- AlterPartition is accepted only from the current leader, with its current broker epoch, leader
  epoch and partition epoch, for an ISR that contains the leader and only active brokers;
- replicas a broker reports offline in its heartbeats leave the ISR and leadership, and are
  never elected or added back while reported (see `offline`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from strom.client.acl import AclBinding, AclBindingFilter
from strom.client.sasl import ScryptCredential
from strom.client.scram import ScramCredential
from strom.node.config import ConfigError
from strom.node.dynamic_config import (
    CLUSTER_DEFAULT,
    DYNAMIC_BROKER_KEYS,
    check_broker_resource,
    dynamic_value_text,
)
from strom.node.internal_topics import internal_topic_refusal, is_internal
from strom.node.metadata.image import (
    BROKER,
    NO_LEADER,
    TOPIC,
    MetadataImage,
    PartitionInfo,
    TopicImage,
    apply_records,
)
from strom.node.topic_config import TOPIC_CONFIGS_BY_NAME, InvalidTopicConfig, canonical_text
from strom.v1 import common_pb2, metadata_pb2

from . import reassignment, security
from .errors import ControllerError
from .offline import OFFLINE_REPLICAS_MAX, offline_changes
from .placement import choose_leader, place_replicas, placement_start

Record = metadata_pb2.MetadataRecord

TOPIC_NAME_LENGTH_MAX = 249
_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]+$")
PRODUCER_ID_BLOCK_SIZE = 1000
# Partitions one CreateTopics or CreatePartitions request may create, all topics together: Kafka's
# MAX_PARTITIONS_PER_BATCH (its controller also caps one user operation at 10,000 records). It
# bounds the work one request costs the controller, every broker applying the result, and a
# validate_only request alike; it is checked before any per-partition work.
PARTITIONS_PER_REQUEST_MAX = 10_000


def check_partitions_per_request(counts: Iterable[int]) -> None:
    """Refuse (POLICY_VIOLATION, Kafka's answer) a request whose topics would together create
    more than PARTITIONS_PER_REQUEST_MAX partitions; `counts` are the partitions each asks for
    (negative ones add nothing: they are refused one by one later)."""
    total = sum(max(0, count) for count in counts)
    if total > PARTITIONS_PER_REQUEST_MAX:
        raise ControllerError(
            common_pb2.POLICY_VIOLATION,
            f"excessively large number of partitions per request: {total}; at most "
            f"{PARTITIONS_PER_REQUEST_MAX} (split the request, or create the topic smaller and "
            "add partitions in steps)",
        )


def validate_topic_name(name: str) -> None:
    """Kafka's rules (`org.apache.kafka.common.internals.Topic.validate`)."""
    if not name:
        raise ControllerError(common_pb2.INVALID_TOPIC_EXCEPTION, "topic name is empty")
    if name in (".", ".."):
        raise ControllerError(common_pb2.INVALID_TOPIC_EXCEPTION, f"topic name cannot be {name!r}")
    if len(name) > TOPIC_NAME_LENGTH_MAX:
        raise ControllerError(
            common_pb2.INVALID_TOPIC_EXCEPTION,
            f"topic name is {len(name)} characters; the maximum is {TOPIC_NAME_LENGTH_MAX}",
        )
    if not _TOPIC_NAME.match(name):
        raise ControllerError(
            common_pb2.INVALID_TOPIC_EXCEPTION,
            f"topic name {name!r} is illegal: use only ASCII letters, digits, '.', '_' and '-'",
        )


def _collision_key(name: str) -> str:
    # '.' and '_' collide in metric names, so Kafka refuses topics that differ only there.
    return name.replace(".", "_")


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    num_partitions: int
    default_replication_factor: int
    topic_defaults: Mapping[str, object]
    delete_topic_enable: bool = True


def _change(
    topic_id: bytes,
    partition: int,
    *,
    leader: int | None = None,
    isr: Iterable[int] | None = None,
    replicas: Iterable[int] | None = None,
    offline_replicas: Iterable[int] | None = None,
    adding_replicas: Iterable[int] | None = None,
    removing_replicas: Iterable[int] | None = None,
) -> Record:
    change = metadata_pb2.PartitionChangeRecord(topic_id=topic_id, partition=partition)
    if leader is not None:
        change.leader = leader
    if isr is not None:
        change.isr.ids.extend(isr)
    if replicas is not None:
        change.replicas.ids.extend(replicas)
    if offline_replicas is not None:
        change.offline_replicas.SetInParent()  # set even when empty: "none offline any more"
        change.offline_replicas.ids.extend(offline_replicas)
    if adding_replicas is not None:
        change.adding_replicas.SetInParent()  # likewise: empty means "move over"
        change.adding_replicas.ids.extend(adding_replicas)
    if removing_replicas is not None:
        change.removing_replicas.SetInParent()
        change.removing_replicas.ids.extend(removing_replicas)
    return Record(partition_change=change)


def _assignment_change(
    topic_id: bytes, partition: int, part: PartitionInfo, state: reassignment.Assignment
) -> Record:
    """One record taking `part` to `state` (a reassignment step): every assignment field set."""
    return _change(
        topic_id,
        partition,
        leader=state.leader if state.leader != part.leader else None,
        isr=state.isr,
        replicas=state.replicas,
        adding_replicas=state.adding,
        removing_replicas=state.removing,
    )


class ControllerLogic:
    """Decisions of the active controller over its speculative image."""

    def __init__(
        self,
        settings: ControllerSettings,
        committed: MetadataImage,
        new_topic_id: Callable[[], bytes],
    ) -> None:
        self.settings = settings
        self.new_topic_id = new_topic_id
        self.committed = committed  # what the metadata log has committed
        self.image = committed  # committed + this controller's proposals in flight
        self.last_heartbeat_ms: dict[int, int] = {}

    # ---- speculative state -------------------------------------------------------------

    def reset(self, committed: MetadataImage, now_ms: int) -> None:
        """Start over from the committed image, giving every broker a fresh session."""
        self.committed = committed
        self.image = committed
        self.last_heartbeat_ms = {broker_id: now_ms for broker_id in committed.brokers}

    def on_commit(self, committed: MetadataImage, active: bool) -> None:
        """The metadata log committed up to `committed`. While this controller is active its
        speculative image already holds every batch it proposed, so only the committed image
        moves; otherwise the speculative image follows the log."""
        self.committed = committed
        if not active:
            self.image = committed

    def _accepted(self, records: list[Record]) -> list[Record]:
        """Apply records this controller is about to propose to its speculative image. Every
        decision method does this before returning, so the next request sees its effect."""
        if records:
            self.image, _ = apply_records(
                self.image, records, self.image.last_index, self.image.last_term
            )
        return records

    def _active(self) -> set[int]:
        return set(self.image.active_broker_ids())

    def _unclean_allowed(self, topic: TopicImage) -> bool:
        """The topic's config, else the dynamic default of every broker, else the node's."""
        key = "unclean.leader.election.enable"
        dynamic_default = self.image.configs.get((BROKER, CLUSTER_DEFAULT), {})
        value = self.image.topic_configs(topic.name).get(
            key, dynamic_default.get(key, self.settings.topic_defaults.get(key, False))
        )
        return str(value).lower() == "true"

    # ---- brokers -----------------------------------------------------------------------

    def register_broker(
        self,
        broker_id: int,
        incarnation_id: bytes,
        endpoints: list[metadata_pb2.Endpoint],
        rack: str,
        now_ms: int,
    ) -> tuple[list[Record], int]:
        """Register (or re-register) a broker; it starts fenced with a new, larger epoch.
        The epoch is derived from the image so replay and speculation agree: one more than any
        epoch this broker id ever had, and never below the metadata index."""
        previous = self.image.brokers.get(broker_id)
        # The committed index too: the speculative image keeps the index it started from, and a
        # broker unregistered since (gone from the image) must not get its old epoch again.
        last_index = max(self.image.last_index, self.committed.last_index)
        epoch = max(last_index + 1, (previous.broker_epoch + 1) if previous else 1)
        records = [
            Record(
                register_broker=metadata_pb2.RegisterBrokerRecord(
                    broker_id=broker_id,
                    broker_epoch=epoch,
                    incarnation_id=incarnation_id,
                    endpoints=endpoints,
                    rack=rack,
                )
            )
        ]
        if previous is not None:
            # The previous incarnation is gone: its leaderships and ISR places must move now,
            # not after a session timeout, because the new one starts with an empty memory of them.
            records += self._remove_from_partitions(broker_id)
        self.last_heartbeat_ms[broker_id] = now_ms
        return self._accepted(records), epoch

    def unregister_broker(self, broker_id: int, voters: Iterable[int]) -> list[Record]:
        """Remove a broker for good (KIP-631): only a stopped (fenced) broker-only node that
        hosts no replica, so no partition loses a replica it counts on, and the quorum is
        untouched."""
        broker = self.image.brokers.get(broker_id)
        if broker is None:
            raise ControllerError(
                common_pb2.BROKER_ID_NOT_REGISTERED, f"broker {broker_id} is not registered"
            )
        if broker_id in set(voters):
            raise ControllerError(
                common_pb2.INVALID_REQUEST,
                f"node {broker_id} is a controller voter; the metadata quorum does not change "
                "by unregistering a broker",
            )
        hosted = sorted(
            f"{topic.name}-{index}"
            for topic in self.image.topics.values()
            for index, part in topic.partitions.items()
            if broker_id in part.replicas
        )
        if hosted:
            raise ControllerError(
                common_pb2.INVALID_REQUEST,
                f"broker {broker_id} still hosts {len(hosted)} replicas ({', '.join(hosted[:5])}"
                f"{', ...' if len(hosted) > 5 else ''}): move them first "
                "(strom brokers decommission)",
            )
        if not broker.fenced:
            raise ControllerError(
                common_pb2.INVALID_REQUEST,
                f"broker {broker_id} is running (unfenced): stop it first, or it registers again",
            )
        self.last_heartbeat_ms.pop(broker_id, None)
        record = metadata_pb2.UnregisterBrokerRecord(
            broker_id=broker_id, broker_epoch=broker.broker_epoch
        )
        return self._accepted([Record(unregister_broker=record)])

    def _check_epoch(self, broker_id: int, broker_epoch: int) -> None:
        broker = self.image.brokers.get(broker_id)
        if broker is None:
            raise ControllerError(
                common_pb2.BROKER_ID_NOT_REGISTERED, f"broker {broker_id} is not registered"
            )
        if broker.broker_epoch != broker_epoch:
            raise ControllerError(
                common_pb2.STALE_BROKER_EPOCH,
                f"broker {broker_id} epoch {broker_epoch} is stale; current is "
                f"{broker.broker_epoch}: register again",
            )

    def broker_heartbeat(
        self,
        broker_id: int,
        broker_epoch: int,
        metadata_offset: int,
        want_fence: bool,
        want_shut_down: bool,
        now_ms: int,
        offline_replicas: Iterable[tuple[bytes, int]] = (),
    ) -> tuple[list[Record], dict[str, bool]]:
        """A heartbeat: liveness, unfencing once caught up, controlled shutdown, and the
        replicas the broker reports offline (reconciled first, so that unfencing never elects
        one of them)."""
        self._check_epoch(broker_id, broker_epoch)
        reported = list(offline_replicas)
        if len(reported) > OFFLINE_REPLICAS_MAX:
            raise ControllerError(
                common_pb2.INVALID_REQUEST,
                f"{len(reported)} offline replicas reported; at most {OFFLINE_REPLICAS_MAX}",
            )
        self.last_heartbeat_ms[broker_id] = now_ms
        offline = self._accepted(self._reconcile_offline(broker_id, reported))
        broker = self.image.brokers[broker_id]
        # A broker is caught up once it has applied the metadata log up to its own registration,
        # which therefore must have committed, and, if it was fenced since, up to its fencing:
        # a broker back from a partition must not act (lead, coordinate groups) on the image it
        # had before the leaderships moved away from it.
        registered = self.committed.brokers.get(broker_id)
        caught_up = (
            registered is not None
            and registered.broker_epoch == broker_epoch
            and metadata_offset >= registered.caught_up_index
        )
        records: list[Record] = []
        if want_shut_down:
            if not broker.in_controlled_shutdown:
                records = self._accepted(
                    [self._registration_change(broker_id, in_controlled_shutdown=True)]
                )
                records += self._accepted(self._remove_from_partitions(broker_id))
        elif want_fence:
            if not broker.fenced:
                records = self.fence_broker(broker_id)
        elif broker.fenced and caught_up:
            records = self._accepted([self._registration_change(broker_id, fenced=False)])
            records += self._accepted(self._elect_offline_leaders())
        broker = self.image.brokers[broker_id]
        leads = any(
            part.leader == broker_id
            for topic in self.image.topics.values()
            for part in topic.partitions.values()
        )
        return offline + records, {
            "is_caught_up": caught_up,
            "is_fenced": broker.fenced,
            "should_shut_down": broker.in_controlled_shutdown and not leads,
        }

    def _reconcile_offline(self, broker_id: int, reported: list[tuple[bytes, int]]) -> list[Record]:
        changes = offline_changes(
            self.image, broker_id, reported, self._active(), self._unclean_allowed
        )
        return [
            _change(
                c.topic_id,
                c.partition,
                leader=c.leader,
                isr=c.isr,
                offline_replicas=c.offline_replicas,
            )
            for c in changes
        ]

    def _registration_change(
        self,
        broker_id: int,
        *,
        fenced: bool | None = None,
        in_controlled_shutdown: bool | None = None,
    ) -> Record:
        change = metadata_pb2.BrokerRegistrationChangeRecord(
            broker_id=broker_id, broker_epoch=self.image.brokers[broker_id].broker_epoch
        )
        if fenced is not None:
            change.fenced = fenced
        if in_controlled_shutdown is not None:
            change.in_controlled_shutdown = in_controlled_shutdown
        return Record(broker_registration_change=change)

    def expired_brokers(self, now_ms: int, session_timeout_ms: int) -> list[int]:
        return sorted(
            broker_id
            for broker_id, broker in self.image.brokers.items()
            if not broker.fenced
            and now_ms - self.last_heartbeat_ms.get(broker_id, now_ms) > session_timeout_ms
        )

    def fence_broker(self, broker_id: int) -> list[Record]:
        """Fence a broker: out of every ISR it is not the last member of, leaderships moved."""
        records = [self._registration_change(broker_id, fenced=True)]
        records += self._remove_from_partitions(broker_id)
        return self._accepted(records)

    def _remove_from_partitions(self, broker_id: int) -> list[Record]:
        active = self._active() - {broker_id}
        records = []
        for topic in self.image.topics.values():
            unclean = self._unclean_allowed(topic)
            for index, part in topic.partitions.items():
                if broker_id not in part.isr and part.leader != broker_id:
                    continue
                isr = [r for r in part.isr if r != broker_id] or [broker_id]
                leader = choose_leader(part, active, unclean, isr=isr, avoid=broker_id)
                if leader != NO_LEADER and leader not in isr:
                    isr = [leader]  # unclean election: the new leader's log is the truth
                if leader == part.leader and tuple(isr) == part.isr:
                    continue
                records.append(
                    _change(
                        topic.topic_id,
                        index,
                        leader=leader if leader != part.leader else None,
                        isr=isr if tuple(isr) != part.isr else None,
                    )
                )
        return records

    def _elect_offline_leaders(self) -> list[Record]:
        """Give a leader to partitions that have none, now that a broker became active."""
        active = self._active()
        records = []
        for topic in self.image.topics.values():
            unclean = self._unclean_allowed(topic)
            for index, part in topic.partitions.items():
                if part.leader != NO_LEADER:
                    continue
                leader = choose_leader(part, active, unclean)
                if leader == NO_LEADER:
                    continue
                isr = part.isr if leader in part.isr else (leader,)
                records.append(
                    _change(
                        topic.topic_id,
                        index,
                        leader=leader,
                        isr=isr if isr != part.isr else None,
                    )
                )
        return records

    # ---- topics ------------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        num_partitions: int,
        replication_factor: int,
        configs: Mapping[str, str],
        validate_only: bool = False,
    ) -> tuple[list[Record], bytes, int, int]:
        """Records creating the topic; with `validate_only`, none (every check still runs)."""
        validate_topic_name(name)
        if self.image.topic_by_name(name) is not None:
            raise ControllerError(common_pb2.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
        collision = _collision_key(name)
        for existing in self.image.topic_ids:
            if _collision_key(existing) == collision:
                raise ControllerError(
                    common_pb2.INVALID_TOPIC_EXCEPTION,
                    f"topic {name!r} collides with existing topic {existing!r} "
                    "('.' and '_' are the same in metric names)",
                )
        partitions = self.settings.num_partitions if num_partitions == -1 else num_partitions
        factor = (
            self.settings.default_replication_factor
            if replication_factor == -1
            else replication_factor
        )
        if partitions < 1:
            raise ControllerError(
                common_pb2.INVALID_PARTITIONS,
                f"number of partitions must be at least 1, got {partitions}",
            )
        if factor < 1:
            raise ControllerError(
                common_pb2.INVALID_REPLICATION_FACTOR,
                f"replication factor must be at least 1, got {factor}",
            )
        check_partitions_per_request([partitions])
        checked = self._check_topic_configs(configs)
        placements = place_replicas(
            self._active_ordered(),
            partitions,
            factor,
            placement_start(self.image),
            racks=self._racks(),
        )
        topic_id = self.new_topic_id()
        records = [Record(topic=metadata_pb2.TopicRecord(name=name, topic_id=topic_id))]
        for key, value in sorted(checked.items()):
            records.append(
                Record(
                    config=metadata_pb2.ConfigRecord(
                        resource_type=TOPIC, resource_name=name, name=key, value=value
                    )
                )
            )
        for index, replicas in enumerate(placements):
            records.append(
                Record(
                    partition=metadata_pb2.PartitionRecord(
                        topic_id=topic_id,
                        partition=index,
                        replicas=replicas,
                        isr=replicas,
                        leader=replicas[0],
                        leader_epoch=0,
                        partition_epoch=0,
                    )
                )
            )
        if validate_only:
            return [], topic_id, partitions, factor
        return self._accepted(records), topic_id, partitions, factor

    def _active_ordered(self) -> list[int]:
        return self.image.active_broker_ids()

    def _racks(self) -> dict[int, str]:
        return {b.broker_id: b.rack for b in self.image.brokers.values() if b.rack}

    def _check_topic_configs(self, configs: Mapping[str, str]) -> dict[str, str]:
        """Every value checked by the table the brokers apply (node/topic_config.py), before
        anything is written: a value a broker cannot apply never reaches the log."""
        checked = {}
        for key, value in configs.items():
            try:
                checked[key] = canonical_text(key, value)
            except InvalidTopicConfig as exc:
                raise ControllerError(common_pb2.INVALID_CONFIG, str(exc)) from exc
        return checked

    def delete_topic(self, name: str) -> tuple[list[Record], bytes]:
        if not self.settings.delete_topic_enable:
            raise ControllerError(
                common_pb2.POLICY_VIOLATION, "topic deletion is disabled (delete.topic.enable)"
            )
        topic = self.image.topic_by_name(name)
        if topic is None:
            raise ControllerError(
                common_pb2.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} does not exist"
            )
        if is_internal(name):  # nothing in the cluster deletes one: every group's offsets
            raise ControllerError(
                common_pb2.INVALID_REQUEST, internal_topic_refusal(name, "deleted")
            )
        records = [Record(remove_topic=metadata_pb2.RemoveTopicRecord(topic_id=topic.topic_id))]
        return self._accepted(records), topic.topic_id

    def create_partitions(self, name: str, count: int) -> list[Record]:
        topic = self.image.topic_by_name(name)
        if topic is None:
            raise ControllerError(
                common_pb2.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} does not exist"
            )
        if is_internal(name):  # groups are placed by its partition count
            raise ControllerError(
                common_pb2.INVALID_REQUEST, internal_topic_refusal(name, "given more partitions")
            )
        current = len(topic.partitions)
        if count <= current:
            raise ControllerError(
                common_pb2.INVALID_PARTITIONS,
                f"topic {name!r} has {current} partitions; partitions can only grow, "
                f"so ask for more than {current}",
            )
        check_partitions_per_request([count - current])
        factor = len(topic.partitions[0].target_replicas)
        placements = place_replicas(
            self._active_ordered(),
            count - current,
            factor,
            placement_start(self.image),
            first_partition=0,
            racks=self._racks(),
        )
        return self._accepted(
            [
                Record(
                    partition=metadata_pb2.PartitionRecord(
                        topic_id=topic.topic_id,
                        partition=current + offset,
                        replicas=replicas,
                        isr=replicas,
                        leader=replicas[0],
                        leader_epoch=0,
                        partition_epoch=0,
                    )
                )
                for offset, replicas in enumerate(placements)
            ]
        )

    def alter_topic_configs(
        self,
        name: str,
        set_values: Mapping[str, str],
        delete: Iterable[str],
        validate_only: bool = False,
    ) -> list[Record]:
        """Records setting and deleting the topic's overrides; with `validate_only`, none
        (every check still runs)."""
        if self.image.topic_by_name(name) is None:
            raise ControllerError(
                common_pb2.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} does not exist"
            )
        checked = self._check_topic_configs(set_values)
        records = [
            Record(
                config=metadata_pb2.ConfigRecord(
                    resource_type=TOPIC, resource_name=name, name=key, value=value
                )
            )
            for key, value in sorted(checked.items())
        ]
        for key in sorted(delete):
            if key not in TOPIC_CONFIGS_BY_NAME:
                raise ControllerError(common_pb2.INVALID_CONFIG, f"unknown topic config {key!r}")
            records.append(
                Record(
                    config=metadata_pb2.ConfigRecord(
                        resource_type=TOPIC, resource_name=name, name=key
                    )
                )
            )
        return [] if validate_only else self._accepted(records)

    def alter_broker_configs(
        self,
        resource: str,
        set_values: Mapping[str, str],
        delete: Iterable[str],
        validate_only: bool = False,
    ) -> list[Record]:
        """Dynamic broker configs (node/dynamic_config.py) of one broker ("1") or of every
        broker (""): each value checked by the node config table before anything is written."""
        try:
            check_broker_resource(resource)
            checked = {key: dynamic_value_text(key, value) for key, value in set_values.items()}
            for key in delete:
                if key not in DYNAMIC_BROKER_KEYS:
                    dynamic_value_text(key, "")  # names why: unknown, or not dynamic
        except ConfigError as exc:
            raise ControllerError(common_pb2.INVALID_CONFIG, str(exc)) from exc
        records = [
            Record(
                config=metadata_pb2.ConfigRecord(
                    resource_type=BROKER, resource_name=resource, name=key, value=value
                )
            )
            for key, value in sorted(checked.items())
        ] + [
            Record(
                config=metadata_pb2.ConfigRecord(
                    resource_type=BROKER, resource_name=resource, name=key
                )
            )
            for key in sorted(set(delete))
        ]
        return [] if validate_only else self._accepted(records)

    # ---- partitions --------------------------------------------------------------------

    def alter_partition(
        self,
        broker_id: int,
        broker_epoch: int,
        topic_id: bytes,
        partition: int,
        leader_epoch: int,
        partition_epoch: int,
        new_isr: list[int],
        member_epochs: Mapping[int, int] | None = None,
    ) -> tuple[list[Record], PartitionInfo]:
        """An ISR change asked for by a partition's leader (DESIGN.md §7).

        A resend of a change that already committed (same leader and leader epoch, the ISR it
        asks for is the current one) is answered with success whatever its partition epoch:
        the leader missed the first answer. `member_epochs` (KIP-903) gives the broker epoch
        the leader saw each member fetch with; a member registered since with another epoch
        (it restarted, possibly with a shorter log) is refused as INELIGIBLE_REPLICA."""
        self._check_epoch(broker_id, broker_epoch)
        part = self.image.partition(topic_id, partition)
        if part is None:
            raise ControllerError(
                common_pb2.UNKNOWN_TOPIC_OR_PARTITION,
                f"partition {partition} of topic id {topic_id.hex()} does not exist",
            )
        if part.leader != broker_id:
            raise ControllerError(
                common_pb2.NOT_LEADER_OR_FOLLOWER,
                f"broker {broker_id} does not lead this partition (leader is {part.leader})",
            )
        if leader_epoch != part.leader_epoch:
            raise ControllerError(
                common_pb2.FENCED_LEADER_EPOCH,
                f"leader epoch {leader_epoch} is not the current {part.leader_epoch}",
            )
        if set(new_isr) == set(part.isr):
            return [], part  # already so: a retry of a change that committed
        if partition_epoch != part.partition_epoch:
            raise ControllerError(
                common_pb2.INVALID_UPDATE_VERSION,
                f"partition epoch {partition_epoch} is not the current {part.partition_epoch}",
            )
        if broker_id not in new_isr or not set(new_isr) <= set(part.replicas):
            raise ControllerError(
                common_pb2.INVALID_REQUEST,
                f"ISR {new_isr} must contain the leader and only replicas {list(part.replicas)}",
            )
        active = self._active()
        added = set(new_isr) - set(part.isr)
        ineligible = sorted(r for r in added if r not in active or r in part.offline_replicas)
        if ineligible:
            raise ControllerError(
                common_pb2.INELIGIBLE_REPLICA,
                f"replicas {ineligible} are fenced, shutting down or offline and cannot join the "
                "ISR",
            )
        restarted = sorted(
            r
            for r in added
            if (member_epochs or {}).get(r, -1) not in (-1, self.image.brokers[r].broker_epoch)
        )
        if restarted:
            raise ControllerError(
                common_pb2.INELIGIBLE_REPLICA,
                f"replicas {restarted} restarted since the leader saw them catch up "
                "(broker epoch changed) and cannot join the ISR",
            )
        ordered = [r for r in part.replicas if r in set(new_isr)]
        if tuple(ordered) == part.isr:
            return [], part
        # The ISR change that brings the last target replica in completes a move, atomically.
        completed = reassignment.after_isr_change(part, ordered, active)
        change = (
            _change(topic_id, partition, isr=ordered)
            if completed is None
            else _assignment_change(topic_id, partition, part, completed)
        )
        records = self._accepted([change])
        updated = self.image.partition(topic_id, partition)
        assert updated is not None
        return records, updated

    def elect_preferred_leaders(
        self, only: Iterable[tuple[bytes, int]] | None = None
    ) -> tuple[list[Record], dict[tuple[bytes, int], tuple[int, str]]]:
        """Move leadership to each partition's first replica where it is an active ISR member."""
        active = self._active()
        wanted = None if only is None else set(only)
        records = []
        results: dict[tuple[bytes, int], tuple[int, str]] = {}
        for topic in self.image.topics.values():
            for index, part in topic.partitions.items():
                key = (topic.topic_id, index)
                if wanted is not None and key not in wanted:
                    continue
                preferred = part.preferred_leader
                if part.leader == preferred:
                    results[key] = (common_pb2.ELECTION_NOT_NEEDED, "already the preferred leader")
                elif (
                    preferred in active
                    and preferred in part.isr
                    and preferred not in part.offline_replicas
                ):
                    records.append(_change(topic.topic_id, index, leader=preferred))
                    results[key] = (common_pb2.NONE, "")
                else:
                    results[key] = (
                        common_pb2.PREFERRED_LEADER_NOT_AVAILABLE,
                        f"preferred leader {preferred} is not an active ISR member",
                    )
        return self._accepted(records), results

    # ---- reassignment (node/controller/reassignment.py decides) --------------------------

    def reassign_partition(
        self,
        topic_name: str,
        partition: int,
        target: Sequence[int] | None,
        keep_replication_factor: bool = False,
    ) -> list[Record]:
        """Start, replace (a target) or cancel (None) the move of one partition: one record.
        `keep_replication_factor` (KIP-860) refuses a target of another size than the replicas
        the partition had before any move in progress."""
        topic = self.image.topic_by_name(topic_name)
        part = None if topic is None else topic.partitions.get(partition)
        if topic is None or part is None:
            raise ControllerError(
                common_pb2.UNKNOWN_TOPIC_OR_PARTITION,
                f"partition {partition} of topic {topic_name!r} does not exist",
            )
        active = self._active()
        if target is None:
            state = reassignment.cancel(part, active)
        else:
            reassignment.validate_target(target, self.image.brokers)
            original = part.original_replicas
            if keep_replication_factor and len(target) != len(original):
                raise ControllerError(
                    common_pb2.INVALID_REPLICATION_FACTOR,
                    f"{topic_name}-{partition}: the target {list(target)} would change the "
                    f"replication factor from {len(original)} to {len(target)}, which this "
                    "request does not allow",
                )
            state = reassignment.start(part, target, active)
        if not state.differs_from(part):
            return []
        return self._accepted([_assignment_change(topic.topic_id, partition, part, state)])

    def elect_unclean_leaders(
        self, only: Iterable[tuple[bytes, int]] | None = None
    ) -> tuple[list[Record], dict[tuple[bytes, int], tuple[int, str]]]:
        """Kafka's UNCLEAN election, asked for by an operator: a partition with no live leader
        gets an active ISR member if it has one, else any active replica (not offline), whose
        log becomes the truth: records acknowledged beyond it are lost, as the operator
        accepted. Partitions with a leader are left alone."""
        active = self._active()
        wanted = None if only is None else set(only)
        records = []
        results: dict[tuple[bytes, int], tuple[int, str]] = {}
        for topic in self.image.topics.values():
            for index, part in topic.partitions.items():
                key = (topic.topic_id, index)
                if wanted is not None and key not in wanted:
                    continue
                if part.leader != NO_LEADER and part.leader in active:
                    results[key] = (common_pb2.ELECTION_NOT_NEEDED, "the partition has a leader")
                    continue
                leader = choose_leader(part, active, True)
                if leader == NO_LEADER:
                    results[key] = (
                        common_pb2.ELIGIBLE_LEADERS_NOT_AVAILABLE,
                        f"none of the replicas {list(part.replicas)} is on an active broker",
                    )
                    continue
                isr = part.isr if leader in part.isr else (leader,)
                records.append(
                    _change(
                        topic.topic_id,
                        index,
                        leader=leader,
                        isr=isr if isr != part.isr else None,
                    )
                )
                results[key] = (common_pb2.NONE, "")
        return self._accepted(records), results

    def allocate_producer_ids(self, broker_id: int, broker_epoch: int) -> tuple[list[Record], int]:
        self._check_epoch(broker_id, broker_epoch)
        start = self.image.next_producer_id
        records = [
            Record(
                producer_ids=metadata_pb2.ProducerIdsRecord(
                    broker_id=broker_id,
                    broker_epoch=broker_epoch,
                    next_producer_id=start + PRODUCER_ID_BLOCK_SIZE,
                )
            )
        ]
        return self._accepted(records), start

    # ---- users and ACLs (node/controller/security.py decides) --------------------------

    def upsert_user(
        self, name: str, credential: ScryptCredential, scram: Sequence[ScramCredential] = ()
    ) -> list[Record]:
        return self._accepted(security.upsert_user(self.image, name, credential, scram))

    def alter_scram(
        self, name: str, upsertions: Sequence[ScramCredential], deletions: Sequence[int]
    ) -> list[Record]:
        return self._accepted(security.alter_scram(self.image, name, upsertions, deletions))

    def delete_user(self, name: str) -> list[Record]:
        return self._accepted(security.delete_user(self.image, name))

    def create_acl(self, binding: AclBinding) -> list[Record]:
        return self._accepted(security.create_acl(self.image, binding))

    def delete_acls(self, selector: AclBindingFilter) -> tuple[list[Record], list[AclBinding]]:
        records, deleted = security.delete_acls(self.image, selector)
        return self._accepted(records), deleted
