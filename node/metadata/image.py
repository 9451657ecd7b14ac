"""The metadata image: what every node knows of the cluster, rebuilt by replaying the metadata log.

An image is immutable. `apply_batch(image, batch)` returns a new image and a `MetadataDelta`
naming what changed, so brokers react only to the partitions and brokers that moved (DESIGN.md
§6). Replay is deterministic: given the same committed batches in the same order, every node
builds the same image, which is why epochs are derived here (a leader change bumps
`leader_epoch`, any partition change bumps `partition_epoch`) rather than carried in records.

Records that do not fit the image (a partition of an unknown topic, a change to a broker that
never registered) are programming errors of the controller: the controller validates every
request against its own speculative image before it proposes records, so replay asserts instead
of guessing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from strom.client import scram
from strom.client.acl import AclBinding, binding_from_proto, binding_to_proto
from strom.client.sasl import ScryptCredential, credential_from_proto, credential_to_proto
from strom.client.scram import ScramCredential
from strom.v1 import metadata_pb2

NO_LEADER = -1
TOPIC = metadata_pb2.CONFIG_RESOURCE_TOPIC
BROKER = metadata_pb2.CONFIG_RESOURCE_BROKER

_EMPTY: Mapping[object, object] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    listener: str
    host: str
    port: int
    security_protocol: str


@dataclass(frozen=True, slots=True)
class BrokerRegistration:
    broker_id: int
    broker_epoch: int
    incarnation_id: bytes
    endpoints: tuple[EndpointInfo, ...]
    rack: str
    fenced: bool = True
    in_controlled_shutdown: bool = False
    # Raft index of the batch that registered it: the broker is caught up once it has applied
    # the metadata log this far.
    registered_index: int = 0
    # Raft index of the batch that last fenced it (with the leaderships moved away in the same
    # batch): a fenced broker is caught up again only once it has applied this far too.
    fenced_index: int = 0

    @property
    def caught_up_index(self) -> int:
        """The metadata index this broker must have applied before it may be unfenced."""
        return max(self.registered_index, self.fenced_index)

    def endpoint(self, listener: str) -> EndpointInfo | None:
        for endpoint in self.endpoints:
            if endpoint.listener == listener:
                return endpoint
        return None

    @property
    def active(self) -> bool:
        """Unfenced and not shutting down: may lead partitions and be in an ISR."""
        return not self.fenced and not self.in_controlled_shutdown


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    leader_epoch: int
    partition_epoch: int
    # Replicas their broker reported offline (a failed log): never elected, never added to the
    # ISR (the controller's rules, node/controller/logic.py).
    offline_replicas: tuple[int, ...] = ()
    # A reassignment in progress (KIP-455; node/controller/reassignment.py): `replicas` is the
    # target replicas followed by `removing_replicas`; `adding_replicas` are targets still
    # catching up. Both empty when no move is under way.
    adding_replicas: tuple[int, ...] = ()
    removing_replicas: tuple[int, ...] = ()

    @property
    def preferred_leader(self) -> int:
        return self.replicas[0]

    @property
    def reassigning(self) -> bool:
        return bool(self.adding_replicas or self.removing_replicas)

    @property
    def target_replicas(self) -> tuple[int, ...]:
        """Where the partition is going: its replicas once any move in progress completes."""
        return tuple(r for r in self.replicas if r not in self.removing_replicas)

    @property
    def original_replicas(self) -> tuple[int, ...]:
        """Where the partition was before the move in progress (what a cancel returns to)."""
        return tuple(r for r in self.replicas if r not in self.adding_replicas)


@dataclass(frozen=True, slots=True)
class TopicImage:
    name: str
    topic_id: bytes
    partitions: Mapping[int, PartitionInfo]


@dataclass(frozen=True, slots=True)
class MetadataImage:
    """Everything the metadata log says, as of Raft index `last_index`."""

    last_index: int = 0
    last_term: int = 0
    brokers: Mapping[int, BrokerRegistration] = field(default_factory=lambda: MappingProxyType({}))
    topics: Mapping[bytes, TopicImage] = field(default_factory=lambda: MappingProxyType({}))
    topic_ids: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}))
    # (resource type, resource name) -> {config name: value}, overrides only
    configs: Mapping[tuple[int, str], Mapping[str, str]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    next_producer_id: int = 0
    # SASL users by name (salted scrypt keys, never passwords) and the ACL bindings.
    users: Mapping[str, ScryptCredential] = field(default_factory=lambda: MappingProxyType({}))
    # SASL/SCRAM credentials by (user name, metadata_pb2.ScramMechanism): salts and keys only.
    scram: Mapping[tuple[str, int], ScramCredential] = field(
        default_factory=lambda: MappingProxyType({})
    )
    acls: frozenset[AclBinding] = frozenset()

    def scram_of(self, name: str) -> dict[int, ScramCredential]:
        """The SCRAM credentials of one user, by mechanism."""
        return {m: c for (user, m), c in self.scram.items() if user == name}

    def user_names(self) -> set[str]:
        """Every user: with a scrypt credential, SCRAM credentials, or both."""
        return set(self.users) | {name for name, _ in self.scram}

    def topic_by_name(self, name: str) -> TopicImage | None:
        topic_id = self.topic_ids.get(name)
        return None if topic_id is None else self.topics[topic_id]

    def partition(self, topic_id: bytes, partition: int) -> PartitionInfo | None:
        topic = self.topics.get(topic_id)
        return None if topic is None else topic.partitions.get(partition)

    def topic_configs(self, name: str) -> Mapping[str, str]:
        return self.configs.get((TOPIC, name), MappingProxyType({}))

    def active_broker_ids(self) -> list[int]:
        return sorted(b.broker_id for b in self.brokers.values() if b.active)


@dataclass(slots=True)
class MetadataDelta:
    """What one batch (or several) changed; brokers use it to act on their replicas."""

    changed_partitions: set[tuple[bytes, int]] = field(default_factory=set)
    created_topics: set[bytes] = field(default_factory=set)
    removed_topics: dict[bytes, TopicImage] = field(default_factory=dict)
    changed_brokers: set[int] = field(default_factory=set)
    changed_configs: set[tuple[int, str]] = field(default_factory=set)
    changed_users: set[str] = field(default_factory=set)
    acls_changed: bool = False

    def is_empty(self) -> bool:
        return not (
            self.changed_partitions
            or self.created_topics
            or self.removed_topics
            or self.changed_brokers
            or self.changed_configs
            or self.changed_users
            or self.acls_changed
        )


class _Builder:
    """Copy-on-write application of records to an image. Maps are copied once per batch, on the
    first write to them, so a batch costs O(changed) plus one copy of each touched map."""

    def __init__(self, image: MetadataImage, last_index: int) -> None:
        self.base = image
        self.last_index = last_index
        self.brokers: dict[int, BrokerRegistration] | None = None
        self.topics: dict[bytes, TopicImage] | None = None
        self.topic_ids: dict[str, bytes] | None = None
        self.configs: dict[tuple[int, str], Mapping[str, str]] | None = None
        self.partitions: dict[bytes, dict[int, PartitionInfo]] = {}
        self.next_producer_id = image.next_producer_id
        self.users: dict[str, ScryptCredential] | None = None
        self.scram: dict[tuple[str, int], ScramCredential] | None = None
        self.acls: set[AclBinding] | None = None
        self.delta = MetadataDelta()

    def _users(self) -> dict[str, ScryptCredential]:
        if self.users is None:
            self.users = dict(self.base.users)
        return self.users

    def _scram(self) -> dict[tuple[str, int], ScramCredential]:
        if self.scram is None:
            self.scram = dict(self.base.scram)
        return self.scram

    def _acls(self) -> set[AclBinding]:
        if self.acls is None:
            self.acls = set(self.base.acls)
        return self.acls

    def _brokers(self) -> dict[int, BrokerRegistration]:
        if self.brokers is None:
            self.brokers = dict(self.base.brokers)
        return self.brokers

    def _topics(self) -> dict[bytes, TopicImage]:
        if self.topics is None:
            self.topics = dict(self.base.topics)
        return self.topics

    def _topic_ids(self) -> dict[str, bytes]:
        if self.topic_ids is None:
            self.topic_ids = dict(self.base.topic_ids)
        return self.topic_ids

    def _configs(self) -> dict[tuple[int, str], Mapping[str, str]]:
        if self.configs is None:
            self.configs = dict(self.base.configs)
        return self.configs

    def _partitions_of(self, topic_id: bytes) -> dict[int, PartitionInfo]:
        parts = self.partitions.get(topic_id)
        if parts is None:
            topic = self._topics().get(topic_id)
            assert topic is not None, f"partition record for unknown topic {topic_id.hex()}"
            parts = self.partitions[topic_id] = dict(topic.partitions)
        return parts

    def apply(self, record: metadata_pb2.MetadataRecord) -> None:
        kind = record.WhichOneof("record")
        assert kind is not None, "empty metadata record"
        handler = getattr(self, f"_apply_{kind}", None)
        assert handler is not None, f"unknown metadata record {kind!r}"
        handler(getattr(record, kind))

    def _apply_register_broker(self, rec: metadata_pb2.RegisterBrokerRecord) -> None:
        self._brokers()[rec.broker_id] = BrokerRegistration(
            broker_id=rec.broker_id,
            broker_epoch=rec.broker_epoch,
            incarnation_id=rec.incarnation_id,
            endpoints=tuple(
                EndpointInfo(e.listener, e.host, e.port, e.security_protocol) for e in rec.endpoints
            ),
            rack=rec.rack,
            registered_index=self.last_index,
        )
        self.delta.changed_brokers.add(rec.broker_id)

    def _apply_broker_registration_change(
        self, rec: metadata_pb2.BrokerRegistrationChangeRecord
    ) -> None:
        brokers = self._brokers()
        current = brokers.get(rec.broker_id)
        assert current is not None, f"change to unregistered broker {rec.broker_id}"
        if current.broker_epoch != rec.broker_epoch:
            return  # addressed to an earlier incarnation; the controller raced a re-registration
        updated = current
        if rec.HasField("fenced"):
            updated = replace(updated, fenced=rec.fenced)
            if rec.fenced and not current.fenced:
                updated = replace(updated, fenced_index=self.last_index)
        if rec.HasField("in_controlled_shutdown"):
            updated = replace(updated, in_controlled_shutdown=rec.in_controlled_shutdown)
        brokers[rec.broker_id] = updated
        self.delta.changed_brokers.add(rec.broker_id)

    def _apply_unregister_broker(self, rec: metadata_pb2.UnregisterBrokerRecord) -> None:
        brokers = self._brokers()
        current = brokers.get(rec.broker_id)
        assert current is not None, f"unregistration of unknown broker {rec.broker_id}"
        if current.broker_epoch != rec.broker_epoch:
            return  # it registered again since: that incarnation stays
        del brokers[rec.broker_id]
        self.delta.changed_brokers.add(rec.broker_id)

    def _apply_topic(self, rec: metadata_pb2.TopicRecord) -> None:
        topics = self._topics()
        assert rec.topic_id not in topics, f"topic id {rec.topic_id.hex()} exists"
        topics[rec.topic_id] = TopicImage(rec.name, rec.topic_id, MappingProxyType({}))
        self._topic_ids()[rec.name] = rec.topic_id
        self.partitions[rec.topic_id] = {}
        self.delta.created_topics.add(rec.topic_id)

    def _apply_partition(self, rec: metadata_pb2.PartitionRecord) -> None:
        self._partitions_of(rec.topic_id)[rec.partition] = PartitionInfo(
            replicas=tuple(rec.replicas),
            isr=tuple(rec.isr),
            leader=rec.leader,
            leader_epoch=rec.leader_epoch,
            partition_epoch=rec.partition_epoch,
            offline_replicas=tuple(rec.offline_replicas),
            adding_replicas=tuple(rec.adding_replicas),
            removing_replicas=tuple(rec.removing_replicas),
        )
        self.delta.changed_partitions.add((rec.topic_id, rec.partition))

    def _apply_partition_change(self, rec: metadata_pb2.PartitionChangeRecord) -> None:
        parts = self._partitions_of(rec.topic_id)
        current = parts.get(rec.partition)
        assert current is not None, f"change to unknown partition {rec.partition}"
        updated = replace(current, partition_epoch=current.partition_epoch + 1)
        if rec.HasField("leader") and rec.leader != current.leader:
            updated = replace(updated, leader=rec.leader, leader_epoch=current.leader_epoch + 1)
        if rec.HasField("isr"):
            updated = replace(updated, isr=tuple(rec.isr.ids))
        if rec.HasField("replicas"):
            updated = replace(updated, replicas=tuple(rec.replicas.ids))
        if rec.HasField("offline_replicas"):
            updated = replace(updated, offline_replicas=tuple(rec.offline_replicas.ids))
        if rec.HasField("adding_replicas"):
            updated = replace(updated, adding_replicas=tuple(rec.adding_replicas.ids))
        if rec.HasField("removing_replicas"):
            updated = replace(updated, removing_replicas=tuple(rec.removing_replicas.ids))
        parts[rec.partition] = updated
        self.delta.changed_partitions.add((rec.topic_id, rec.partition))

    def _apply_remove_topic(self, rec: metadata_pb2.RemoveTopicRecord) -> None:
        topics = self._topics()
        topic = topics.pop(rec.topic_id, None)
        assert topic is not None, f"removal of unknown topic {rec.topic_id.hex()}"
        self.partitions.pop(rec.topic_id, None)
        self._topic_ids().pop(topic.name, None)
        self._configs().pop((TOPIC, topic.name), None)
        self.delta.created_topics.discard(rec.topic_id)
        self.delta.changed_partitions = {
            tp for tp in self.delta.changed_partitions if tp[0] != rec.topic_id
        }
        self.delta.removed_topics[rec.topic_id] = topic

    def _apply_config(self, rec: metadata_pb2.ConfigRecord) -> None:
        configs = self._configs()
        resource = (rec.resource_type, rec.resource_name)
        values = dict(configs.get(resource, {}))
        if rec.HasField("value"):
            values[rec.name] = rec.value
        else:
            values.pop(rec.name, None)
        if values:
            configs[resource] = MappingProxyType(values)
        else:
            configs.pop(resource, None)
        self.delta.changed_configs.add(resource)

    def _apply_producer_ids(self, rec: metadata_pb2.ProducerIdsRecord) -> None:
        assert rec.next_producer_id > self.next_producer_id, "producer ids never go back"
        self.next_producer_id = rec.next_producer_id

    def _apply_user_credential(self, rec: metadata_pb2.UserCredentialRecord) -> None:
        self._users()[rec.name] = credential_from_proto(rec.credential)
        self.delta.changed_users.add(rec.name)

    def _apply_remove_user_credential(self, rec: metadata_pb2.RemoveUserCredentialRecord) -> None:
        removed = self._users().pop(rec.name, None)
        assert removed is not None, f"removal of unknown user {rec.name!r}"
        self.delta.changed_users.add(rec.name)

    def _apply_user_scram_credential(self, rec: metadata_pb2.UserScramCredentialRecord) -> None:
        credential = scram.credential_from_proto(rec.credential)
        self._scram()[(rec.name, credential.mechanism)] = credential
        self.delta.changed_users.add(rec.name)

    def _apply_remove_user_scram_credential(
        self, rec: metadata_pb2.RemoveUserScramCredentialRecord
    ) -> None:
        removed = self._scram().pop((rec.name, int(rec.mechanism)), None)
        assert removed is not None, f"removal of an unknown SCRAM credential of {rec.name!r}"
        self.delta.changed_users.add(rec.name)

    # ACL records are idempotent: a binding is its own identity, and the image holds a set.
    def _apply_acl(self, rec: metadata_pb2.AclRecord) -> None:
        self._acls().add(binding_from_proto(rec.binding))
        self.delta.acls_changed = True

    def _apply_remove_acl(self, rec: metadata_pb2.RemoveAclRecord) -> None:
        self._acls().discard(binding_from_proto(rec.binding))
        self.delta.acls_changed = True

    def build(self, last_index: int, last_term: int) -> MetadataImage:
        topics = self.topics if self.topics is not None else None
        if self.partitions:
            topics = self._topics()
            for topic_id, parts in self.partitions.items():
                if topic_id in topics:
                    topics[topic_id] = replace(topics[topic_id], partitions=MappingProxyType(parts))
        base = self.base
        return MetadataImage(
            last_index=last_index,
            last_term=last_term,
            brokers=base.brokers if self.brokers is None else MappingProxyType(self.brokers),
            topics=base.topics if topics is None else MappingProxyType(topics),
            topic_ids=base.topic_ids
            if self.topic_ids is None
            else MappingProxyType(self.topic_ids),
            configs=base.configs if self.configs is None else MappingProxyType(self.configs),
            next_producer_id=self.next_producer_id,
            users=base.users if self.users is None else MappingProxyType(self.users),
            scram=base.scram if self.scram is None else MappingProxyType(self.scram),
            acls=base.acls if self.acls is None else frozenset(self.acls),
        )


def apply_records(
    image: MetadataImage,
    records: Iterable[metadata_pb2.MetadataRecord],
    last_index: int,
    last_term: int,
) -> tuple[MetadataImage, MetadataDelta]:
    """Apply records (one batch, or a snapshot's) to `image`; return the new image and delta."""
    builder = _Builder(image, last_index)
    for record in records:
        builder.apply(record)
    return builder.build(last_index, last_term), builder.delta


def apply_batch(
    image: MetadataImage, data: bytes, last_index: int, last_term: int
) -> tuple[MetadataImage, MetadataDelta]:
    """Apply one committed Raft entry's payload (a serialized MetadataBatch)."""
    batch = metadata_pb2.MetadataBatch.FromString(data)
    return apply_records(image, batch.records, last_index, last_term)


def image_to_records(image: MetadataImage) -> list[metadata_pb2.MetadataRecord]:
    """The records that rebuild `image` from empty: the body of a metadata snapshot."""
    records: list[metadata_pb2.MetadataRecord] = []
    for broker in sorted(image.brokers.values(), key=lambda b: b.broker_id):
        records.append(
            metadata_pb2.MetadataRecord(
                register_broker=metadata_pb2.RegisterBrokerRecord(
                    broker_id=broker.broker_id,
                    broker_epoch=broker.broker_epoch,
                    incarnation_id=broker.incarnation_id,
                    endpoints=[
                        metadata_pb2.Endpoint(
                            listener=e.listener,
                            host=e.host,
                            port=e.port,
                            security_protocol=e.security_protocol,
                        )
                        for e in broker.endpoints
                    ],
                    rack=broker.rack,
                )
            )
        )
        records.append(
            metadata_pb2.MetadataRecord(
                broker_registration_change=metadata_pb2.BrokerRegistrationChangeRecord(
                    broker_id=broker.broker_id,
                    broker_epoch=broker.broker_epoch,
                    fenced=broker.fenced,
                    in_controlled_shutdown=broker.in_controlled_shutdown,
                )
            )
        )
    for topic in sorted(image.topics.values(), key=lambda t: t.name):
        records.append(
            metadata_pb2.MetadataRecord(
                topic=metadata_pb2.TopicRecord(name=topic.name, topic_id=topic.topic_id)
            )
        )
        for index, part in sorted(topic.partitions.items()):
            records.append(
                metadata_pb2.MetadataRecord(
                    partition=metadata_pb2.PartitionRecord(
                        topic_id=topic.topic_id,
                        partition=index,
                        replicas=part.replicas,
                        isr=part.isr,
                        leader=part.leader,
                        leader_epoch=part.leader_epoch,
                        partition_epoch=part.partition_epoch,
                        offline_replicas=part.offline_replicas,
                        adding_replicas=part.adding_replicas,
                        removing_replicas=part.removing_replicas,
                    )
                )
            )
    for (resource_type, resource_name), values in sorted(image.configs.items()):
        for name, value in sorted(values.items()):
            records.append(
                metadata_pb2.MetadataRecord(
                    config=metadata_pb2.ConfigRecord(
                        resource_type=resource_type,  # type: ignore[arg-type]
                        resource_name=resource_name,
                        name=name,
                        value=value,
                    )
                )
            )
    if image.next_producer_id:
        records.append(
            metadata_pb2.MetadataRecord(
                producer_ids=metadata_pb2.ProducerIdsRecord(
                    broker_id=-1, broker_epoch=-1, next_producer_id=image.next_producer_id
                )
            )
        )
    records += _security_records(image)
    return records


def _security_records(image: MetadataImage) -> list[metadata_pb2.MetadataRecord]:
    records = [
        metadata_pb2.MetadataRecord(
            user_credential=metadata_pb2.UserCredentialRecord(
                name=name, credential=credential_to_proto(credential)
            )
        )
        for name, credential in sorted(image.users.items())
    ]
    records += [
        metadata_pb2.MetadataRecord(
            user_scram_credential=metadata_pb2.UserScramCredentialRecord(
                name=name, credential=scram.credential_to_proto(credential)
            )
        )
        for (name, _), credential in sorted(image.scram.items())
    ]
    records += [
        metadata_pb2.MetadataRecord(acl=metadata_pb2.AclRecord(binding=binding_to_proto(b)))
        for b in sorted(image.acls)
    ]
    return records


def encode_snapshot(image: MetadataImage, cluster_id: str) -> bytes:
    snapshot = metadata_pb2.MetadataSnapshot(
        cluster_id=cluster_id,
        last_index=image.last_index,
        last_term=image.last_term,
        records=image_to_records(image),
    )
    return snapshot.SerializeToString()


def decode_snapshot(data: bytes) -> tuple[MetadataImage, str]:
    snapshot = metadata_pb2.MetadataSnapshot.FromString(data)
    image, _ = apply_records(
        MetadataImage(), snapshot.records, snapshot.last_index, snapshot.last_term
    )
    return image, snapshot.cluster_id
