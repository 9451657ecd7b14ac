"""Topic-level configs: one table of every key, its type and range, used everywhere a topic config
is checked or applied (issue #15, defect 1).

`TOPIC_CONFIGS` declares each key once: its Kafka type (INT is a Java int, LONG a Java long, so
`segment.bytes` stops at 2^31-1 as in Kafka), its lower bound or its choices, and the broker key
that supplies its default (Kafka's `log.retention.ms` for `retention.ms`). The same table:
- checks the broker keys of a node's YAML file (node/config.py builds their checks from it);
- lets the controller refuse a bad value with INVALID_CONFIG before anything is written
  (CreateTopics, validate_only included, and IncrementalAlterConfigs);
- and is applied by each broker (`resolve`), which takes a topic's replicas offline, and keeps
  running, when the metadata log holds a value it cannot apply (written by an older version).

storage/log_config.py's `LogConfig` guards the same ranges for the keys storage uses; a unit test
holds the two to the same bounds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

INT_MAX = 2**31 - 1
LONG_MAX = 2**63 - 1
LONG_MIN = -(2**63)

Kind = Literal["int", "long", "boolean", "list"]
CLEANUP_POLICIES = ("compact", "delete")


class InvalidTopicConfig(ValueError):
    """A topic config key is unknown or its value is out of range; the message names both."""


@dataclass(frozen=True, slots=True)
class TopicConfigKey:
    name: str
    kind: Kind
    broker_key: str  # the node key that supplies the default
    doc: str
    minimum: int = LONG_MIN  # for int and long
    choices: tuple[str, ...] = ()  # for list: the allowed items

    @property
    def maximum(self) -> int:
        return INT_MAX if self.kind == "int" else LONG_MAX

    def parse(self, raw: Any) -> int | bool | tuple[str, ...]:
        """The typed value of `raw` (the text of a request or of the metadata log, or a value
        from YAML), or InvalidTopicConfig naming the key."""
        value = self._typed(raw)
        problem = self.problem(value)
        if problem:
            raise InvalidTopicConfig(f"{self.name}: {problem} (got {raw!r})")
        return value

    def problem(self, value: Any) -> str | None:
        """What is wrong with an already typed value, or None. Also the check of the broker key
        in node/config.py, which hands it an int, a bool, or (cleanup.policy) a string."""
        if self.kind in ("int", "long"):
            if not self.minimum <= value <= self.maximum:
                java = "an int" if self.kind == "int" else "a long"
                return f"must be from {self.minimum} to {self.maximum} ({java})"
        elif self.kind == "list":
            items = _items(value) if isinstance(value, str) else tuple(value)
            if not items:
                return f"must name at least one of {', '.join(self.choices)}"
            unknown = [item for item in items if item not in self.choices]
            if unknown:
                return f"{', '.join(unknown)} not allowed; choose from {', '.join(self.choices)}"
        return None

    def text(self, value: int | bool | tuple[str, ...]) -> str:
        """How a typed value is written to the metadata log and described."""
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, tuple):
            return ",".join(value)
        return str(value)

    def _typed(self, raw: Any) -> int | bool | tuple[str, ...]:
        if self.kind in ("int", "long"):
            if isinstance(raw, int) and not isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and re.fullmatch(r"\s*-?\d+\s*", raw):
                return int(raw)
            raise InvalidTopicConfig(f"{self.name}: expected an integer, got {raw!r}")
        if self.kind == "boolean":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
                return raw.strip().lower() == "true"
            raise InvalidTopicConfig(f"{self.name}: expected true or false, got {raw!r}")
        if isinstance(raw, str):
            return _items(raw)
        if isinstance(raw, list | tuple) and all(isinstance(item, str) for item in raw):
            return _items(",".join(raw))
        raise InvalidTopicConfig(f"{self.name}: expected a comma-separated list, got {raw!r}")


def _items(text: str) -> tuple[str, ...]:
    """The distinct items of a comma-separated list, sorted (`delete, compact` and
    `compact,delete` are one value)."""
    return tuple(sorted({item.strip() for item in text.split(",") if item.strip()}))


TOPIC_CONFIGS: tuple[TopicConfigKey, ...] = (
    TopicConfigKey(
        "cleanup.policy", "list", "log.cleanup.policy",
        "delete (retention by age and size), compact (keep each key's latest), or both",
        choices=CLEANUP_POLICIES,
    ),
    TopicConfigKey(
        "delete.retention.ms", "long", "log.cleaner.delete.retention.ms",
        "how long a compacted topic keeps tombstones", minimum=0,
    ),
    TopicConfigKey(
        "flush.messages", "long", "log.flush.interval.messages",
        "fsync after this many unflushed messages; 1: a write counts only once fsynced",
        minimum=1,
    ),
    TopicConfigKey(
        "flush.ms", "long", "log.flush.interval.ms",
        "fsync once the oldest unflushed write is this old", minimum=0,
    ),
    TopicConfigKey(
        "index.interval.bytes", "int", "log.index.interval.bytes",
        "bytes of batches between two sparse index entries", minimum=0,
    ),
    TopicConfigKey(
        "max.message.bytes", "int", "message.max.bytes",
        "the largest record batch a producer may append (after compression)", minimum=0,
    ),
    TopicConfigKey(
        "min.insync.replicas", "int", "min.insync.replicas",
        "ISR size below which acks=all writes are refused", minimum=1,
    ),
    TopicConfigKey(
        "retention.bytes", "long", "log.retention.bytes",
        "delete the oldest segments while a partition is larger; -1: no cap", minimum=-1,
    ),
    TopicConfigKey(
        "retention.ms", "long", "log.retention.ms",
        "delete segments whose newest record is older; -1: keep forever", minimum=-1,
    ),
    TopicConfigKey(
        "segment.bytes", "int", "log.segment.bytes",
        "roll a segment at this size (Kafka's record overhead, 14, at least)", minimum=14,
    ),
    TopicConfigKey(
        "segment.ms", "long", "log.roll.ms", "roll a segment at this age", minimum=1,
    ),
    TopicConfigKey(
        "unclean.leader.election.enable", "boolean", "unclean.leader.election.enable",
        "elect a replica outside the ISR when no ISR member is left (may lose data)",
    ),
)  # fmt: skip

TOPIC_CONFIGS_BY_NAME: dict[str, TopicConfigKey] = {key.name: key for key in TOPIC_CONFIGS}
BY_BROKER_KEY: dict[str, TopicConfigKey] = {key.broker_key: key for key in TOPIC_CONFIGS}


def topic_config_key(name: str) -> TopicConfigKey:
    key = TOPIC_CONFIGS_BY_NAME.get(name)
    if key is None:
        raise InvalidTopicConfig(
            f"unknown topic config {name!r}; known: {', '.join(sorted(TOPIC_CONFIGS_BY_NAME))}"
        )
    return key


def parse_topic_config(name: str, raw: Any) -> int | bool | tuple[str, ...]:
    """Check one topic config value: the typed value, or InvalidTopicConfig naming the key."""
    return topic_config_key(name).parse(raw)


def canonical_text(name: str, raw: Any) -> str:
    """The checked value as the metadata log holds it (`True` -> "true", lists sorted)."""
    key = topic_config_key(name)
    return key.text(key.parse(raw))


def broker_key_check(broker_key: str) -> Any:
    """The check node/config.py gives a broker key that supplies a topic default."""
    return BY_BROKER_KEY[broker_key].problem


def resolve(defaults: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, Any]:
    """A topic's effective configs, typed: the broker's defaults (`defaults`, by topic key) with
    the topic's overrides from the metadata log. A value this table refuses raises
    InvalidTopicConfig naming the key: the broker cannot apply it. Keys it does not know (from a
    newer version) are left out, as Kafka ignores unknown topic configs."""
    resolved = {
        name: TOPIC_CONFIGS_BY_NAME[name].parse(value)
        for name, value in defaults.items()
        if name in TOPIC_CONFIGS_BY_NAME
    }
    for name, value in overrides.items():
        if name in TOPIC_CONFIGS_BY_NAME:
            resolved[name] = TOPIC_CONFIGS_BY_NAME[name].parse(value)
    return resolved


def policies(value: Any) -> frozenset[str]:
    """The cleanup policies of a `cleanup.policy` value, typed or text."""
    return frozenset(_items(value) if isinstance(value, str) else value)
