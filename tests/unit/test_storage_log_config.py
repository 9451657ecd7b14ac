"""LogConfig: Kafka key names, defaults, and refusal of bad values naming the key."""

from __future__ import annotations

import pytest

from strom.storage.log_config import LogConfig


def test_defaults_are_kafkas() -> None:
    assert LogConfig().to_kafka() == {
        "segment.bytes": 1024**3,
        "segment.ms": 604_800_000,
        "retention.ms": 604_800_000,
        "retention.bytes": -1,
        "index.interval.bytes": 4096,
        "max.message.bytes": 1048588,
        "message.timestamp.before.max.ms": 2**63 - 1,
        "message.timestamp.after.max.ms": 3_600_000,
        "flush.messages": 2**63 - 1,
        "flush.ms": 2**63 - 1,
    }


def test_from_kafka_keys_accepts_strings_and_refuses_unknown_or_bad() -> None:
    config = LogConfig.from_kafka({"segment.bytes": "1048576", "retention.ms": -1})
    assert (config.segment_bytes, config.retention_ms) == (1048576, -1)
    with pytest.raises(ValueError, match=r"segment.byte"):
        LogConfig.from_kafka({"segment.byte": 1})
    with pytest.raises(ValueError, match=r"retention.bytes"):
        LogConfig.from_kafka({"retention.bytes": "lots"})
    with pytest.raises(ValueError, match=r"segment.bytes"):
        LogConfig(segment_bytes=2**31)
    with pytest.raises(ValueError, match=r"retention.ms"):
        LogConfig(retention_ms=-2)
