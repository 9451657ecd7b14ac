"""The strom client SDK: Producer, Consumer, Admin (synchronous) and their asyncio cores
(`strom.client.aio`). Imports only `strom.v1` and the storage codec (DESIGN.md §2).

    from strom.client import Producer, Consumer, Admin
"""

from .admin import Admin, NewTopic
from .consumer import Consumer
from .errors import (
    FatalError,
    KafkaTimeoutError,
    ProducerFencedError,
    RetriableError,
    StromError,
    TransactionAbortableError,
    TransactionFatalError,
    TransactionStateError,
)
from .producer import Producer
from .records import ConsumerGroupMetadata, ConsumerRecord, RecordMetadata, TopicPartition

__all__ = [
    "Admin",
    "Consumer",
    "ConsumerGroupMetadata",
    "ConsumerRecord",
    "FatalError",
    "KafkaTimeoutError",
    "NewTopic",
    "Producer",
    "ProducerFencedError",
    "RecordMetadata",
    "RetriableError",
    "StromError",
    "TopicPartition",
    "TransactionAbortableError",
    "TransactionFatalError",
    "TransactionStateError",
]
