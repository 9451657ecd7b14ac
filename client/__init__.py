"""The strom client SDK: Producer, Consumer, Admin (synchronous) and their asyncio cores
(`strom.client.aio`). Imports only `strom.v1` and the storage codec (DESIGN.md §2).

    from strom.client import Producer, Consumer, Admin
"""

from .admin import Admin, NewTopic
from .consumer import Consumer
from .errors import FatalError, KafkaTimeoutError, RetriableError, StromError
from .producer import Producer
from .records import ConsumerRecord, RecordMetadata, TopicPartition

__all__ = [
    "Admin",
    "Consumer",
    "ConsumerRecord",
    "FatalError",
    "KafkaTimeoutError",
    "NewTopic",
    "Producer",
    "RecordMetadata",
    "RetriableError",
    "StromError",
    "TopicPartition",
]
