"""The asyncio SDK: the real implementation behind the synchronous classes."""

from .admin import AsyncAdmin, NewTopic
from .consumer import AsyncConsumer
from .producer import AsyncProducer
from .records import ConsumerRecord, RecordMetadata, TopicPartition

__all__ = [
    "AsyncAdmin",
    "AsyncConsumer",
    "AsyncProducer",
    "ConsumerRecord",
    "NewTopic",
    "RecordMetadata",
    "TopicPartition",
]
