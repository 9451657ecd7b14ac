"""Value types the SDK hands to applications (kafka-python / confluent-kafka habits)."""

from __future__ import annotations

from typing import NamedTuple


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class RecordMetadata(NamedTuple):
    """Where an acknowledged record landed. `offset` is -1 for acks=0 (nobody waited)."""

    topic: str
    partition: int
    offset: int
    timestamp: int


class ConsumerRecord(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


class ConsumerGroupMetadata(NamedTuple):
    """What a transactional producer's `send_offsets_to_transaction` needs of a consumer
    (`consumer.consumer_group_metadata()`): the group, and the member that commits, so a
    member fenced from the group cannot commit offsets in a transaction (KIP-447). No member
    (`member_id` "", `member_epoch` -1): a consumer using assign()."""

    group_id: str
    member_id: str = ""
    member_epoch: int = -1
