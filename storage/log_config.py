"""Per-partition log configuration, with Kafka's topic-level key names and defaults.

Every knob is declared once here: its Kafka key, its default, and what it does. `LogConfig`
is frozen; `LogConfig.from_kafka({...})` builds one from Kafka-style keys (topic configs or a
broker's `log.*` defaults with the prefix removed) and refuses unknown keys and bad values with
a message naming the key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_LONG_MAX = 2**63 - 1
_INT_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class LogConfig:
    # segment.bytes: a segment rolls when an append would take it past this size.
    segment_bytes: int = field(
        default=1024**3, metadata={"key": "segment.bytes", "min": 14, "max": _INT_MAX}
    )
    # segment.ms: a segment rolls once its first batch is this much older than the newest.
    segment_ms: int = field(default=7 * 24 * 3600 * 1000, metadata={"key": "segment.ms", "min": 1})
    # retention.ms: whole segments whose newest timestamp is older than this are deleted;
    # -1 keeps them forever.
    retention_ms: int = field(
        default=7 * 24 * 3600 * 1000, metadata={"key": "retention.ms", "min": -1}
    )
    # retention.bytes: oldest segments are deleted while the log is larger than this; -1: no cap.
    retention_bytes: int = field(default=-1, metadata={"key": "retention.bytes", "min": -1})
    # index.interval.bytes: bytes of batches between two sparse index entries.
    index_interval_bytes: int = field(
        default=4096, metadata={"key": "index.interval.bytes", "min": 0, "max": _INT_MAX}
    )
    # max.message.bytes: the largest record batch a producer may append (after compression).
    max_message_bytes: int = field(
        default=1048588, metadata={"key": "max.message.bytes", "min": 0, "max": _INT_MAX}
    )
    # message.timestamp.before.max.ms / after.max.ms: how far a record's CreateTime may lie
    # before / after the broker's clock (Kafka 3.6+ names; after defaults to 1 hour as in 4.0).
    message_timestamp_before_max_ms: int = field(
        default=_LONG_MAX, metadata={"key": "message.timestamp.before.max.ms", "min": 0}
    )
    message_timestamp_after_max_ms: int = field(
        default=3600 * 1000, metadata={"key": "message.timestamp.after.max.ms", "min": 0}
    )

    # flush.messages: fsync once this many messages are unflushed. 1 means every write is
    # fsynced before it counts: before acks=1 answers, before the leader counts itself towards
    # the high watermark, and before a follower reports it has fetched it (so acks=all means
    # "on disk on every in-sync replica"); fsyncs are grouped (one for everything appended
    # while the previous one ran). The default leaves it to segment rolls and the OS.
    flush_messages: int = field(default=_LONG_MAX, metadata={"key": "flush.messages", "min": 1})
    # flush.ms: fsync once the oldest unflushed write is this old.
    flush_ms: int = field(default=_LONG_MAX, metadata={"key": "flush.ms", "min": 0})

    @property
    def flushes_before_ack(self) -> bool:
        return self.flush_messages == 1

    def validate(self) -> None:
        """Raise ValueError naming the first key whose value is out of range."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{f.metadata['key']} must be an integer, got {value!r}")
            # Java's int or long, as Kafka's (node/topic_config.py checks the same ranges first).
            maximum = f.metadata.get("max", _LONG_MAX)
            if not f.metadata["min"] <= value <= maximum:
                raise ValueError(
                    f"{f.metadata['key']} must be from {f.metadata['min']} to {maximum}, got {value}"
                )

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def keys(cls) -> dict[str, str]:
        """Kafka key → field name."""
        return {f.metadata["key"]: f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_kafka(cls, settings: Mapping[str, Any]) -> LogConfig:
        """Build from Kafka key names, e.g. {"segment.bytes": 1048576}. Strings of digits are
        accepted (YAML and environment variables give strings)."""
        names = cls.keys()
        kwargs: dict[str, int] = {}
        for key, value in settings.items():
            if key not in names:
                raise ValueError(f"unknown log config key {key!r}; known: {sorted(names)}")
            try:
                kwargs[names[key]] = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"{key} must be an integer, got {value!r}") from None
        return cls(**kwargs)

    def to_kafka(self) -> dict[str, int]:
        return {f.metadata["key"]: getattr(self, f.name) for f in dataclasses.fields(self)}
